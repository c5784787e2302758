"""cdk-nag acknowledgments: one place that records why a finding does not apply."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge a cdk-nag finding (such as ``AwsSolutions-IAM5[Action::...]``) on scope
    and everything below it; the reason is kept in the cloud assembly for auditors."""
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))


def logical_id(scope: IConstruct, arn: str) -> str:
    """The logical ID behind an ARN token (Fn::GetAtt), as cdk-nag names resources in
    findings such as ``Resource::<SpoolBucket1234.Arn>/spool/*``."""
    return cdk.Stack.of(scope).resolve(arn)["Fn::GetAtt"][0]
