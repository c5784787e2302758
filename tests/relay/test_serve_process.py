"""The container's entry point, run as a process from a virtualenv built from the pinned
requirements the Dockerfile installs, against moto's server: mail flows, and SIGTERM
drains as the issue asks (finish transactions in flight, 421 to anything new)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.relay.conftest import create_idempotency_table
from tests.support import free_port, read_reply, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "relay_container/Dockerfile").read_text()
REGION = "us-east-1"


def dockerfile_entrypoint() -> list[str]:
    return json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", DOCKERFILE, re.M).group(1))


def dockerfile_env() -> dict[str, str]:
    block = re.search(r"^ENV ((?:.*\\\n)*.*)$", DOCKERFILE, re.M).group(1)
    pairs = re.findall(r"([A-Z_]+)=(\S+)", block.replace("\\\n", " "))
    return {name: value for name, value in pairs if name != "PATH"}


@pytest.fixture(scope="module")
def relay_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with requirements/relay.txt and the project, as the image has."""
    venv = tmp_path_factory.mktemp("relay-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet",
           "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(ROOT / "requirements/relay.txt")], check=True, timeout=600)
    subprocess.run([*pip, "--no-deps", str(ROOT)], check=True, timeout=600)
    return venv


class Serve:
    """`sesrelay serve` as a child process."""

    def __init__(self, venv: Path, endpoint: str, tmp_path: Path) -> None:
        aws = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION,
                                aws_access_key_id="testing", aws_secret_access_key="testing")
        bucket = f"spool-{free_port()}"
        s3.create_bucket(Bucket=bucket)
        self.queue_url = self.sqs.create_queue(QueueName=bucket)["QueueUrl"]
        create_idempotency_table(boto3.client(
            "dynamodb", endpoint_url=endpoint, region_name=REGION,
            aws_access_key_id="testing", aws_secret_access_key="testing"), bucket)
        self.port = free_port()
        env = {"PATH": f"{venv}/bin:/usr/bin:/bin", **dockerfile_env(), **aws,
               "SESRELAY_LISTEN_PORT": str(self.port),
               "SESRELAY_INET_INTERFACES": "loopback-only",
               "SESRELAY_INET_PROTOCOLS": "ipv4",
               "SESRELAY_MYHOSTNAME": "relay.example.net",
               "SESRELAY_SPOOL_BUCKET": bucket,
               "SESRELAY_SPOOL_QUEUE_URL": self.queue_url,
               "SESRELAY_IDEMPOTENCY_TABLE": bucket}
        self.log = tmp_path / "serve.log"
        entrypoint = dockerfile_entrypoint()
        self.process = subprocess.Popen([str(venv / "bin" / entrypoint[0]), *entrypoint[1:]],
                                        env=env, stdout=self.log.open("wb"),
                                        stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process, timeout=30)

    def queued(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def serve(relay_venv: Path, moto_server: str, tmp_path: Path) -> Iterator[Serve]:
    running = Serve(relay_venv, moto_server, tmp_path)
    yield running
    running.stop()


class Client:
    """A raw SMTP client that reads one reply at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.stream = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> bytes:
        return read_reply(self.stream)

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()


def test_swaks_through_the_entry_point(serve: Serve) -> None:
    result = subprocess.run(["swaks", "--server", f"127.0.0.1:{serve.port}",
                             "--to", "someone@example.org", "--from", "app@example.com"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
    assert "<-  220 relay.example.net ESMTP sesrelay" in result.stdout
    assert re.search(r"<-  250 2.0.0 Ok: queued as [0-9A-Z]{16}", result.stdout)
    assert serve.queued() == 1
    # The image's requirements bring the event loop the relay is measured and tested on.
    assert "event loop: uvloop " in serve.log.read_text()


def test_sigterm_finishes_transactions_in_flight_and_refuses_new_work(serve: Serve) -> None:
    busy = Client(serve.port)
    busy.command(b"EHLO busy.example.org")
    busy.command(b"MAIL FROM:<app@example.com>")
    busy.command(b"RCPT TO:<someone@example.org>")
    assert busy.command(b"DATA").startswith(b"354")
    busy.sock.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")

    idle = Client(serve.port)
    assert idle.command(b"EHLO idle.example.org").startswith(b"250")

    serve.process.send_signal(signal.SIGTERM)

    # The idle session is told the relay is going away, unasked.
    assert idle.reply() == b"421 4.3.2 Service shutting down, closing transmission channel\r\n"
    # New connections are no longer accepted.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", serve.port), timeout=5).close()
    # The transaction in flight completes and is queued ...
    busy.sock.sendall(b"second half\r\n.\r\n")
    assert busy.reply().startswith(b"250 2.0.0 Ok: queued as ")
    # ... and anything new in that session gets 421.
    assert busy.command(b"MAIL FROM:<app@example.com>").startswith(b"421 4.3.2")

    assert serve.process.wait(timeout=30) == 0
    assert serve.queued() == 1
    log = serve.log.read_text()
    assert "draining" in log and "stopped" in log


def test_missing_spool_settings_are_a_clear_error(relay_venv: Path) -> None:
    env = {"PATH": f"{relay_venv}/bin:/usr/bin:/bin", **dockerfile_env(),
           "SESRELAY_LISTEN_PORT": str(free_port())}
    result = subprocess.run([str(relay_venv / "bin/sesrelay"), "serve"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert ("sesrelay_spool_bucket, sesrelay_spool_queue_url and sesrelay_idempotency_table "
            "must be set") in result.stderr


def test_the_image_runs_as_non_root() -> None:
    user = re.search(r"^USER (\S+)$", DOCKERFILE, re.M).group(1)
    assert user not in ("root", "0")
    assert f"--uid {user}" in DOCKERFILE
    assert "-r requirements/relay.txt" in DOCKERFILE
    assert os.path.basename(dockerfile_entrypoint()[0]) == "sesrelay"
