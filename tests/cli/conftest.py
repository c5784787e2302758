"""Fixtures for the operator commands: a moto account holding `sesrelay dev`'s resources
(queue and DLQ, idempotency table, trail table), and a worker stand-in that writes the
trail as the worker does (through TrailWriter) and moves SQS messages as it does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from sesrelay import dev, spool, trail
from sesrelay.cli import dlq, where
from sesrelay.trail import Attempt, SesEventRecord, TrailReader, TrailWriter
from tests.support import moto_account

REGION = "us-east-1"


def create_dev_resources(sqs: Any, dynamodb: Any) -> tuple[str, str]:
    """sesrelay dev's queue (with its DLQ) and tables, by dev's names: (queue, DLQ) URLs."""
    dlq_url = sqs.create_queue(QueueName=dev.DLQ)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(QueueName=dev.QUEUE, Attributes={
        "VisibilityTimeout": "60",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                     "maxReceiveCount": str(dev.MAX_RECEIVE_COUNT)})})[
        "QueueUrl"]
    dynamodb.create_table(
        TableName=dev.TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    dynamodb.create_table(TableName=dev.TRAIL_TABLE, **trail.table_definition())
    return queue_url, dlq_url


def envelope(queue_id: str, sender: str = "app@example.com",
             recipients: tuple[str, ...] = ("bob@example.org",), size: int = 2300,
             received_at: str | None = None) -> spool.Envelope:
    """An inline spool envelope, as the relay sends it."""
    return spool.Envelope(queue_id=queue_id, mail_from=sender, rcpt_to=recipients,
                          bucket="", key="", size=size, client_address="10.1.2.3",
                          client_helo="app.example.com",
                          received_at=received_at or trail.stamp(), body="SGk=")


@dataclass
class Account:
    """The moto account: clients, dev's resources, the trail, and a Location on them."""

    sqs: Any
    dynamodb: Any
    queue_url: str
    dlq_url: str
    location: where.Location
    writer: TrailWriter = field(init=False)
    reader: TrailReader = field(init=False)

    def __post_init__(self) -> None:
        self.writer = TrailWriter(self.dynamodb, dev.TRAIL_TABLE, retention=86400)
        self.reader = TrailReader(self.dynamodb, dev.TRAIL_TABLE)

    def visible(self, queue_url: str | None = None) -> list[dict[str, Any]]:
        """Receive every message visible now (hiding them for a minute)."""
        found = []
        while True:
            batch = self.sqs.receive_message(QueueUrl=queue_url or self.queue_url,
                                             MaxNumberOfMessages=10,
                                             VisibilityTimeout=60).get("Messages", [])
            if not batch:
                return found
            found += batch

    def count(self, queue_url: str) -> dict[str, int]:
        """SQS's message counts of a queue: visible and in flight."""
        attributes = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])[
            "Attributes"]
        return {"visible": int(attributes["ApproximateNumberOfMessages"]),
                "in_flight": int(attributes["ApproximateNumberOfMessagesNotVisible"])}


class WorkerLike:
    """Writes the trail the way the worker does, and moves the SQS message as it does:
    receive, send (attempt items), defer (ChangeMessageVisibility, receipt handle in the
    state item), finish (delete)."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.handles: dict[str, str] = {}

    def spool(self, queue_id: str, **fields: Any) -> spool.Envelope:
        """The relay's part: the envelope into the queue."""
        spooled = envelope(queue_id, **fields)
        self.account.sqs.send_message(QueueUrl=self.account.queue_url,
                                      MessageBody=spooled.to_json())
        return spooled

    def receive(self, queue_id: str, received_at: str | None = None,
                visibility: int = 60) -> dict[str, Any]:
        """Receive the message from the queue and record its arrival."""
        found: dict[str, Any] = {}
        for message in self.account.sqs.receive_message(
                QueueUrl=self.account.queue_url, MaxNumberOfMessages=10,
                VisibilityTimeout=visibility).get("Messages", []):
            spooled = spool.Envelope.from_json(message["Body"])
            self.handles[spooled.queue_id] = message["ReceiptHandle"]
            self.account.writer.received(
                queue_id=spooled.queue_id, sender=spooled.mail_from,
                recipients=spooled.rcpt_to, size=spooled.size,
                received_at=received_at or spooled.received_at,
                client_address=spooled.client_address, client_helo=spooled.client_helo,
                sqs_message_id=message["MessageId"])
            if spooled.queue_id == queue_id:
                found = message
        assert found, f"{queue_id} was not received"
        self.account.writer.update_state(
            queue_id, receipt_handle=self.handles[queue_id], queue_url=self.account.queue_url)
        return found

    def arrive(self, queue_id: str, received_at: str | None = None, **fields: Any) -> None:
        """spool() then receive()."""
        self.spool(queue_id, received_at=received_at, **fields)
        self.receive(queue_id)

    def attempt(self, queue_id: str, recipients: tuple[str, ...], outcome: str = trail.SENT,
                purpose: str = trail.PURPOSE_MESSAGE, **fields: Any) -> Attempt:
        """One SendEmail and its outcome."""
        made = Attempt(attempt_id=trail.new_attempt_id(), purpose=purpose,
                       recipients=recipients, outcome=outcome, started=trail.stamp(),
                       seconds=0.21, **fields)
        self.account.writer.attempt(queue_id, made)
        return made

    def defer(self, queue_id: str, reason: str, delay: int = 300, attempts: int = 1) -> None:
        """Hide the message until its next try and record the deferral."""
        handle = self.handles[queue_id]
        self.account.sqs.change_message_visibility(
            QueueUrl=self.account.queue_url, ReceiptHandle=handle, VisibilityTimeout=delay)
        next_try = trail.stamp(datetime.now(UTC) + timedelta(seconds=delay))
        self.account.writer.note(queue_id, trail.DEFERRED, reason=reason, next_try=next_try)
        self.account.writer.update_state(
            queue_id, status=trail.WAITING, last_reason=reason, next_try=next_try,
            attempts=attempts, receipt_handle=handle, queue_url=self.account.queue_url)

    def event(self, queue_id: str, made: Attempt, event_type: str,
              recipients: tuple[dict[str, str], ...] = (), **fields: Any) -> None:
        """An SES event about one send, as the events handler records it."""
        self.account.writer.event(SesEventRecord(
            event_type=event_type, ses_message_id=made.ses_message_id,
            timestamp=trail.stamp(), queue_id=queue_id, attempt_id=made.attempt_id,
            recipients=recipients, **fields))

    def finish(self, queue_id: str, status: str = trail.STATE_SENT) -> None:
        """Delete the message from the queue and close its trail."""
        self.account.sqs.delete_message(QueueUrl=self.account.queue_url,
                                        ReceiptHandle=self.handles[queue_id])
        self.account.writer.note(queue_id, trail.FINISHED, status=status)
        self.account.writer.update_state(queue_id, finished=True, status=status, pending=[])


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[Account]:
    """A moto account with dev's resources; every command's `where.resolve` finds it."""
    with moto_account(monkeypatch, REGION):
        session = boto3.session.Session(region_name=REGION)
        sqs, dynamodb = session.client("sqs"), session.client("dynamodb")
        queue_url, dlq_url = create_dev_resources(sqs, dynamodb)
        location = where.Location(label="the test account", deployed=False, session=session,
                                  region=REGION)
        monkeypatch.setattr(where, "resolve", lambda args: location)
        # moto answers every short poll with all there is (SQS samples its servers), so the
        # final long poll that makes sure of an empty queue only costs time here; the
        # console tests keep it.
        monkeypatch.setattr(dlq, "LAST_WAIT_SECONDS", 0)
        yield Account(sqs, dynamodb, queue_url, dlq_url, location)


@pytest.fixture
def worker(account: Account) -> WorkerLike:
    """The worker stand-in on the account."""
    return WorkerLike(account)


@pytest.fixture
def utc_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC (mailq shows local times, as Postfix's does)."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
