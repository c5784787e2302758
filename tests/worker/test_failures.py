"""Error classes: deferrals, bounces (RFC 3464 DSNs), soft_bounce, the null sender,
records that cannot be processed, and the queue lifetime."""

from __future__ import annotations

import email
from collections.abc import Callable
from datetime import timedelta
from email.message import Message
from typing import Any

import pytest

from ses_worker.sending import QUICK_RETRIES
from sesrelay.spool import utc_now
from tests.worker.conftest import (
    BOUNCE_SENDER,
    BUCKET,
    Spool,
    emf_metrics,
    fail_sends,
    make_visible,
    message,
    sent_messages,
    to,
)

Logs = Callable[[], list[dict[str, Any]]]
UNVERIFIED_SENDER = "someone@unverified.example"


def delivery_status(dsn: Message) -> list[Message]:
    """The blocks of a DSN's message/delivery-status part, checking the report's shape."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = dsn.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    return parts[1].get_payload()


def test_throttling_defers_only_that_record(spool: Spool, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    throttled = fail_sends("TooManyRequestsException", "Maximum sending rate exceeded.",
                           when=to("slow@example.org"), status=429)
    spool.put(message(), ["a@example.org"])
    spool.put(message(), ["slow@example.org"])
    spool.put(message(), ["c@example.org"])
    event = spool.receive()
    slow_id = next(r["messageId"] for r in event["Records"] if "slow@" in r["body"])

    failed = spool.invoke(event)

    assert failed == {slow_id}
    assert len(throttled) == 1 + QUICK_RETRIES  # retried at once, then deferred
    assert sorted(d for s in sent_messages() for d in s.destinations) == [
        "a@example.org", "c@example.org"]
    # The deferred record is hidden for its retry delay (the queue's own timeout is 0).
    assert spool.hidden() == 1
    assert spool.waiting() == 0
    metrics = emf_metrics(capsys.readouterr().out)
    assert sum(metrics["Deferred"]) == 1
    assert sum(metrics["Sent"]) == 2
    assert "Bounced" not in metrics


def test_permanent_rejection_bounces_a_dsn_to_the_sender(
        spool: Spool, capsys: pytest.CaptureFixture[str]) -> None:
    # moto, like SES, refuses a sender whose identity is not verified: MessageRejected.
    original = message(subject="invoice 42")
    spool.put(original, ["alice@example.org", "bob@example.org"], mail_from=UNVERIFIED_SENDER)

    assert spool.invoke(spool.receive()) == set()  # done: bounced, not retried

    [dsn_sent] = sent_messages()
    assert dsn_sent.source == BOUNCE_SENDER
    assert set(dsn_sent.destinations) == {UNVERIFIED_SENDER}
    dsn = email.message_from_string(dsn_sent.raw_data)
    assert dsn["To"] == UNVERIFIED_SENDER
    assert BOUNCE_SENDER in dsn["From"]
    per_message, *per_recipient = delivery_status(dsn)
    assert per_message["Reporting-MTA"] == "dns; relay.example.net"
    assert [r["Final-Recipient"] for r in per_recipient] == [
        "rfc822; alice@example.org", "rfc822; bob@example.org"]
    for block in per_recipient:
        assert block["Action"] == "failed"
        assert block["Status"] == "5.7.1"
        assert block["Diagnostic-Code"].startswith("X-SES; MessageRejected: ")
        assert UNVERIFIED_SENDER in block["Diagnostic-Code"]
    headers = dsn.get_payload()[2].get_payload()
    assert "Subject: invoice 42" in headers
    assert "Hello there." not in headers  # headers only, not the body
    assert emf_metrics(capsys.readouterr().out)["Bounced"] == [1]


def test_soft_bounce_defers_instead_of_bouncing(spool: Spool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESRELAY_SOFT_BOUNCE", "yes")
    spool.put(message(), ["alice@example.org"], mail_from=UNVERIFIED_SENDER)
    event = spool.receive()

    assert spool.invoke(event) == {event["Records"][0]["messageId"]}

    assert sent_messages() == []  # no DSN
    assert spool.hidden() == 1


def test_null_sender_gets_no_dsn_and_is_left_for_the_dlq(
        spool: Spool, worker_logs: Logs, capsys: pytest.CaptureFixture[str]) -> None:
    # A bounce from elsewhere (MAIL FROM:<>) whose From: domain SES refuses.
    raw = message().replace(b"From: Sender <sender@example.com>",
                            b"From: MAILER-DAEMON@unverified.example")
    envelope = spool.put(raw, ["alice@example.org"], mail_from="", in_s3=True)
    event = spool.receive()

    assert spool.invoke(event) == {event["Records"][0]["messageId"]}

    assert sent_messages() == []
    [error] = [line for line in worker_logs() if line["level"] == "ERROR"]
    assert error["queue_id"] == envelope.queue_id
    assert "sender is <>" in error["message"] and "MessageRejected" in error["message"]
    # Kept for the operator to redrive from the dead-letter queue.
    assert spool.s3.get_object(Bucket=BUCKET, Key=envelope.key)["Body"].read() == raw
    assert emf_metrics(capsys.readouterr().out)["Failed"] == [1]


def test_unverified_sender_identity_is_retried_before_it_bounces(spool: Spool) -> None:
    """A sender that ses_identities does not cover (here: none configured) is the
    sender's mistake, not the system's: retried in case verification lags, then bounced.
    (Identities of the system: tests/worker/test_configuration_errors.py.)"""
    fail_sends("MessageRejected", "Email address is not verified. The following identities "
               "failed the check in region US-EAST-1: sender@example.com",
               when=to("alice@example.org"))
    spool.put(message(), ["alice@example.org"])

    deferred = 0
    while not sent_messages():
        event = spool.receive()
        spool.invoke(event)
        if spool.hidden():
            deferred += 1
            make_visible(spool, event)

    # Attempts 1 and 2 defer (the 2nd as a delayed copy carrying the count); the 3rd,
    # the copy's first SQS receive, bounces.
    assert deferred == 2
    [dsn_sent] = sent_messages()
    [block] = delivery_status(email.message_from_string(dsn_sent.raw_data))[1:]
    assert block["Final-Recipient"] == "rfc822; alice@example.org"
    assert "not verified" in block["Diagnostic-Code"]
    assert spool.waiting() == spool.hidden() == 0


def test_past_maximal_queue_lifetime_a_deferral_becomes_a_bounce(spool: Spool) -> None:
    fail_sends("TooManyRequestsException", "Maximum sending rate exceeded.",
               when=to("alice@example.org"), status=429)
    spool.put(message(), ["alice@example.org"], received=utc_now() - timedelta(days=5, hours=1))

    assert spool.invoke(spool.receive()) == set()

    [dsn_sent] = sent_messages()
    [block] = delivery_status(email.message_from_string(dsn_sent.raw_data))[1:]
    assert block["Status"] == "5.4.7"
    assert "maximal_queue_lifetime" in block["Diagnostic-Code"]
    assert "TooManyRequestsException" in block["Diagnostic-Code"]


def test_past_maximal_queue_lifetime_with_soft_bounce_goes_to_the_dlq(
        spool: Spool, monkeypatch: pytest.MonkeyPatch, worker_logs: Logs) -> None:
    monkeypatch.setenv("SESRELAY_SOFT_BOUNCE", "yes")
    monkeypatch.setenv("SESRELAY_MAXIMAL_QUEUE_LIFETIME", "1d")
    spool.put(message(), ["alice@example.org"], mail_from=UNVERIFIED_SENDER,
              received=utc_now() - timedelta(days=2))
    event = spool.receive()

    assert spool.invoke(event) == {event["Records"][0]["messageId"]}

    assert sent_messages() == []
    assert any("soft_bounce = yes" in line["message"] for line in worker_logs()
               if line["level"] == "ERROR")


def test_missing_spool_object_is_dropped_with_a_clear_error(
        spool: Spool, worker_logs: Logs, capsys: pytest.CaptureFixture[str]) -> None:
    envelope = spool.put(message(), ["alice@example.org"], in_s3=True)
    spool.s3.delete_object(Bucket=BUCKET, Key=envelope.key)

    assert spool.invoke(spool.receive()) == set()

    assert spool.waiting() == spool.hidden() == 0  # deleted, not retried forever
    assert sent_messages() == []
    [error] = [line for line in worker_logs() if line["level"] == "ERROR"]
    assert f"s3://{BUCKET}/{envelope.key} is missing" in error["message"]
    assert error["queue_id"] == envelope.queue_id
    assert emf_metrics(capsys.readouterr().out)["Failed"] == [1]


@pytest.mark.parametrize(("body", "queue_id", "problem"), [
    ("this is not json", "unknown", "envelope is not JSON"),
    ('{"queue_id": "5X4Q", "version": "2"}', "5X4Q", "unsupported envelope version '2'"),
])
def test_malformed_sqs_body_is_dropped_with_a_clear_error(
        spool: Spool, body: str, queue_id: str, problem: str, worker_logs: Logs,
        capsys: pytest.CaptureFixture[str]) -> None:
    spool.sqs.send_message(QueueUrl=spool.queue_url, MessageBody=body)
    spool.put(message(), ["alice@example.org"])

    assert spool.invoke(spool.receive()) == set()

    assert spool.waiting() == spool.hidden() == 0
    assert len(sent_messages()) == 1  # its neighbour went out
    [error] = [line for line in worker_logs() if line["level"] == "ERROR"]
    assert error["message"].startswith(f"malformed SQS message dropped: {problem}")
    assert error["queue_id"] == queue_id
    assert emf_metrics(capsys.readouterr().out)["Failed"] == [1]


def test_server_error_defers_and_the_retry_sends(spool: Spool) -> None:
    fail_sends("InternalServiceErrorException", "Internal error", status=500, times=1)
    spool.put(message(), ["alice@example.org"])
    event = spool.receive()
    assert spool.invoke(event) == {event["Records"][0]["messageId"]}
    assert sent_messages() == []

    make_visible(spool, event)
    assert spool.invoke(spool.receive()) == set()

    [sent] = sent_messages()
    assert sent.destinations == ["alice@example.org"]
