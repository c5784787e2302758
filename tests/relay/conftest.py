"""Fixtures for the relay: moto's S3, SQS and DynamoDB (mock_aws in this process, or moto's
server behind a fault proxy), and a relay listening on a real loopback socket, served by
its own event loop in a background thread."""

from __future__ import annotations

import asyncio
import threading
import uuid
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
from smtp_relay import eventloop
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
    """The moto account behind a relay: its queue, bucket and commit table, and ways to
    read them. endpoint: moto's server, read directly (never through a fault proxy); None
    for mock_aws in this process."""

    queue_url: str
    bucket: str = BUCKET
    table: str = TABLE
    endpoint: str | None = None

    def client(self, service: str):  # type: ignore[no-untyped-def]
        """A boto3 client of the account."""
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint)

    def queued(self) -> list[Spooled]:
        """What the worker would send: every envelope in the queue that no commit record
        refuses, with its message (inline or from S3), each queue ID once (a repeated
        envelope is sent once). Received and left in flight."""
        sqs, s3, dynamodb = self.client("sqs"), self.client("s3"), self.client("dynamodb")
        found: dict[str, Spooled] = {}
        while True:
            batch = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                        VisibilityTimeout=300).get("Messages", [])
            if not batch:
                return list(found.values())
            for message in batch:
                envelope = Envelope.from_json(message["Body"])
                if commit.read(dynamodb, self.table, envelope.queue_id) is not None:
                    continue  # refused by the relay
                if envelope.inline:
                    raw = envelope.message()
                else:
                    raw = s3.get_object(Bucket=envelope.bucket, Key=envelope.key)["Body"].read()
                found.setdefault(envelope.queue_id, Spooled(envelope, raw))

    def envelopes(self) -> int:
        """How many envelopes the queue holds, refused ones and repeats included."""
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
        return sum(int(v) for v in attributes["Attributes"].values())

    def objects(self) -> list[str]:
        """Keys of every object in the spool bucket."""
        return [o["Key"] for o in self.client("s3").list_objects_v2(
            Bucket=self.bucket).get("Contents", [])]


def create_spool_account(bucket: str, queue: str, table: str,
                         endpoint: str | None = None) -> SpoolAccount:
    """Create the bucket, queue and commit table (at endpoint, if given)."""
    account = SpoolAccount("", bucket, table, endpoint)
    account.client("s3").create_bucket(Bucket=bucket)
    account.queue_url = account.client("sqs").create_queue(QueueName=queue)["QueueUrl"]
    create_idempotency_table(account.client("dynamodb"), table)
    return account


def aws_environment(monkeypatch: pytest.MonkeyPatch, endpoint: str | None = None) -> None:
    """The relay's AWS settings: test credentials, and its endpoint (None: AWS's, which
    mock_aws intercepts)."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS",
                 "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE", "AWS_SESSION_TOKEN",
                 "SESRELAY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    if endpoint is not None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    aws.reset_clients()  # the process's shared clients know the old endpoint


@pytest.fixture
def spool_account(monkeypatch: pytest.MonkeyPatch) -> Iterator[SpoolAccount]:
    """A moto account (mock_aws) with the spool bucket, queue and commit table; the
    relay's clients point at it."""
    aws_environment(monkeypatch)
    with mock_aws():
        aws.reset_clients()
        yield create_spool_account(BUCKET, QUEUE, TABLE)
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
    (smtps_port) stands for it. proxy: the fault proxy its AWS requests go through, if
    any."""

    def __init__(self, config: Config, proxy: FaultProxy | None = None) -> None:
        self.config = config
        self.proxy = proxy
        listeners = [Listener("127.0.0.1", 0, config.smtpd_tls_wrappermode)]
        if config.sesrelay_smtps_port:
            listeners.append(Listener("127.0.0.1", 0, implicit_tls=True))
        self.server = RelayServer(config, listeners)
        self.loop = eventloop.new_event_loop()
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
        """The relay's Spool (its stores under way, its envelopes waiting for a batch)."""
        return self.server.relay.spool

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


def relay_starter(account: SpoolAccount, tmp_path: Path, started: list[RunningRelay],
                  proxy: FaultProxy | None = None, **fixed: object
                  ) -> Callable[..., RunningRelay]:
    """A function that starts a relay on the account with main.cf text and/or parameter
    overrides (over `fixed`), and adds it to `started`."""
    def start(main_cf: str = "", **settings: object) -> RunningRelay:
        path = tmp_path / f"main{len(started)}.cf"
        path.write_text(main_cf)
        overrides = {"myhostname": "relay.example.net",
                     "sesrelay_spool_bucket": account.bucket,
                     "sesrelay_spool_queue_url": account.queue_url,
                     "sesrelay_idempotency_table": account.table, **fixed, **settings}
        relay = RunningRelay(load_config(path, environ={}, overrides=overrides), proxy)
        started.append(relay)
        return relay

    return start


@pytest.fixture
def start_relay(spool_account: SpoolAccount, tmp_path: Path
                ) -> Iterator[Callable[..., RunningRelay]]:
    """Start a relay with main.cf text and/or parameter overrides; stopped after the test."""
    started: list[RunningRelay] = []
    # mock_aws intercepts botocore's requests only, and these tests are about policy, not
    # the spool client: the botocore one (the handoff's tests run over both clients, with
    # start_proxied_relay).
    yield relay_starter(spool_account, tmp_path, started, sesrelay_spool_client="botocore")
    for relay in started:
        relay.stop()


SPOOL_CLIENTS = ["botocore", "lean"]  # sesrelay_spool_client's values


@pytest.fixture
def proxied_account(moto_server: str, monkeypatch: pytest.MonkeyPatch
                    ) -> Iterator[SpoolAccount]:
    """A bucket, queue and commit table of this test's own in moto's server."""
    aws_environment(monkeypatch)
    name = f"handoff-{uuid.uuid4().hex[:12]}"
    yield create_spool_account(name, name, name, moto_server)
    aws.reset_clients()


@pytest.fixture(params=SPOOL_CLIENTS)
def start_proxied_relay(request: pytest.FixtureRequest, proxied_account: SpoolAccount,
                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                        ) -> Iterator[Callable[..., RunningRelay]]:
    """Start a relay in this process (as start_relay does) whose S3, SQS and DynamoDB
    requests go through a fault proxy (relay.proxy) to proxied_account, once with each
    spool client: faults are injected at the HTTP level, which both clients speak."""
    assert proxied_account.endpoint is not None
    proxy = FaultProxy(proxied_account.endpoint)
    aws_environment(monkeypatch, proxy.start())
    started: list[RunningRelay] = []
    yield relay_starter(proxied_account, tmp_path, started, proxy,
                        sesrelay_spool_client=request.param)
    for relay in started:
        relay.stop()
    proxy.stop()


@pytest.fixture(params=SPOOL_CLIENTS)
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
