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
