"""CDK entry point: synthesizes one sesrelay deployment, the environment chosen with
``-c env=NAME`` (default: cdk.json's ``default_environment``).

``npx aws-cdk@2 deploy -c env=prod`` runs this file; so can plain ``python app.py``,
which reads cdk.json's context itself. cdk-nag's AwsSolutions checks run on every
synthesis, and an unacknowledged finding fails it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from sesrelay.deployment import stack_name
from stacks.environment import load_environment
from stacks.relay_stack import SesRelayStack

CDK_JSON = Path(__file__).resolve().parent / "cdk.json"


def file_context() -> dict[str, Any]:
    """The context in cdk.json (the CDK CLI passes it too, but plain python does not)."""
    return json.loads(CDK_JSON.read_text(encoding="utf-8"))["context"]


def create_app(context: Mapping[str, Any] | None = None, outdir: str | None = None
               ) -> tuple[cdk.App, AwsSolutionsChecks]:
    """Build the app for the chosen environment, with the cdk-nag pack registered.

    context overrides cdk.json's context (tests use it); the CDK CLI's ``-c`` values
    override both.
    """
    app = cdk.App(context={**file_context(), **(context or {})}, outdir=outdir)
    name = app.node.try_get_context("env") or app.node.try_get_context("default_environment")
    environments = app.node.try_get_context("environments")
    settings = load_environment({"environments": environments}, str(name))
    env = cdk.Environment(account=settings.account, region=settings.region)
    SesRelayStack(app, f"SesRelay-{settings.name}", settings, env=env,
                  stack_name=stack_name(settings.name),
                  description=f"sesrelay {settings.name}: SMTP relay to Amazon SES")
    checks = AwsSolutionsChecks(app)
    cdk.Validations.of(app).add_plugins(checks)
    return app, checks


if __name__ == "__main__":
    create_app()[0].synth()
