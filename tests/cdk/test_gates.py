"""Quality gates of the CDK app: synthesis offline, cdk-nag, cfn-lint, no open ingress,
and configuration errors that fail synthesis with the configuration model's message."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file

import app as cdk_app
from sesrelay.config import ConfigError
from stacks.environment import SettingsError
from tests.cdk.synth import Deployment

REPO = Path(__file__).resolve().parents[2]
ACKNOWLEDGED = "aws:cdk:acknowledged-rules"


def test_every_environment_in_cdk_json_synthesizes(deployments: dict[str, Deployment]) -> None:
    for name in cdk_app.file_context()["environments"]:
        deployment = deployments[name]
        assert deployment.template["Resources"], name
        assert not any(key.startswith("AWS_") for key in os.environ)


def test_plain_python_app_py_synthesizes_the_default_environment(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environ["CDK_OUTDIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "app.py"], cwd=REPO, env=environ,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    default = cdk_app.file_context()["default_environment"]
    assert (tmp_path / f"SesRelay-{default}.template.json").is_file()


def test_cdk_nag_reports_no_unacknowledged_findings(deployments: dict[str, Deployment]) -> None:
    for name, deployment in deployments.items():
        report = deployment.checks.validate_scope(deployment.app)
        findings = [f"{v.rule_name} ({v.severity}): {v.description}" for v in report.violations]
        assert findings == [], name


def _acknowledgments(deployment: Deployment) -> dict[str, str]:
    """Acknowledged rules and their reasons, as the cloud assembly records them."""
    directory = Path(deployment.assembly.directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    artifact = manifest["artifacts"][f"SesRelay-{deployment.name}"]
    metadata = json.loads((directory / artifact["additionalMetadataFile"]).read_text())
    return {f"{path} {rule}": reason
            for path, entries in metadata.items() for entry in entries
            if entry["type"] == ACKNOWLEDGED for rule, reason in entry["data"].items()}


# Every cdk-nag finding acknowledged in the app; a new one is a reviewed change.
EXPECTED_ACKNOWLEDGMENTS = {
    "AwsSolutions-S1",  # the access-log bucket itself
    "AwsSolutions-ELB2",  # NLB access logs exist only for TLS listeners
    "AwsSolutions-ECS2",  # non-secret configuration as environment variables
    "AwsSolutions-L1",  # runtime pinned: the asset's dependencies are built for it
    "AwsSolutions-IAM5[Resource::*]",  # ecr:GetAuthorizationToken
    "AwsSolutions-IAM5[Resource::<SpoolBucket>/spool/*]",  # one key per message
}
# With SMTP AUTH: the user table's secret has nothing for Secrets Manager to rotate.


def test_every_acknowledgment_carries_a_reason(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        acknowledgments = _acknowledgments(deployment)
        for where, reason in acknowledgments.items():
            # A reason is a sentence that says why, not a placeholder.
            assert len(reason.split()) >= 8, where
        expected = EXPECTED_ACKNOWLEDGMENTS | (
            {"AwsSolutions-SMG4"} if deployment.settings.auth_enabled else set())
        nag_rules = {re.sub(r"<SpoolBucket\w+\.Arn>", "<SpoolBucket>",
                            where.split("Annotation::", 1)[1])
                     for where in acknowledgments if "AwsSolutions-" in where}
        assert nag_rules == expected, deployment.name


def test_the_access_log_acknowledgment_says_what_protects_the_smtp_traffic(
        deployments: dict[str, Deployment]) -> None:
    """The NLB passes TCP through; the reason must not promise TLS the relay does not
    speak (prod has none) and must name the TLS it does speak."""
    for name, deployment in deployments.items():
        [reason] = [reason for where, reason in _acknowledgments(deployment).items()
                    if where.endswith("AwsSolutions-ELB2")]
        config = deployment.settings.config
        assert ("STARTTLS" in reason) == (config.tls_level != "none"), name
        assert ("implicit TLS on port 465" in reason) == (465 in deployment.settings.smtp_ports)
        assert ("plain SMTP" in reason and "unencrypted" in reason) == (
            not deployment.settings.tls_enabled), name


def test_cfn_lint_finds_no_errors(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        template = (Path(deployment.assembly.directory)
                    / f"SesRelay-{deployment.name}.template.json")
        matches = lint_file(template, config=ManualArgs(regions=["us-east-1", "eu-west-1"]))
        errors = [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("E")]
        assert errors == [], deployment.name


def _ingress_sources(template: dict[str, Any]) -> list[str]:
    sources = []
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        rules = []
        if resource["Type"] == "AWS::EC2::SecurityGroup":
            rules = props.get("SecurityGroupIngress", [])
        elif resource["Type"] == "AWS::EC2::SecurityGroupIngress":
            rules = [props]
        sources += [rule.get("CidrIp") or rule.get("CidrIpv6") or "security group"
                    for rule in rules]
    return sources


def test_no_security_group_admits_the_whole_internet(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        sources = _ingress_sources(deployment.template)
        assert sources
        assert "0.0.0.0/0" not in sources and "::/0" not in sources


def _context_with(environment: str, change: dict[str, Any]) -> dict[str, Any]:
    context = cdk_app.file_context()
    environments = copy.deepcopy(context["environments"])
    environments[environment]["relay"].update(change)
    return {"environments": environments, "env": environment}


def test_bad_relay_parameter_fails_synth_with_the_models_message(offline: None) -> None:
    with pytest.raises(ConfigError) as error:
        cdk_app.create_app(_context_with("dev", {"message_size_limit": "ten megabytes"}))
    assert str(error.value) == ("cdk.json environments.dev.relay message_size_limit: "
                                "expected a whole number, got 'ten megabytes'")


def test_unknown_relay_parameter_fails_synth(offline: None) -> None:
    with pytest.raises(ConfigError, match=r"cdk\.json environments\.prod\.relay "
                                          r"mynetwork.*unknown parameter 'mynetwork'"):
        cdk_app.create_app(_context_with("prod", {"mynetwork": "10.0.0.0/8"}))


def test_open_mynetworks_fails_synth(offline: None) -> None:
    with pytest.raises(SettingsError, match=r"0\.0\.0\.0/0 would admit the whole Internet"):
        cdk_app.create_app(_context_with("dev", {"mynetworks": ["0.0.0.0/0"]}))


def test_auth_networks_need_auth_and_may_not_be_the_internet(offline: None) -> None:
    with pytest.raises(ConfigError, match=r"environments\.prod\.relay "
                                          r"sesrelay_auth_networks: .*needs "
                                          r"smtpd_sasl_auth_enable = yes"):
        cdk_app.create_app(_context_with("prod", {"sesrelay_auth_networks": ["10.9.0.0/16"]}))
    with pytest.raises(SettingsError, match=r"dev\.relay\.sesrelay_auth_networks: 0\.0\.0\.0/0 "
                                            "would admit the whole Internet"):
        cdk_app.create_app(_context_with("dev", {"sesrelay_auth_networks": ["0.0.0.0/0"]}))


def test_parameters_the_deployment_sets_are_refused(offline: None) -> None:
    with pytest.raises(SettingsError, match="sesrelay_spool_bucket cannot be set here"):
        cdk_app.create_app(_context_with("dev", {"sesrelay_spool_bucket": "my-bucket"}))


@pytest.mark.parametrize(("change", "message"), [
    ({"smtpd_tls_cert_file": "/etc/ssl/relay.pem"}, "smtpd_tls_cert_file cannot be set here"),
    ({"sesrelay_sasl_users": "users.json"}, "sesrelay_sasl_users cannot be set here"),
    ({"smtpd_tls_wrappermode": True}, "smtpd_tls_wrappermode cannot be set here"),
])
def test_tls_files_user_table_and_listeners_are_the_deployments(
        offline: None, change: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        cdk_app.create_app(_context_with("prod", change))


def test_submission_port_needs_starttls_and_tls_settings_need_tls(offline: None) -> None:
    context = _context_with("prod", {})
    context["environments"]["prod"]["smtp_ports"] = [25, 587]
    with pytest.raises(SettingsError, match=r"prod\.smtp_ports: 587 is submission with "
                                            "STARTTLS"):
        cdk_app.create_app(context)
    for ports in ([25, 2525], [587], [25, 25]):
        context["environments"]["prod"]["smtp_ports"] = ports
        with pytest.raises(SettingsError, match=r"smtp_ports: expected a list of distinct "
                                                r"ports from 25, 587, 465, 25 among them"):
            cdk_app.create_app(context)
    context["environments"]["prod"]["smtp_ports"] = [25]
    context["environments"]["prod"]["tls"] = {"certificate_secret": "x"}
    with pytest.raises(SettingsError, match=r"prod\.tls: the relay does not speak TLS"):
        cdk_app.create_app(context)


def test_unknown_environment_names_the_defined_ones(offline: None) -> None:
    with pytest.raises(SettingsError, match=r"no environment 'staging'.*dev, prod"):
        cdk_app.create_app({"env": "staging"})


def test_a_worker_timeout_too_short_for_the_largest_message_fails_synth(offline: None) -> None:
    """The worker never starts a send that Lambda's timeout could cut off, so a timeout
    shorter than the slowest send of message_size_limit could never send such mail."""
    context = _context_with("dev", {"message_size_limit": 40 * 1024 * 1024})
    context["environments"]["dev"]["worker"] = {"timeout_seconds": 40}
    with pytest.raises(SettingsError, match=r"environments\.dev\.worker\.timeout_seconds: 40 s "
                                            r"is too short.*message_size_limit"):
        cdk_app.create_app(context)


def test_a_worker_timeout_that_cannot_wait_for_a_full_call_at_its_rate_fails_synth(
        offline: None) -> None:
    """At 1 recipient/s shared by two concurrent workers, a 50-recipient SendEmail waits
    100 s for its turn: a 60 s function could never start it."""
    context = _context_with("dev", {"ses_max_send_rate": 1})
    context["environments"]["dev"]["worker"] = {"timeout_seconds": 60, "max_concurrency": 2}
    with pytest.raises(SettingsError, match=r"environments\.dev\.worker\.timeout_seconds: "
                                            r"60 s is too short.*100 s for its turn.*"
                                            r"1/s over 2 concurrent workers"):
        cdk_app.create_app(context)
