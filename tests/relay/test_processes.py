"""`sesrelay serve --processes N`: N relay processes share the port (SO_REUSEPORT); SIGTERM
drains them all; one dying stops the rest, so the task is replaced; --cpu-affinity keeps
each on one CPU."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.relay.conftest import create_idempotency_table
from tests.support import free_port, wait_for_port

REGION = "us-east-1"
SESRELAY = str(Path(sys.executable).parent / "sesrelay")


class Relay:
    """`sesrelay serve --processes N [options]` against moto's server (N = 2 by default)."""

    def __init__(self, endpoint: str, tmp_path: Path, processes: int = 2,
                 options: tuple[str, ...] = ()) -> None:
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **creds)
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION, **creds)
        bucket = f"spool-{free_port()}"
        s3.create_bucket(Bucket=bucket)
        self.queue_url = self.sqs.create_queue(QueueName=bucket)["QueueUrl"]
        create_idempotency_table(boto3.client("dynamodb", endpoint_url=endpoint,
                                              region_name=REGION, **creds), bucket)
        self.port = free_port()
        env = {"PATH": os.environ["PATH"], "AWS_ENDPOINT_URL": endpoint,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": REGION, "POWERTOOLS_METRICS_DISABLED": "true",
               "SESRELAY_MYHOSTNAME": "relay.example.net",
               "SESRELAY_SPOOL_BUCKET": bucket, "SESRELAY_SPOOL_QUEUE_URL": self.queue_url,
               "SESRELAY_IDEMPOTENCY_TABLE": bucket}
        self.process = subprocess.Popen(
            [SESRELAY, "serve", "--listen", f"127.0.0.1:{self.port}", "--processes",
             str(processes), *options],
            env=env, stdout=(tmp_path / "serve.log").open("wb"), stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process, timeout=30)
        deadline = time.monotonic() + 30
        forked = processes if processes > 1 else 0
        while len(self.children()) < forked and time.monotonic() < deadline:
            time.sleep(0.1)

    def children(self) -> list[int]:
        pid = self.process.pid
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(child) for child in text.split()]

    def queued(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def running(relay: Relay) -> Iterator[Relay]:
    yield relay
    if relay.process.poll() is None:
        relay.process.kill()
        relay.process.wait()


@pytest.fixture
def relay(moto_server: str, tmp_path: Path) -> Iterator[Relay]:
    yield from running(Relay(moto_server, tmp_path))


@pytest.fixture
def pinned_relay(moto_server: str, tmp_path: Path) -> Iterator[Relay]:
    yield from running(Relay(moto_server, tmp_path, options=("--cpu-affinity",)))


@pytest.fixture
def pinned_single_relay(moto_server: str, tmp_path: Path) -> Iterator[Relay]:
    yield from running(Relay(moto_server, tmp_path, processes=1, options=("--cpu-affinity",)))


def send(port: int) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.org")
        client.mail("app@example.com")
        client.rcpt("someone@example.org")
        return client.data(b"Subject: hi\r\n\r\nbody\r\n")[0]


def test_processes_share_the_port_and_all_drain_on_sigterm(relay: Relay) -> None:
    children = relay.children()
    assert len(children) == 2
    assert [send(relay.port) for _ in range(6)] == [250] * 6
    assert relay.queued() == 6
    relay.process.send_signal(signal.SIGTERM)
    assert relay.process.wait(timeout=30) == 0
    assert not any(Path(f"/proc/{child}").exists() for child in children)


def test_a_dead_process_stops_the_others(relay: Relay) -> None:
    first, second = relay.children()
    os.kill(first, signal.SIGKILL)
    assert relay.process.wait(timeout=30) == 1
    deadline = time.monotonic() + 10
    while Path(f"/proc/{second}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{second}").exists()


def test_no_process_outlives_a_killed_parent(relay: Relay) -> None:
    """SIGKILL (OOM, kill -9) of the parent: its children drain and exit, instead of
    serving on as orphans that keep the port."""
    children = relay.children()
    assert [send(relay.port) for _ in range(2)] == [250] * 2
    relay.process.kill()
    relay.process.wait()
    deadline = time.monotonic() + 30
    while any(alive(child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(child) for child in children)
    assert relay.queued() == 2  # what they acknowledged is queued


def alive(pid: int) -> bool:
    """Running (not a zombie waiting for its new parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_cpu_affinity_keeps_each_process_on_one_cpu(pinned_relay: Relay) -> None:
    relay = pinned_relay
    cpus = sorted(os.sched_getaffinity(0))
    expected = [{cpus[0]}, {cpus[1 % len(cpus)]}]  # round-robin over the CPUs it may use
    children = relay.children()
    deadline = time.monotonic() + 10  # a child pins itself first thing, maybe not yet
    while ([os.sched_getaffinity(child) for child in children] != expected
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert [os.sched_getaffinity(child) for child in children] == expected
    assert os.sched_getaffinity(relay.process.pid) == set(cpus)  # the parent stays free
    assert [send(relay.port) for _ in range(4)] == [250] * 4


def test_cpu_affinity_with_one_process(pinned_single_relay: Relay) -> None:
    """What a task of one vCPU or less runs (the CDK default)."""
    relay = pinned_single_relay
    assert relay.children() == []
    assert os.sched_getaffinity(relay.process.pid) == {min(os.sched_getaffinity(0))}
    assert send(relay.port) == 250
    relay.process.send_signal(signal.SIGTERM)
    assert relay.process.wait(timeout=30) == 0
