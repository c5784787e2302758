"""At-most-once sending across redeliveries, and concurrent sends within a batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from ses_worker.handler import handler
from ses_worker.sending import QUICK_RETRIES
from tests.worker.conftest import (
    LambdaContext,
    Spool,
    fail_sends,
    make_visible,
    message,
    sent_messages,
    sesv2,
    to,
)

Logs = Callable[[], list[dict[str, Any]]]


def test_same_record_delivered_twice_is_sent_once(spool: Spool, worker_logs: Logs) -> None:
    spool.put(message(), ["alice@example.org"])
    first = spool.receive()
    # The send succeeds but the record is not deleted (the invocation timed out, say),
    # so SQS delivers it again with a new receipt handle.
    assert handler(first, LambdaContext()) == {"batchItemFailures": []}
    make_visible(spool, first)
    again = spool.receive()
    assert again["Records"][0]["messageId"] == first["Records"][0]["messageId"]
    assert again["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"

    assert spool.invoke(again) == set()

    assert len(sent_messages()) == 1
    # The spool object went with the first delivery; the second never needed it.
    assert [line for line in worker_logs() if line["level"] == "ERROR"] == []


def test_redelivery_after_partial_send_sends_only_the_rest(spool: Spool) -> None:
    recipients = [f"user{i:03}@example.org" for i in range(120)]
    fail_sends("TooManyRequestsException", "Maximum sending rate exceeded.",
               when=to("user050@example.org"), status=429, times=1 + QUICK_RETRIES)
    spool.put(message(), recipients)
    event = spool.receive()
    assert spool.invoke(event) == {event["Records"][0]["messageId"]}
    assert [len(s.destinations) for s in sent_messages()] == [50]

    make_visible(spool, event)
    assert spool.invoke(spool.receive()) == set()

    delivered = [d for s in sent_messages() for d in s.destinations]
    assert sorted(delivered) == recipients  # each exactly once over both attempts


def test_records_of_a_batch_are_sent_concurrently(spool: Spool) -> None:
    in_flight = 0
    most = 0
    lock = threading.Lock()

    def slow_ses(**_: Any) -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.2)  # an SES round trip; sequential sends would never overlap
        with lock:
            in_flight -= 1

    sesv2().meta.events.register("before-call.sesv2.SendEmail", slow_ses)
    for i in range(10):
        spool.put(message(), [f"user{i}@example.org"])
    event = spool.receive()
    assert len(event["Records"]) == 10

    assert spool.invoke(event) == set()

    assert len(sent_messages()) == 10
    assert most > 1


def test_rate_limit_spaces_sends_by_recipients(spool: Spool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """At 50 recipients/s, two 50-recipient calls cannot start within the same second:
    the bucket holds one second's worth."""
    monkeypatch.setenv("SESRELAY_SES_MAX_SEND_RATE", "50")
    starts: list[float] = []
    sesv2().meta.events.register("before-call.sesv2.SendEmail",
                                 lambda **_: starts.append(time.monotonic()))
    spool.put(message(), [f"user{i:03}@example.org" for i in range(100)])

    assert spool.invoke(spool.receive()) == set()

    assert len(starts) == 2
    assert starts[1] - starts[0] >= 0.95
