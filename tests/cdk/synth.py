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

    def one(self, kind: str) -> dict[str, Any]:
        """Properties of the only resource of a type."""
        found = list(self.resources(kind).values())
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]["Properties"]
