"""The commit protocol under failing and ambiguous AWS answers: a message is either
acknowledged (250) and queued once, or refused (451) and never sent; and a client's retry
after a 451 succeeds. "Queued" here is what the worker would send: envelopes that no
commit record refuses, each queue ID once (SpoolAccount.queued)."""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from collections.abc import Iterator

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from sesrelay import commit, spool
from sesrelay.commit import CommitState
from tests.relay.conftest import REGION, TABLE, RunningRelay, SpoolAccount

SMALL = b"From: app@example.com\r\nSubject: retry me\r\n\r\nbody\r\n"
# Too large to travel inside the envelope: written to S3 first.
LARGE = b"From: app@example.com\r\nSubject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 200


class _Body:
    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    def stream(self, **kwargs: object) -> Iterator[bytes]:
        yield self.data


def service_unavailable(**kwargs: object) -> AWSResponse:
    """HTTP 503: whether the service acted, the relay cannot know."""
    return AWSResponse("https://example.invalid", 503, {}, _Body())


def access_denied(**kwargs: object) -> AWSResponse:
    """A 4xx answer: the service certainly did nothing."""
    body = b'{"__type":"AccessDenied","message":"injected"}'
    return AWSResponse("https://example.invalid", 400,
                       {"x-amzn-query-error": "AccessDenied;Sender"}, _Body(body))


def read_timeout(**kwargs: object) -> AWSResponse:
    """A request whose answer never came in time."""
    raise ReadTimeoutError(endpoint_url="https://example.invalid")


def unreachable(**kwargs: object) -> None:
    """The service cannot be reached at all."""
    raise EndpointConnectionError(endpoint_url="https://example.invalid")


def lose_answer(**kwargs: object) -> None:
    """After the service acted: the answer is lost on its way back."""
    raise ReadTimeoutError(endpoint_url="https://example.invalid")


def send(relay: RunningRelay, message: bytes = SMALL) -> tuple[int, bytes]:
    with smtplib.SMTP(relay.host, relay.port, timeout=60) as client:
        client.ehlo("client.example.org")
        client.mail("app@example.com")
        client.rcpt("someone@example.org")
        return client.data(message)


def commit_state(queue_id: str) -> CommitState | None:
    record = commit.read(boto3.client("dynamodb", region_name=REGION), TABLE, queue_id)
    return record.state if record else None


def envelope_ids(account: SpoolAccount) -> list[str]:
    """Queue IDs of every envelope in the queue, refused ones and repeats included."""
    sqs = boto3.client("sqs", region_name=REGION)
    ids = []
    while True:
        batch = sqs.receive_message(QueueUrl=account.queue_url, MaxNumberOfMessages=10,
                                    VisibilityTimeout=300).get("Messages", [])
        if not batch:
            return ids
        ids += [spool.Envelope.from_json(m["Body"]).queue_id for m in batch]


@pytest.mark.parametrize("event,message", [
    ("before-send.s3.PutObject", LARGE),
    ("before-send.sqs.SendMessage", SMALL),
    ("before-send.sqs.SendMessage", LARGE),
])
@pytest.mark.parametrize("fault", [service_unavailable, read_timeout])
def test_store_failure_gives_451_and_the_retry_succeeds(start_relay, event: str, fault,
                                                        message: bytes,
                                                        spool_account: SpoolAccount) -> None:
    relay = start_relay()
    relay.on(event, fault)
    assert send(relay, message) == (451, b"4.3.0 Error: queue file write error")
    assert spool_account.queued() == []
    relay.spool.client.s3.meta.events.unregister(event, fault)
    relay.spool.client.sqs.meta.events.unregister(event, fault)
    code, text = send(relay, message)
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as")
    [spooled] = spool_account.queued()
    assert spooled.raw.endswith(message)
    assert spooled.envelope.inline == (message is SMALL)
    assert relay.metrics["Deferred"] == 1 and relay.metrics["Accepted"] == 1


def test_a_lost_sqs_answer_is_refused_for_good(start_relay, spool_account) -> None:
    relay = start_relay()
    relay.on("after-call.sqs.SendMessage", lose_answer)  # SQS took every attempt
    assert send(relay)[0] == 451
    ids = envelope_ids(spool_account)
    assert len(ids) == 3 and len(set(ids)) == 1  # one envelope per attempt ...
    assert commit_state(ids[0]) is CommitState.REFUSED  # ... and the worker drops them all


def test_a_lost_answer_then_a_good_retry_queues_the_message_once(start_relay,
                                                                 spool_account) -> None:
    relay = start_relay()
    lost = []

    def lose_first(**kwargs: object) -> None:
        if not lost:
            lost.append(1)
            lose_answer()

    relay.on("after-call.sqs.SendMessage", lose_first)
    code, text = send(relay)
    assert code == 250
    [queued] = spool_account.queued()
    assert text.decode().endswith(queued.envelope.queue_id)
    assert commit_state(queued.envelope.queue_id) is None  # no refusal was needed


def test_a_lost_answer_for_a_message_a_worker_already_claimed_gets_250(start_relay,
                                                                        spool_account) -> None:
    relay = start_relay()
    bodies: list[str] = []
    relay.on("provide-client-params.sqs.SendMessage",
             lambda params, **kw: bodies.append(params["MessageBody"]))

    def claim_and_lose(**kwargs: object) -> None:
        queue_id = spool.Envelope.from_json(bodies[-1]).queue_id
        commit.claim(boto3.client("dynamodb", region_name=REGION), TABLE, queue_id)
        lose_answer()

    relay.on("after-call.sqs.SendMessage", claim_and_lose)
    code, text = send(relay)
    assert code == 250
    queue_id = text.decode().rsplit(" ", 1)[1]
    assert commit_state(queue_id) is CommitState.CLAIMED


def test_a_certain_failure_needs_no_commit_record(start_relay, spool_account) -> None:
    relay = start_relay()
    writes: list[str] = []
    relay.on("before-call.dynamodb.PutItem", lambda **kw: writes.append("put"))
    relay.on("before-send.sqs.SendMessage", access_denied)
    assert send(relay)[0] == 451
    assert writes == []  # SQS answered 4xx on every attempt: nothing to settle


def test_a_doubt_is_settled_once_dynamodb_is_back(start_relay, spool_account,
                                                  monkeypatch) -> None:
    # SQS and DynamoDB out together (the task's network): the relay keeps trying the
    # commit record while the client waits, so a short outage leaves nothing in doubt.
    monkeypatch.setattr("smtp_relay.handoff.RELAY_SETTLE_PAUSES", (0.05,))
    relay = start_relay()
    relay.on("after-call.sqs.SendMessage", lose_answer)
    outage = iter(range(5))
    relay.on("before-call.dynamodb.PutItem",
             lambda **kw: unreachable(**kw) if next(outage, None) is not None else None)
    assert send(relay)[0] == 451
    [queue_id] = set(envelope_ids(spool_account))
    assert commit_state(queue_id) is CommitState.REFUSED
    assert spool_account.queued() == []


def test_an_unsettled_doubt_is_451_and_logged_as_in_doubt(start_relay, spool_account,
                                                          caplog, monkeypatch) -> None:
    monkeypatch.setattr("smtp_relay.handoff.RELAY_SETTLE_SECONDS", 0.5)
    relay = start_relay()
    relay.on("after-call.sqs.SendMessage", lose_answer)
    relay.on("before-call.dynamodb.PutItem", unreachable)
    assert send(relay)[0] == 451
    [queue_id] = set(envelope_ids(spool_account))
    assert commit_state(queue_id) is None
    assert any("in doubt" in r.getMessage() and queue_id in r.getMessage()
               for r in caplog.records)


def test_a_client_gone_before_the_commit_leaves_nothing_queued(start_relay,
                                                               spool_account) -> None:
    relay = start_relay()
    held, release = threading.Event(), threading.Event()

    def hold(**kwargs: object) -> None:
        held.set()
        release.wait(30)

    relay.on("before-call.s3.PutObject", hold)
    client = socket.create_connection((relay.host, relay.port), timeout=30)
    client.sendall(b"EHLO c\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\n"
                   b"DATA\r\n" + LARGE.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    assert held.wait(30)
    client.close()  # gone while its message is being written to S3
    time.sleep(0.3)
    release.set()
    deadline = time.monotonic() + 10
    while relay.spool.stores and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool_account.queued() == [] and envelope_ids(spool_account) == []


def test_a_client_gone_during_the_commit_still_gets_its_message_queued(start_relay,
                                                                        spool_account) -> None:
    relay = start_relay()
    held, release = threading.Event(), threading.Event()

    def hold(**kwargs: object) -> None:
        held.set()
        release.wait(30)

    relay.on("before-call.sqs.SendMessage", hold)
    client = socket.create_connection((relay.host, relay.port), timeout=30)
    client.sendall(b"EHLO c\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\n"
                   b"DATA\r\n" + SMALL + b".\r\n")
    assert held.wait(30)
    client.close()  # the commit has begun: it runs to its end, as in Postfix
    release.set()
    deadline = time.monotonic() + 10
    while relay.spool.stores and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(spool_account.queued()) == 1
