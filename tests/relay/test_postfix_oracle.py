"""Debian's Postfix 3.7 as the oracle for address rewriting.

A private Postfix instance (``postfix -c DIR start-fg``, its own queue, listening on
loopback) relays to a small Python sink on loopback. It and a sesrelay relay get the same
main.cf rewriting parameters and the same tables; each case sends the same message to
both, and compares the envelope (sender, recipients), the replies and the address
headers of what each would deliver. Postfix's local_header_rewrite_clients is emptied so
that the loopback client is remote, as every sesrelay client is (behind the NLB).
"""

from __future__ import annotations

import smtplib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from tests.postfix_support import private_postfix, requires_postfix
from tests.relay.conftest import SpoolAccount
from tests.support import free_port

pytestmark = requires_postfix

TABLES = {
    "canonical": """
        @old.example        @new.example
        bob@a.example       bob.smith@a.example
        carol               carol.x@b.example
        @c.example          catch@d.example
        c1@chain.example    c2@chain.example
        c2@chain.example    c3@chain.example
    """,
    "sender_canonical.re": r"""
        /^(.*)@host[0-9]+\.example\.org$/   ${1}@example.org
    """,
    "recipient_canonical": """
        @legacy.example     @example.com
    """,
    "virtual": """
        v.example           a Postfix-style virtual alias domain
        sales@v.example     ann@x.example, ben+s@x.example, sales@v.example
        list@v.example      sales@v.example, cy@x.example
        big@v.example       b1@y.org b2@y.org b3@y.org b4@y.org b5@y.org b6@y.org
        loop@v.example      loop2@v.example
        loop2@v.example     loop@v.example
        @w.example          @z.example
    """,
}

REWRITING = """\
myorigin = example.net
mydomain = example.net
recipient_delimiter = +
canonical_maps = texthash:{dir}/canonical
sender_canonical_maps = regexp:{dir}/sender_canonical.re
recipient_canonical_maps = texthash:{dir}/recipient_canonical
masquerade_domains = !keep.corp.example, corp.example
masquerade_exceptions = root
virtual_alias_maps = texthash:{dir}/virtual
virtual_alias_expansion_limit = 5
"""

@dataclass
class Delivered:
    """What one party would deliver: reply to DATA, envelope, message."""

    rcpt_replies: list[int] = field(default_factory=list)
    data_reply: int = 0
    mail_from: str = ""
    rcpt_to: list[str] = field(default_factory=list)
    message: bytes = b""

    def header(self, name: str) -> list[str]:
        """Every value of header name, unfolded."""
        parsed = message_from_bytes(self.message)
        return [" ".join(str(v).split()) for v in parsed.get_all(name, [])]


class Sink:
    """aiosmtpd handler: every transaction Postfix relays, by Subject."""

    def __init__(self) -> None:
        self.received: dict[str, Delivered] = {}

    async def handle_DATA(self, server: object, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        subject = message_from_bytes(content)["Subject"]
        got = self.received.setdefault(subject, Delivered())
        got.mail_from = envelope.mail_from or ""
        got.rcpt_to.extend(envelope.rcpt_tos)
        got.message = content
        return "250 2.0.0 Ok"


@dataclass
class Oracle:
    """The running Postfix: its SMTP port, its sink, its main.cf rewriting text."""

    port: int
    sink: Sink
    rewriting: str
    log: Path


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    """A private Postfix 3.7 on loopback, relaying to a Python sink on loopback."""
    sink = Sink()
    sink_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink_port)
    controller.start()
    try:
        with tempfile.TemporaryDirectory() as tables:
            # The tables are read by Postfix's daemons, as the postfix user.
            Path(tables).chmod(0o755)
            for name, text in TABLES.items():
                (Path(tables) / name).write_text(
                    "\n".join(line.strip() for line in text.splitlines()) + "\n")
            rewriting = REWRITING.format(dir=tables)
            with private_postfix(rewriting + f"""
compatibility_level = 3.6
myhostname = oracle.example.net
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
local_header_rewrite_clients =
""") as postfix:
                yield Oracle(postfix.port, sink, rewriting, postfix.log)
    finally:
        controller.stop()


def send(port: int, sender: str, recipients: list[str], message: bytes) -> Delivered:
    """One SMTP transaction; the replies to RCPT and DATA."""
    got = Delivered()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.org")
        client.mail(sender)
        for recipient in recipients:
            got.rcpt_replies.append(client.rcpt(recipient)[0])
        if 250 in got.rcpt_replies:
            got.data_reply = client.data(message)[0]
    return got


def via_postfix(oracle: Oracle, subject: str, sender: str, recipients: list[str],
                message: bytes) -> Delivered:
    """Send through Postfix; wait for the sink to get what Postfix delivers."""
    got = send(oracle.port, sender, recipients, message)
    if got.data_reply == 250:
        deadline = time.monotonic() + 30
        while subject not in oracle.sink.received:
            assert time.monotonic() < deadline, oracle.log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(0.3)  # Postfix may split a message's recipients over deliveries
        delivered = oracle.sink.received[subject]
        got.mail_from, got.rcpt_to, got.message = (delivered.mail_from, delivered.rcpt_to,
                                                   delivered.message)
    return got


def via_sesrelay(relay, spool: SpoolAccount, sender: str, recipients: list[str],
                 message: bytes) -> Delivered:
    """Send through sesrelay; read what it spooled."""
    got = send(relay.port, sender, recipients, message)
    if got.data_reply == 250:
        [spooled] = spool.queued()
        got.mail_from = spooled.envelope.mail_from
        got.rcpt_to = list(spooled.envelope.rcpt_to)
        got.message = spooled.raw
    return got


CASES = {
    "canonical lookup order and extensions": (
        "bob+news@a.example",
        ["carol+x@example.net", "joe+tag@old.example", "x+tag@c.example", "c1@chain.example",
         "dan@legacy.example"]),
    "sender regexp and masquerading": ("app@host7.example.org", ["dev@build.corp.example"]),
    "masquerade exclusion and exception (sender)": ("x@a.keep.corp.example",
                                                    ["root@build.corp.example"]),
    "masquerade exception (sender)": ("root@build.corp.example", ["x@x.example"]),
    "virtual aliases": ("s@x.example", ["sales+q@v.example", "list@v.example",
                                        "u+k@w.example"]),
    "virtual alias domain": ("s@x.example", ["nobody@v.example", "sales@v.example"]),
    "expansion limit": ("s@x.example", ["big@v.example"]),
    "recursion limit": ("s@x.example", ["loop@v.example"]),
    "bare names": ("bob", ["carol"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sesrelay_rewrites_as_postfix_does(case: str, oracle: Oracle, start_relay,
                                           spool_account: SpoolAccount) -> None:
    sender, recipients = CASES[case]
    subject = f"oracle {case}"
    message = (f"From: \"Bob\" <bob@a.example>\r\nSender: app@host7.example.org\r\n"
               f"To: carol, joe+tag@old.example\r\nCc: dev@build.corp.example\r\n"
               f"Subject: {subject}\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
               f"Message-ID: <{abs(hash(case))}@client.example.org>\r\n\r\nHello.\r\n"
               ).encode()
    postfix = via_postfix(oracle, subject, sender, recipients, message)
    relay = start_relay(oracle.rewriting)
    ours = via_sesrelay(relay, spool_account, sender, recipients, message)
    assert ours.rcpt_replies == postfix.rcpt_replies
    assert ours.data_reply == postfix.data_reply
    assert ours.mail_from == postfix.mail_from
    assert sorted(ours.rcpt_to) == sorted(postfix.rcpt_to)
    for name in ("From", "Sender", "To", "Cc", "Reply-To"):
        assert ours.header(name) == postfix.header(name), name
