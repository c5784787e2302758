"""The cost model (sesrelay.cost) on the synthesized templates of each egress variant, and
`sesrelay cost`'s report of them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from sesrelay import cost
from sesrelay.cli import main
from stacks.environment import CreatedVpc
from stacks.interface_endpoints import relay_endpoint_services
from tests.cdk.synth import Deployment

PRICES = cost.load_prices()
MONTH = cost.HOURS_PER_MONTH


def _line(estimate: cost.Estimate, start: str) -> cost.Line:
    [line] = [line for line in estimate.fixed + estimate.variable
              if line.item.startswith(start)]
    return line


def _template_file(deployment: Deployment) -> Path:
    return Path(deployment.assembly.directory) / f"SesRelay-{deployment.name}.template.json"


def test_endpoints_cost_their_hourly_price_per_service_and_az(endpoints: Deployment) -> None:
    vpc = endpoints.settings.vpc
    assert isinstance(vpc, CreatedVpc)
    services = relay_endpoint_services(reads_secrets=True)
    estimate = cost.estimate(endpoints.template)
    line = _line(estimate, "interface endpoints")
    assert line.usd == pytest.approx(
        PRICES["interface_endpoint_az_hour"].usd * len(services) * vpc.max_azs * MONTH)
    assert line.usd == pytest.approx(73.00)  # five APIs in two AZs: the arithmetic
    for nothing in ("NAT gateways", "public IPv4"):
        assert _line(estimate, nothing).usd == 0
    assert _line(estimate, "interface endpoint data processing").usd > 0


def test_public_egress_costs_less_than_nat_by_the_gateways(prod: Deployment,
                                                           public: Deployment) -> None:
    nat, public_estimate = cost.estimate(prod.template), cost.estimate(public.template)
    gateways = 2  # prod's two NAT gateways, each with an Elastic IP
    hour = PRICES["nat_gateway_hour"].usd + PRICES["public_ipv4_hour"].usd
    tasks = prod.settings.service.min_tasks  # a public address each instead
    assert nat.fixed_total - public_estimate.fixed_total == pytest.approx(
        (gateways * hour - tasks * PRICES["public_ipv4_hour"].usd) * MONTH)
    assert _line(nat, "NAT gateways").usd == pytest.approx(65.70)
    # Nor does a public task pay per GB for its calls to SQS and CloudWatch Logs.
    assert nat.variable_total > public_estimate.variable_total
    assert not [line for line in public_estimate.variable if "NAT" in line.item]


def test_an_imported_vpc_adds_no_egress_cost(imported: Deployment) -> None:
    estimate = cost.estimate(imported.template)
    for item in ("NAT gateways", "public IPv4", "interface endpoints", "gateway endpoints"):
        assert _line(estimate, item).usd == 0, item


def test_a_template_change_changes_the_cost(prod: Deployment) -> None:
    template = copy.deepcopy(prod.template)
    [service] = [r for r in template["Resources"].values() if r["Type"] == "AWS::ECS::Service"]
    before = cost.estimate(template)
    service["Properties"]["DesiredCount"] += 1
    after = cost.estimate(template)
    task = prod.one("AWS::ECS::TaskDefinition")
    one_task = (int(task["Cpu"]) / 1024 * PRICES["fargate_arm64_vcpu_hour"].usd
                + int(task["Memory"]) / 1024 * PRICES["fargate_arm64_gb_hour"].usd) * MONTH
    assert after.fixed_total - before.fixed_total == pytest.approx(one_task)


def test_large_messages_pay_for_s3_and_more_sqs_chunks(public: Deployment) -> None:
    small = cost.estimate(public.template, message_bytes=20 * 1024)
    large = cost.estimate(public.template, message_bytes=1024 * 1024)
    assert small.inline and not large.inline
    assert _line(small, "S3 PUT").usd == 0
    assert _line(large, "S3 PUT").usd == pytest.approx(5.00)  # $0.005 per 1,000
    # A 150 KB message travels inline, in three 64 KB chunks per SQS request.
    medium = cost.estimate(public.template, message_bytes=150 * 1024)
    assert medium.inline
    assert _line(medium, "SQS spool").usd > _line(small, "SQS spool").usd


def test_the_cost_command_reports_fixed_variable_and_the_targets(
        prod: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "--template", str(_template_file(prod)), "-c", "env=prod",
                 "--messages-per-day", "10000"]) == 0
    out = capsys.readouterr().out
    estimate = cost.estimate(json.loads(_template_file(prod).read_text()),
                             messages_per_day=10000)
    rows = {line.split("  ")[1].strip(): line.split()[-1] for line in out.splitlines()
            if line.startswith("  ") and "target" not in line}
    assert rows["NAT gateways"] == "65.70"
    assert rows["total"] == f"{estimate.fixed_total:.2f}"
    assert rows["SES"] == "100.00"
    assert "target 40.00: missed; largest: NAT gateways 65.70, Fargate tasks" in out
    assert "target 6.00: missed" in out
    assert f"At 10,000 messages a day: {estimate.monthly_total:,.2f} USD a month" in out


def test_the_cost_command_needs_an_environment_or_a_template(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["cost"]) == 1
    assert "name the environment with -c env=NAME" in capsys.readouterr().err
    assert main(["cost", "-c", "prod"]) == 1
    assert "-c prod: expected KEY=VALUE" in capsys.readouterr().err
    # Synthesis runs the project's app.py: elsewhere it says where to run.
    assert main(["cost", "-c", "env=prod", "--app-dir", str(tmp_path)]) == 1
    assert "no app.py and cdk.json here" in capsys.readouterr().err
