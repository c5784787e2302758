"""Half-closed connections against `sesrelay serve` as a process (issue 15): each is
answered and closed within a second, the relay's CPU time and log stay flat, and another
client sends a message meanwhile."""

from __future__ import annotations

import os
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.conftest import SESRELAY
from tests.relay.conftest import create_idempotency_table
from tests.support import free_port, read_reply, wait_for_port

REGION = "us-east-1"
HALF_SESSIONS = [
    b"",
    b"EHLO x",
    b"EHLO client.example.org\r\n",
    b"EHLO client.example.org\r\nMAIL FROM:<a@example.com>\r\n",
    b"EHLO client.example.org\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
    b"DATA\r\nSubject: cut short\r\n\r\nhalf a mess",
]


class Relay:
    """`sesrelay serve`, one process, logging to a file, against moto's server."""

    def __init__(self, endpoint: str, tmp_path: Path) -> None:
        credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing",
                       "region_name": REGION, "endpoint_url": endpoint}
        bucket = f"half-close-{free_port()}"
        boto3.client("s3", **credentials).create_bucket(Bucket=bucket)
        self.sqs = boto3.client("sqs", **credentials)
        self.queue_url = self.sqs.create_queue(QueueName=bucket)["QueueUrl"]
        create_idempotency_table(boto3.client("dynamodb", **credentials), bucket)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SESRELAY_", "AWS_", "POWERTOOLS_"))}
        env.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                    "POWERTOOLS_METRICS_DISABLED": "true",
                    "SESRELAY_MYHOSTNAME": "relay.example.net",
                    "SESRELAY_SPOOL_BUCKET": bucket,
                    "SESRELAY_SPOOL_QUEUE_URL": self.queue_url,
                    "SESRELAY_IDEMPOTENCY_TABLE": bucket})
        self.log = tmp_path / "serve.log"
        self.process = subprocess.Popen(
            [SESRELAY, "serve", "--listen", f"127.0.0.1:{self.port}"], env=env,
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process, timeout=30)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_size(self) -> int:
        return self.log.stat().st_size

    def queued(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


@pytest.fixture
def relay(moto_server: str, tmp_path: Path) -> Iterator[Relay]:
    running = Relay(moto_server, tmp_path)
    yield running
    running.process.kill()
    running.process.wait()


def half_close(port: int, sent: bytes) -> socket.socket:
    """Connect, read the banner, send, shut down the writing side; keep the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    read_reply(sock.makefile("rb"))
    sock.sendall(sent)
    sock.shutdown(socket.SHUT_WR)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Read until the relay closes the connection; True if that took at most seconds."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    finally:
        sock.close()
    return time.monotonic() - started <= seconds


def test_half_closed_clients_neither_spin_nor_block_others(relay: Relay) -> None:
    # Warm up (first connection, first message), so that what follows is steady state.
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as client:
        client.sendmail("app@example.com", ["warm@example.org"], b"Subject: warm\r\n\r\nx\r\n")
    hostile = [half_close(relay.port, sent) for sent in HALF_SESSIONS]
    # Meanwhile another client gets its banner and sends a message.
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=5) as client:
        client.sendmail("app@example.com", ["someone@example.org"],
                        b"Subject: meanwhile\r\n\r\nHello.\r\n")
    assert all(closed_within(sock, 1.0) for sock in hostile)

    cpu, log_size = relay.cpu_seconds(), relay.log_size()
    time.sleep(1.0)
    assert relay.cpu_seconds() - cpu < 0.2  # a spinning process would use the whole second
    assert relay.log_size() - log_size < 200
    assert relay.queued() == 2
    log = relay.log.read_text()
    assert "Traceback" not in log and "IncompleteReadError" not in log
    for where in ("EHLO", "MAIL", "DATA (33 bytes)"):
        assert f"lost connection after {where} from unknown[127.0.0.1]" in log
    assert "ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4" in log
