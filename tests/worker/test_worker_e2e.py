"""End to end through `sesrelay dev`: SMTP in, the worker Lambda handler, SES out."""

from __future__ import annotations

import smtplib

from tests.conftest import DevRelay


def test_120_recipients_over_smtp_arrive_as_three_sends(dev_relay: DevRelay) -> None:
    recipients = [f"user{i:03}@example.org" for i in range(120)]
    body = "Hello from the end-to-end test.\r\nSecond line, kept as is.\r\n"
    raw = ("From: Sender <sender@example.com>\r\nSubject: e2e 120\r\n"
           "Message-ID: <e2e-120@example.com>\r\n\r\n" + body)
    with smtplib.SMTP("127.0.0.1", dev_relay.smtp_port, timeout=30) as client:
        assert client.sendmail("sender@example.com", recipients, raw) == {}

    sends = dev_relay.wait_for_outbox(
        lambda sends: sum(len(s["rcpt_to"]) for s in sends) >= len(recipients))

    assert len(sends) >= 3
    assert all(len(s["rcpt_to"]) <= 50 for s in sends)
    delivered = [r for s in sends for r in s["rcpt_to"]]
    assert sorted(delivered) == recipients  # each exactly once
    for send in sends:
        assert send["mail_from"] == "sender@example.com"
        headers, _, sent_body = send["raw"].replace("\r\n", "\n").partition("\n\n")
        assert headers.startswith("Received: from ")
        assert "by relay.example.net" in headers
        assert sent_body == body.replace("\r\n", "\n")
