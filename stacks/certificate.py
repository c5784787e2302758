"""The relay's TLS certificate: the operator's Secrets Manager secret, or a self-signed one
generated at deploy time by a custom resource (lambdas/tls_certificate) that writes it to
a secret of its own. Never at synthesis: the private key stays out of the template."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from stacks.environment import EnvironmentSettings
from stacks.lambda_bundle import REPO_ROOT, bundled_code, code_packages
from stacks.nag import acknowledge
from stacks.python_function import ARCHITECTURE, RUNTIME

HANDLER_PACKAGE = "tls_certificate"
REQUIREMENTS = REPO_ROOT / "requirements" / "certificate.txt"
VALIDITY_DAYS = 825


def certificate_names(settings: EnvironmentSettings, load_balancer_dns: str) -> list[str]:
    """The names the generated certificate is for: the private DNS name applications use,
    myhostname, and the load balancer's own name (a deploy-time value)."""
    names = []
    if settings.private_dns:
        names.append(settings.private_dns.fqdn)
    if "." in settings.config.myhostname:
        names.append(settings.config.myhostname)
    return [*dict.fromkeys(names), load_balancer_dns]


class RelayCertificate(Construct):
    """Where the relay task reads its certificate from, and its fingerprint when generated.

    ``secret_arn`` is what the task is told to read; ``fingerprint`` is None for the
    operator's certificate (the relay logs it at start)."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: EnvironmentSettings,
                 load_balancer_dns: str, log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        assert settings.tls is not None
        self.fingerprint: str | None = None
        if settings.tls.certificate_secret:
            given = settings.tls.certificate_secret
            self.secret: secretsmanager.ISecret = (
                secretsmanager.Secret.from_secret_complete_arn(self, "Operator", given)
                if given.startswith("arn:") else
                secretsmanager.Secret.from_secret_name_v2(self, "Operator", given))
            self.secret_arn = self.secret.secret_arn
            return
        self._generate(settings, load_balancer_dns, log_retention)

    def _generate(self, settings: EnvironmentSettings, load_balancer_dns: str,
                  log_retention: logs.RetentionDays) -> None:
        secret_name = f"sesrelay/{settings.name}/smtp-tls-generated"
        # Secrets Manager appends six random characters to a secret's name in its ARN.
        secret_arns = cdk.Stack.of(self).format_arn(
            service="secretsmanager", resource="secret", resource_name=f"{secret_name}-??????",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME)
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        description="sesrelay certificate generator: its own secret only")
        role.add_to_policy(iam.PolicyStatement(
            sid="OwnSecretOnly",
            actions=["secretsmanager:CreateSecret", "secretsmanager:PutSecretValue",
                     "secretsmanager:DeleteSecret"],
            resources=[secret_arns]))
        log_group = logs.LogGroup(self, "Logs", retention=log_retention,
                                  removal_policy=cdk.RemovalPolicy.DESTROY)
        role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn]))
        function = lambda_.Function(
            self, "Generator",
            runtime=RUNTIME, architecture=ARCHITECTURE,
            handler=f"{HANDLER_PACKAGE}.handler.handler",
            code=bundled_code(code_packages(HANDLER_PACKAGE), RUNTIME, ARCHITECTURE,
                              requirements=REQUIREMENTS),
            memory_size=256, timeout=cdk.Duration.minutes(2), role=role, log_group=log_group,
            description=f"sesrelay {settings.name}: the relay's self-signed TLS certificate")
        acknowledge(function, "AwsSolutions-L1",
                    "The runtime is pinned to Python 3.13, the version the pinned "
                    "cryptography wheels are installed for.")
        resource = cdk.CustomResource(
            self, "Resource", service_token=function.function_arn,
            resource_type="Custom::RelayCertificate",
            properties={"SecretName": secret_name,
                        "Names": certificate_names(settings, load_balancer_dns),
                        "ValidityDays": str(VALIDITY_DAYS)})
        self.secret_arn = resource.get_att_string("SecretArn")
        self.fingerprint = resource.get_att_string("Fingerprint")
        self.secret = secretsmanager.Secret.from_secret_complete_arn(
            self, "Generated", self.secret_arn)

