"""The SES sender policy over real SMTP (issue 18): ses_unverified_sender = reject gives
Postfix's 553 at RCPT TO (smtpd_delay_reject = yes) or at MAIL FROM (no) for an envelope
sender no verified identity covers, as SES matches identities; accept leaves it to SES."""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from sesrelay.ses_identities import covers
from tests.relay.conftest import RunningRelay, SpoolAccount

IDENTITIES = "example.com, ops@verified.example"
MESSAGE = b"From: x@example.com\r\nSubject: policy\r\n\r\nhello\r\n"


@pytest.mark.parametrize(("address", "covered"), [
    ("app@example.com", True),             # the verified domain
    ("app@EXAMPLE.com", True),             # domains compare without case
    ("app@mail.example.com", True),        # a subdomain: SES covers every depth
    ("app@a.b.example.com", True),
    ("ops@verified.example", True),        # the verified address
    ("other@verified.example", False),     # an address identity covers only itself
    ("ops@sub.verified.example", False),
    ("app@badexample.com", False),         # not a subdomain, only a longer name
    ("app@example.com.evil.example", False),
    ("app@unverified.example", False),
])
def test_identities_cover_as_ses_documents(address: str, covered: bool) -> None:
    assert covers(("example.com", "ops@verified.example"), address) is covered


def replies(relay: RunningRelay, sender: str) -> tuple[int, int]:
    """The codes of MAIL FROM and RCPT TO for sender (RCPT only after a 250 to MAIL)."""
    with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
        client.ehlo("client.example.com")
        mail, text = client.mail(sender)
        rcpt = 0
        if mail == 250:
            rcpt, text = client.rcpt("bert@example.org")
        if (mail, rcpt) != (250, 250):
            code = rcpt or mail
            assert text.decode() == (f"{code // 100}.7.1 <{sender}>: Sender address "
                                     "rejected: not a verified SES identity")
        return mail, rcpt


StartRelay = Callable[..., RunningRelay]

SENDERS = ["app@example.com", "app@mail.example.com", "ops@verified.example",
           "app@unverified.example", "other@verified.example", "<>"]


@pytest.mark.parametrize(("settings", "expected"), [
    # reject, the default, at RCPT TO: Postfix's smtpd_delay_reject = yes
    ({}, [(250, 250)] * 3 + [(250, 553)] * 2 + [(250, 250)]),
    ({"smtpd_delay_reject": "no"}, [(250, 250)] * 3 + [(553, 0)] * 2 + [(250, 250)]),
    ({"soft_bounce": "yes"}, [(250, 250)] * 3 + [(250, 453)] * 2 + [(250, 250)]),
    ({"ses_unverified_sender": "accept"}, [(250, 250)] * 6),
    ({"ses_identities": ""}, [(250, 250)] * 6),  # nothing known: nothing checked
], ids=["reject", "reject-at-mail", "soft-bounce", "accept", "no-identities"])
def test_each_mode_over_smtp(start_relay: StartRelay, settings: dict[str, str],
                             expected: list[tuple[int, int]]) -> None:
    relay = start_relay(**{"ses_identities": IDENTITIES, "mynetworks": "127.0.0.0/8",
                           **settings})
    assert [replies(relay, sender if sender != "<>" else "") for sender in SENDERS] \
        == expected


def test_the_sender_is_checked_as_ses_will_see_it(start_relay: StartRelay, tmp_path: Path,
                                                  spool_account: SpoolAccount) -> None:
    (tmp_path / "sender_canonical").write_text("@unverified.example @example.com\n")
    relay = start_relay(ses_identities=IDENTITIES, mynetworks="127.0.0.0/8",
                        sender_canonical_maps=f"texthash:{tmp_path}/sender_canonical")
    assert replies(relay, "app@unverified.example") == (250, 250)
    assert replies(relay, "app@other.example") == (250, 553)
    with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
        client.sendmail("app@unverified.example", ["bert@example.org"], MESSAGE)
    [spooled] = spool_account.queued()
    assert spooled.envelope.mail_from == "app@example.com"
