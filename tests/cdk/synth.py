"""A synthesized deployment, as the CDK tests look at it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.environment import EnvironmentSettings


@dataclass
class Deployment:
    """One synthesized environment."""

    name: str
    settings: EnvironmentSettings
    app: cdk.App
    checks: AwsSolutionsChecks
    assembly: Any  # aws_cdk.cx_api.CloudAssembly
    template: dict[str, Any]

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        """Resources of one CloudFormation type, by logical ID."""
        return {k: r for k, r in self.template["Resources"].items() if r["Type"] == kind}

    def one(self, kind: str, prefix: str = "") -> dict[str, Any]:
        """Properties of the only resource of a type (whose logical ID starts with
        prefix, the path of its construct: ``Worker``, ``SesEvents``, ``Trail``)."""
        found = [r for k, r in self.resources(kind).items() if k.startswith(prefix)]
        assert len(found) == 1, f"expected one {kind} {prefix}, found {len(found)}"
        return dict(found[0]["Properties"])

    def logical_id(self, kind: str, prefix: str) -> str:
        """The logical ID of the only resource of a type under a construct path."""
        [found] = [k for k in self.resources(kind) if k.startswith(prefix)]
        return found

    @property
    def has_events(self) -> bool:
        """Whether this environment captures SES events (names a configuration set)."""
        return bool(self.settings.config.ses_configuration_set)
