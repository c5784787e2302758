"""What real clients send, through `sesrelay dev` over real SMTP (issue 23): 8-bit
content, DSN, X-SES-* headers, and the outbox's account of each send."""

from __future__ import annotations

import smtplib
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SESRELAY, DevRelay, running_dev

LATIN1 = ("From: app@example.com\r\nTo: anna@example.org\r\nSubject: caf\xe9\r\n"
          "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
          "Content-Transfer-Encoding: 8bit\r\n\r\nCaf\xe9 cr\xe8me br\xfbl\xe9e\r\n"
          ).encode("latin-1")


def send(dev: DevRelay, sender: str, recipients: list[str], message: bytes,
         mail_options: tuple[str, ...] = (), rcpt_options: tuple[str, ...] = ()) -> None:
    with smtplib.SMTP("127.0.0.1", dev.smtp_port, timeout=30) as client:
        client.ehlo("client.example.com")
        client.sendmail(sender, recipients, message, mail_options=list(mail_options),
                        rcpt_options=list(rcpt_options))


def raw_bytes(sent: dict) -> bytes:
    """The octets SES was given (the outbox keeps non-UTF-8 octets as surrogate escapes)."""
    return sent["raw"].encode("utf-8", "surrogateescape")


def test_8bit_latin1_content_is_sent_and_bounced_octet_for_octet(
        dev_relay_module: DevRelay) -> None:
    send(dev_relay_module, "app@example.com", ["anna@example.org"], LATIN1,
         mail_options=("BODY=8BITMIME",))
    # An unverified sender: SES refuses, and the worker bounces the 8-bit message.
    send(dev_relay_module, "app@unverified.example", ["bert@example.org"],
         LATIN1.replace(b"app@example.com", b"app@unverified.example"),
         mail_options=("BODY=8BITMIME",))
    sends = dev_relay_module.wait_for_outbox(
        lambda sends: {"anna@example.org", "app@unverified.example"}
        <= {r for s in sends for r in s["rcpt_to"]})
    sent = next(s for s in sends if s["rcpt_to"] == ["anna@example.org"])
    assert raw_bytes(sent).endswith(b"\r\n\r\nCaf\xe9 cr\xe8me br\xfbl\xe9e\r\n")
    dsn = next(s for s in sends if s["rcpt_to"] == ["app@unverified.example"])
    assert b"Final-Recipient: rfc822; bert@example.org" in raw_bytes(dsn)

    listing = subprocess.run([SESRELAY, "outbox", "--endpoint", dev_relay_module.endpoint],
                             capture_output=True, text=True, check=True, timeout=30)
    assert "to=anna@example.org" in listing.stdout


def test_outbox_says_where_its_messages_live(dev_relay_module: DevRelay) -> None:
    listing = subprocess.run([SESRELAY, "outbox", "--endpoint", dev_relay_module.endpoint],
                             capture_output=True, text=True, check=True, timeout=30)
    assert listing.stdout.splitlines()[-1] == (
        f"(held in the memory of `sesrelay dev`, in its AWS emulation at "
        f"{dev_relay_module.endpoint}: gone when it stops)")


def test_dsn_notify_never_and_success_over_smtp(dev_relay_module: DevRelay) -> None:
    plain = b"From: dsn@unverified.example\r\nSubject: dsn\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", dev_relay_module.smtp_port, timeout=30) as client:
        client.ehlo("client.example.com")
        assert client.has_extn("dsn")
        # SES refuses the unverified sender: one recipient asked for no bounce.
        client.mail("dsn@unverified.example", ["ENVID=run+2B1"])
        assert client.rcpt("quiet@example.org", ["NOTIFY=NEVER"])[0] == 250
        assert client.rcpt("loud@example.org", ["ORCPT=rfc822;loud@example.org"])[0] == 250
        assert client.data(plain)[0] == 250
        client.sendmail("dsn@example.com", ["told@example.org"],
                        plain.replace(b"unverified.example", b"example.com"),
                        rcpt_options=["NOTIFY=SUCCESS"])
    sends = dev_relay_module.wait_for_outbox(lambda sends: {
        "dsn@unverified.example", "dsn@example.com"} <= {r for s in sends for r in s["rcpt_to"]})
    bounce = next(s for s in sends if s["rcpt_to"] == ["dsn@unverified.example"])
    assert "Original-Envelope-Id: run+1" in bounce["raw"]
    assert "Final-Recipient: rfc822; loud@example.org" in bounce["raw"]
    assert "quiet@example.org" not in bounce["raw"]
    notice = next(s for s in sends if s["rcpt_to"] == ["dsn@example.com"])
    assert "Action: relayed" in notice["raw"]
    assert "Final-Recipient: rfc822; told@example.org" in notice["raw"]


def test_x_ses_headers_apply_as_ses_smtp_interface_applies_them(tmp_path: Path) -> None:
    """An application written for SES's SMTP endpoint: its configuration set and tags
    reach SES as request parameters, with the relay's own tags, and its X-SES-* headers
    never reach the recipients; a set this environment does not use is refused."""
    message = (b"From: app@example.com\r\nTo: anna@example.org\r\nSubject: tagged\r\n"
               b"X-SES-CONFIGURATION-SET: sesrelay-dev\r\n"
               b"X-SES-MESSAGE-TAGS: campaign=spring, team=web\r\n\r\nHello.\r\n")
    with running_dev(tmp_path, main_cf="ses_configuration_set = sesrelay-dev\n"
                     "ses_email_tags = env=dev\n") as dev:
        send(dev, "app@example.com", ["anna@example.org"], message)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(dev, "app@example.com", ["bert@example.org"],
                 message.replace(b": sesrelay-dev", b": marketing"))
        [sent] = dev.wait_for_outbox(lambda sends: len(sends) >= 1)
    assert refused.value.smtp_code == 550
    assert b"5.7.1 Error: X-SES-CONFIGURATION-SET header" in refused.value.smtp_error
    assert sent["configuration_set"] == "sesrelay-dev"
    assert [(t["Name"], t["Value"]) for t in sent["tags"]][:3] == [
        ("env", "dev"), ("campaign", "spring"), ("team", "web")]
    assert {t["Name"] for t in sent["tags"][3:]} == {"sesrelay-queue-id", "sesrelay-attempt"}
    assert "x-ses-" not in sent["raw"].lower()
    assert sent["raw"].endswith("Subject: tagged\r\n\r\nHello.\r\n")


def test_smtputf8_idn_recipient_reaches_ses_as_a_labels(dev_relay_module: DevRelay) -> None:
    message = "From: app@example.com\r\nSubject: Grüße\r\n\r\nHallo.\r\n".encode()
    with smtplib.SMTP("127.0.0.1", dev_relay_module.smtp_port, timeout=30) as client:
        client.ehlo("client.example.com")
        client.sendmail("app@example.com", ["anna@bücher.example"], message,
                        mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("app@example.com", ["ünal@example.org"], message,
                            mail_options=["SMTPUTF8"])
    assert refused.value.recipients["ünal@example.org"][0] == 553
    sends = dev_relay_module.wait_for_outbox(lambda sends: any(
        s["rcpt_to"] == ["anna@xn--bcher-kva.example"] for s in sends))
    [sent] = [s for s in sends if s["rcpt_to"] == ["anna@xn--bcher-kva.example"]]
    assert raw_bytes(sent).endswith(message)  # the UTF-8 header as the client wrote it
