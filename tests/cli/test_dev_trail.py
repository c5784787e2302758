"""End to end in `sesrelay dev`: swaks sends, then the operator commands tell each story.

The first test runs today: dev's maillog file holds the relay's lines and pflogsumm reads
them. The second needs the worker to write the trail and dev to create the trail table
and emulate SES's events (issue 17's worker and events parts); until dev creates the
trail table it is skipped, saying so.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from sesrelay import dev
from tests.conftest import SESRELAY, running_dev


@dataclass
class Dev:
    """A running `sesrelay dev` with its maillog file."""

    smtp_port: int
    endpoint: str
    maillog: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A sesrelay command against this dev, as a user runs it."""
        return subprocess.run([SESRELAY, *args, "--endpoint", self.endpoint],
                              capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/sbin:/usr/bin:/bin", "HOME": "/nonexistent"})

    def swaks(self, *args: str) -> str:
        """Send with swaks; the queue ID the relay answered."""
        result = subprocess.run(["swaks", "--server", f"127.0.0.1:{self.smtp_port}", *args],
                                capture_output=True, text=True, timeout=60)
        match = re.search(r"<-  250 2.0.0 Ok: queued as ([0-9A-Z]+)", result.stdout)
        assert match, result.stdout
        return match.group(1)

    def has_trail(self) -> bool:
        dynamodb = boto3.client("dynamodb", endpoint_url=self.endpoint,
                                region_name=dev.DEV_REGION, aws_access_key_id="x",
                                aws_secret_access_key="x")
        return dev.TRAIL_TABLE in dynamodb.list_tables()["TableNames"]


def wait_until(check: Callable[[], object], timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    home = tmp_path_factory.mktemp("dev")
    maillog = home / "maillog"
    # What SES refuses is deferred, not bounced (soft_bounce): a deferral to look at.
    with running_dev(home, "--maillog", str(maillog),
                     main_cf="ses_configuration_set = sesrelay-dev\nsoft_bounce = yes\n"
                     ) as started:
        yield Dev(started.smtp_port, started.endpoint, maillog)


def pflogsumm(text: str) -> str:
    return subprocess.run(["pflogsumm", "--syslog-name=sesrelay"], input=text,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/sbin:/usr/bin:/bin"}).stdout


def test_the_dev_maillog_file_holds_the_relays_lines(running: Dev) -> None:
    queue_id = running.swaks("--from", "app@example.com", "--to", "someone@example.org")
    wait_until(lambda: queue_id in running.maillog.read_text())
    lines = running.run("maillog", "--file", str(running.maillog)).stdout.splitlines()
    [received] = [line for line in lines if f"{queue_id}: client=" in line]
    assert re.match(r"^\S+T\S+ \S+ sesrelay/smtpd\[\d+\]: ", received)
    assert re.search(r"^\s+1\s+received$", pflogsumm("\n".join(lines)), re.M)


def test_sent_bounced_and_deferred_messages_explained(running: Dev) -> None:
    if not running.has_trail():
        pytest.skip("sesrelay dev does not create the trail table yet: the worker's trail "
                    "and dev's SES events land with issue 17's worker and events parts")
    sent = running.swaks("--from", "app@example.com", "--to", "ann@example.org")
    bounced = running.swaks("--from", "app@example.com",
                            "--to", "bounce@simulator.amazonses.com")
    deferred = running.swaks("--from", "app@unverified.example", "--to", "carol@example.org")

    def final(queue_id: str, state: str) -> dict | None:
        result = running.run("trace", queue_id, "--json")
        if result.returncode:
            return None
        [story] = json.loads(result.stdout)
        return story if story["recipients"] and all(
            r["state"] == state for r in story["recipients"]) else None

    story = wait_until(lambda: final(sent, "delivered"))
    assert [i["kind"] for i in story["history"]][:2] == ["received", "attempt"]
    assert story["status"] == "sent"
    story = wait_until(lambda: final(bounced, "bounced"))
    assert story["recipients"][0]["address"] == "bounce@simulator.amazonses.com"
    wait_until(lambda: final(deferred, "deferred"))

    listing = running.run("mailq").stdout
    assert re.findall(r"^([0-9A-Z]{16})[*! ]", listing, re.M) == [deferred]
    assert "MessageRejected" in listing and listing.endswith(" in 1 Request.\n")

    assert running.run("flush", deferred).stdout == f"{deferred}: flushed: due now\n"
    wait_until(lambda: (s := final(deferred, "deferred")) and sum(
        i["kind"] == "attempt" for i in s["history"]) == 2)
    assert running.run("delete", deferred).returncode == 0
    assert running.run("mailq").stdout == "Mail queue is empty\n"

    lines = running.run("maillog", "--file", str(running.maillog)).stdout
    summary = pflogsumm(lines)
    for count, name in ((4, "received"), (1, "bounced")):  # the first test's message too
        assert re.search(rf"^\s+{count}\s+{name}$", summary, re.M), summary
    assert re.search(r"^\s+1\s+deferred\s+\(2\s+deferrals\)$", summary, re.M), summary
