"""A realistic SES relay main.cf, end to end in `sesrelay dev` and in Debian's Postfix 3.7
(issue 18's "done when"): sender canonical maps that give internal hosts' senders a
verified domain, canonical maps for an old domain, virtual aliases for a team address,
the two-table From: recipe (header_checks PREPENDs Reply-To: at receipt,
smtp_header_checks REPLACEs From: at delivery) and message_drop_headers with an internal
header added to Postfix's default list.

Postfix relays to a sink on loopback; sesrelay spools, and its worker sends through the
emulated SES. The envelope each delivers and the headers of the message are compared:
what Postfix would hand to SES is what sesrelay hands to SES.
"""

from __future__ import annotations

import smtplib
import tempfile
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import pytest

from tests.conftest import running_dev
from tests.postfix_support import (
    Delivered,
    RelayingPostfix,
    relaying_postfix,
    requires_postfix,
    write_tables,
)
from tests.test_dev_compat import raw_bytes

pytestmark = requires_postfix

TABLES = {
    "sender_canonical": r"""
        /^([^@]+)@[^@.]+\.internal$/    ${1}@example.com
    """,
    "canonical": """
        @old.example        @example.com
    """,
    "virtual": """
        ops@example.com     ann@example.org, ben@example.org
    """,
    "header_checks": r"""
        /^From: (.*)/       PREPEND Reply-To: $1
        /^X-Debug:/         IGNORE
    """,
    "smtp_header_checks": r"""
        /^From:/            REPLACE From: "Billing" <noreply@example.com>
    """,
}

MAIN_CF = """\
mydomain = example.com
myorigin = $mydomain
recipient_delimiter = +
sender_canonical_maps = regexp:{dir}/sender_canonical
canonical_maps = texthash:{dir}/canonical
virtual_alias_maps = texthash:{dir}/virtual
header_checks = regexp:{dir}/header_checks
smtp_header_checks = regexp:{dir}/smtp_header_checks
message_drop_headers = bcc, content-length, resent-bcc, return-path, x-internal-trace
"""

SENDER = "billing@app7.internal"
RECIPIENTS = ["ops@example.com", "dev+alerts@old.example", "audit@example.org"]
MESSAGE = (
    b"Return-Path: <someone-else@app7.internal>\r\n"
    b'From: "App 7" <billing@app7.internal>\r\n'
    b"To: Ops <ops@example.com>\r\n"
    b"Cc: dev+alerts@old.example\r\n"
    b"Bcc: audit@example.org\r\n"
    b"Subject: invoice 2026-11\r\n"
    b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <invoice-2026-11@app7.internal>\r\n"
    b"Content-Length: 19\r\n"
    b"X-Internal-Trace: host=app7 pid=42\r\n"
    b"X-Debug: yes\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Invoice attached.\r\n")
# Compared one by one: the From: recipe, the addresses clients wrote (header addresses
# are not rewritten for remote clients), and each header one of the tables removes.
COMPARED = ("From", "Reply-To", "To", "Cc", "Subject", "Bcc", "Return-Path",
            "Content-Length", "X-Internal-Trace", "X-Debug", "Message-ID")


@pytest.fixture(scope="module")
def tables() -> Iterator[Path]:
    """The tables, outside pytest's mode-700 tree: Postfix's daemons (the postfix user)
    read them."""
    with tempfile.TemporaryDirectory() as directory:
        yield write_tables(Path(directory), TABLES)


@pytest.fixture(scope="module")
def postfix(tables: Path) -> Iterator[RelayingPostfix]:
    """Postfix 3.7 with the realistic main.cf, relaying to a sink."""
    with relaying_postfix(MAIN_CF.format(dir=tables)) as running:
        yield running


def through_sesrelay(tmp_path: Path, tables: Path) -> Delivered:
    """Send the message through `sesrelay dev` with the same main.cf (and the SES sender
    policy a careful admin keeps: reject unverified senders); what SES was asked to send."""
    main_cf = MAIN_CF.format(dir=tables) + "ses_unverified_sender = reject\n"
    with running_dev(tmp_path, main_cf=main_cf) as dev:
        with smtplib.SMTP("127.0.0.1", dev.smtp_port, timeout=30) as client:
            client.ehlo("client.example.org")
            client.sendmail(SENDER, RECIPIENTS, MESSAGE)
        [sent] = dev.wait_for_outbox(lambda sends: len(sends) == 1)
    return Delivered(mail_from=sent["mail_from"], rcpt_to=list(sent["rcpt_to"]),
                     message=raw_bytes(sent))


def header_names(message: bytes) -> list[str]:
    """The message's header names, lowercased, in order, without trace headers."""
    return [name.lower() for name in message_from_bytes(message)
            if name.lower() != "received"]


def test_realistic_relay_maincf_delivers_what_postfix_delivers(
        postfix: RelayingPostfix, tables: Path, tmp_path: Path) -> None:
    expected = postfix.relay("invoice 2026-11", SENDER, RECIPIENTS, MESSAGE)
    assert expected.data_reply == 250
    ours = through_sesrelay(tmp_path, tables)

    assert ours.mail_from == expected.mail_from == "billing@example.com"
    assert sorted(ours.rcpt_to) == sorted(expected.rcpt_to) == [
        "ann@example.org", "audit@example.org", "ben@example.org", "dev+alerts@example.com"]
    for name in COMPARED:
        assert ours.header(name) == expected.header(name), name
    assert header_names(ours.message) == header_names(expected.message)
    # What the comparison covers, said plainly: the recipe's result, and the removals.
    assert ours.header("From") == ['"Billing" <noreply@example.com>']
    assert ours.header("Reply-To") == ['"App 7" <billing@app7.internal>']
    assert not any(ours.header(name) for name in
                   ("Bcc", "Return-Path", "Content-Length", "X-Internal-Trace", "X-Debug"))
