"""header_checks over real SMTP sessions: what each action does to the message."""

from __future__ import annotations

import logging
import re
import shutil
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sesrelay.logformat import MaillogFormatter
from tests.postfix_support import relaying_postfix, requires_postfix, write_tables
from tests.postfix_support import send as send_to_postfix
from tests.relay.conftest import SpoolAccount

CHECKS = """\
/^Subject:.*lottery/ REJECT Spam is not relayed here
/^Subject:.*\\[drop\\]/ DISCARD
/^X-Internal-Secret:/ IGNORE
/^X-Debug:/ WARN debug header seen
/^Subject:\\s*\\[ext\\]\\s*(.*)/ REPLACE Subject: $1
/^From:.*@legacy\\.example/ PREPEND X-Legacy-Sender: yes
/^X-Fold: a b/ WARN matched without the fold's newline
/^X-Fold2: a\\s+b/ WARN matched across the fold
/^X-Fold3: a.b/ WARN one character for the fold
/^X-Fold4: c$/m WARN the end of the first line
/^X-Fold5: .*lottery/ WARN dot matches the newline
"""
# Folded headers, each matched with a newline where it was folded, as Postfix matches it.
FOLDED = ("X-Fold: a\r\n b\r\nX-Fold2: a\r\n b\r\nX-Fold3: a\r\n\tb\r\n"
          "X-Fold4: c\r\n d\r\nX-Fold5: the\r\n lottery\r\n")
MESSAGE = ("From: App <app@legacy.example>\r\n"
           "Subject: {subject}\r\n"
           "X-Internal-Secret: hunter2\r\n"
           "X-Debug: on\r\n"
           " folded continuation\r\n"
           "\r\n"
           "Body line.\r\n")


@pytest.fixture
def relay(start_relay, tmp_path: Path):  # type: ignore[no-untyped-def]
    checks = tmp_path / "header_checks"
    checks.write_text(CHECKS)
    return lambda **settings: start_relay(header_checks=f"regexp:{checks}", **settings)


def send(relay, subject: str) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
        client.ehlo("client.example.org")
        client.mail("app@legacy.example")
        client.rcpt("someone@example.org")
        return client.data(MESSAGE.format(subject=subject).encode())


def test_reject(relay, spool_account: SpoolAccount) -> None:
    assert send(relay(), "win the lottery") == (550, b"5.7.1 Spam is not relayed here")
    assert spool_account.queued() == []


def test_reject_with_soft_bounce_is_temporary(relay, spool_account) -> None:
    assert send(relay(soft_bounce="yes"), "win the lottery") == (
        450, b"4.7.1 Spam is not relayed here")


def test_discard_accepts_but_queues_nothing(relay, spool_account) -> None:
    code, text = send(relay(), "[drop] noise")
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as")
    assert spool_account.queued() == []


def test_ignore_replace_prepend_and_warn(relay, spool_account, caplog) -> None:
    assert send(relay(), "[ext] quarterly report")[0] == 250
    [spooled] = spool_account.queued()
    headers = spooled.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert b"X-Internal-Secret: hunter2" not in headers
    assert b"Subject: quarterly report" in headers
    assert headers.index(b"X-Legacy-Sender: yes") + 1 == headers.index(
        b"From: App <app@legacy.example>")
    assert b"X-Debug: on" in headers and b" folded continuation" in headers  # WARN keeps it
    assert spooled.raw.endswith(b"\r\n\r\nBody line.\r\n")
    assert any(record.levelname == "WARNING" and record.getMessage().endswith(
        ": warning: header X-Debug: on? folded continuation from unknown[127.0.0.1]; "
        "from=<app@legacy.example> to=<someone@example.org> proto=ESMTP "
        "helo=<client.example.org>: debug header seen") for record in caplog.records)


def test_pflogsumm_reads_the_relays_header_checks_lines(relay, spool_account,
                                                        caplog) -> None:
    """The oracle: pflogsumm counts the relay's own cleanup lines for header_checks as it
    counts Postfix's (a rejected message and a reject warning, with the header)."""
    caplog.set_level(logging.INFO, logger="sesrelay")
    started = relay()
    assert send(started, "win the lottery")[0] == 550
    assert send(started, "[ext] quarterly report")[0] == 250
    formatter = MaillogFormatter(host="relay")
    text = "".join(formatter.format(r) + "\n" for r in caplog.records
                   if r.name.startswith("sesrelay"))
    assert "sesrelay/cleanup[" in text
    result = subprocess.run([shutil.which("pflogsumm") or "/usr/sbin/pflogsumm",
                             "--syslog-name=sesrelay", "--problems-first"], input=text,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    report = result.stdout
    assert re.search(r"^\s+1\s+rejected", report, re.MULTILINE)
    assert re.search(r"^\s+1\s+reject warnings", report, re.MULTILINE)
    rejects = report.split("message reject detail")[1].split("message reject warning")[0]
    assert "cleanup" in rejects and "Subject: win the lottery" in rejects
    warnings = report.split("message reject warning detail")[1]
    assert "X-Debug: on? folded continuation" in warnings


def test_message_without_a_blank_line_after_headers(start_relay, spool_account) -> None:
    relay = start_relay()
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
        client.sendmail("app@example.com", ["a@example.org"],
                        b"Subject: no separator\r\nthis is body text, not a header\r\n")
    [spooled] = spool_account.queued()
    assert spooled.raw.endswith(b"Subject: no separator\r\n\r\nthis is body text, not a "
                                b"header\r\n")


def send_ses_headers(relay, headers: str) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
        client.mail("app@example.com")
        client.rcpt("someone@example.org")
        return client.data(f"From: app@example.com\r\n{headers}\r\nHello.\r\n".encode())


def test_x_ses_headers_this_environment_cannot_apply_are_refused_at_data(
        start_relay, spool_account: SpoolAccount) -> None:
    relay = start_relay(ses_configuration_set="outbound")
    assert send_ses_headers(relay, "X-SES-CONFIGURATION-SET: marketing\r\n") == (
        550, b"5.7.1 Error: X-SES-CONFIGURATION-SET header: configuration set 'marketing' "
        b"not allowed: this relay sends with 'outbound' only")
    assert send_ses_headers(relay, "X-SES-MESSAGE-TAGS: campaign\r\n")[:1] == (550,)
    assert spool_account.queued() == []
    # The environment's own set, and good tags, are accepted and spooled as sent.
    code, _ = send_ses_headers(relay, "X-SES-CONFIGURATION-SET: outbound\r\n"
                                      "X-SES-MESSAGE-TAGS: campaign=spring\r\n")
    assert code == 250
    [spooled] = spool_account.queued()
    assert b"X-SES-MESSAGE-TAGS: campaign=spring\r\n" in spooled.raw


def test_x_ses_header_refusal_is_temporary_under_soft_bounce(start_relay) -> None:
    relay = start_relay(soft_bounce="yes")
    code, text = send_ses_headers(relay, "X-SES-FROM-ARN: arn:aws:ses:x\r\n")
    assert (code, text[:6]) == (450, b"4.7.1 ")


def test_header_checks_apply_before_the_x_ses_headers_are_read(
        start_relay, spool_account: SpoolAccount, tmp_path: Path) -> None:
    """An operator may drop a header SES's SMTP interface would have applied, as
    Postfix's cleanup runs before the next hop sees the message."""
    checks = tmp_path / "ses_checks"
    checks.write_text("/^X-SES-CONFIGURATION-SET:/ IGNORE\n")
    relay = start_relay(header_checks=f"regexp:{checks}")
    assert send_ses_headers(relay, "X-SES-CONFIGURATION-SET: marketing\r\n")[0] == 250
    [spooled] = spool_account.queued()
    assert b"X-SES-CONFIGURATION-SET" not in spooled.raw


def drop_test_message() -> bytes:
    return (b"Return-Path: <other@example.org>\r\nFrom: app@legacy.example\r\n"
            b"Bcc: hidden@example.org\r\ncontent-LENGTH: 12\r\n"
            b"x-Internal-TRACE: host=a\r\n continued\r\nSubject: hello\r\n\r\nBody.\r\n")


def spooled_header_names(relay, spool_account: SpoolAccount) -> list[bytes]:  # type: ignore[no-untyped-def]
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
        client.sendmail("app@legacy.example", ["someone@example.org"], drop_test_message())
    [message] = spool_account.queued()
    head = message.raw.split(b"\r\n\r\n", 1)[0]
    return [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")
            if line[:1] not in (b" ", b"\t")]


def test_message_drop_headers_default_removes_what_postfix_removes(
        start_relay, spool_account: SpoolAccount) -> None:
    names = spooled_header_names(start_relay(), spool_account)
    assert names == [b"received", b"from", b"x-internal-trace", b"subject"]


def test_message_drop_headers_names_any_header_in_any_case(
        start_relay, spool_account: SpoolAccount) -> None:
    # Bcc: is not listed, so it is spooled (the worker still removes it before SES).
    relay = start_relay(message_drop_headers="X-Internal-Trace Return-Path")
    names = spooled_header_names(relay, spool_account)
    assert names == [b"received", b"from", b"bcc", b"content-length", b"subject"]


# A message's smtpd and cleanup lines that header_checks concerns, as "program: text"
# with the queue ID and the client's name (Postfix looks it up, sesrelay does not) made
# alike: the lines both must write the same.
_COMPARED = re.compile(r"(?:postfix|sesrelay)/(smtpd|cleanup)\[\d+\]: ([0-9A-Z]+): "
                       r"((?:client=|reject: |warning: |discard: ).*)$")


def _compared(log_text: str) -> list[str]:
    found = []
    for line in log_text.splitlines():
        match = _COMPARED.search(line)
        if match:
            text = re.sub(r"\b[\w.-]+\[127\.0\.0\.1\]", "client[127.0.0.1]", match[3])
            found.append(f"{match[1]}: {text}")
    return found


@requires_postfix
def test_header_checks_lines_are_postfixs(start_relay, spool_account, caplog) -> None:
    """The oracle: Postfix 3.7 with the same header_checks and the same messages (REJECT,
    DISCARD, WARN with REPLACE, and folded headers that some rules match and some do not)
    writes the same smtpd and cleanup lines."""
    subjects = ["win the lottery", "[drop] noise", "[ext] quarterly report",
                "folded\r\n" + FOLDED.rstrip("\r\n")]
    caplog.set_level(logging.INFO, logger="sesrelay")
    with tempfile.TemporaryDirectory() as directory:
        tables = write_tables(Path(directory), {"header_checks": CHECKS})
        checks = f"regexp:{tables / 'header_checks'}"
        relay = start_relay(header_checks=checks)
        for subject in subjects:
            send(relay, subject)
        formatter = MaillogFormatter(host="relay")
        ours = _compared("\n".join(formatter.format(r) for r in caplog.records))
        with relaying_postfix(f"header_checks = {checks}\n") as postfix:
            for subject in subjects:
                send_to_postfix(postfix.postfix.port, "app@legacy.example",
                                ["someone@example.org"],
                                MESSAGE.format(subject=subject).encode())
            deadline = time.monotonic() + 10
            while len(theirs := _compared(postfix.postfix.log.read_text())) < len(ours):
                assert time.monotonic() < deadline, postfix.postfix.log.read_text()
                time.sleep(0.1)
    assert ours == theirs
    assert len(ours) == 11  # client= and a cleanup line for each message, and 3 folds
    assert [line.split(": ", 3)[2] for line in ours if "X-Fold" in line] == [
        "header X-Fold2", "header X-Fold4", "header X-Fold5"]
