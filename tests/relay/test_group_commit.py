"""Group commit of SQS sends: concurrent sessions share one SendMessageBatch, and each
client's 250 still waits for its own entry; a failed entry fails only its own client."""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Callable
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from sesrelay import aws
from smtp_relay import handoff
from tests.relay.conftest import RunningRelay, SpoolAccount

MESSAGE = b"From: app@example.com\r\nSubject: together\r\n\r\nbody\r\n"


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

    aws.client("s3").meta.events.register("before-call.s3.PutObject", hold)

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


def on_sqs(event: str, handler: Callable[..., Any]) -> None:
    """Register a hook on the relay's own SQS client (dropped with it after the test)."""
    aws.client("sqs").meta.events.register(event, handler)


def test_concurrent_messages_share_one_batch(start_relay, spool_account: SpoolAccount) -> None:
    relay = start_relay()
    batches: list[int] = []
    on_sqs("provide-client-params.sqs.SendMessageBatch",
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


def test_a_failed_entry_gives_only_its_client_451(start_relay, spool_account) -> None:
    relay = start_relay()
    dropped: list[str] = []

    def drop_entry(params: dict[str, Any], **kwargs: object) -> None:
        # What SQS does with an entry it fails: it is not queued, and is listed in Failed.
        keep = [e for e in params["Entries"] if "unlucky@" not in e["MessageBody"]]
        dropped.extend(e["Id"] for e in params["Entries"] if e not in keep)
        params["Entries"] = keep

    def report_failed(parsed: dict[str, Any], **kwargs: object) -> None:
        parsed.setdefault("Failed", []).extend(
            {"Id": i, "SenderFault": False, "Code": "InternalError", "Message": "injected"}
            for i in dropped)

    on_sqs("provide-client-params.sqs.SendMessageBatch", drop_entry)
    on_sqs("after-call.sqs.SendMessageBatch", report_failed)
    replies = send_together(relay, ["a@example.org", "unlucky@example.org", "b@example.org"])
    assert len(dropped) == 1
    assert replies["unlucky@example.org"] == (451, b"4.3.0 Error: queue file write error")
    assert replies["a@example.org"][0] == replies["b@example.org"][0] == 250
    queued = spool_account.queued()
    assert sorted(s.envelope.rcpt_to[0] for s in queued) == ["a@example.org", "b@example.org"]
    # The failed message's object was withdrawn; the others' stay.
    assert sorted(spool_account.objects()) == sorted(s.envelope.key for s in queued)
    assert relay.metrics["Deferred"] == 1 and relay.metrics["Accepted"] == 2


class _EmptyBody:
    def stream(self, **kwargs: object) -> Any:
        yield b""


def test_a_failed_batch_call_gives_every_client_in_it_451(start_relay, spool_account) -> None:
    relay = start_relay()
    on_sqs("before-send.sqs.SendMessageBatch",
           lambda **kw: AWSResponse("https://example.invalid", 503, {}, _EmptyBody()))
    replies = send_together(relay, ["a@example.org", "b@example.org", "c@example.org"])
    assert {reply for reply in replies.values()} == {
        (451, b"4.3.0 Error: queue file write error")}
    assert spool_account.queued() == []
    assert spool_account.objects() == []
