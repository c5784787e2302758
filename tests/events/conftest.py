"""Fixtures for the SES events handler: a moto account with the trail table and the
events transport (SNS topic -> SQS queue), and helpers that publish AWS's documented
event records through it and hand what arrives to the handler, as Lambda would."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from ses_events.handler import handler, logger
from sesrelay import aws, trail
from sesrelay.dev import LocalLambdaContext, sqs_event

REGION = "us-east-1"
TRAIL_TABLE = "sesrelay-test-trail"
FIXTURES = Path(__file__).parent / "fixtures"


def documented(name: str, queue_id: str = "", attempt_id: str = "") -> dict[str, Any]:
    """One of AWS's documented event records (fixtures/README.md), with sesrelay's tags
    added to mail.tags when queue_id is given, as SES adds a send's tags to its events."""
    record = json.loads((FIXTURES / f"{name}.json").read_text())
    if queue_id:
        tags = record["mail"].setdefault("tags", {})
        tags[trail.QUEUE_ID_TAG] = [queue_id]
        tags[trail.ATTEMPT_TAG] = [attempt_id or f"{queue_id}-attempt"]
    return record


@dataclass
class EventsTransport:
    """The SES event destination's SNS topic, the subscribed queue, the trail table."""

    topic_arn: str
    queue_url: str
    queue_arn: str
    sns: Any
    sqs: Any
    dynamodb: Any

    def publish(self, *records: dict[str, Any]) -> None:
        """Publish SES event records to the topic, as SES does."""
        for record in records:
            self.sns.publish(TopicArn=self.topic_arn, Message=json.dumps(record))

    def receive(self) -> dict[str, Any]:
        """What is on the queue, as the Lambda event the SQS event source would build."""
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                            AttributeNames=["All"]).get("Messages", [])
        return sqs_event(messages, self.queue_arn)

    def invoke(self, event: dict[str, Any]) -> set[str]:
        """Run the handler; delete the records it did not report failed (as the event
        source does). Returns the messageIds reported as failures."""
        result = handler(event, LocalLambdaContext(function_name="sesrelay-test-events"))
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for record in event["Records"]:
            if record["messageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queue_url,
                                        ReceiptHandle=record["receiptHandle"])
        return failed

    def deliver(self, *records: dict[str, Any]) -> set[str]:
        """Publish records, then hand everything on the queue to the handler."""
        self.publish(*records)
        event = self.receive()
        assert len(event["Records"]) == len(records)
        return self.invoke(event)

    def reader(self) -> trail.TrailReader:
        """A reader of the trail table."""
        return trail.TrailReader(self.dynamodb, TRAIL_TABLE)

    def events(self, partition: str) -> list[dict[str, Any]]:
        """The EVENT items of a trail partition, oldest first."""
        return [i for i in self.reader().history(partition) if i["kind"] == trail.EVENT]


@pytest.fixture
def events_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The events Lambda's environment, and nothing from the developer's shell."""
    for name in list(os.environ):
        if name.startswith(("SESRELAY_", "AWS_ENDPOINT_URL", "AWS_PROFILE")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("SESRELAY_TRAIL_TABLE", TRAIL_TABLE)


@pytest.fixture
def transport(events_env: None) -> Iterator[EventsTransport]:
    """A mocked account: trail table, topic, and the queue subscribed to the topic
    (no raw message delivery, so each body is the SNS notification)."""
    with mock_aws():
        aws.reset_clients()
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(TableName=TRAIL_TABLE, **trail.table_definition())
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        topic_arn = sns.create_topic(Name="sesrelay-ses-events")["TopicArn"]
        queue_url = sqs.create_queue(QueueName="sesrelay-ses-events",
                                     Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
            "QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        yield EventsTransport(topic_arn, queue_url, queue_arn, sns, sqs, dynamodb)
        aws.reset_clients()


Logs = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def events_logs(caplog: pytest.LogCaptureFixture) -> Logs:
    """The handler's log lines as its JSON formatter writes them, parsed."""
    caplog.set_level(logging.INFO, logger=logger.name)
    caplog.handler.setFormatter(logger.registered_formatter)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in caplog.text.splitlines() if line.startswith("{")]
    return lines


def maillog_lines(logs: Logs) -> list[str]:
    """The maillog lines among the handler's logs (the text after ``smtp[pid]: ``)."""
    return [line["maillog"] for line in logs() if "maillog" in line]
