"""The trail table, the SES events pipeline, the roles around them and the outputs the CLI
reads, checked on the synthesized templates."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

import app as cdk_app
from sesrelay import deployment as stack
from sesrelay import trail
from sesrelay.config import env_name
from sesrelay.telemetry import SERVICE_ENV, SERVICE_EVENTS
from stacks.environment import SettingsError
from tests.cdk.synth import Deployment

EVENTS_HANDLER = "ses_events.handler.handler"


def _getatt_arn(deployment: Deployment, kind: str, prefix: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [deployment.logical_id(kind, prefix), "Arn"]}


def _trail_arn(deployment: Deployment) -> dict[str, Any]:
    return _getatt_arn(deployment, "AWS::DynamoDB::GlobalTable", "TrailTable")


def _statements(deployment: Deployment, role_prefix: str) -> list[dict[str, Any]]:
    role = deployment.logical_id("AWS::IAM::Role", role_prefix)
    return [statement for policy in deployment.resources("AWS::IAM::Policy").values()
            if {"Ref": role} in policy["Properties"]["Roles"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]]


def _actions(statement: dict[str, Any]) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def _touching(statements: list[dict[str, Any]], logical_id: str) -> list[dict[str, Any]]:
    return [s for s in statements if logical_id in json.dumps(s["Resource"])]


# The trail table ------------------------------------------------------------------------

def test_trail_table_has_the_layout_sesrelay_trail_declares(
        deployments: dict[str, Deployment]) -> None:
    definition = trail.table_definition()
    for deployment in deployments.values():
        logical_id = deployment.logical_id("AWS::DynamoDB::GlobalTable", "TrailTable")
        resource = deployment.template["Resources"][logical_id]
        table = resource["Properties"]
        assert table["KeySchema"] == definition["KeySchema"]
        assert sorted(table["AttributeDefinitions"], key=str) == sorted(
            definition["AttributeDefinitions"], key=str)
        assert sorted(table["GlobalSecondaryIndexes"], key=lambda i: i["IndexName"]) == sorted(
            definition["GlobalSecondaryIndexes"], key=lambda i: i["IndexName"])
        assert table["BillingMode"] == "PAY_PER_REQUEST"
        assert table["TimeToLiveSpecification"] == {"AttributeName": trail.TTL_ATTRIBUTE,
                                                    "Enabled": True}
        assert table["Replicas"][0]["PointInTimeRecoverySpecification"] == {
            "PointInTimeRecoveryEnabled": True}
        # The record of what happened to mail outlives the stack.
        assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"


def test_worker_reads_and_writes_the_trail_and_nothing_more(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        environment = deployment.one("AWS::Lambda::Function", "Worker")["Environment"][
            "Variables"]
        table = deployment.logical_id("AWS::DynamoDB::GlobalTable", "TrailTable")
        assert environment[env_name("sesrelay_trail_table")] == {"Ref": table}
        statements = _touching(_statements(deployment, "WorkerRole"), table)
        [on_table] = [s for s in statements if s["Resource"] == _trail_arn(deployment)]
        assert _actions(on_table) == {"dynamodb:GetItem", "dynamodb:PutItem",
                                      "dynamodb:UpdateItem", "dynamodb:BatchWriteItem",
                                      "dynamodb:Query"}
        [on_indexes] = [s for s in statements if s is not on_table]
        assert _actions(on_indexes) == {"dynamodb:Query"}
        # Each index named: no index/* wildcard.
        indexes = {json.dumps(r) for r in on_indexes["Resource"]}
        assert len(indexes) == 3
        for index in trail.table_definition()["GlobalSecondaryIndexes"]:
            assert any(f"/index/{index['IndexName']}" in r for r in indexes)


def test_relay_container_knows_the_idempotency_and_trail_tables(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        [container] = deployment.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
        environment = {e["Name"]: e["Value"] for e in container["Environment"]}
        assert environment[env_name("sesrelay_idempotency_table")] == {
            "Ref": deployment.logical_id("AWS::DynamoDB::GlobalTable", "WorkerIdempotency")}
        assert environment[env_name("sesrelay_trail_table")] == {
            "Ref": deployment.logical_id("AWS::DynamoDB::GlobalTable", "TrailTable")}
        # The relay's hot path writes nothing to the trail.
        table = deployment.logical_id("AWS::DynamoDB::GlobalTable", "TrailTable")
        assert _touching(_statements(deployment, "RelayTaskTaskRole"), table) == []


# The SES events pipeline ---------------------------------------------------------------

def test_configuration_set_publishes_the_six_event_types_to_the_topic(
        prod: Deployment) -> None:
    name = prod.settings.config.ses_configuration_set
    assert prod.one("AWS::SES::ConfigurationSet")["Name"] == name
    destination = prod.one("AWS::SES::ConfigurationSetEventDestination")
    assert destination["ConfigurationSetName"] == {
        "Ref": prod.logical_id("AWS::SES::ConfigurationSet", "SesEvents")}
    events = destination["EventDestination"]
    assert events["Enabled"] is True
    assert sorted(events["MatchingEventTypes"]) == sorted(
        ["send", "delivery", "bounce", "complaint", "reject", "deliveryDelay"])
    assert events["SnsDestination"] == {
        "TopicARN": {"Ref": prod.logical_id("AWS::SNS::Topic", "SesEvents")}}


def test_events_topic_is_ssl_only_and_encrypted_with_a_key_ses_may_use(
        prod: Deployment) -> None:
    topic_id = prod.logical_id("AWS::SNS::Topic", "SesEvents")
    topic = prod.one("AWS::SNS::Topic", "SesEvents")
    # A customer managed key of this stack, not the AWS managed alias/aws/sns.
    key_id = prod.logical_id("AWS::KMS::Key", "SesEventsTopicKey")
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    key = prod.one("AWS::KMS::Key", "SesEventsTopicKey")
    assert key["EnableKeyRotation"] is True
    [ses_use] = [s for s in key["KeyPolicy"]["Statement"]
                 if s.get("Principal") == {"Service": "ses.amazonaws.com"}]
    assert _actions(ses_use) == {"kms:GenerateDataKey*", "kms:Decrypt"}
    context = ses_use["Condition"]["StringEquals"]["kms:EncryptionContext:aws:sns:topicArn"]
    assert topic["TopicName"] in json.dumps(context)

    [policy] = [p["Properties"]["PolicyDocument"]["Statement"]
                for p in prod.resources("AWS::SNS::TopicPolicy").values()
                if {"Ref": topic_id} in p["Properties"]["Topics"]]
    [deny] = [s for s in policy if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    [allow] = [s for s in policy if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "ses.amazonaws.com"}
    assert _actions(allow) == {"sns:Publish"}
    assert ":configuration-set/" in json.dumps(allow["Condition"]["StringEquals"][
        "AWS:SourceArn"])


def test_events_queue_has_a_dlq_and_feeds_the_events_lambda(prod: Deployment) -> None:
    template = Template.from_json(prod.template)
    queue_id = prod.logical_id("AWS::SQS::Queue", "SesEventsQueue")
    queue = prod.one("AWS::SQS::Queue", "SesEventsQueue")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == _getatt_arn(
        prod, "AWS::SQS::Queue", "SesEventsDeadLetterQueue")
    # Each record is the SNS notification, whose Message is SES's event record.
    subscription = prod.one("AWS::SNS::Subscription", "SesEvents")
    assert subscription["Protocol"] == "sqs" and "RawMessageDelivery" not in subscription
    assert subscription["Endpoint"] == {"Fn::GetAtt": [queue_id, "Arn"]}

    function_id = prod.logical_id("AWS::Lambda::Function", "SesEvents")
    function = prod.one("AWS::Lambda::Function", "SesEvents")
    assert function["Handler"] == EVENTS_HANDLER
    worker = prod.one("AWS::Lambda::Function", "Worker")
    for same in ("Runtime", "Architectures"):
        assert function[same] == worker[same], same
    assert "Layers" not in function
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
    environment = function["Environment"]["Variables"]
    assert environment[env_name("sesrelay_trail_table")] == {
        "Ref": prod.logical_id("AWS::DynamoDB::GlobalTable", "TrailTable")}
    assert environment[SERVICE_ENV] == SERVICE_EVENTS
    template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "FunctionName": {"Ref": function_id}, "BatchSize": 10,
        "EventSourceArn": {"Fn::GetAtt": [queue_id, "Arn"]},
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": Match.any_value()}})
    log_group = prod.template["Resources"][function["LoggingConfig"]["LogGroup"]["Ref"]]
    assert log_group["Properties"]["RetentionInDays"] == prod.settings.log_retention_days


def test_events_role_may_only_store_events_and_read_its_queue(prod: Deployment) -> None:
    statements = _statements(prod, "SesEventsRole")
    by_actions = {frozenset(_actions(s)): s["Resource"] for s in statements}
    assert by_actions == {
        frozenset({"logs:CreateLogStream", "logs:PutLogEvents"}):
            _getatt_arn(prod, "AWS::Logs::LogGroup", "SesEventsLogs"),
        frozenset({"dynamodb:PutItem"}): _trail_arn(prod),
        frozenset({"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                   "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}):
            _getatt_arn(prod, "AWS::SQS::Queue", "SesEventsQueue"),
    }


def test_events_code_asset_holds_the_handler_and_core_packages(prod: Deployment) -> None:
    function = prod.one("AWS::Lambda::Function", "SesEvents")
    asset = function["Code"]["S3Key"].removesuffix(".zip")
    directory = Path(prod.assembly.directory) / f"asset.{asset}"
    names = {p.name for p in directory.iterdir()}
    # With the pinned dependencies, which tests/cdk/test_lambda_asset.py checks.
    assert {"ses_events", "sesrelay", "aws_lambda_powertools", "boto3"} <= names
    assert "ses_worker" not in names
    assert (directory / "ses_events" / "handler.py").is_file()
    assert (directory / "sesrelay" / "trail.py").is_file()
    assert not list(directory.rglob("__pycache__"))


def test_existing_configuration_set_gets_only_the_event_destination(
        imported: Deployment) -> None:
    Template.from_json(imported.template).resource_count_is("AWS::SES::ConfigurationSet", 0)
    destination = imported.one("AWS::SES::ConfigurationSetEventDestination")
    assert destination["ConfigurationSetName"] == \
        imported.settings.config.ses_configuration_set


def test_without_a_configuration_set_there_is_no_events_pipeline(dev: Deployment) -> None:
    assert not dev.has_events
    template = Template.from_json(dev.template)
    template.resource_count_is("AWS::SES::ConfigurationSet", 0)
    template.resource_count_is("AWS::SES::ConfigurationSetEventDestination", 0)
    assert list(dev.resources("AWS::KMS::Key")) == [
        dev.logical_id("AWS::KMS::Key", "MonitoringAlarmTopicKey")]
    # The other functions in dev generate its TLS certificate (test_tls_and_auth.py) and
    # strip the created VPC's default security group (the CDK's restrictDefaultSecurityGroup).
    assert sorted(r["Properties"]["Handler"] for r in
                  dev.resources("AWS::Lambda::Function").values()) == [
        "__entrypoint__.handler", "ses_worker.handler.handler",
        "tls_certificate.handler.handler"]


# Outputs for the CLI --------------------------------------------------------------------

def test_outputs_name_every_resource_the_cli_needs(deployments: dict[str, Deployment]) -> None:
    expected = {  # output: (resource type, logical ID prefix); each value is a Ref
        stack.OUTPUT_QUEUE_URL: ("AWS::SQS::Queue", "SpoolQueue"),
        stack.OUTPUT_DLQ_URL: ("AWS::SQS::Queue", "SpoolDeadLetterQueue"),
        stack.OUTPUT_BUCKET: ("AWS::S3::Bucket", "SpoolBucket"),
        stack.OUTPUT_IDEMPOTENCY_TABLE: ("AWS::DynamoDB::GlobalTable", "WorkerIdempotency"),
        stack.OUTPUT_TRAIL_TABLE: ("AWS::DynamoDB::GlobalTable", "TrailTable"),
        stack.OUTPUT_RELAY_LOG_GROUP: ("AWS::Logs::LogGroup", "RelayLogs"),
        stack.OUTPUT_WORKER_LOG_GROUP: ("AWS::Logs::LogGroup", "WorkerLogs"),
    }
    events = {
        stack.OUTPUT_EVENTS_QUEUE_URL: ("AWS::SQS::Queue", "SesEventsQueue"),
        stack.OUTPUT_EVENTS_DLQ_URL: ("AWS::SQS::Queue",
                                                     "SesEventsDeadLetterQueue"),
        stack.OUTPUT_EVENTS_LOG_GROUP: ("AWS::Logs::LogGroup", "SesEventsLogs"),
    }
    for deployment in deployments.values():
        outputs = deployment.template["Outputs"]
        wanted = expected | (events if deployment.has_events else {})
        for name, (kind, prefix) in wanted.items():
            assert outputs[name]["Value"] == {"Ref": deployment.logical_id(kind, prefix)}, name
        assert outputs[stack.OUTPUT_REGION]["Value"] == {"Ref": "AWS::Region"}
        if deployment.has_events:
            assert outputs[stack.OUTPUT_CONFIGURATION_SET]["Value"] == \
                deployment.settings.config.ses_configuration_set
        else:
            assert not set(events) & set(outputs)
        # Plain outputs: no exports, so environments never clash and no stack depends
        # on another.
        assert not any("Export" in output for output in outputs.values())


# Settings --------------------------------------------------------------------------------

def _context(environment: str, change: dict[str, Any], relay: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    context = cdk_app.file_context()
    environments = copy.deepcopy(context["environments"])
    environments[environment].update(change)
    environments[environment]["relay"].update(relay or {})
    return {"environments": environments, "env": environment}


@pytest.mark.parametrize(("environment", "change", "message"), [
    ("dev", {"events": {"configuration_set_exists": True}},
     r"environments\.dev\.events: .*set relay\.ses_configuration_set"),
    ("prod", {"events": {"configuration_set_exists": "yes"}},
     r"environments\.prod\.events\.configuration_set_exists: expected bool"),
    ("prod", {"events": {"configuration_set": "other"}},
     r"environments\.prod\.events: unknown setting\(s\) configuration_set"),
])
def test_bad_events_settings_fail_synth(offline: None, environment: str,
                                        change: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        cdk_app.create_app(_context(environment, change))


def test_trail_table_name_is_set_by_the_deployment(offline: None) -> None:
    with pytest.raises(SettingsError, match="sesrelay_trail_table cannot be set here"):
        cdk_app.create_app(_context("dev", {}, {"sesrelay_trail_table": "my-table"}))
