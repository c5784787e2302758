"""Group commit of SQS sends: concurrent sessions share one SendMessageBatch, and each
client's 250 still waits for its own entry; a failed entry fails only its own client.

Messages here are large enough to go through S3 (their writes are held until every
client has started, as under load), except where a test says otherwise. The relay runs
with each spool client, its requests going through a fault proxy (tests/faults.py) to
moto's server."""

from __future__ import annotations

import smtplib
import threading
import time
from typing import Any

import pytest

from smtp_relay import handoff
from tests.faults import ERROR_ANSWER, FAIL_ENTRIES, PASS, Request
from tests.relay.conftest import RunningRelay, SpoolAccount

MESSAGE = (b"From: app@example.com\r\nSubject: together\r\n\r\n"
           + (b"y" * 998 + b"\r\n") * 200)
WRITE_ERROR = (451, b"4.3.0 Error: queue file write error")


@pytest.fixture(autouse=True)
def wide_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window wide enough that envelopes never leave before the others arrive."""
    monkeypatch.setattr(handoff, "BATCH_WINDOW", 10.0)


def send_together(relay: RunningRelay, recipients: list[str],
                  extra_recipients: dict[str, list[str]] | None = None
                  ) -> dict[str, tuple[int, bytes]]:
    """One client per recipient (plus its extra_recipients), all sending at once; each one's
    reply to DATA. Their S3 writes are held at the proxy until all have arrived, as under
    load, so they meet in one batch."""
    replies: dict[str, tuple[int, bytes]] = {}
    barrier = threading.Barrier(len(recipients))
    puts = threading.Barrier(len(recipients))
    assert relay.proxy is not None
    relay.proxy.add("s3.PutObject", PASS, call=lambda request: puts.wait(timeout=30))

    def client(recipient: str) -> None:
        with smtplib.SMTP(relay.host, relay.port, timeout=60) as smtp:
            smtp.ehlo("client.example.org")
            smtp.mail("app@example.com")
            smtp.rcpt(recipient)
            for extra in (extra_recipients or {}).get(recipient, []):
                smtp.rcpt(extra)
            barrier.wait()
            replies[recipient] = smtp.data(MESSAGE)

    threads = [threading.Thread(target=client, args=(r,)) for r in recipients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return replies


def entries(request: Request) -> list[dict[str, Any]]:
    """The envelopes an SQS send carries: SendMessageBatch's entries, or SendMessage's
    one message."""
    body = request.json()
    return list(body.get("Entries", [body]))


def test_concurrent_messages_share_one_batch(start_proxied_relay,
                                             proxied_account: SpoolAccount) -> None:
    relay = start_proxied_relay()
    calls: list[int] = []
    for operation in ("sqs.SendMessage", "sqs.SendMessageBatch"):
        relay.proxy.add(operation, PASS, call=lambda request: calls.append(
            len(entries(request))))
    recipients = [f"r{n}@example.org" for n in range(5)]
    replies = send_together(relay, recipients)
    assert calls == [5]
    assert relay.proxy.seen == {"s3.PutObject": 5, "sqs.SendMessageBatch": 1}
    queued = {s.envelope.rcpt_to[0]: s for s in proxied_account.queued()}
    assert set(queued) == set(recipients)
    for recipient, (code, text) in replies.items():
        assert (code, text.decode()) == (
            250, f"2.0.0 Ok: queued as {queued[recipient].envelope.queue_id}")
        assert queued[recipient].raw.endswith(MESSAGE)


def unlucky(entry: dict[str, Any]) -> bool:
    """The entry of the message to unlucky@."""
    return "unlucky@" in entry["MessageBody"]


def fail_unlucky_entries(relay: RunningRelay, times: int | None) -> None:
    """Make SQS fail the message to unlucky@ (the first `times` times, or always), as SQS
    does: in a batch, its entry listed in Failed and not queued, the others queued; sent
    alone, an HTTP 500."""
    assert relay.proxy is not None
    relay.proxy.add("sqs.SendMessageBatch", FAIL_ENTRIES, times=times, code="InternalError",
                    when=lambda request: any(unlucky(e) for e in entries(request)),
                    entries=unlucky)
    if times is None:
        relay.proxy.add("sqs.SendMessage", ERROR_ANSWER, status=500, code="InternalError",
                        when=lambda request: any(unlucky(e) for e in entries(request)))


def failures(relay: RunningRelay) -> int:
    """How many SQS sends of the message to unlucky@ failed."""
    assert relay.proxy is not None
    return (relay.proxy.applied.get(("sqs.SendMessageBatch", FAIL_ENTRIES), 0)
            + relay.proxy.applied.get(("sqs.SendMessage", ERROR_ANSWER), 0))


def test_a_failed_entry_gives_only_its_client_451(start_proxied_relay,
                                                  proxied_account) -> None:
    relay = start_proxied_relay()
    fail_unlucky_entries(relay, times=None)
    replies = send_together(relay, ["a@example.org", "unlucky@example.org", "b@example.org"])
    assert replies["unlucky@example.org"] == WRITE_ERROR
    assert replies["a@example.org"][0] == replies["b@example.org"][0] == 250
    assert failures(relay) == 3  # the relay tried it three times
    queued = proxied_account.queued()
    assert sorted(s.envelope.rcpt_to[0] for s in queued) == ["a@example.org", "b@example.org"]
    assert relay.metrics["Deferred"] == 1 and relay.metrics["Accepted"] == 2


def test_a_failed_entry_is_retried(start_proxied_relay, proxied_account) -> None:
    relay = start_proxied_relay()
    fail_unlucky_entries(relay, times=1)
    replies = send_together(relay, ["a@example.org", "unlucky@example.org", "b@example.org"])
    assert {code for code, _ in replies.values()} == {250}
    assert failures(relay) == 1
    assert relay.proxy.seen["sqs.SendMessage"] == 1  # the retry: unlucky@'s alone
    assert len(proxied_account.queued()) == 3


def test_a_failed_batch_call_gives_every_client_in_it_451(start_proxied_relay,
                                                          proxied_account) -> None:
    relay = start_proxied_relay()
    for operation in ("sqs.SendMessageBatch", "sqs.SendMessage"):
        relay.proxy.add(operation, ERROR_ANSWER, status=503, code="ServiceUnavailable")
    replies = send_together(relay, ["a@example.org", "b@example.org", "c@example.org"])
    assert set(replies.values()) == {WRITE_ERROR}
    assert proxied_account.queued() == []  # whatever SQS may have taken is refused


def test_small_messages_gather_while_the_sends_in_flight_are_slow(
        start_proxied_relay, proxied_account: SpoolAccount) -> None:
    """Inline messages have no S3 write to wait for: they leave at once, and while every
    call slot is busy they gather into one batch."""
    relay = start_proxied_relay()
    first_calls, release = threading.Barrier(handoff.MAX_BATCHES_IN_FLIGHT + 1), \
        threading.Event()
    calls: list[int] = []

    def slow_first_calls(request: Request) -> None:
        calls.append(len(entries(request)))
        if len(calls) <= handoff.MAX_BATCHES_IN_FLIGHT:
            first_calls.wait(timeout=30)
            release.wait(timeout=30)

    for operation in ("sqs.SendMessage", "sqs.SendMessageBatch"):
        relay.proxy.add(operation, PASS, call=slow_first_calls)
    small = b"Subject: small\r\n\r\nhi\r\n"
    replies: dict[str, tuple[int, bytes]] = {}

    def client(recipient: str) -> None:
        with smtplib.SMTP(relay.host, relay.port, timeout=60) as smtp:
            smtp.ehlo("client.example.org")
            replies[recipient] = smtp.sendmail("app@example.com", [recipient], small) or (250, b"")

    recipients = [f"r{n}@example.org" for n in range(7)]
    threads = [threading.Thread(target=client, args=(r,)) for r in recipients[:2]]
    for thread in threads:
        thread.start()
    first_calls.wait(timeout=30)  # both call slots are busy
    threads += [threading.Thread(target=client, args=(r,)) for r in recipients[2:]]
    for thread in threads[2:]:
        thread.start()
    deadline = time.monotonic() + 30
    while len(relay.spool._pending) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    release.set()
    for thread in threads:
        thread.join()
    assert calls == [1, 1, 5]
    queued = proxied_account.queued()
    assert sorted(s.envelope.rcpt_to[0] for s in queued) == recipients
    assert all(s.envelope.inline for s in queued)
