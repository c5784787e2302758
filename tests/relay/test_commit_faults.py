"""`sesrelay serve` against an AWS emulation whose answers are slow or lost (a proxy of our
own in between, tests/faults.py): every message a client was told 250 is queued once,
and every message it was not told 250 is never sent. "Queued" is what the worker would
send: an envelope in moto's queue that no commit record refuses."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

from sesrelay import commit
from sesrelay.commit import CommitState
from sesrelay.spool import Envelope
from tests.faults import LOSE_ANSWER, SLOW_ANSWER, FaultProxy
from tests.relay.conftest import create_idempotency_table
from tests.support import free_port, wait_for_port

REGION = "us-east-1"
SESRELAY = str(Path(sys.executable).parent / "sesrelay")
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass
class FaultyRelay:
    """`sesrelay serve` whose AWS calls go through a fault proxy to moto's server."""

    moto: str
    proxy: FaultProxy
    tmp_path: Path
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = f"faults-{free_port()}"
        self.sqs = boto3.client("sqs", endpoint_url=self.moto, region_name=REGION,
                                **CREDENTIALS)
        self.dynamodb = boto3.client("dynamodb", endpoint_url=self.moto, region_name=REGION,
                                     **CREDENTIALS)
        boto3.client("s3", endpoint_url=self.moto, region_name=REGION,
                     **CREDENTIALS).create_bucket(Bucket=name)
        self.queue_url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        self.table = name
        create_idempotency_table(self.dynamodb, name)
        self.port = free_port()
        endpoint = self.proxy.start()
        env = {"PATH": "/usr/bin:/bin", "AWS_ENDPOINT_URL": endpoint,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": REGION, "POWERTOOLS_METRICS_DISABLED": "true",
               "SESRELAY_MYHOSTNAME": "relay.example.net", "SESRELAY_SPOOL_BUCKET": name,
               "SESRELAY_SPOOL_QUEUE_URL": self.queue_url,
               "SESRELAY_IDEMPOTENCY_TABLE": name, **self.settings}
        self.log = self.tmp_path / "serve.log"
        self.process = subprocess.Popen(
            [SESRELAY, "serve", "--listen", f"127.0.0.1:{self.port}", "--drain-seconds", "1"],
            env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process, timeout=30)

    def sendable(self) -> dict[str, set[str]]:
        """Subject of each message the worker would send, with the queue IDs it is queued
        under (envelopes that a commit record refuses are not counted; repeated envelopes
        of one queue ID are sent once)."""
        found: dict[str, set[str]] = {}
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                             VisibilityTimeout=600).get("Messages", [])
            if not batch:
                return found
            for message in batch:
                envelope = Envelope.from_json(message["Body"])
                record = commit.read(self.dynamodb, self.table, envelope.queue_id)
                if record is not None and record.state is CommitState.REFUSED:
                    continue
                subject = envelope.message().split(b"Subject: ")[1].split(b"\r\n")[0]
                found.setdefault(subject.decode(), set()).add(envelope.queue_id)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.proxy.stop()


@pytest.fixture
def faulty_relay(moto_server: str, tmp_path: Path) -> Iterator[type[FaultyRelay]]:
    started: list[FaultyRelay] = []

    def start(**settings: str) -> FaultyRelay:
        relay = FaultyRelay(moto_server, FaultProxy(moto_server), tmp_path, settings)
        started.append(relay)
        return relay

    yield start  # type: ignore[misc]
    for relay in started:
        relay.stop()


def send(port: int, subject: str, replies: dict[str, int | str]) -> None:
    """One message; its reply code, or the error that ended the session, in replies."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo("client.example.org")
            client.mail("app@example.com")
            client.rcpt("someone@example.org")
            replies[subject] = client.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())[0]
    except (smtplib.SMTPException, OSError) as exc:
        replies.setdefault(subject, type(exc).__name__)


def assert_no_half_queued(replies: dict[str, int | str],
                          sendable: dict[str, set[str]]) -> None:
    """Every message told 250 is sendable under exactly one queue ID, and nothing else is
    sendable."""
    acknowledged = {s for s, code in replies.items() if code == 250}
    assert set(sendable) == acknowledged, (replies, sendable)
    assert all(len(ids) == 1 for ids in sendable.values()), sendable


def test_a_slow_spool_never_times_the_client_out(faulty_relay) -> None:  # type: ignore[no-untyped-def]
    """smtpd_timeout bounds reads from and writes to the client, not the store."""
    relay = faulty_relay(SESRELAY_SMTPD_TIMEOUT="2s")
    relay.proxy.add("sqs.SendMessage", SLOW_ANSWER, seconds=3.0)
    replies: dict[str, int | str] = {}
    threads = [threading.Thread(target=send, args=(relay.port, f"slow-{n}", replies))
               for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(replies.values()) == {250}
    assert_no_half_queued(replies, relay.sendable())


def test_sigterm_while_stores_are_slow_leaves_nothing_half_queued(faulty_relay) -> None:  # type: ignore[no-untyped-def]
    relay = faulty_relay()
    relay.proxy.add("sqs.SendMessage", SLOW_ANSWER, seconds=2.0)
    replies: dict[str, int | str] = {}
    threads = [threading.Thread(target=send, args=(relay.port, f"term-{n}", replies))
               for n in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # every message is now being stored
    relay.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join()
    assert relay.process.wait(timeout=60) == 0
    assert set(replies.values()) == {250}  # the drain waited for the stores
    assert_no_half_queued(replies, relay.sendable())


def test_lost_sqs_answers_are_refused_never_sent(faulty_relay) -> None:  # type: ignore[no-untyped-def]
    relay = faulty_relay()
    relay.proxy.add("sqs.SendMessage", LOSE_ANSWER)
    replies: dict[str, int | str] = {}
    for n in range(3):
        send(relay.port, f"lost-{n}", replies)
    assert set(replies.values()) == {451}
    attributes = relay.sqs.get_queue_attributes(QueueUrl=relay.queue_url,
                                                AttributeNames=["ApproximateNumberOfMessages"])
    assert int(attributes["Attributes"]["ApproximateNumberOfMessages"]) == 9  # 3 tries each
    assert_no_half_queued(replies, relay.sendable())


def test_some_lost_answers_leave_every_message_acknowledged_or_refused(faulty_relay) -> None:  # type: ignore[no-untyped-def]
    relay = faulty_relay()
    relay.proxy.add("sqs.SendMessage", LOSE_ANSWER, probability=0.4)
    replies: dict[str, int | str] = {}
    for n in range(12):
        send(relay.port, f"some-{n}", replies)
    assert set(replies.values()) <= {250, 451}
    assert_no_half_queued(replies, relay.sendable())
