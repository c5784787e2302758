"""Bounces must be sendable: synthesis refuses a ses_bounce_sender that no SES identity of
the environment covers, naming the parameter and the environment, and the worker's role
may send as the identity that covers it. The refusals are checked on the environment
model (no synthesis needed) and once through plain ``python app.py``."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import app as cdk_app
from sesrelay import ses_identities
from stacks.environment import SettingsError, load_environment
from tests.cdk.synth import Deployment

REPO = Path(__file__).resolve().parents[2]


def _context(environment: str, relay_change: dict[str, Any],
             drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """cdk.json's context with one environment's relay parameters changed."""
    context = copy.deepcopy(cdk_app.file_context())
    relay = context["environments"][environment]["relay"]
    for name in drop:
        relay.pop(name, None)
    relay.update(relay_change)
    return context


def test_a_bounce_sender_outside_the_identities_fails_naming_parameter_and_environment(
) -> None:
    # The mistake the repository's own prod environment used to make.
    context = _context("prod", {"ses_bounce_sender": "MAILER-DAEMON@example.internal"})
    with pytest.raises(SettingsError) as error:
        load_environment(context, "prod")
    message = str(error.value)
    assert message.startswith("cdk.json environments.prod.relay.ses_bounce_sender: "
                              "MAILER-DAEMON@example.internal is not covered by "
                              "ses_identities (example.com) of environment 'prod'")


def test_the_default_bounce_sender_of_an_unverified_mydomain_is_refused() -> None:
    # MAILER-DAEMON@$mydomain, mydomain from myhostname smtp.dev.example.internal.
    context = _context("dev", {}, drop=("ses_bounce_sender",))
    with pytest.raises(SettingsError, match=r"environments\.dev\.relay\.ses_bounce_sender: "
                                            r"MAILER-DAEMON@dev\.example\.internal is not "
                                            r"covered .* of environment 'dev'"):
        load_environment(context, "dev")


@pytest.mark.parametrize("sender", [
    "MAILER-DAEMON@example.com",
    "postmaster@bounces.mail.example.com",  # a subdomain of a verified domain
    "MAILER-DAEMON@EXAMPLE.COM.",
])
def test_addresses_of_a_verified_domain_and_its_subdomains_are_accepted(sender: str) -> None:
    settings = load_environment(_context("prod", {"ses_bounce_sender": sender}), "prod")
    assert settings.config.ses_bounce_sender == sender


def test_an_address_identity_covers_that_address_only() -> None:
    identities = {"ses_identities": ["mailer@example.org", "example.com"]}
    accepted = _context("prod", {**identities, "ses_bounce_sender": "mailer@example.org"})
    assert load_environment(accepted, "prod").config.ses_bounce_sender == "mailer@example.org"
    refused = _context("prod", {**identities, "ses_bounce_sender": "other@example.org"})
    with pytest.raises(SettingsError, match=r"other@example\.org is not covered"):
        load_environment(refused, "prod")


def test_with_sending_authorization_the_identity_arn_must_cover_the_bounce_sender() -> None:
    arn = "arn:aws:ses:eu-west-1:210987654321:identity/partner.example.net"
    accepted = _context("prod", {"ses_identity_arn": arn,
                                 "ses_bounce_sender": "MAILER-DAEMON@partner.example.net"})
    assert load_environment(accepted, "prod").config.ses_identity_arn == arn
    # example.com is in ses_identities, but every send names the partner's identity.
    refused = _context("prod", {"ses_identity_arn": arn})
    with pytest.raises(SettingsError, match=r"MAILER-DAEMON@example\.com is not covered by "
                                            r"the identity of ses_identity_arn"):
        load_environment(refused, "prod")


def test_plain_python_app_py_refuses_an_unverified_bounce_sender() -> None:
    context = _context("prod", {"ses_bounce_sender": "MAILER-DAEMON@example.internal"})
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # The CDK reads -c values from CDK_CONTEXT_JSON; they override cdk.json's context.
    environ["CDK_CONTEXT_JSON"] = json.dumps({"env": "prod",
                                              "environments": context["environments"]})
    result = subprocess.run([sys.executable, "app.py"], cwd=REPO, env=environ,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode != 0
    assert ("SettingsError: cdk.json environments.prod.relay.ses_bounce_sender: "
            "MAILER-DAEMON@example.internal is not covered") in result.stderr


def _send_resources(deployment: Deployment) -> str:
    """The resources of the worker role's statement that allows ses:SendRawEmail."""
    found = []
    for policy in deployment.resources("AWS::IAM::Policy").values():
        if "WorkerRole" not in json.dumps(policy["Properties"]["Roles"]):
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "ses:SendRawEmail" in json.dumps(statement["Action"]):
                found.append(statement["Resource"])
    assert len(found) == 1, deployment.name
    return json.dumps(found[0])


def test_the_worker_may_send_as_the_identity_covering_the_bounce_sender(
        deployments: dict[str, Deployment]) -> None:
    for name, deployment in deployments.items():
        config = deployment.settings.config
        [covering] = [identity for identity in config.ses_identities
                      if ses_identities.covers((identity,), config.ses_bounce_sender)]
        assert f":identity/{covering}" in _send_resources(deployment), name
