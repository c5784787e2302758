"""The commit protocol under failing and ambiguous AWS answers: a message is either
acknowledged (250) and queued once, or refused (451) and never sent; and a client's retry
after a 451 succeeds. "Queued" here is what the worker would send: envelopes that no
commit record refuses, each queue ID once (SpoolAccount.queued).

The relay runs with each spool client; its S3, SQS and DynamoDB requests go through a
fault proxy (tests/faults.py) to moto's server, which holds what really happened."""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from typing import Any

import pytest

from sesrelay import commit, spool
from sesrelay.commit import CommitState
from tests.faults import DROP, ERROR_ANSWER, LOSE_ANSWER, PASS, Request
from tests.relay.conftest import RunningRelay, SpoolAccount

SMALL = b"From: app@example.com\r\nSubject: retry me\r\n\r\nbody\r\n"
# Too large to travel inside the envelope: written to S3 first.
LARGE = b"From: app@example.com\r\nSubject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 200


def send(relay: RunningRelay, message: bytes = SMALL) -> tuple[int, bytes]:
    with smtplib.SMTP(relay.host, relay.port, timeout=60) as client:
        client.ehlo("client.example.org")
        client.mail("app@example.com")
        client.rcpt("someone@example.org")
        return client.data(message)


def commit_state(account: SpoolAccount, queue_id: str) -> CommitState | None:
    record = commit.read(account.client("dynamodb"), account.table, queue_id)
    return record.state if record else None


def envelope_ids(account: SpoolAccount) -> list[str]:
    """Queue IDs of every envelope in the queue, refused ones and repeats included."""
    sqs = account.client("sqs")
    ids = []
    while True:
        batch = sqs.receive_message(QueueUrl=account.queue_url, MaxNumberOfMessages=10,
                                    VisibilityTimeout=300).get("Messages", [])
        if not batch:
            return ids
        ids += [spool.Envelope.from_json(m["Body"]).queue_id for m in batch]


# An HTTP 503 (the service may have acted, as far as the relay knows), and a request
# dropped unanswered (as a read timeout: the outcome is unknown). The proxy forwards
# neither, so the service certainly did nothing.
@pytest.mark.parametrize("operation,message", [
    ("s3.PutObject", LARGE),
    ("sqs.SendMessage", SMALL),
    ("sqs.SendMessage", LARGE),
], ids=["s3-large", "sqs-small", "sqs-large"])
@pytest.mark.parametrize("fault", [
    {"action": ERROR_ANSWER, "status": 503, "code": "ServiceUnavailable"},
    {"action": DROP},
], ids=["503", "no-answer"])
def test_store_failure_gives_451_and_the_retry_succeeds(
        start_proxied_relay, proxied_account: SpoolAccount, operation: str,
        fault: dict[str, Any], message: bytes) -> None:
    relay = start_proxied_relay()
    relay.proxy.add(operation, **fault)
    assert send(relay, message) == (451, b"4.3.0 Error: queue file write error")
    assert proxied_account.queued() == []
    relay.proxy.clear()
    code, text = send(relay, message)
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as")
    [spooled] = proxied_account.queued()
    assert spooled.raw.endswith(message)
    assert spooled.envelope.inline == (message is SMALL)
    assert relay.metrics["Deferred"] == 1 and relay.metrics["Accepted"] == 1


def test_a_lost_sqs_answer_is_refused_for_good(start_proxied_relay, proxied_account) -> None:
    relay = start_proxied_relay()
    relay.proxy.add("sqs.SendMessage", LOSE_ANSWER)  # SQS took every attempt
    assert send(relay)[0] == 451
    ids = envelope_ids(proxied_account)
    assert len(ids) == 3 and len(set(ids)) == 1  # one envelope per attempt ...
    # ... and the worker drops them all
    assert commit_state(proxied_account, ids[0]) is CommitState.REFUSED


def test_a_lost_answer_then_a_good_retry_queues_the_message_once(start_proxied_relay,
                                                                 proxied_account) -> None:
    relay = start_proxied_relay()
    relay.proxy.add("sqs.SendMessage", LOSE_ANSWER, times=1)
    code, text = send(relay)
    assert code == 250
    [queued] = proxied_account.queued()
    assert text.decode().endswith(queued.envelope.queue_id)
    # no refusal was needed
    assert commit_state(proxied_account, queued.envelope.queue_id) is None


def test_a_lost_answer_for_a_message_a_worker_already_claimed_gets_250(
        start_proxied_relay, proxied_account: SpoolAccount) -> None:
    relay = start_proxied_relay()

    def worker_claims(request: Request) -> None:
        """A worker received the envelope and claimed it while the answer was lost."""
        queue_id = spool.Envelope.from_json(request.json()["MessageBody"]).queue_id
        commit.claim(proxied_account.client("dynamodb"), proxied_account.table, queue_id)

    relay.proxy.add("sqs.SendMessage", LOSE_ANSWER, call=worker_claims)
    code, text = send(relay)
    assert code == 250
    queue_id = text.decode().rsplit(" ", 1)[1]
    assert commit_state(proxied_account, queue_id) is CommitState.CLAIMED


def test_a_certain_failure_needs_no_commit_record(start_proxied_relay,
                                                  proxied_account) -> None:
    relay = start_proxied_relay()
    relay.proxy.add("sqs.SendMessage", ERROR_ANSWER, status=400, code="AccessDenied")
    assert send(relay)[0] == 451
    assert relay.proxy.seen["sqs.SendMessage"] == 3
    # SQS answered 4xx on every attempt: nothing to settle
    assert relay.proxy.seen.get("dynamodb.PutItem", 0) == 0


def test_a_doubt_is_settled_once_dynamodb_is_back(start_proxied_relay, proxied_account,
                                                  monkeypatch) -> None:
    # SQS and DynamoDB out together (the task's network): the relay keeps trying the
    # commit record while the client waits, so a short outage leaves nothing in doubt.
    monkeypatch.setattr("smtp_relay.handoff.RELAY_SETTLE_PAUSES", (0.05,))
    relay = start_proxied_relay()
    relay.proxy.add("sqs.SendMessage", LOSE_ANSWER)
    relay.proxy.add("dynamodb.PutItem", DROP, times=5)
    assert send(relay)[0] == 451
    [queue_id] = set(envelope_ids(proxied_account))
    assert commit_state(proxied_account, queue_id) is CommitState.REFUSED
    assert relay.proxy.seen["dynamodb.PutItem"] == 6
    assert proxied_account.queued() == []


def test_an_unsettled_doubt_is_451_and_logged_as_in_doubt(start_proxied_relay,
                                                          proxied_account, caplog,
                                                          monkeypatch) -> None:
    monkeypatch.setattr("smtp_relay.handoff.RELAY_SETTLE_SECONDS", 0.5)
    relay = start_proxied_relay()
    relay.proxy.add("sqs.SendMessage", LOSE_ANSWER)
    relay.proxy.add("dynamodb.PutItem", DROP)
    assert send(relay)[0] == 451
    [queue_id] = set(envelope_ids(proxied_account))
    assert commit_state(proxied_account, queue_id) is None
    assert any("in doubt" in r.getMessage() and queue_id in r.getMessage()
               for r in caplog.records)


def hold(relay: RunningRelay, operation: str) -> tuple[threading.Event, threading.Event]:
    """Hold the first request of the operation at the proxy until released (before the
    service sees it); (held, release)."""
    held, release = threading.Event(), threading.Event()

    def wait(request: Request) -> None:
        held.set()
        release.wait(30)

    relay.proxy.add(operation, PASS, times=1, call=wait)
    return held, release


def wait_for_stores(relay: RunningRelay) -> None:
    """Until the relay has finished every store under way (10 s at most)."""
    deadline = time.monotonic() + 10
    while relay.spool.stores and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_client_gone_before_the_commit_leaves_nothing_queued(start_proxied_relay,
                                                               proxied_account) -> None:
    relay = start_proxied_relay()
    held, release = hold(relay, "s3.PutObject")
    client = socket.create_connection((relay.host, relay.port), timeout=30)
    client.sendall(b"EHLO c\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\n"
                   b"DATA\r\n" + LARGE.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    assert held.wait(30)
    client.close()  # gone while its message is being written to S3
    time.sleep(0.3)
    release.set()
    wait_for_stores(relay)
    assert proxied_account.queued() == [] and envelope_ids(proxied_account) == []


def test_a_client_gone_during_the_commit_still_gets_its_message_queued(
        start_proxied_relay, proxied_account) -> None:
    relay = start_proxied_relay()
    held, release = hold(relay, "sqs.SendMessage")
    client = socket.create_connection((relay.host, relay.port), timeout=30)
    client.sendall(b"EHLO c\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\n"
                   b"DATA\r\n" + SMALL + b".\r\n")
    assert held.wait(30)
    client.close()  # the commit has begun: it runs to its end, as in Postfix
    release.set()
    wait_for_stores(relay)
    assert len(proxied_account.queued()) == 1
