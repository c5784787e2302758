"""The requests one message makes on its way, counted as AWS bills them: the relay takes
messages over SMTP and the worker's handler sends them, against moto, and every AWS call
either makes is counted by operation (DynamoDB's in write units, indexes included). The
cost model (sesrelay.cost) prices these numbers; a change to the message path fails here
until the model follows it."""

from __future__ import annotations

import json
import smtplib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.client
import pytest

from ses_worker.handler import handler
from sesrelay import cost
from sesrelay.config import load_config
from sesrelay.dev import LocalLambdaContext
from tests.relay.conftest import RunningRelay
from tests.worker.conftest import (
    BUCKET,
    REGION,
    RELAY_HOST,
    SENDER_DOMAIN,
    TABLE,
    TRAIL_TABLE,
    Spool,
    sent_messages,
)
from tests.write_units import counting_writes

MESSAGES = 4
LINE = "y" * 76 + "\r\n"


class Calls:
    """Every AWS API call made while counting, with its parameters."""

    def __init__(self) -> None:
        self.counting = False
        self.made: list[tuple[str, str, dict[str, Any]]] = []

    def during(self, action: Callable[[], Any]) -> Any:
        """Count the calls action makes, and only those."""
        self.counting = True
        try:
            return action()
        finally:
            self.counting = False

    def take(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The calls counted so far, forgotten here."""
        made, self.made = self.made, []
        return made


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Count the calls of every botocore client (the relay's and the worker's)."""
    counted = Calls()
    make_api_call = botocore.client.BaseClient._make_api_call

    def counting(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if counted.counting:
            counted.made.append((client.meta.service_model.service_name, operation, params))
        return make_api_call(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
    return counted


@pytest.fixture
def relay(spool: Spool, tmp_path: Path) -> Iterator[RunningRelay]:
    """A relay in this process, spooling to the worker's account."""
    main_cf = tmp_path / "main.cf"
    main_cf.write_text("")
    running = RunningRelay(load_config(main_cf, environ={}, overrides={
        "myhostname": RELAY_HOST, "sesrelay_spool_bucket": BUCKET,
        "sesrelay_spool_queue_url": spool.queue_url, "sesrelay_idempotency_table": TABLE,
        "mynetworks": ["127.0.0.0/8"],
        # mock_aws and this counting see botocore's requests only; the lean spool client
        # makes the same S3 and SQS requests (one interface, spool_client.SpoolClient).
        "sesrelay_spool_client": "botocore"}))
    yield running
    running.stop()


ENVIRONMENT_CHECKS = {("sesv2", "GetAccount"), ("sesv2", "GetEmailIdentity")}


def _per_message(calls: list[tuple[str, str, dict[str, Any]]],
                 writes: Counter[str]) -> cost.MessageRequests:
    # An execution environment's own checks (ses_worker.warm: at a cold start and every
    # few minutes, not per message) are free SES API calls.
    operations = Counter((service, operation) for service, operation, _ in calls
                         if (service, operation) not in ENVIRONMENT_CHECKS)
    counted = {
        "s3_puts": operations["s3", "PutObject"] + operations["s3", "PutObjectTagging"],
        "s3_gets": operations["s3", "GetObject"],
        "s3_deletes": operations["s3", "DeleteObject"],
        "sqs_sends": operations["sqs", "SendMessage"] + operations["sqs", "SendMessageBatch"],
        "idempotency_writes": writes[TABLE],
        "trail_writes": writes[TRAIL_TABLE],
        "ses_sends": operations["sesv2", "SendEmail"],
    }
    assert all(n % MESSAGES == 0 for n in counted.values()), counted
    # Nothing else is called: every request is one the model prices.
    priced = {("s3", "PutObject"), ("s3", "PutObjectTagging"), ("s3", "GetObject"),
              ("s3", "DeleteObject"), ("sqs", "SendMessage"), ("sqs", "SendMessageBatch"),
              ("sesv2", "SendEmail"), ("dynamodb", "PutItem"), ("dynamodb", "UpdateItem"),
              ("dynamodb", "DeleteItem"), ("dynamodb", "BatchWriteItem")}
    assert set(operations) <= priced, set(operations) - priced
    return cost.MessageRequests(**{k: n // MESSAGES for k, n in counted.items()})


@pytest.mark.parametrize(("size", "expected"), [
    (2_000, cost.INLINE),  # travels inside its SQS envelope
    (300_000, cost.SPOOLED),  # too large for the envelope: through S3
], ids=["inline", "spooled"])
def test_requests_per_message_are_what_the_cost_model_prices(
        spool: Spool, relay: RunningRelay, calls: Calls, monkeypatch: pytest.MonkeyPatch,
        size: int, expected: cost.MessageRequests) -> None:
    assert cost.is_inline(size) == (expected == cost.INLINE)
    body = "Subject: cost\r\n\r\n" + LINE * (size // len(LINE))

    def send() -> None:
        # One session per message, as applications that connect per message do (group
        # commit only batches the SQS sends of concurrent sessions).
        for _ in range(MESSAGES):
            with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
                assert client.sendmail(f"app@{SENDER_DOMAIN}", ["someone@example.org"],
                                       body) == {}

    calls.during(send)
    event = spool.receive()  # the event source's own calls are priced apart
    assert len(event["Records"]) == MESSAGES
    envelope = json.loads(event["Records"][0]["body"])
    envelope.pop("body", None)
    assert len(json.dumps(envelope)) < cost.ASSUMPTIONS["envelope_bytes"]
    with counting_writes(monkeypatch, REGION) as writes:
        result = calls.during(lambda: handler(event, LocalLambdaContext()))
    assert result["batchItemFailures"] == []
    assert len(sent_messages()) == MESSAGES

    assert _per_message(calls.take(), writes.units) == expected
