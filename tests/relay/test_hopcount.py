"""hopcount_limit over real SMTP sessions: a message with too many Received: headers
(a mail loop) is refused at the end of DATA, as Postfix's cleanup does."""

from __future__ import annotations

import smtplib

from tests.relay.conftest import SpoolAccount


def send(relay, received: int) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    hops = "".join(f"Received: from hop{i}.example.org by mx.example.org;\r\n"
                   f" Mon, 1 Jan 2024 00:00:{i % 60:02d} +0000\r\n" for i in range(received))
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
        client.ehlo("client.example.org")
        client.mail("app@example.org")
        client.rcpt("someone@example.org")
        return client.data(f"{hops}Subject: loop\r\n\r\nBody.\r\n".encode())


def test_the_relays_own_received_header_counts_toward_the_limit(
        start_relay, spool_account: SpoolAccount) -> None:
    relay = start_relay()  # hopcount_limit = 50
    assert send(relay, 49) == (554, b"5.4.0 Error: too many hops")  # 50 with its own
    code, text = send(relay, 48)
    assert code == 250, text
    [spooled] = spool_account.queued()
    assert spooled.raw.count(b"\r\nReceived: from hop") == 48


def test_hopcount_limit_is_configurable_and_soft_bounce_softens_it(
        start_relay, spool_account: SpoolAccount) -> None:
    assert send(start_relay(hopcount_limit="3"), 2) == (554, b"5.4.0 Error: too many hops")
    assert send(start_relay(hopcount_limit="3", soft_bounce="yes"), 2) == (
        454, b"4.4.0 Error: too many hops")
    assert send(start_relay(hopcount_limit="3"), 1)[0] == 250
