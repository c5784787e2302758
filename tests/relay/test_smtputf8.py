"""SMTPUTF8 (RFC 6531) and IDN over real SMTP sessions: offered, IDN domains spooled as
A-labels (what SES takes), UTF-8 local parts refused with 553 5.6.7 (SES takes none),
UTF-8 headers spooled as they came."""

from __future__ import annotations

import smtplib

from tests.relay.conftest import SpoolAccount

MESSAGE = "From: Jörg <app@bücher.example>\r\nSubject: Grüße\r\n\r\nHallo.\r\n".encode()


def test_smtputf8_offered_and_idn_addresses_spooled_as_a_labels(
        start_relay, spool_account: SpoolAccount) -> None:
    relay = start_relay()
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
        client.ehlo("client.example.org")
        assert client.has_extn("smtputf8")
        # smtplib sends the UTF-8 addresses as they are, with SMTPUTF8 and 8BITMIME.
        client.sendmail("app@Bücher.example", ["anna@παράδειγμα.δοκιμή", "bob@faß.de"],
                        MESSAGE, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    [spooled] = spool_account.queued()
    assert spooled.envelope.mail_from == "app@xn--bcher-kva.example"
    assert spooled.envelope.rcpt_to == ("anna@xn--hxajbheg2az3al.xn--jxalpdlp",
                                        "bob@xn--fa-hia.de")
    assert spooled.raw.endswith(MESSAGE)  # headers pass as SES takes them: unchanged
    assert b"with UTF8SMTP id " in spooled.raw.split(b"\r\n\r\n")[0]  # RFC 6531 3.7.3


def test_idn_domain_without_the_smtputf8_parameter_is_accepted(
        start_relay, spool_account: SpoolAccount) -> None:
    """As Postfix's default strict_smtputf8 = no: the parameter is not required."""
    relay = start_relay()
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
        client.ehlo("client.example.org")
        client.command_encoding = "utf-8"
        assert client.docmd("MAIL FROM:<app@example.com>") == (250, b"2.1.0 Ok")
        assert client.docmd("RCPT TO:<x@bücher.example>") == (250, b"2.1.5 Ok")


def test_utf8_local_parts_are_refused_with_a_reason(start_relay, spool_account) -> None:
    relay = start_relay()
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
        client.ehlo("client.example.org")
        client.command_encoding = "utf-8"
        assert client.docmd("MAIL FROM:<jörg@example.com> SMTPUTF8") == (
            553, b"5.6.7 <j?rg@example.com>: Sender address rejected: Amazon SES accepts "
                 b"no UTF-8 in the local part of an address (no SMTPUTF8)")
        assert client.docmd("MAIL FROM:<app@example.com> SMTPUTF8")[0] == 250
        code, text = client.docmd("RCPT TO:<ünal@example.org>")
        assert (code, text[:40]) == (553, b"5.6.7 <?nal@example.org>: Recipient addr")
        # A domain that is not one (fullwidth letters UTS #46 would map) is malformed.
        assert client.docmd("RCPT TO:<a@\uff45xample.com>") == (
            501, b"5.1.3 Bad recipient address syntax")
    assert spool_account.queued() == []


def test_utf8_local_part_refusal_is_temporary_under_soft_bounce(start_relay) -> None:
    relay = start_relay(soft_bounce="yes")
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
        client.ehlo("client.example.org")
        client.command_encoding = "utf-8"
        client.docmd("MAIL FROM:<app@example.com>")
        code, text = client.docmd("RCPT TO:<ünal@example.org>")
        assert (code, text[:6]) == (453, b"4.6.7 ")
