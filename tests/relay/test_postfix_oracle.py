"""Debian's Postfix 3.7 as the oracle for address rewriting.

A private Postfix instance (``postfix -c DIR start-fg``, its own queue, listening on
loopback) relays to a small Python sink on loopback. It and a sesrelay relay get the same
main.cf rewriting parameters and the same tables; each case sends the same message to
both, and compares the envelope (sender, recipients), the replies and the address
headers of what each would deliver. Postfix's local_header_rewrite_clients is emptied so
that the loopback client is remote, as every sesrelay client is (behind the NLB).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postfix_support import (
    Delivered,
    RelayingPostfix,
    relaying_postfix,
    requires_postfix,
    send,
    write_tables,
)
from tests.relay.conftest import SpoolAccount

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

@pytest.fixture(scope="module")
def oracle() -> Iterator[RelayingPostfix]:
    """A private Postfix 3.7 on loopback, relaying to a Python sink on loopback."""
    with tempfile.TemporaryDirectory() as tables:
        rewriting = REWRITING.format(dir=write_tables(Path(tables), TABLES))
        with relaying_postfix(rewriting) as postfix:
            yield postfix


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
    "percent hack and bang path": ("app%host7.example.org", ["x.example!u", "v%y.example"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sesrelay_rewrites_as_postfix_does(case: str, oracle: RelayingPostfix, start_relay,
                                           spool_account: SpoolAccount) -> None:
    sender, recipients = CASES[case]
    subject = f"oracle {case}"
    message = (f"From: \"Bob\" <bob@a.example>\r\nSender: app@host7.example.org\r\n"
               f"To: carol, joe+tag@old.example\r\nCc: dev@build.corp.example\r\n"
               f"Subject: {subject}\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
               f"Message-ID: <{abs(hash(case))}@client.example.org>\r\n\r\nHello.\r\n"
               ).encode()
    postfix = oracle.relay(subject, sender, recipients, message)
    relay = start_relay(oracle.main_cf)
    ours = via_sesrelay(relay, spool_account, sender, recipients, message)
    assert ours.rcpt_replies == postfix.rcpt_replies
    assert ours.data_reply == postfix.data_reply
    assert ours.mail_from == postfix.mail_from
    assert sorted(ours.rcpt_to) == sorted(postfix.rcpt_to)
    for name in ("From", "Sender", "To", "Cc", "Reply-To"):
        assert ours.header(name) == postfix.header(name), name
