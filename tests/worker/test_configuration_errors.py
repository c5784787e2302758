"""Mail system configuration errors (issue 21): SES refusing the account or its
configuration holds the mail, never bounces it, says so once a minute, counts the
ConfigurationError metric, and lets sending resume on its own once the cause is fixed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from ses_worker import warm
from ses_worker.sending import QUICK_RETRIES
from sesrelay.spool import utc_now
from tests.worker.conftest import (
    Spool,
    emf_metrics,
    emulate_get_account,
    fail_sends,
    make_visible,
    message,
    sent_messages,
    to,
)

Logs = Callable[[], list[dict[str, Any]]]
ACCESS_DENIED = ("User: arn:aws:sts::123456789012:assumed-role/sesrelay-worker/fn is not "
                 "authorized to perform: ses:SendEmail on resource: "
                 "arn:aws:ses:us-east-1:123456789012:identity/example.com")


class Clock:
    """The execution environment's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(warm, "WARM", warm.Warm(clock=clock))
    return clock


def held_lines(logs: Logs) -> list[dict[str, Any]]:
    return [line for line in logs() if line.get("dsn") == "4.3.5" and "maillog" in line]


@pytest.mark.parametrize(("code", "text", "status"), [
    ("AccessDeniedException", ACCESS_DENIED, 403),
    ("SendingPausedException", "Email sending is disabled for the account.", 400),
])
def test_an_account_wide_refusal_holds_mail_until_it_is_lifted(
        spool: Spool, clock: Clock, worker_logs: Logs, capsys: pytest.CaptureFixture[str],
        code: str, text: str, status: int) -> None:
    fault = [True]
    refused = fail_sends(code, text, status=status, when=lambda _: fault[0])
    for i in range(3):
        spool.put(message(), [f"m{i}@example.org"])

    rounds = 4
    for n in range(rounds):
        event = spool.receive()
        assert len(event["Records"]) == 3
        # Kept, waiting as delayed copies: an account-wide stop fills no in-flight limit.
        assert spool.invoke(event) == set()
        assert spool.delayed() == 3 and spool.in_flight() == spool.waiting() == 0
        make_visible(spool, event)
        if n == 1:
            clock.now += 61  # a minute later: the next line is due

    metrics = emf_metrics(capsys.readouterr().out)
    assert sum(metrics["ConfigurationError"]) == 3 * rounds
    assert "Bounced" not in metrics and "Failed" not in metrics
    assert sent_messages() == []  # no DSN either
    # One record asks SES once per receive; the others of its batch too (no quick retry).
    assert len(refused) == 3 * rounds
    # One line a minute, not one a message, in Postfix's words.
    lines = held_lines(worker_logs)
    assert len(lines) == 2
    assert all(line["level"] == "ERROR" and "status=deferred (mail system configuration "
               f"error: {code}: " in line["maillog"] for line in lines)
    # At the first held message, then at the first after the minute (the 7th): it
    # counts itself and the five held silently in between.
    assert [line["held_messages"] for line in lines] == [1, 6]

    # Lifted: everything goes out on the next receive, each message once. One message
    # is throttled: its first deferral is that of a first attempt, although it was tried
    # five times (the held tries did not advance its schedule: each copy carries the
    # attempts made before it, none).
    fault[0] = False
    fail_sends("TooManyRequestsException", "Maximum sending rate exceeded.",
               when=to("m0@example.org"), status=429, times=1 + QUICK_RETRIES)
    event = spool.receive()
    assert len(event["Records"]) == 3
    [throttled] = spool.invoke(event)
    [deferral] = [line for line in worker_logs() if line["message"].startswith("deferred:")]
    assert deferral["receive_count"] == 1 and deferral["retry_delay"] <= 330
    make_visible(spool, {"Records": [r for r in event["Records"]
                                     if r["messageId"] == throttled]})
    assert spool.invoke(spool.receive()) == set()
    assert sorted(d for m in sent_messages() for d in m.destinations) == [
        "m0@example.org", "m1@example.org", "m2@example.org"]
    assert spool.waiting() == spool.hidden() == 0


def test_a_sandbox_recipient_is_held_not_bounced(
        spool: Spool, clock: Clock, worker_logs: Logs) -> None:
    # (A sandbox's rate is 1/s; a higher one keeps the test from waiting on it.)
    emulate_get_account(production_access=False, max_send_rate=100)
    fail_sends("MessageRejected", "Email address is not verified. The following identities "
               "failed the check in region US-EAST-1: bob@example.org", when=to("bob@example.org"))
    spool.put(message(), ["bob@example.org"])

    for _ in range(4):  # an unverified sender bounces on the third
        event = spool.receive()
        assert spool.invoke(event) == set()  # held as a delayed copy
        make_visible(spool, event)

    assert sent_messages() == []  # no bounce
    [start] = [line for line in worker_logs() if "SES sandbox" in line["message"]]
    assert start["level"] == "WARNING" and start["ses_production_access"] is False
    [line] = held_lines(worker_logs)
    assert "the SES account is in the sandbox" in line["maillog"]


def test_held_past_the_queue_lifetime_goes_to_the_dlq_not_back_to_the_sender(
        spool: Spool, clock: Clock, worker_logs: Logs) -> None:
    fail_sends("AccessDeniedException", ACCESS_DENIED, status=403)
    spool.put(message(), ["alice@example.org"], received=utc_now() - timedelta(days=6))
    event = spool.receive()

    assert spool.invoke(event) == {event["Records"][0]["messageId"]}

    assert sent_messages() == []
    [error] = [line for line in worker_logs() if line["level"] == "ERROR"
               and "dead-letter queue" in line["message"]]
    assert "configuration error past maximal_queue_lifetime, not bounced" in error["message"]


@pytest.mark.parametrize(("bounce_sender", "errors"), [
    ("MAILER-DAEMON@unverified.example", 1),
    ("MAILER-DAEMON@relay.example.net", 0),  # conftest verifies that domain
])
def test_an_unverified_bounce_sender_is_reported_at_cold_start(
        spool: Spool, clock: Clock, worker_logs: Logs, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], bounce_sender: str, errors: int) -> None:
    monkeypatch.setenv("SESRELAY_SES_BOUNCE_SENDER", bounce_sender)
    for _ in range(2):  # once per execution environment, not per invocation
        spool.put(message(), ["alice@example.org"])
        assert spool.invoke(spool.receive()) == set()

    reported = [line for line in worker_logs() if "ses_bounce_sender" in line["message"]]
    assert len(reported) == errors
    assert all(line["level"] == "ERROR" and line["message"].startswith(
        "mail system configuration error: ses_bounce_sender <MAILER-DAEMON@unverified.example>"
        " is not a verified SES identity") for line in reported)
    assert sum(emf_metrics(capsys.readouterr().out).get("ConfigurationError", [])) == errors


def test_a_bounce_refused_for_its_unverified_sender_is_held(
        spool: Spool, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bounce itself cannot be sent because ses_bounce_sender is not verified: the
    message waits for the operator, instead of a few retries and the DLQ."""
    bounce_sender = "MAILER-DAEMON@unverified.example"
    monkeypatch.setenv("SESRELAY_SES_BOUNCE_SENDER", bounce_sender)
    # SES's words for it (moto refuses the DSN in words of its own).
    fail_sends("MessageRejected", "Email address is not verified. The following identities "
               f"failed the check in region US-EAST-1: {bounce_sender}",
               when=lambda params: params.get("FromEmailAddress") == bounce_sender)
    # moto refuses the message itself for good: it is to be bounced.
    spool.put(message(), ["alice@example.org"], mail_from="someone@unverified.example")

    for _ in range(4):
        event = spool.receive()
        assert spool.invoke(event) == set()
        # Held for the longest backoff as a delayed copy, not the DLQ's way.
        assert spool.delayed() == 1 and spool.in_flight() == 0
        make_visible(spool, event)
    assert sent_messages() == []
