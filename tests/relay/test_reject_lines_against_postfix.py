"""smtpd's NOQUEUE reject lines, with Postfix 3.7 as the oracle: the same main.cf and the
same refused recipients give the same lines (which pflogsumm counts), the null sender
written as from=<>."""

from __future__ import annotations

import logging
import re
import smtplib
import time

from sesrelay.logformat import MaillogFormatter
from tests.postfix_support import relaying_postfix, requires_postfix

# Loopback is not trusted to relay: every recipient outside relay_domains is refused.
MAIN_CF = "smtpd_relay_restrictions = reject_unauth_destination\nrelay_domains = example.org\n"
SENDERS = ["app@example.com", ""]
_NOQUEUE = re.compile(r"(?:postfix|sesrelay)/smtpd\[\d+\]: (NOQUEUE: reject: .*)$")


def refuse_each(port: int) -> None:
    """One session per sender: a recipient outside relay_domains, refused at RCPT."""
    for sender in SENDERS:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo("client.example.org")
            client.mail(sender)
            code, _ = client.rcpt("x@elsewhere.example")
            assert code == 554


def noqueue(log_text: str) -> list[str]:
    """The NOQUEUE lines, the client's name made alike (Postfix looks it up)."""
    return [re.sub(r"\b[\w.-]+\[127\.0\.0\.1\]", "client[127.0.0.1]", m[1])
            for line in log_text.splitlines() if (m := _NOQUEUE.search(line))]


@requires_postfix
def test_relay_refusals_are_logged_as_postfix_logs_them(start_relay, spool_account,
                                                        caplog) -> None:
    caplog.set_level(logging.INFO, logger="sesrelay")
    relay = start_relay(MAIN_CF)
    refuse_each(relay.port)
    formatter = MaillogFormatter(host="relay")
    ours = noqueue("\n".join(formatter.format(r) for r in caplog.records))
    with relaying_postfix(MAIN_CF) as postfix:
        refuse_each(postfix.postfix.port)
        deadline = time.monotonic() + 10
        while len(theirs := noqueue(postfix.postfix.log.read_text())) < len(SENDERS):
            assert time.monotonic() < deadline, postfix.postfix.log.read_text()
            time.sleep(0.1)
    assert ours == theirs
    assert ours[1].endswith("from=<> to=<x@elsewhere.example> proto=ESMTP "
                            "helo=<client.example.org>")
