"""Fixtures for the SES worker: a moto account with the spool bucket, queue, idempotency
table and verified SES identities, and helpers that spool messages the way the relay
does and hand them to the handler in the real SQS event shape."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import RawMessage, ses_backends
from moto.sqs.models import sqs_backends

from ses_worker import requeue, warm
from ses_worker.backoff import MAX_DELAY
from ses_worker.handler import handler
from ses_worker.observability import logger, metrics
from sesrelay import aws, trail
from sesrelay.dev import LocalLambdaContext as LambdaContext
from sesrelay.spool import Envelope, new_queue_id, object_key, spool_envelope, utc_now
from sesrelay.timeouts import WORKER_SES

REGION = "us-east-1"
BUCKET = "sesrelay-spool"
QUEUE = "sesrelay-spool"
TABLE = "sesrelay-idempotency"
TRAIL_TABLE = "sesrelay-trail"
SENDER_DOMAIN = "example.com"
RELAY_HOST = "relay.example.net"
BOUNCE_SENDER = f"MAILER-DAEMON@{RELAY_HOST}"


def message(subject: str = "hello", extra_headers: str = "",
            body: str = "Hello there.\r\n") -> bytes:
    """A raw message as the relay spools it: Received: header first, CRLF line ends."""
    return (f"Received: from client.example.com ([192.0.2.10])\r\n"
            f"\tby {RELAY_HOST} (sesrelay) with ESMTP id TEST\r\n"
            f"From: Sender <sender@{SENDER_DOMAIN}>\r\n"
            f"Subject: {subject}\r\n"
            f"{extra_headers}"
            "Message-ID: <test@example.com>\r\n"
            "\r\n"
            f"{body}").encode()


@dataclass
class Spool:
    """The relay's side of the spool, and the Lambda event source mapping's."""

    queue_url: str
    queue_arn: str
    s3: Any
    sqs: Any
    outputs: list[dict[str, Any]] = field(default_factory=list)
    # How far the worker's clock for deferred copies (ses_worker.requeue) is ahead.
    later: timedelta = timedelta(0)

    def put(self, raw: bytes, rcpt_to: list[str], mail_from: str = f"sender@{SENDER_DOMAIN}",
            received: datetime | None = None, in_s3: bool = False,
            **dsn: object) -> Envelope:
        """Spool a message as the relay does: inside the SQS envelope, or (in_s3, as for
        a large message) an S3 object first; dsn holds the envelope's DSN fields (ret,
        envid, notify, orcpt)."""
        received = received or utc_now()
        queue_id = new_queue_id()
        key = object_key(queue_id, received)
        fields = {"queue_id": queue_id, "mail_from": mail_from, "rcpt_to": tuple(rcpt_to),
                  "size": len(raw), "client_address": "192.0.2.10",
                  "client_helo": "client.example.com", "received_at": received.isoformat(),
                  **dsn}
        if in_s3:
            self.s3.put_object(Bucket=BUCKET, Key=key, Body=raw)
            envelope = Envelope(**fields, bucket=BUCKET, key=key)  # type: ignore[arg-type]
            body = envelope.to_json()
        else:
            envelope, body = spool_envelope(fields, raw, BUCKET, key)
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
        return envelope

    def receive(self, batch_size: int = 10) -> dict[str, Any]:
        """Receive up to batch_size messages into an SQS event, exactly as Lambda shapes
        it."""
        response = self.sqs.receive_message(QueueUrl=self.queue_url,
                                            MaxNumberOfMessages=batch_size,
                                            AttributeNames=["All"])
        return {"Records": [{
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m["Attributes"],
            "messageAttributes": {},
            "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": REGION,
        } for m in response.get("Messages", [])]}

    def invoke(self, event: dict[str, Any]) -> set[str]:
        """Run the handler as the event source mapping does: records not reported as
        failures are deleted. Returns the messageIds reported as failures."""
        return self.settle(event, handler(event, LambdaContext()))

    def settle(self, event: dict[str, Any], result: dict[str, Any]) -> set[str]:
        """Do with the handler's result what the event source mapping does: delete the
        records not reported as failures. Returns the messageIds reported as failures."""
        self.outputs.append(result)
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for record in event["Records"]:
            if record["messageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queue_url,
                                        ReceiptHandle=record["receiptHandle"])
        return failed

    def hidden(self) -> int:
        """Messages still on the queue but not receivable now: in flight (a record
        deferred by its visibility timeout) or delayed (a deferred copy)."""
        return self.in_flight() + self.delayed()

    def in_flight(self) -> int:
        """Messages received and not deleted: what SQS's in-flight limit counts."""
        return self._count("ApproximateNumberOfMessagesNotVisible")

    def delayed(self) -> int:
        """Messages sent with a delay that has not passed yet."""
        return self._count("ApproximateNumberOfMessagesDelayed")

    def _count(self, attribute: str) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url,
                                                   AttributeNames=[attribute])
        return int(attributes["Attributes"][attribute])

    def pass_time(self, seconds: float = MAX_DELAY) -> None:
        """Let time pass for SQS's delays and the worker's not_before checks: every
        delayed message is receivable, and the worker's clock is seconds ahead."""
        for message in sqs_backends[DEFAULT_ACCOUNT_ID][REGION].queues[QUEUE]._messages:
            message.delayed_until = 0
        self.later += timedelta(seconds=seconds)

    def waiting(self) -> int:
        """Messages visible on the queue."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


@pytest.fixture
def no_metrics_left() -> Iterator[None]:
    """For tests that call deliver_batch, which runs without the handler's metrics
    decorator that would flush them: what it counted is not to turn up in the next test's
    output."""
    yield
    metrics.clear_metrics()


def sent_messages() -> list[RawMessage]:
    """What SES v2 SendEmail accepted in the mock (sesv2 stores it in the SES backend).

    moto adds the addresses of the message's To:/Cc:/Bcc: headers to `destinations`,
    so tests that count recipients use messages without those headers."""
    return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment of the worker Lambda, and nothing from the developer's shell; each
    test starts in a new execution environment (ses_worker.warm)."""
    monkeypatch.setattr(warm, "WARM", warm.Warm())
    for name in list(os.environ):
        if name.startswith(("SESRELAY_", "AWS_ENDPOINT_URL", "AWS_PROFILE")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("SESRELAY_SPOOL_BUCKET", BUCKET)
    monkeypatch.setenv("SESRELAY_IDEMPOTENCY_TABLE", TABLE)
    monkeypatch.setenv("SESRELAY_TRAIL_TABLE", TRAIL_TABLE)
    monkeypatch.setenv("SESRELAY_MYHOSTNAME", RELAY_HOST)
    monkeypatch.setenv("SESRELAY_SES_BOUNCE_SENDER", BOUNCE_SENDER)
    # No rate limit unless a test sets one: the limiter has its own tests.
    monkeypatch.setenv("SESRELAY_SES_MAX_SEND_RATE", "0")


@pytest.fixture
def spool(worker_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Spool]:
    """A mocked AWS account with the spool, the idempotency table and SES identities.
    The worker's clock for deferred copies follows Spool.pass_time."""
    with mock_aws():
        aws.reset_clients()
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name=REGION)
        # Visibility 0: a record that is not deferred is visible again at once, so a
        # hidden record is one the worker deferred.
        url = sqs.create_queue(QueueName=QUEUE,
                               Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
        dynamodb.create_table(TableName=TRAIL_TABLE, **trail.table_definition())
        ses = boto3.client("ses", region_name=REGION)
        ses.verify_domain_identity(Domain=SENDER_DOMAIN)
        ses.verify_domain_identity(Domain=RELAY_HOST)
        spool = Spool(url, arn["Attributes"]["QueueArn"], s3, sqs)
        monkeypatch.setattr(requeue, "utc_now", lambda: utc_now() + spool.later)
        yield spool
        aws.reset_clients()


def sesv2() -> Any:
    """The worker's own SES v2 client, for injecting faults through its event system."""
    return aws.client("sesv2", None, WORKER_SES)


def emf_metrics(output: str) -> dict[str, list[float]]:
    """Every value of each metric in the EMF lines of captured stdout."""
    values: dict[str, list[float]] = {}
    for line in output.splitlines():
        data = json.loads(line) if line.startswith("{") else {}
        for definition in data.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in definition["Metrics"]:
                value = data[metric["Name"]]
                values.setdefault(metric["Name"], []).extend(
                    value if isinstance(value, list) else [value])
    return values


@pytest.fixture
def worker_logs(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    """The worker's log lines as its JSON formatter writes them, parsed."""
    caplog.set_level(logging.INFO, logger=logger.name)
    caplog.handler.setFormatter(logger.registered_formatter)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in caplog.text.splitlines() if line.startswith("{")]
    return lines


def fail_sends(code: str, text: str, when: Callable[[dict[str, Any]], bool] = lambda _: True,
               status: int = 400, times: int | None = None) -> list[dict[str, Any]]:
    """Make the worker's SES client answer SendEmail calls for which when(params) holds
    with an SES error (the first `times` such calls, or all); returns the failed calls."""
    failed: list[dict[str, Any]] = []

    def answer(params: dict[str, Any], **_: Any) -> None:
        if when(params) and (times is None or len(failed) < times):
            failed.append(params)
            raise ClientError({"Error": {"Code": code, "Message": text},
                               "ResponseMetadata": {"HTTPStatusCode": status}}, "SendEmail")

    sesv2().meta.events.register("before-parameter-build.sesv2.SendEmail", answer)
    return failed


def emulate_get_account(production_access: bool = True, max_send_rate: float = 14.0,
                        sending_enabled: bool = True) -> None:
    """Answer the worker's SES v2 GetAccount, which moto does not emulate, as SES would
    for an account with these settings."""
    parsed = {"ProductionAccessEnabled": production_access, "SendingEnabled": sending_enabled,
              "SendQuota": {"MaxSendRate": max_send_rate, "Max24HourSend": 50000.0,
                            "SentLast24Hours": 0.0},
              "EnforcementStatus": "HEALTHY", "DedicatedIpAutoWarmupEnabled": False}

    def answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        return AWSResponse("https://email.us-east-1.amazonaws.com", 200, {}, None), parsed

    sesv2().meta.events.register("before-call.sesv2.GetAccount", answer)


def to(address: str) -> Callable[[dict[str, Any]], bool]:
    """A fail_sends condition: the call is for this recipient."""
    return lambda params: address in params["Destination"]["ToAddresses"]


def make_visible(spool: Spool, event: dict[str, Any]) -> None:
    """Let the retry delay of the event's deferred records pass (as time would): those
    deferred in flight become visible, and delayed copies become due."""
    for record in event["Records"]:
        # A deleted record's handle fails: it was deferred as a delayed copy.
        with contextlib.suppress(ClientError):
            spool.sqs.change_message_visibility(QueueUrl=spool.queue_url,
                                                ReceiptHandle=record["receiptHandle"],
                                                VisibilityTimeout=0)
    spool.pass_time()
