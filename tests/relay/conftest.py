"""Fixtures for the relay: moto's S3 and SQS (mock_aws), and a relay listening on a real
loopback socket, served by its own event loop in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from moto import mock_aws

from sesrelay import aws, commit
from sesrelay.config import Config, load_config
from sesrelay.spool import Envelope
from smtp_relay.server import Listener, RelayServer
from tests.faults import FaultProxy
from tests.support import free_port

if TYPE_CHECKING:
    from tests.relay.faulty_relay import FaultyRelay

REGION = "us-east-1"
BUCKET = "sesrelay-test-spool"
QUEUE = "sesrelay-test-spool"
TABLE = "sesrelay-test-idempotency"


@dataclass
class Spooled:
    """A message the relay handed off: the SQS envelope and the S3 object's bytes."""

    envelope: Envelope
    raw: bytes


@dataclass
class SpoolAccount:
    """The moto account behind a relay: its queue and bucket, and ways to read them."""

    queue_url: str

    def queued(self) -> list[Spooled]:
        """What the worker would send: every envelope in the queue that no commit record
        refuses, with its message (inline or from S3), each queue ID once (a repeated
        envelope is sent once). Received and left in flight."""
        sqs = boto3.client("sqs", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        found: dict[str, Spooled] = {}
        while True:
            batch = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                        VisibilityTimeout=300).get("Messages", [])
            if not batch:
                return list(found.values())
            for message in batch:
                envelope = Envelope.from_json(message["Body"])
                if commit.read(dynamodb, TABLE, envelope.queue_id) is not None:
                    continue  # refused by the relay
                if envelope.inline:
                    raw = envelope.message()
                else:
                    raw = s3.get_object(Bucket=envelope.bucket, Key=envelope.key)["Body"].read()
                found.setdefault(envelope.queue_id, Spooled(envelope, raw))

    def envelopes(self) -> int:
        """How many envelopes the queue holds, refused ones and repeats included."""
        sqs = boto3.client("sqs", region_name=REGION)
        attributes = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
        return sum(int(v) for v in attributes["Attributes"].values())

    def objects(self) -> list[str]:
        """Keys of every object in the spool bucket."""
        s3 = boto3.client("s3", region_name=REGION)
        return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


@pytest.fixture
def spool_account(monkeypatch: pytest.MonkeyPatch) -> Iterator[SpoolAccount]:
    """A moto account with the spool bucket and queue; the relay's clients point at it."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS",
                 "AWS_PROFILE", "SESRELAY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    with mock_aws():
        aws.reset_clients()
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        queue_url = boto3.client("sqs", region_name=REGION).create_queue(
            QueueName=QUEUE)["QueueUrl"]
        create_idempotency_table(boto3.client("dynamodb", region_name=REGION), TABLE)
        yield SpoolAccount(queue_url)
    aws.reset_clients()


def create_idempotency_table(dynamodb, name: str) -> None:  # type: ignore[no-untyped-def]
    """The idempotency table as the stack declares it: key "id", TTL "expiration"."""
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """moto's server on a free loopback port, for relays run as processes."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


class RunningRelay:
    """A RelayServer on 127.0.0.1:<ephemeral port>, its loop in a thread. With
    sesrelay_smtps_port set, an implicit-TLS listener on a second ephemeral port
    (smtps_port) stands for it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        listeners = [Listener("127.0.0.1", 0, config.smtpd_tls_wrappermode)]
        if config.sesrelay_smtps_port:
            listeners.append(Listener("127.0.0.1", 0, implicit_tls=True))
        self.server = RelayServer(config, listeners)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        bound = self.call(self.server.start())
        self.host, self.port = bound[0]
        self.smtps_port = bound[1][1] if len(bound) > 1 else 0

    def call(self, coroutine):  # type: ignore[no-untyped-def]
        """Run a coroutine on the relay's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    @property
    def spool(self):  # type: ignore[no-untyped-def]
        """The relay's Spool (its boto3 clients are where tests inject faults)."""
        return self.server.relay.spool

    def on(self, event: str, handler) -> None:  # type: ignore[no-untyped-def]
        """Register a botocore event handler on the relay's own client for the event's
        service (s3, sqs or dynamodb), e.g. "before-send.sqs.SendMessage"."""
        service = event.split(".")[1]
        client = {"s3": self.spool.client.s3, "sqs": self.spool.client.sqs,
                  "dynamodb": self.spool._dynamodb}[service]
        client.meta.events.register(event, handler)

    @property
    def metrics(self):  # type: ignore[no-untyped-def]
        """The relay's metric counters."""
        return self.server.metrics._counts

    def stop(self) -> None:
        """Drain quickly and stop the loop (once: a test may stop it first)."""
        if self.loop.is_closed():
            return
        if not self.server.relay.draining:
            self.call(self.server.drain(timeout=2))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def start_relay(spool_account: SpoolAccount, tmp_path: Path
                ) -> Iterator[Callable[..., RunningRelay]]:
    """Start a relay with main.cf text and/or parameter overrides; stopped after the test."""
    started: list[RunningRelay] = []

    def start(main_cf: str = "", **settings: object) -> RunningRelay:
        path = tmp_path / f"main{len(started)}.cf"
        path.write_text(main_cf)
        overrides = {"myhostname": "relay.example.net",
                     "sesrelay_spool_bucket": BUCKET,
                     "sesrelay_spool_queue_url": spool_account.queue_url,
                     "sesrelay_idempotency_table": TABLE, **settings}
        relay = RunningRelay(load_config(path, environ={}, overrides=overrides))
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


@pytest.fixture(params=["botocore", "lean"])
def faulty_relay(request: pytest.FixtureRequest, moto_server: str, tmp_path: Path
                 ) -> Iterator[Callable[..., FaultyRelay]]:
    """Start `sesrelay serve` behind a fault proxy (settings: SESRELAY_* variables), once
    with each spool client (sesrelay_spool_client)."""
    from tests.relay.faulty_relay import FaultyRelay  # it imports this module

    started: list[FaultyRelay] = []

    def start(**settings: str) -> FaultyRelay:
        settings = {"SESRELAY_SPOOL_CLIENT": request.param, **settings}
        relay = FaultyRelay(moto_server, FaultProxy(moto_server), tmp_path, settings)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()
