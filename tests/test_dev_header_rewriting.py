"""Outbound header rewriting end to end in `sesrelay dev` (issue 18): the recipe admins use
to send from a verified address and keep the original for replies. It takes two tables,
as in Postfix: header_checks PREPENDs Reply-To: from the From: line at receipt, and
smtp_header_checks REPLACEs From: just before SES."""

from __future__ import annotations

import smtplib
from pathlib import Path

from tests.conftest import running_dev
from tests.test_dev_compat import raw_bytes

LONG_SUBJECT = "Subject: " + " ".join(["report"] * 200)  # 1,408 octets: fitted for SES


def message(sender: str) -> bytes:
    return (f"From: Jane Doe <{sender}>\r\nTo: bert@example.org\r\n{LONG_SUBJECT}\r\n"
            "\r\nHello.\r\n").encode()


def headers(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def test_from_rewritten_with_the_original_in_reply_to(tmp_path: Path) -> None:
    (tmp_path / "header_checks").write_text("/^From: (.*)/ PREPEND Reply-To: $1\n")
    (tmp_path / "smtp_header_checks").write_text(
        "/^From:/ REPLACE From: noreply@example.com\n")
    main_cf = (f"header_checks = regexp:{tmp_path}/header_checks\n"
               f"smtp_header_checks = regexp:{tmp_path}/smtp_header_checks\n")
    with running_dev(tmp_path, main_cf=main_cf) as dev:
        with smtplib.SMTP("127.0.0.1", dev.smtp_port, timeout=30) as client:
            client.ehlo("client.example.com")
            client.sendmail("noreply@example.com", ["bert@example.org"],
                            message("jane@customer.example"))
            # SES refuses this envelope sender: its bounce goes out through
            # smtp_header_checks too, and quotes the headers as spooled.
            client.sendmail("app@unverified.example", ["carl@example.org"],
                            message("app@unverified.example"))
        sends = dev.wait_for_outbox(lambda sends: {"bert@example.org", "app@unverified.example"}
                                    <= {r for s in sends for r in s["rcpt_to"]})

    sent = raw_bytes(next(s for s in sends if s["rcpt_to"] == ["bert@example.org"]))
    lines = headers(sent)
    start = lines.index(b"Reply-To: Jane Doe <jane@customer.example>")
    assert lines[start + 1] == b"From: noreply@example.com"
    assert not any(b"jane@customer.example" in line for line in lines if line != lines[start])
    # The long Subject: reaches SES folded (SES refuses lines over 1,000 octets), and
    # unfolds to what the client sent.
    assert all(len(line) <= 998 for line in sent.split(b"\r\n"))
    assert LONG_SUBJECT.encode() in sent.replace(b"\r\n ", b" ")

    dsn = raw_bytes(next(s for s in sends if s["rcpt_to"] == ["app@unverified.example"]))
    top, _, quoted = dsn.partition(b"\r\n\r\n")
    assert b"From: noreply@example.com" in top.split(b"\r\n")
    assert b"Reply-To: Jane Doe <app@unverified.example>\r\n" \
           b"From: Jane Doe <app@unverified.example>" in quoted
