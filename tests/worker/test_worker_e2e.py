"""End to end through `sesrelay dev`: SMTP in, the worker Lambda handler, SES out."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The console script users run, from the same environment as the tests.
SESRELAY = [str(Path(sys.executable).parent / "sesrelay")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        assert process.poll() is None, "sesrelay dev exited early"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"sesrelay dev did not listen on port {port}")


@pytest.fixture
def dev_relay(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """`sesrelay dev` on free loopback ports: (SMTP port, emulation endpoint)."""
    smtp_port, aws_port = free_port(), free_port()
    main_cf = tmp_path / "main.cf"
    main_cf.write_text("myhostname = relay.example.net\n"
                       "mynetworks = 127.0.0.0/8\n"
                       "ses_identities = example.com\n"
                       "ses_max_send_rate = 0\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SESRELAY_", "AWS_", "POWERTOOLS_"))}
    process = subprocess.Popen(
        [*SESRELAY, "dev", "--config", str(main_cf), "--listen", f"127.0.0.1:{smtp_port}",
         "--aws-port", str(aws_port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(smtp_port, process, time.monotonic() + 60)
        yield smtp_port, f"http://127.0.0.1:{aws_port}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def outbox(endpoint: str) -> list[dict[str, Any]]:
    result = subprocess.run([*SESRELAY, "outbox", "--json", "--endpoint", endpoint],
                            capture_output=True, check=True, timeout=30)
    return list(json.loads(result.stdout))


def test_120_recipients_over_smtp_arrive_as_three_sends(dev_relay: tuple[int, str]) -> None:
    smtp_port, endpoint = dev_relay
    recipients = [f"user{i:03}@example.org" for i in range(120)]
    body = "Hello from the end-to-end test.\r\nSecond line, kept as is.\r\n"
    raw = ("From: Sender <sender@example.com>\r\nSubject: e2e 120\r\n"
           "Message-ID: <e2e-120@example.com>\r\n\r\n" + body)
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
        assert client.sendmail("sender@example.com", recipients, raw) == {}

    deadline = time.monotonic() + 60
    sends = outbox(endpoint)
    while sum(len(s["rcpt_to"]) for s in sends) < len(recipients):
        assert time.monotonic() < deadline, f"only {len(sends)} send(s) reached the outbox"
        time.sleep(0.5)
        sends = outbox(endpoint)

    assert len(sends) >= 3
    assert all(len(s["rcpt_to"]) <= 50 for s in sends)
    delivered = [r for s in sends for r in s["rcpt_to"]]
    assert sorted(delivered) == recipients  # each exactly once
    for send in sends:
        assert send["mail_from"] == "sender@example.com"
        headers, _, sent_body = send["raw"].replace("\r\n", "\n").partition("\n\n")
        assert headers.startswith("Received: from ")
        assert "by relay.example.net" in headers
        assert sent_body == body.replace("\r\n", "\n")
