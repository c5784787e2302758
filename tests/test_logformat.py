"""The relay's log lines are full maillog lines that grep and pflogsumm read; `sesrelay dev`
writes them, and the worker's records that carry a maillog line, to its maillog file."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sesrelay import maillog, maillogfile
from sesrelay.logformat import MaillogFormatter

FULL_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00) relay-host "
                       r"sesrelay/([a-z]+)\[(\d+)\]: (.*)$")


def record(text: str, level: int = logging.INFO, name: str = "sesrelay.relay",
           exc_info: object = None, **extra: object) -> logging.LogRecord:
    made = logging.getLogger(name).makeRecord(name, level, __file__, 1, text, (), exc_info,
                                              extra=extra)
    return made


def formatted(made: logging.LogRecord) -> tuple[str, str, str]:
    """(program, pid, text) of the formatted line; fails unless it is a full line."""
    line = MaillogFormatter("relay-host").format(made)
    match = FULL_LINE.match(line)
    assert match, line
    assert abs(datetime.fromisoformat(match.group(1)).timestamp() - made.created) < 1e-3
    return match.group(2), match.group(3), match.group(4)


def test_relay_lines_are_smtpd_lines_unless_they_say_otherwise() -> None:
    program, pid, text = formatted(record("QID1: client=unknown[10.1.2.3]"))
    assert (program, int(pid), text) == ("smtpd", record("x").process,
                                         "QID1: client=unknown[10.1.2.3]")
    assert formatted(record("QID1: removed", maillog_program="qmgr"))[0] == "qmgr"
    assert formatted(record("starting", name="sesrelay.dev"))[0] == "master"


def test_warnings_and_errors_carry_postfix_prefixes_once() -> None:
    assert formatted(record("disk slow", logging.WARNING))[2] == "warning: disk slow"
    assert formatted(record("spool failed", logging.ERROR))[2] == "error: spool failed"
    assert formatted(record("QID1: warning: header Subject: x from unknown[10.1.2.3]; "
                            "from=<a@b> proto=ESMTP helo=<h>", logging.WARNING))[2].startswith(
        "QID1: warning: header")
    assert formatted(record("warning: already", logging.WARNING))[2] == "warning: already"
    # "reject:" alone is not a severity: an untrusted PROXY header is a warning.
    assert formatted(record("reject: PROXY header from [10.9.9.9]", logging.WARNING))[2] == (
        "warning: reject: PROXY header from [10.9.9.9]")


def test_a_maillog_line_keeps_its_exact_text_whatever_its_level() -> None:
    # The worker logs deferrals and bounces as warnings (for CloudWatch); pflogsumm must
    # still see "<ID>: to=<...>, ..., status=deferred", not "warning: <ID>: ...".
    text = maillog.delivery("QID9", "bob@example.org", relay="email.us-east-1.amazonaws.com",
                            delay=1, delays=(0, 0, 0, 1), dsn="4.0.0", status="deferred",
                            text="TooManyRequestsException: Maximum sending rate exceeded.")
    made = record("1 recipient deferred", logging.WARNING, name="worker", maillog=text,
                  maillog_program="smtp")
    assert formatted(made)[0::2] == ("smtp", text)


def test_a_record_is_always_one_line() -> None:
    forged = "bad\n2026-01-01T00:00:00.000000+00:00 h sesrelay/smtpd[1]: X: client=a[1.2.3.4]"
    assert formatted(record(forged))[2] == (
        "bad#0122026-01-01T00:00:00.000000+00:00 h sesrelay/smtpd[1]: X: client=a[1.2.3.4]")
    try:
        raise ValueError("boom\r\nagain")
    except ValueError:
        import sys

        text = formatted(record("handler failed", logging.ERROR, exc_info=sys.exc_info()))[2]
    assert text.startswith("error: handler failed#012Traceback (most recent call last):#012")
    assert text.endswith("ValueError: boom#015#012again")


def test_pflogsumm_reads_the_relay_lines() -> None:
    formatter = MaillogFormatter("relay-host")
    lines = [formatter.format(record(maillog.client("QID7", "10.1.2.3"))),
             formatter.format(record(maillog.queued("QID7", "app@example.com", 900, 1),
                                     maillog_program="qmgr")),
             formatter.format(record(maillog.reject(
                 "RCPT", "unknown[10.9.9.9]", "554 5.7.1 <x@y.example>: Relay access denied",
                 sender="a@b.example", recipient="x@y.example", helo="h")))]
    result = subprocess.run(["pflogsumm", "--syslog-name=sesrelay"], input="\n".join(lines),
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/sbin:/usr/bin:/bin"})
    assert re.search(r"^\s+1\s+received$", result.stdout, re.M), result.stdout
    assert re.search(r"^\s+1\s+rejected \(100%\)$", result.stdout, re.M)
    assert re.search(r"^\s+900\s+bytes received$", result.stdout, re.M)


# --- the dev maillog file --------------------------------------------------------------

@pytest.fixture
def maillog_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state" / "dev.maillog"
    handler = maillogfile.install(path, host="dev-host")
    yield path
    logging.getLogger().removeHandler(handler)
    handler.close()


def test_the_file_holds_relay_lines_and_records_with_a_maillog_line(
        maillog_file: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    from aws_lambda_powertools import Logger

    caplog.set_level(logging.INFO)  # as `sesrelay dev` logs

    logging.getLogger("sesrelay.relay").info("QID8: client=unknown[10.1.2.3]")
    # A Lambda function's logger, made after the file's handler: powertools then hides
    # its records from every root handler; the maillog file still gets its maillog lines.
    worker = Logger(service="sesrelay-test-maillog-worker")
    text = maillog.delivery("QID8", "bob@example.org", relay="email.us-east-1.amazonaws.com",
                            delay=0.5, delays=(0, 0, 0.1, 0.4), dsn="2.0.0", status="sent",
                            text="250 Ok m-1")
    worker.info("sent", maillog=text, maillog_program="smtp")
    worker.info("a structured record without a maillog line")
    logging.getLogger("botocore").warning("library chatter")
    # The worker's JSON still goes to stdout, with the maillog key.
    assert json.loads(capsys.readouterr().out.splitlines()[0])["maillog"] == text

    lines = maillog_file.read_text().splitlines()
    assert [re.sub(r"^\S+ ", "", line) for line in lines] == [
        f"dev-host sesrelay/smtpd[{record('x').process}]: QID8: client=unknown[10.1.2.3]",
        f"dev-host sesrelay/smtp[{record('x').process}]: {text}"]


def test_reading_the_file_since_a_time(tmp_path: Path) -> None:
    path = tmp_path / "m.maillog"
    now = datetime.now(UTC)

    def line(minutes_ago: float, text: str) -> str:
        return maillog.line("smtpd", text, now - timedelta(minutes=minutes_ago), "h", 1)

    # Two threads' lines a moment apart can land out of order: reading sorts them.
    path.write_text("\n".join([line(90, "old"), line(20, "b"), line(30, "a"),
                               "a continuation without a time", line(10, "c")]) + "\n")
    assert [t.rsplit(" ", 1)[-1] for t in maillogfile.read(path, now - timedelta(hours=1))] == [
        "a", "time", "b", "c"]


def test_default_place_is_per_emulation_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/var/tmp/xdg")
    assert maillogfile.default_path(4566) == Path("/var/tmp/xdg/sesrelay/dev-4566.maillog")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert maillogfile.default_path(4600) == Path(
        "~/.local/state/sesrelay/dev-4600.maillog").expanduser()
