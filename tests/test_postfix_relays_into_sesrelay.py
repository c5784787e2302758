"""Debian's Postfix 3.7, with its defaults and nothing but relayhost, relaying into
`sesrelay dev` (issue 23): an IDN recipient under SMTPUTF8, DSN NOTIFY=NEVER, and a
bare-LF message. Messages enter Postfix through its sendmail, as a local program's do,
and are checked in the outbox of `sesrelay dev`'s emulated SES."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import SESRELAY, DevRelay
from tests.postfix_support import PrivatePostfix, private_postfix, requires_postfix

pytestmark = requires_postfix


@dataclass
class Chain:
    """Postfix in front, `sesrelay dev` behind it."""

    postfix: PrivatePostfix
    dev: DevRelay

    def submit(self, arguments: list[str], message: bytes) -> None:
        """Hand message to Postfix's sendmail; wait until Postfix has passed it on."""
        self.postfix.sendmail(arguments, message)
        self.postfix.wait_for_empty_queue()

    def sent_to(self, address: str) -> list[dict[str, Any]]:
        """The outbox's sends to address, once there is one (or fail after a minute)."""
        sends = self.dev.wait_for_outbox(
            lambda sends: any(address in s["rcpt_to"] for s in sends))
        return [s for s in sends if address in s["rcpt_to"]]


@pytest.fixture(scope="module")
def chain(dev_relay_module: DevRelay) -> Iterator[Chain]:
    """A private Postfix relaying to the module's `sesrelay dev`. compatibility_level is
    Debian's main.cf's (3.6), which gives smtputf8_enable = yes; myhostname must be
    a fully qualified name, which this machine's may not be."""
    with private_postfix(f"""
compatibility_level = 3.6
myhostname = postfix.example.net
relayhost = [127.0.0.1]:{dev_relay_module.smtp_port}
""") as postfix:
        yield Chain(postfix, dev_relay_module)


def raw_bytes(sent: dict[str, Any]) -> bytes:
    """The octets SES was given (the outbox keeps non-UTF-8 octets as surrogate escapes)."""
    return str(sent["raw"]).encode("utf-8", "surrogateescape")


def test_idn_recipient_reaches_ses_as_a_labels_with_utf8_headers(chain: Chain) -> None:
    """UTF-8 in the recipient and the headers: Postfix's sendmail marks the message
    SMTPUTF8 and relays it as such; SES gets the A-label and the headers as written.
    The To: header names the A-label: one with the UTF-8 domain makes the emulated SES
    fail (moto's header parsing), which this test does not cover."""
    message = ("From: Bücherei <app@example.com>\nTo: Änna <anna@xn--bcher-kva.example>\n"
               "Subject: Grüße aus München\n\nHallo.\n").encode()
    chain.submit(["-f", "app@example.com", "anna@bücher.example"], message)
    [sent] = chain.sent_to("anna@xn--bcher-kva.example")
    assert sent["rcpt_to"] == ["anna@xn--bcher-kva.example"]
    raw = raw_bytes(sent)
    for header in ("From: Bücherei <app@example.com>", "To: Änna <anna@xn--bcher-kva.example>",
                   "Subject: Grüße aus München"):
        assert f"\r\n{header}\r\n".encode() in raw
    assert raw.endswith(b"\r\n\r\nHallo.\r\n")


def final_status(dev: DevRelay, address: str) -> str | None:
    """The status of the message to address, from `sesrelay trace --json`."""
    result = subprocess.run([SESRELAY, "trace", address, "--json", "--endpoint", dev.endpoint],
                            capture_output=True, text=True, timeout=30)
    stories = json.loads(result.stdout) if result.returncode == 0 else []
    return stories[0]["status"] if stories else None


def test_notify_never_through_postfix_means_no_dsn(chain: Chain) -> None:
    """SES refuses both messages (unverified senders). Postfix passes the DSN parameters
    of sendmail -N and -V on as NOTIFY, ENVID and ORCPT: the control's DSN echoes its
    ENVID and ORCPT, and the NOTIFY=NEVER message gets none."""
    for name, options in (("quiet", ["-N", "never"]), ("loud", [])):
        chain.postfix.sendmail(
            ["-f", f"{name}@unverified.example", "-V", f"envid-{name}", *options,
             f"{name}-rcpt@example.org"],
            f"From: {name}@unverified.example\nSubject: {name}\n\nHello.\n".encode())
    chain.postfix.wait_for_empty_queue()
    [dsn] = chain.sent_to("loud@unverified.example")
    assert "Original-Envelope-Id: envid-loud\r\n" in dsn["raw"]
    assert "Final-Recipient: rfc822; loud-rcpt@example.org\r\n" in dsn["raw"]
    assert "Original-Recipient: rfc822;loud-rcpt@example.org\r\n" in dsn["raw"]
    # The worker logs a message finished only after sending its DSN, if it owes one.
    deadline = time.monotonic() + 60
    while final_status(chain.dev, "quiet-rcpt@example.org") != "bounced":
        assert time.monotonic() < deadline, "the NOTIFY=NEVER message never bounced"
        time.sleep(0.5)
    assert not [s for s in chain.dev.outbox() if "quiet@unverified.example" in s["rcpt_to"]]


def test_bare_lf_message_arrives_with_crlf_and_same_content(chain: Chain) -> None:
    """A local program hands Postfix a message with Unix line ends; SES gets every line
    as written, ended by CRLF (a line starting with a dot included)."""
    header = b"From: app@example.com\nTo: lf@example.org\nSubject: bare LF\n"
    body = b"first line\n.leading dot\n\n\tindented\nlast line\n"
    chain.submit(["-f", "app@example.com", "lf@example.org"], header + b"\n" + body)
    [sent] = chain.sent_to("lf@example.org")
    raw = raw_bytes(sent)
    assert b"\n" not in raw.replace(b"\r\n", b"")
    sent_header, sent_body = raw.split(b"\r\n\r\n", 1)
    assert sent_body == body.replace(b"\n", b"\r\n")
    for line in header.splitlines():
        assert line in sent_header.split(b"\r\n")
