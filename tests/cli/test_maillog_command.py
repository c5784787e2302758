"""`sesrelay maillog`: dev's maillog file, or a deployed environment's CloudWatch log
groups (the relay's plain maillog lines, the Lambda functions' powertools JSON records
with a maillog key) merged in time order, ready for pflogsumm."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from sesrelay import deployment, maillog
from sesrelay.cli import main, where
from sesrelay.cli.maillog import powertools_time
from tests.support import moto_account

REGION = "us-east-1"
GROUPS = {deployment.OUTPUT_RELAY_LOG_GROUP: "/sesrelay/test/relay",
          deployment.OUTPUT_WORKER_LOG_GROUP: "/aws/lambda/sesrelay-test-worker",
          deployment.OUTPUT_EVENTS_LOG_GROUP: "/aws/lambda/sesrelay-test-events"}


def powertools(when: datetime, message: str, **keys: str) -> str:
    """A powertools JSON record as the worker's Logger writes it."""
    stamp = when.strftime("%Y-%m-%d %H:%M:%S,") + f"{when.microsecond // 1000:03d}+0000"
    return json.dumps({"level": "INFO", "location": "deliver:120", "message": message,
                       "timestamp": stamp, "service": "worker",
                       "function_name": "sesrelay-test-worker", **keys})


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """CloudWatch Logs in moto with the three groups, and --env finding them."""
    with moto_account(monkeypatch, REGION):
        client = boto3.client("logs", region_name=REGION)
        for group in GROUPS.values():
            client.create_log_group(logGroupName=group)
        location = where.Location(label="environment test", deployed=True,
                                  session=boto3.session.Session(region_name=REGION),
                                  region=REGION, outputs=dict(GROUPS))
        monkeypatch.setattr(where, "resolve", lambda args: location)
        yield client


def put(client: Any, group: str, stream: str, events: list[tuple[datetime, str]]) -> None:
    client.create_log_stream(logGroupName=group, logStreamName=stream)
    client.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
        {"timestamp": int(when.timestamp() * 1000), "message": message}
        for when, message in events])


def test_deployed_lines_are_merged_in_time_order(logs: Any,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    at = [t0 + timedelta(seconds=s) for s in range(6)]
    sent = maillog.delivery("QID1", "bob@example.org", relay="email.us-east-1.amazonaws.com",
                            delay=1.2, delays=(0, 0, 0.2, 1), dsn="2.0.0", status="sent",
                            text="250 Ok m-1")
    bounced = maillog.delivery("QID1", "bob@example.org", relay="email.us-east-1.amazonaws.com",
                               delay=9, delays=(0, 0, 0, 9), dsn="5.1.1", status="bounced",
                               text="smtp; 550 5.1.1 user unknown")
    put(logs, GROUPS[deployment.OUTPUT_RELAY_LOG_GROUP], "relay/relay/0a1b2c", [
        (at[0], maillog.line("smtpd", maillog.client("QID1", "10.1.2.3"), at[0], "ip-10-0-1-5",
                             7)),
        (at[0], maillog.line("qmgr", maillog.queued("QID1", "app@example.com", 900, 1), at[0],
                             "ip-10-0-1-5", 7)),
        (at[5], "Traceback (most recent call last):"),  # the interpreter's, not ours
    ])
    put(logs, GROUPS[deployment.OUTPUT_WORKER_LOG_GROUP], "2026/11/28/[$LATEST]abc123", [
        (at[1], "START RequestId: 1f0c Version: $LATEST"),
        (at[2], powertools(at[2], "sent", maillog=sent, maillog_program="smtp")),
        (at[2], powertools(at[2], "sent to 1 recipient(s)")),
        (at[3], powertools(at[3], "done", maillog="QID1: removed", maillog_program="qmgr")),
    ])
    put(logs, GROUPS[deployment.OUTPUT_EVENTS_LOG_GROUP], "2026/11/28/[$LATEST]def456", [
        (at[4], powertools(at[4], "bounce", maillog=bounced, maillog_program="smtp")),
    ])
    put(logs, GROUPS[deployment.OUTPUT_RELAY_LOG_GROUP], "relay/relay/old", [
        (t0 - timedelta(hours=2), maillog.line("smtpd", "OLD: client=unknown[10.0.0.1]",
                                               t0 - timedelta(hours=2), "h", 1))])

    assert main(["maillog", "--env", "test", "--since", "1h"]) == 0
    lines = capsys.readouterr().out.splitlines()
    texts = [re.sub(r"^\S+ \S+ ", "", line) for line in lines]
    assert [t.split(": ", 1)[1] for t in texts] == [
        "QID1: client=unknown[10.1.2.3]",
        "QID1: from=<app@example.com>, size=900, nrcpt=1 (queue active)",
        sent, "QID1: removed", bounced, "Traceback (most recent call last):"]
    assert [t.split("[", 1)[0] for t in texts] == [
        "sesrelay/smtpd", "sesrelay/qmgr", "sesrelay/smtp", "sesrelay/qmgr", "sesrelay/smtp",
        "sesrelay/master"]
    # The Lambda lines: host is the function, pid stands for the log stream.
    assert lines[2].split(" ")[1] == "sesrelay-test-worker"
    assert re.search(r"sesrelay/smtp\[\d{5}\]: ", lines[2])
    assert maillog.line_time(lines[2]) == at[2].replace(microsecond=at[2].microsecond // 1000
                                                        * 1000)

    summary = subprocess.run(["pflogsumm", "--syslog-name=sesrelay"], input="\n".join(lines),
                             capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/sbin:/usr/bin:/bin"}).stdout
    for count, name in ((1, "received"), (1, "delivered"), (1, "bounced")):
        assert re.search(rf"^\s+{count}\s+{name}$", summary, re.M), summary


def test_dev_reads_the_maillog_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    path = tmp_path / "sesrelay" / "dev-4599.maillog"
    path.parent.mkdir()
    path.write_text("".join(maillog.line("smtpd", text, now - age, "h", 1) + "\n"
                            for text, age in (("old", timedelta(hours=3)),
                                              ("new", timedelta(minutes=5)))))
    assert main(["maillog", "--endpoint", "http://127.0.0.1:4599", "--since", "2h"]) == 0
    assert capsys.readouterr().out.endswith("sesrelay/smtpd[1]: new\n")
    assert main(["maillog", "--file", str(path), "--since", "4h"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["maillog", "--endpoint", "http://127.0.0.1:4598"]) == 1
    assert "no maillog file" in capsys.readouterr().err


def test_powertools_timestamps() -> None:
    assert powertools_time("2026-11-28 10:02:03,123+0000") == datetime(
        2026, 11, 28, 10, 2, 3, 123000, tzinfo=UTC)
    assert powertools_time("2026-11-28T10:02:03.5Z") == datetime(
        2026, 11, 28, 10, 2, 3, 500000, tzinfo=UTC)
    assert powertools_time("yesterday") is None
