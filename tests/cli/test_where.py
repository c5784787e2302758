"""`--env NAME`: the environment's resources from its CloudFormation stack's outputs, and
errors that name the missing stack or output; without it, `sesrelay dev`'s names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from sesrelay import deployment, dev
from sesrelay.cli import main, where
from tests.support import moto_account

REGION = "eu-west-1"


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with moto_account(monkeypatch, REGION):
        yield boto3.client("cloudformation", region_name=REGION)


def stack(cloudformation: Any, environment: str, outputs: dict[str, Any]) -> None:
    """A stack with a queue and the given outputs (values may refer to the queue)."""
    template = {"Resources": {"Spool": {"Type": "AWS::SQS::Queue"},
                              "Dead": {"Type": "AWS::SQS::Queue"}},
                "Outputs": {name: {"Value": value} for name, value in outputs.items()}}
    cloudformation.create_stack(StackName=deployment.stack_name(environment),
                                TemplateBody=json.dumps(template))


def test_outputs_name_the_resources(cloud: Any) -> None:
    stack(cloud, "prod", {
        deployment.OUTPUT_QUEUE_URL: {"Ref": "Spool"},
        deployment.OUTPUT_DLQ_URL: {"Ref": "Dead"},
        deployment.OUTPUT_TRAIL_TABLE: "sesrelay-prod-trail",
        deployment.OUTPUT_IDEMPOTENCY_TABLE: "sesrelay-prod-idempotency",
        deployment.OUTPUT_REGION: REGION,
    })
    location = where.deployed_location("prod")
    assert location.deployed and location.region == REGION and location.endpoint is None
    assert location.queue_url.startswith(f"https://sqs.{REGION}.amazonaws.com/")
    assert "sesrelay-prod-Spool" in location.queue_url
    assert "sesrelay-prod-Dead" in location.dlq_url
    assert location.trail_table == "sesrelay-prod-trail"
    assert location.idempotency_table == "sesrelay-prod-idempotency"
    assert location.label == (f"environment prod (stack sesrelay-prod in {REGION}, "
                              "CREATE_COMPLETE)")
    # Who deletes: the AWS caller identity.
    assert location.operator().startswith("arn:aws:")


def test_a_missing_output_is_named(cloud: Any, capsys: pytest.CaptureFixture[str]) -> None:
    stack(cloud, "old", {deployment.OUTPUT_QUEUE_URL: {"Ref": "Spool"}})
    location = where.deployed_location("old")
    with pytest.raises(where.WhereError, match=f"has no output {deployment.OUTPUT_TRAIL_TABLE}"):
        _ = location.trail_table
    assert main(["mailq", "--env", "old"]) == 1
    assert capsys.readouterr().err.startswith(
        f"sesrelay mailq: environment old (stack sesrelay-old in {REGION}, CREATE_COMPLETE) "
        f"has no output {deployment.OUTPUT_TRAIL_TABLE}: ")


def test_a_missing_stack_is_named(cloud: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "--env", "staging", "Q1"]) == 1
    assert capsys.readouterr().err == (
        f"sesrelay trace: environment staging: no stack sesrelay-staging in {REGION}; deploy "
        "it with `npx aws-cdk@2 deploy -c env=staging`, or pick the account and region where "
        "it is (AWS_PROFILE, AWS_REGION)\n")


def test_without_env_it_is_sesrelay_dev() -> None:
    location = where.dev_location("http://127.0.0.1:4599")
    assert not location.deployed and location.endpoint == "http://127.0.0.1:4599"
    assert (location.trail_table, location.idempotency_table) == (dev.TRAIL_TABLE, dev.TABLE)
    assert location.client("sqs").meta.endpoint_url == "http://127.0.0.1:4599"
    assert where.endpoint_port("http://127.0.0.1:4599") == 4599
