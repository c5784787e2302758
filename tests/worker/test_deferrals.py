"""Deferrals that scale: a deferred message waits on the queue as a delayed copy of its
envelope, not in flight, so an SES outage cannot use up SQS's in-flight allowance and
stop new mail. The copy keeps the attempt count and the first receipt time, comes back
early and is sent back (hops) when its backoff is longer than SQS's 15-minute delay,
and a SendMessage whose answer was lost neither loses the message nor sends it twice.

Time passes by Spool.pass_time (SQS's delays and the worker's clock for copies)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import sqs_backends

from ses_worker.requeue import IN_FLIGHT_MAX_DELAY, SQS_MAX_DELAY, Requeuer
from sesrelay import aws
from sesrelay.spool import INLINE_LIMIT, Envelope, spool_envelope, utc_now
from sesrelay.timeouts import WORKER_AWS, WORKER_REQUEUE
from tests.worker.conftest import (
    BUCKET,
    QUEUE,
    REGION,
    Spool,
    fail_sends,
    make_visible,
    message,
    sent_messages,
    sesv2,
    to,
)
from tests.worker.test_contract_versions import envelope_json

Logs = Callable[[], list[dict[str, Any]]]
# The in-flight allowance these tests give SQS (AWS's is about 120,000).
IN_FLIGHT_LIMIT = 10


@pytest.fixture
def long_backoff(worker_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first retry already longer than IN_FLIGHT_MAX_DELAY: every deferral is a copy
    (with the defaults, from the second retry on)."""
    monkeypatch.setenv("SESRELAY_MINIMAL_BACKOFF_TIME", "600s")


def fail_transiently(**kwargs: Any) -> list[dict[str, Any]]:
    """SES refuses sends with an error that is retried later (an unknown 4xx)."""
    return fail_sends("InternalFailure", "try again later", **kwargs)


def receive(spool: Spool) -> dict[str, Any]:
    """Receive as the event source mapping does, under the in-flight limit: SQS answers
    OverLimit to a receive while that many messages are in flight."""
    in_flight = spool.in_flight()
    assert in_flight < IN_FLIGHT_LIMIT, f"{in_flight} in flight: SQS would answer OverLimit"
    return spool.receive()


def deferral_logs(worker_logs: Logs) -> list[dict[str, Any]]:
    return [line for line in worker_logs() if str(line.get("message", "")).startswith(
        "deferred: retry in")]


def copies() -> list[Envelope]:
    """The envelopes on the queue, read from the emulation without receiving them."""
    queue = sqs_backends[DEFAULT_ACCOUNT_ID][REGION].queues[QUEUE]
    return [Envelope.from_json(m.body) for m in queue._messages]


@pytest.mark.usefixtures("long_backoff")
def test_an_outage_defers_more_messages_than_sqs_holds_in_flight_and_new_mail_flows(
        spool: Spool) -> None:
    fail_transiently(when=to("alice@example.org"))  # alice's mail cannot go out yet
    count = 2 * IN_FLIGHT_LIMIT + 5
    for n in range(count):
        spool.put(message(subject=f"outage {n}"), ["alice@example.org"])

    in_flight_seen = []
    while spool.waiting():
        event = receive(spool)
        assert spool.invoke(event) == set()  # each record done: its copy is queued
        in_flight_seen.append(spool.in_flight())

    assert max(in_flight_seen) == 0
    assert spool.delayed() == count  # every one of them still queued, none lost
    assert sent_messages() == []

    spool.put(message(subject="new mail"), ["bob@example.org"])
    assert spool.invoke(receive(spool)) == set()
    [sent] = sent_messages()
    assert sent.destinations == ["bob@example.org"]
    assert spool.delayed() == count and spool.in_flight() == 0


@pytest.mark.usefixtures("long_backoff")
def test_a_deferred_copy_keeps_the_message_reference_attempts_and_first_receipt(
        spool: Spool) -> None:
    fail_transiently(times=1)
    original = spool.put(message(subject="large one"), ["alice@example.org"], in_s3=True)
    event = spool.receive()
    first_receive = int(event["Records"][0]["attributes"]["ApproximateFirstReceiveTimestamp"])
    assert spool.invoke(event) == set()

    [copy] = copies()
    assert (copy.bucket, copy.key, copy.body) == (BUCKET, original.key, "")
    assert copy.queue_id == original.queue_id and copy.rcpt_to == original.rcpt_to
    assert copy.received_at == original.received_at  # the lifetime runs from here
    assert copy.attempts == 1
    assert copy.first_seen_at == datetime.fromtimestamp(first_receive / 1000,
                                                        copy.received.tzinfo)
    assert copy.not_before_at is not None and copy.first_seen_at is not None
    backoff = (copy.not_before_at - copy.first_seen_at).total_seconds()
    assert 0.9 * 600 <= backoff <= 1.1 * 600 + 5  # minimal_backoff_time, +-10 % jitter

    spool.pass_time()
    assert spool.invoke(spool.receive()) == set()
    [sent] = sent_messages()
    assert "large one" in sent.raw_data
    assert spool.hidden() == spool.waiting() == 0


def test_the_backoff_schedule_follows_the_attempts_across_copies(
        spool: Spool, worker_logs: Logs) -> None:
    fail_transiently()
    spool.put(message(), ["alice@example.org"])
    sqs_receive_counts = []
    for _ in range(6):
        event = spool.receive()
        [record] = event["Records"]
        sqs_receive_counts.append(record["attributes"]["ApproximateReceiveCount"])
        spool.invoke(event)
        make_visible(spool, event)

    # The first retry (300 s) waits in flight, the same SQS message comes back; from the
    # second on, each try is a new SQS message, counted on from the envelope.
    assert sqs_receive_counts == ["1", "2", "1", "1", "1", "1"]
    deferrals = deferral_logs(worker_logs)
    assert [d["receive_count"] for d in deferrals] == [1, 2, 3, 4, 5, 6]
    assert [d["requeued"] for d in deferrals] == [False] + [True] * 5
    for attempt, deferral in enumerate(deferrals, start=1):
        base = min(300 * 2 ** (attempt - 1), 4000)
        assert 0.9 * base <= deferral["retry_delay"] <= min(1.1 * base, 4000)


@pytest.mark.usefixtures("long_backoff")
def test_the_lifetime_runs_from_the_first_receipt_not_from_the_copy(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_transiently(when=to("alice@example.org"))
    spool.put(message(), ["alice@example.org"], received=utc_now() - timedelta(seconds=10))
    assert spool.invoke(spool.receive()) == set()
    monkeypatch.setenv("SESRELAY_MAXIMAL_QUEUE_LIFETIME", "5s")  # now over
    spool.pass_time()

    assert spool.invoke(spool.receive()) == set()  # bounced on the copy's first receive

    [dsn] = sent_messages()
    assert set(dsn.destinations) == {"sender@example.com"}  # moto adds the To: header's
    assert "maximal_queue_lifetime" in dsn.raw_data
    assert spool.hidden() == spool.waiting() == 0


def test_a_copy_that_comes_back_early_is_sent_back_without_touching_ses_s3_or_dynamodb(
        spool: Spool) -> None:
    envelope = spool.put(message(subject="hops"), ["alice@example.org"], in_s3=True)
    requeuer = Requeuer(lambda: utc_now() + spool.later)
    event = spool.receive()
    handle = event["Records"][0]["receiptHandle"]
    # Deferred as the worker defers, with a backoff longer than three SQS delays.
    assert requeuer.defer(spool.queue_url, handle, envelope, 1, utc_now(), 3000)
    spool.sqs.delete_message(QueueUrl=spool.queue_url, ReceiptHandle=handle)
    calls: list[str] = []
    # The execution environment's own account checks (ses_worker.warm: GetAccount,
    # GetEmailIdentity at a cold start and every few minutes) are not the message's.
    account_checks = {"GetAccount", "GetEmailIdentity"}
    for client in (aws.client("s3", budget=WORKER_AWS), aws.client("dynamodb",
                                                                   budget=WORKER_AWS), sesv2()):
        client.meta.events.register("before-call", lambda model, **_: None if (
            model.name in account_checks) else calls.append(model.name))

    hops = 0
    while not sent_messages():
        spool.pass_time(SQS_MAX_DELAY)
        event = spool.receive()
        [record] = event["Records"]
        assert spool.invoke(event) == set()
        if not calls:
            hops += 1
            [copy] = copies()
            assert copy.not_before == Envelope.from_json(record["body"]).not_before
            assert copy.attempts == 1
    assert hops == 3  # at 900, 1800 and 2700 s; due at 3600 s, past 3000 s
    assert calls.count("SendEmail") == 1


def test_short_delays_stay_in_flight_and_longer_ones_do_not(spool: Spool) -> None:
    requeuer = Requeuer()
    envelope = spool.put(message(), ["alice@example.org"])
    handle = spool.receive()["Records"][0]["receiptHandle"]
    assert not requeuer.defer(spool.queue_url, handle, envelope, 1, utc_now(),
                              IN_FLIGHT_MAX_DELAY)
    assert (spool.delayed(), spool.in_flight()) == (0, 1)  # held for its delay
    assert requeuer.defer(spool.queue_url, handle, envelope, 1, utc_now(),
                          IN_FLIGHT_MAX_DELAY + 1)
    assert spool.delayed() == 1


def lose_requeue_answers(times: int | None = None, acted: bool = True) -> list[str]:
    """The answer to the worker's SendMessage of a copy is lost (a read timeout) after SQS
    stored it (acted), or before the request reached SQS; botocore retries either way."""
    lost: list[str] = []

    def lose(request: Any, **_: Any) -> None:
        target = request.headers.get("X-Amz-Target", b"")
        if target in (b"AmazonSQS.SendMessage", "AmazonSQS.SendMessage") and (
                times is None or len(lost) < times):
            lost.append(request.url)
            raise ReadTimeoutError(endpoint_url=request.url)

    events = aws.client("sqs", budget=WORKER_REQUEUE).meta.events
    if acted:  # after moto's own before-send handler has stored the message
        events.register_last("before-send", lose)
    else:
        events.register_first("before-send", lose)
    return lost


@pytest.mark.usefixtures("long_backoff")
def test_a_lost_sendmessage_answer_makes_two_copies_and_one_send(spool: Spool) -> None:
    fail_transiently(times=1)
    lost = lose_requeue_answers(times=1)
    spool.put(message(), ["alice@example.org"])
    assert spool.invoke(spool.receive()) == set()
    assert len(lost) == 1
    assert spool.delayed() == 2  # botocore's retry stored the copy a second time

    for _ in range(4):
        spool.pass_time()
        event = spool.receive()
        if not event["Records"]:
            break
        spool.invoke(event)
    [sent] = sent_messages()  # the send ledger let one copy through, once
    assert sent.destinations == ["alice@example.org"]
    assert spool.hidden() == spool.waiting() == 0


@pytest.mark.usefixtures("long_backoff")
def test_a_copy_never_stored_keeps_the_original_in_flight(spool: Spool) -> None:
    fail_transiently(times=1)
    lose_requeue_answers(acted=False)  # every try lost before SQS took it
    spool.put(message(), ["alice@example.org"])
    event = spool.receive()
    assert spool.invoke(event) == {event["Records"][0]["messageId"]}  # not deleted
    assert spool.in_flight() == 1 and spool.delayed() == 0

    spool.sqs.change_message_visibility(QueueUrl=spool.queue_url, VisibilityTimeout=0,
                                        ReceiptHandle=event["Records"][0]["receiptHandle"])
    assert spool.invoke(spool.receive()) == set()
    assert len(sent_messages()) == 1


@pytest.mark.usefixtures("long_backoff")
@pytest.mark.parametrize(("version", "inline"), [(1, False), (2, False), (2, True)])
def test_envelopes_of_earlier_relays_are_deferred_as_copies_and_sent(
        spool: Spool, version: int, inline: bool) -> None:
    fail_transiently(times=1)
    raw = message(subject=f"version {version}")
    body = envelope_json(version, raw, inline, spool)
    spool.sqs.send_message(QueueUrl=spool.queue_url, MessageBody=body)
    assert spool.invoke(spool.receive()) == set()

    [copy] = copies()
    earlier = json.loads(body)
    assert copy.version == 2  # what the previous release's worker reads as well
    assert (copy.bucket, copy.key, copy.body) == (
        earlier["bucket"], earlier["key"], earlier.get("body", ""))
    spool.pass_time()
    assert spool.invoke(spool.receive()) == set()
    [sent] = sent_messages()
    assert f"version {version}" in sent.raw_data


@pytest.mark.usefixtures("long_backoff")
def test_a_copy_that_crashes_the_worker_every_time_reaches_the_dlq(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    dlq = spool.sqs.create_queue(QueueName="sesrelay-dlq")["QueueUrl"]
    dlq_arn = spool.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    spool.sqs.set_queue_attributes(QueueUrl=spool.queue_url, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"],
                                     "maxReceiveCount": 3})})
    fail_transiently(times=1)
    spool.put(message(), ["alice@example.org"])
    assert spool.invoke(spool.receive()) == set()  # deferred: now a copy

    def crash(*_: Any, **__: Any) -> None:
        raise RuntimeError("poison")

    monkeypatch.setattr("ses_worker.delivery.Deliverer._deliver", crash)
    spool.pass_time()
    for _ in range(3):
        event = spool.receive()
        assert len(spool.invoke(event)) == 1
    assert spool.receive()["Records"] == []  # the fourth receive finds it moved
    [poison] = spool.sqs.receive_message(QueueUrl=dlq)["Messages"]
    assert Envelope.from_json(poison["Body"]).attempts == 1


def nearly_full_message() -> bytes:
    """A message whose inline envelope (as Spool.put writes it) fills one SQS message to
    within a few dozen bytes: the fields a copy adds would take it over."""
    def envelope_size(raw: bytes) -> int:
        fields = {"queue_id": "0" * 16, "mail_from": "sender@example.com",
                  "rcpt_to": ("alice@example.org",), "size": len(raw),
                  "client_address": "192.0.2.10", "client_helo": "client.example.com",
                  "received_at": utc_now().isoformat()}
        envelope, body = spool_envelope(fields, raw, BUCKET, "key")
        return len(body) if envelope.inline else INLINE_LIMIT + 1

    low, high = 0, INLINE_LIMIT
    while low < high:  # the longest body whose envelope still travels inline
        middle = (low + high + 1) // 2
        if envelope_size(message(body="x" * middle)) <= INLINE_LIMIT:
            low = middle
        else:
            high = middle - 1
    raw = message(body="x" * low)
    assert INLINE_LIMIT - 60 < envelope_size(raw) <= INLINE_LIMIT
    return raw


@pytest.mark.usefixtures("long_backoff")
def test_a_copy_too_large_for_one_sqs_message_leaves_the_record_in_flight(
        spool: Spool) -> None:
    # A queue that keeps SQS's classic 256 KiB limit (new queues take 1 MiB) refuses it.
    spool.sqs.set_queue_attributes(QueueUrl=spool.queue_url,
                                   Attributes={"MaximumMessageSize": str(INLINE_LIMIT)})
    fail_transiently(times=1)
    envelope = spool.put(nearly_full_message(), ["alice@example.org"])
    assert envelope.inline
    event = spool.receive()
    assert spool.invoke(event) == {event["Records"][0]["messageId"]}  # kept, not deleted
    assert (spool.in_flight(), spool.delayed()) == (1, 0)

    make_visible(spool, event)
    assert spool.invoke(spool.receive()) == set()
    assert len(sent_messages()) == 1


def test_a_hop_that_cannot_be_stored_holds_the_record_until_it_is_due(
        spool: Spool) -> None:
    envelope = spool.put(message(), ["alice@example.org"])
    handle = spool.receive()["Records"][0]["receiptHandle"]
    assert Requeuer().defer(spool.queue_url, handle, envelope, 1, utc_now(), 3000)
    spool.sqs.delete_message(QueueUrl=spool.queue_url, ReceiptHandle=handle)
    lose_requeue_answers(acted=False)  # SQS takes no copy from now on

    spool.pass_time(SQS_MAX_DELAY)
    event = spool.receive()
    assert spool.invoke(event) == {event["Records"][0]["messageId"]}  # kept, not deleted
    assert (spool.in_flight(), spool.delayed()) == (1, 0)
    assert sent_messages() == []  # not due: not tried
