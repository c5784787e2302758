"""The SES sender policy over real SMTP (issue 18): ses_unverified_sender = reject gives
Postfix's 553 at RCPT TO (smtpd_delay_reject = yes) or at MAIL FROM (no) for an envelope
sender no verified identity covers, as SES matches identities; accept leaves it to SES."""

from __future__ import annotations

import logging
import smtplib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sesrelay.ses_identities import covers
from tests.config.test_seed_and_cli import SESRELAY
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


# --- ses_unverified_sender = rewrite ------------------------------------------------------

REWRITE = {"ses_identities": IDENTITIES, "mynetworks": "127.0.0.0/8",
           "ses_unverified_sender": "rewrite", "ses_default_sender": "noreply@example.com"}


def send(relay: RunningRelay, sender: str, message: bytes) -> None:
    with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
        client.sendmail(sender, ["bert@example.org"], message)


def header_lines(raw: bytes) -> list[bytes]:
    """The header lines after the relay's Received: header."""
    head = raw.partition(b"\r\n\r\n")[0].split(b"\r\n")
    return [line for line in head if not line.startswith((b"Received:", b" ", b"\t"))]


def test_rewrite_unverified_sender_and_from(start_relay: StartRelay,
                                            spool_account: SpoolAccount,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sesrelay.relay")
    relay = start_relay(**REWRITE)
    send(relay, "app@unverified.example",
         b"From: The App <app@unverified.example>\r\nSubject: s\r\n\r\nhello\r\n")
    [spooled] = spool_account.queued()
    assert spooled.envelope.mail_from == "noreply@example.com"
    assert spooled.envelope.orig_mail_from == "app@unverified.example"
    assert header_lines(spooled.raw) == [b"From: noreply@example.com",
                                         b"Reply-To: app@unverified.example", b"Subject: s"]
    queue_id = spooled.envelope.queue_id
    assert (f"{queue_id}: from=<app@unverified.example> rewritten to <noreply@example.com>"
            in caplog.text)
    assert (f"{queue_id}: ses_unverified_sender: header From: <app@unverified.example> "
            "replaced by <noreply@example.com>; Reply-To: <app@unverified.example> added"
            in caplog.text)


def test_rewrite_leaves_a_verified_sender_alone(start_relay: StartRelay,
                                                spool_account: SpoolAccount) -> None:
    relay = start_relay(**REWRITE)
    message = b"From: App <app@mail.example.com>\r\nSubject: s\r\n\r\nhello\r\n"
    send(relay, "app@mail.example.com", message)
    [spooled] = spool_account.queued()
    assert spooled.envelope.mail_from == "app@mail.example.com"
    assert spooled.envelope.orig_mail_from is None
    assert spooled.raw.endswith(message)


def test_rewrite_keeps_an_existing_reply_to(start_relay: StartRelay,
                                            spool_account: SpoolAccount) -> None:
    relay = start_relay(**REWRITE)
    send(relay, "app@unverified.example",
         b"Reply-To: support@unverified.example\r\nFrom: app@unverified.example\r\n\r\nhi\r\n")
    [spooled] = spool_account.queued()
    assert spooled.envelope.mail_from == "noreply@example.com"
    assert header_lines(spooled.raw) == [b"Reply-To: support@unverified.example",
                                         b"From: noreply@example.com"]


@pytest.mark.parametrize("from_lines", [
    b"",                                                     # no From:
    b"From: a@unverified.example\r\nFrom: b@unverified.example\r\n",
    b"From: a@unverified.example, b@unverified.example\r\n",
    b"From: undisclosed: a@unverified.example;\r\n",           # a group
    b'From: "a b"@unverified.example\r\n',                   # quoted local part
    b"From: a@unverified.example\r\n\tx@unverified.example\r\n",  # two addresses, folded
], ids=["none", "two-headers", "two-mailboxes", "group", "quoted", "folded-junk"])
def test_rewrite_refuses_a_from_that_is_not_one_mailbox(
        start_relay: StartRelay, spool_account: SpoolAccount, from_lines: bytes) -> None:
    relay = start_relay(**REWRITE)
    with (smtplib.SMTP(relay.host, relay.port, timeout=30) as client,
          pytest.raises(smtplib.SMTPDataError) as refused):
        client.sendmail("app@unverified.example", ["bert@example.org"],
                        from_lines + b"Subject: s\r\n\r\nhello\r\n")
    assert (refused.value.smtp_code, refused.value.smtp_error.decode()) == (
        550, "5.6.0 Error: the From: header must be one valid mailbox: "
        "ses_unverified_sender = rewrite replaces it with a verified sender")
    assert spool_account.queued() == []


@pytest.mark.parametrize(("text", "expected"), [
    ("ses_identities = example.com\nses_unverified_sender = rewrite\n",
     "main.cf:2: ses_unverified_sender = rewrite needs ses_default_sender: the verified "
     "address to send as"),
    ("ses_identities = example.com\nses_unverified_sender = rewrite\n"
     "ses_default_sender = noreply@unverified.example\n",
     "main.cf:3: ses_default_sender noreply@unverified.example is not a verified SES "
     "identity: no entry of ses_identities covers it"),
    ("ses_unverified_sender = rewrite\nses_default_sender = noreply@example.com\n",
     "main.cf:2: ses_default_sender noreply@example.com is not a verified SES identity: no "
     "entry of ses_identities covers it"),
    ("ses_default_sender = <noreply@example.com>\n",
     "main.cf:1: expected an e-mail address (local@domain), got '<noreply@example.com>'"),
], ids=["missing", "unverified", "no-identities", "malformed"])
def test_rewrite_config_errors_name_file_and_line(tmp_path: Path, text: str,
                                                  expected: str) -> None:
    path = tmp_path / "main.cf"
    path.write_text(text)
    result = subprocess.run([SESRELAY, "config", "check", str(path)], capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert f"error: {tmp_path}/{expected}" in result.stdout.splitlines()
