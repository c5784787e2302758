"""The relay's TLS certificate: the operator's Secrets Manager secret, or a self-signed one
generated at deploy time by a custom resource (lambdas/tls_certificate) that writes it to
a secret of its own. Never at synthesis: the private key stays out of the template."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from stacks.environment import EnvironmentSettings
from stacks.nag import acknowledge
from stacks.python_function import REPO_ROOT, RUNTIME, CopyPackages

HANDLER_PACKAGE = "tls_certificate"
REQUIREMENTS = REPO_ROOT / "requirements" / "certificate.txt"
# Lambda's Python 3.13 on ARM64 runs Amazon Linux 2023 (glibc 2.34).
WHEEL_PLATFORMS = ("manylinux_2_34_aarch64", "manylinux_2_28_aarch64",
                   "manylinux2014_aarch64")
VALIDITY_DAYS = 825


@jsii.implements(cdk.ILocalBundling)
class CopyPackagesAndWheels(CopyPackages):
    """The handler and core packages, plus the pinned wheels of requirements/certificate.txt
    for Lambda's platform (pip, hash-checked; no Docker)."""

    def try_bundle(self, output_dir: str, *args: Any, **kwargs: Any) -> bool:
        """Copy the packages, then install the wheels next to them."""
        super().try_bundle(output_dir)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--require-hashes", "--only-binary=:all:", "--implementation", "cp",
             "--python-version", RUNTIME.name.removeprefix("python"),
             *[f"--platform={platform}" for platform in WHEEL_PLATFORMS],
             "--target", output_dir, "-r", str(REQUIREMENTS)],
            check=True)
        return True


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
        packages = {HANDLER_PACKAGE: REPO_ROOT / "lambdas" / HANDLER_PACKAGE,
                    "sesrelay": REPO_ROOT / "sesrelay"}
        function = lambda_.Function(
            self, "Generator",
            runtime=RUNTIME, architecture=lambda_.Architecture.ARM_64,
            handler=f"{HANDLER_PACKAGE}.handler.handler",
            code=lambda_.Code.from_asset(
                str(packages[HANDLER_PACKAGE]),
                bundling=cdk.BundlingOptions(image=RUNTIME.bundling_image,
                                             local=CopyPackagesAndWheels(packages))),
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

