"""Fixtures shared by the suites: `sesrelay dev` running as users run it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, wait_for_port

# The console script users run, from the same environment as the tests.
SESRELAY = str(Path(sys.executable).parent / "sesrelay")


@dataclass
class DevRelay:
    """A running `sesrelay dev`: its SMTP port and the AWS emulation's endpoint."""

    smtp_port: int
    endpoint: str

    def outbox(self) -> list[dict[str, Any]]:
        """`sesrelay outbox --json`, parsed."""
        result = subprocess.run([SESRELAY, "outbox", "--json", "--endpoint", self.endpoint],
                                capture_output=True, check=True, timeout=30)
        return list(json.loads(result.stdout))

    def wait_for_outbox(self, done: Callable[[list[dict[str, Any]]], bool],
                        timeout: float = 60) -> list[dict[str, Any]]:
        """Poll the outbox until done(sends) holds; fail after timeout seconds."""
        deadline = time.monotonic() + timeout
        sends = self.outbox()
        while not done(sends):
            assert time.monotonic() < deadline, f"outbox after {timeout} s: {sends}"
            time.sleep(0.5)
            sends = self.outbox()
        return sends


@contextlib.contextmanager
def _running_dev(tmp_path: Path) -> Iterator[DevRelay]:
    """`sesrelay dev` on free loopback ports, with a main.cf for relay.example.net."""
    smtp_port, aws_port = free_port(), free_port()
    main_cf = tmp_path / "main.cf"
    main_cf.write_text("myhostname = relay.example.net\n"
                       "mynetworks = 127.0.0.0/8\n"
                       "ses_identities = example.com\n"
                       "ses_max_send_rate = 0\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SESRELAY_", "AWS_", "POWERTOOLS_"))}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")  # dev's maillog file, not in $HOME
    process = subprocess.Popen(
        [SESRELAY, "dev", "--config", str(main_cf), "--listen", f"127.0.0.1:{smtp_port}",
         "--aws-port", str(aws_port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(smtp_port, process)
        yield DevRelay(smtp_port, f"http://127.0.0.1:{aws_port}")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def dev_relay(tmp_path: Path) -> Iterator[DevRelay]:
    """`sesrelay dev` for one test."""
    with _running_dev(tmp_path) as running:
        yield running


@pytest.fixture(scope="module")
def dev_relay_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRelay]:
    """`sesrelay dev` shared by the tests of one module."""
    with _running_dev(tmp_path_factory.mktemp("dev")) as running:
        yield running
