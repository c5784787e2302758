"""The SMTP AUTH user table of one environment: a Secrets Manager secret that the stack
creates empty, `sesrelay users add --table secretsmanager:NAME` fills, and only the relay
task's role may read (sesrelay.users describes its content: scrypt hashes, never
passwords)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from sesrelay.users import UserTable
from stacks.environment import EnvironmentSettings
from stacks.nag import acknowledge


def users_secret_name(environment: str) -> str:
    """The user table's secret name in an environment."""
    return f"sesrelay/{environment}/smtp-users"


class SmtpUsers(Construct):
    """The user table's secret, granted to the task role alone."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: EnvironmentSettings,
                 task_role: iam.IRole) -> None:
        super().__init__(scope, construct_id)
        self.secret = secretsmanager.Secret(
            self, "Secret", secret_name=users_secret_name(settings.name),
            description=f"sesrelay {settings.name}: SMTP AUTH users (scrypt hashes); "
                        "manage with sesrelay users add|remove|list",
            # An empty table, which is not secret: the template never holds a user.
            # CloudFormation writes it only when the secret is created (the value in the
            # template does not change), so users added later stay.
            secret_string_value=cdk.SecretValue.unsafe_plain_text(UserTable().to_json()),
            # Removing the stack must not silently lose every application's credentials.
            removal_policy=cdk.RemovalPolicy.RETAIN)
        self.secret.grant_read(task_role)
        acknowledge(self.secret, "AwsSolutions-SMG4",
                    "The secret holds password hashes that sesrelay users manages; there is "
                    "no credential for Secrets Manager to rotate. Applications' passwords "
                    "are changed with sesrelay users add.")
