"""Group commit of SQS sends: concurrent sessions share one SendMessageBatch, and each
client's 250 still waits for its own entry; a failed entry fails only its own client.

Messages here are large enough to go through S3 (their writes are held until every
client has started, as under load), except where a test says otherwise."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from smtp_relay import handoff
from tests.relay.conftest import RunningRelay, SpoolAccount

MESSAGE = (b"From: app@example.com\r\nSubject: together\r\n\r\n"
           + (b"y" * 998 + b"\r\n") * 200)


@pytest.fixture(autouse=True)
def wide_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window wide enough that envelopes never leave before the others arrive."""
    monkeypatch.setattr(handoff, "BATCH_WINDOW", 10.0)


def send_together(relay: RunningRelay, recipients: list[str],
                  extra_recipients: dict[str, list[str]] | None = None
                  ) -> dict[str, tuple[int, bytes]]:
    """One client per recipient (plus its extra_recipients), all sending at once; each one's
    reply to DATA. Their S3 writes are held until all have started, as under load, so they
    meet in one batch."""
    replies: dict[str, tuple[int, bytes]] = {}
    barrier = threading.Barrier(len(recipients))
    puts = threading.Barrier(len(recipients))

    def hold(**kwargs: object) -> None:  # a hook that returns something short-circuits
        puts.wait(timeout=30)

    relay.on("before-call.s3.PutObject", hold)

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


def on_sqs(relay: RunningRelay, event: str, handler: Callable[..., Any]) -> None:
    """Register a hook on the relay's own SQS client (dropped with it after the test)."""
    relay.on(event, handler)


def test_concurrent_messages_share_one_batch(start_relay, spool_account: SpoolAccount) -> None:
    relay = start_relay()
    batches: list[int] = []
    on_sqs(relay, "provide-client-params.sqs.SendMessageBatch",
           lambda params, **kw: batches.append(len(params["Entries"])))
    recipients = [f"r{n}@example.org" for n in range(5)]
    replies = send_together(relay, recipients)
    assert batches == [5]
    queued = {s.envelope.rcpt_to[0]: s for s in spool_account.queued()}
    assert set(queued) == set(recipients)
    for recipient, (code, text) in replies.items():
        assert (code, text.decode()) == (
            250, f"2.0.0 Ok: queued as {queued[recipient].envelope.queue_id}")
        assert queued[recipient].raw.endswith(MESSAGE)


def _fail_unlucky_entries(relay: RunningRelay, times: int | None) -> list[str]:
    """Make SQS fail the entry of the message to unlucky@ (the first `times` times, or
    always), as SQS does: listed in Failed, not queued; a lone SendMessage of it gets
    HTTP 500. Returns the queue IDs of the failures."""
    failed: list[str] = []

    def unlucky(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if times is not None and len(failed) >= times:
            return []
        return [e for e in entries if "unlucky@" in e["MessageBody"]]

    def drop_entry(params: dict[str, Any], **kwargs: object) -> None:
        dropped = unlucky(params["Entries"])
        failed.extend(e["Id"] for e in dropped)
        params["Entries"] = [e for e in params["Entries"] if e not in dropped]

    def report_failed(parsed: dict[str, Any], model: Any, **kwargs: object) -> None:
        parsed.setdefault("Failed", []).extend(
            {"Id": i, "SenderFault": False, "Code": "InternalError", "Message": "injected"}
            for i in failed_now)

    failed_now: list[str] = []

    def remember(params: dict[str, Any], **kwargs: object) -> None:
        failed_now[:] = [e["Id"] for e in unlucky(params["Entries"])]

    def lone_send(params: dict[str, Any], **kwargs: object) -> None:
        if unlucky([params]):
            failed.append("lone")
            raise_500.append(True)

    raise_500: list[bool] = []

    def answer_500(**kwargs: object) -> AWSResponse | None:
        if raise_500:
            raise_500.clear()
            return AWSResponse("https://example.invalid", 500, {}, _EmptyBody())
        return None

    on_sqs(relay, "provide-client-params.sqs.SendMessageBatch", remember)
    on_sqs(relay, "provide-client-params.sqs.SendMessageBatch", drop_entry)
    on_sqs(relay, "after-call.sqs.SendMessageBatch", report_failed)
    on_sqs(relay, "provide-client-params.sqs.SendMessage", lone_send)
    on_sqs(relay, "before-send.sqs.SendMessage", answer_500)
    return failed


def test_a_failed_entry_gives_only_its_client_451(start_relay, spool_account) -> None:
    relay = start_relay()
    failed = _fail_unlucky_entries(relay, times=None)
    replies = send_together(relay, ["a@example.org", "unlucky@example.org", "b@example.org"])
    assert replies["unlucky@example.org"] == (451, b"4.3.0 Error: queue file write error")
    assert replies["a@example.org"][0] == replies["b@example.org"][0] == 250
    assert len(failed) == 3  # the relay tried it three times
    queued = spool_account.queued()
    assert sorted(s.envelope.rcpt_to[0] for s in queued) == ["a@example.org", "b@example.org"]
    assert relay.metrics["Deferred"] == 1 and relay.metrics["Accepted"] == 2


def test_a_failed_entry_is_retried(start_relay, spool_account) -> None:
    relay = start_relay()
    failed = _fail_unlucky_entries(relay, times=1)
    replies = send_together(relay, ["a@example.org", "unlucky@example.org", "b@example.org"])
    assert {code for code, _ in replies.values()} == {250}
    assert len(failed) == 1
    assert len(spool_account.queued()) == 3


class _EmptyBody:
    def stream(self, **kwargs: object) -> Any:
        yield b""


def test_a_failed_batch_call_gives_every_client_in_it_451(start_relay, spool_account) -> None:
    relay = start_relay()
    on_sqs(relay, "before-send.sqs.SendMessageBatch",
           lambda **kw: AWSResponse("https://example.invalid", 503, {}, _EmptyBody()))
    on_sqs(relay, "before-send.sqs.SendMessage",
           lambda **kw: AWSResponse("https://example.invalid", 503, {}, _EmptyBody()))
    replies = send_together(relay, ["a@example.org", "b@example.org", "c@example.org"])
    assert {reply for reply in replies.values()} == {
        (451, b"4.3.0 Error: queue file write error")}
    assert spool_account.queued() == []  # whatever SQS may have taken is refused


def test_small_messages_gather_while_the_sends_in_flight_are_slow(
        start_relay, spool_account: SpoolAccount) -> None:
    """Inline messages have no S3 write to wait for: they leave at once, and while every
    call slot is busy they gather into one batch."""
    relay = start_relay()
    first_calls, release = threading.Barrier(handoff.MAX_BATCHES_IN_FLIGHT + 1), \
        threading.Event()
    calls: list[int] = []

    def slow_first_calls(params: dict[str, Any], **kwargs: object) -> None:
        calls.append(len(params.get("Entries", [params])))
        if len(calls) <= handoff.MAX_BATCHES_IN_FLIGHT:
            first_calls.wait(timeout=30)
            release.wait(timeout=30)

    on_sqs(relay, "provide-client-params.sqs.SendMessage", slow_first_calls)
    on_sqs(relay, "provide-client-params.sqs.SendMessageBatch", slow_first_calls)
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
    queued = spool_account.queued()
    assert sorted(s.envelope.rcpt_to[0] for s in queued) == recipients
    assert all(s.envelope.inline for s in queued)
