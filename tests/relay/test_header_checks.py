"""header_checks over real SMTP sessions: what each action does to the message."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from tests.relay.conftest import SpoolAccount

CHECKS = """\
/^Subject:.*lottery/ REJECT Spam is not relayed here
/^Subject:.*\\[drop\\]/ DISCARD
/^X-Internal-Secret:/ IGNORE
/^X-Debug:/ WARN debug header seen
/^Subject:\\s*\\[ext\\]\\s*(.*)/ REPLACE Subject: $1
/^From:.*@legacy\\.example/ PREPEND X-Legacy-Sender: yes
"""
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
        ": warning: header X-Debug: on folded continuation: debug header seen")
        for record in caplog.records)


def test_message_without_a_blank_line_after_headers(start_relay, spool_account) -> None:
    relay = start_relay()
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
        client.sendmail("app@example.com", ["a@example.org"],
                        b"Subject: no separator\r\nthis is body text, not a header\r\n")
    [spooled] = spool_account.queued()
    assert spooled.raw.endswith(b"Subject: no separator\r\n\r\nthis is body text, not a "
                                b"header\r\n")
