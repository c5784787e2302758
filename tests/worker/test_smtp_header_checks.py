"""smtp_header_checks in the worker: each action smtp(8) supports, on what SES receives,
with Postfix's smtp log lines; Bcc: is gone before the checks; bounces get the checks on
their own headers and quote the original ones untouched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.worker.conftest import Spool, message, sent_messages

CHECKS = r"""
/^From:.*<(.*)>/            REPLACE From: noreply@example.com
/^Subject: (.*)/            PREPEND X-Original-Subject: $1
/^X-Drop:/                  IGNORE
/^X-Strip:/                 STRIP internal header
/^X-Warn:/                  WARN looked at
/^X-Info:/                  INFO seen
/^X-Folded: one\s+two/     REPLACE X-Folded: joined
/^X-Unfolded: one two/      REPLACE X-Unfolded: never: Postfix keeps the fold's newline
/^X-Keep:/                  DUNNO
/^Bcc:/                     WARN never seen: Bcc is removed first
"""


@pytest.fixture
def checks(worker_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "smtp_header_checks"
    table.write_text(CHECKS)
    monkeypatch.setenv("SESRELAY_SMTP_HEADER_CHECKS", f"regexp:{table}")


def header_block(raw: str) -> list[str]:
    return raw.split("\r\n\r\n", 1)[0].split("\r\n")


def test_each_action_on_what_ses_receives(checks: None, spool: Spool,
                                          worker_logs: Callable[[], list[dict[str, Any]]]
                                          ) -> None:
    raw = message(subject="quarterly", extra_headers=(
        "X-Drop: a\r\nX-Strip: b\r\nX-Warn: c\r\nX-Info: d\r\nX-Folded: one\r\n two\r\n"
        "X-Unfolded: one\r\n two\r\n"
        "X-Keep: e\r\nBcc: hidden@example.org\r\n"), body="Body stays.\r\n")
    envelope = spool.put(raw, ["alice@example.org"])

    assert spool.invoke(spool.receive()) == set()

    [sent] = sent_messages()
    headers = header_block(sent.raw_data)
    assert headers[2:] == [
        "From: noreply@example.com", "X-Original-Subject: quarterly", "Subject: quarterly",
        "X-Warn: c", "X-Info: d", "X-Folded: joined", "X-Unfolded: one", " two", "X-Keep: e",
        "Message-ID: <test@example.com>"]
    assert headers[0].startswith("Received: ")  # untouched, as is the body
    assert sent.raw_data.endswith("\r\n\r\nBody stays.\r\n")
    queue_id = envelope.queue_id
    lines = [line["maillog"] for line in worker_logs()
             if "maillog" in line and ": header " in line["maillog"]]
    assert lines == [
        f"{queue_id}: replace: header From: Sender <sender@example.com>: "
        "From: noreply@example.com",
        f"{queue_id}: prepend: header Subject: quarterly: X-Original-Subject: quarterly",
        f"{queue_id}: strip: header X-Strip: b: internal header",
        f"{queue_id}: warning: header X-Warn: c: looked at",
        f"{queue_id}: info: header X-Info: d: seen",
        f"{queue_id}: replace: header X-Folded: one? two: X-Folded: joined"]


def test_a_bounce_gets_the_checks_and_quotes_the_original(checks: None, spool: Spool) -> None:
    # A bare CR in a header is a permanent failure: the message is never sent, and
    # its sender gets a DSN.
    spool.put(message(extra_headers="X-Note: a\rb\r\n"), ["alice@example.org"])

    assert spool.invoke(spool.receive()) == set()

    [dsn] = sent_messages()
    top, _, rest = dsn.raw_data.partition("\r\n\r\n")
    assert "From: noreply@example.com" in top.split("\r\n")  # was MAILER-DAEMON
    assert "MAILER-DAEMON" not in top
    # The quoted headers are the spooled message's, not those SES would have received.
    assert "From: Sender <sender@example.com>" in rest
    assert "X-Original-Subject" not in rest
