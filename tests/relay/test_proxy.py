"""PROXY protocol v2 from the load balancer: honoured only from sesrelay_proxy_networks."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from tests.relay.conftest import SpoolAccount
from tests.support import proxy_v2_header, proxy_v2_local_header, read_reply

# The relay trusts 127.0.0.0/8 to send PROXY headers (the test client plays the NLB),
# and trusts only 10.0.0.0/8 as SMTP clients.
BEHIND_NLB = {"smtpd_upstream_proxy_protocol": "haproxy",
              "sesrelay_proxy_networks": "127.0.0.0/8",
              "mynetworks": "10.0.0.0/8", "relay_domains": "example.com"}


def converse(relay, header: bytes, commands: list[bytes]) -> list[bytes]:
    """Send the PROXY header, then each command, returning each reply (greeting first)."""
    with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
        sock.sendall(header)
        stream = sock.makefile("rb")
        replies = [read_reply(stream)]
        for command in commands:
            sock.sendall(command + b"\r\n")
            replies.append(read_reply(stream))
        return replies


def test_client_address_comes_from_the_proxy_header(start_relay,
                                                    spool_account: SpoolAccount) -> None:
    relay = start_relay(**BEHIND_NLB)
    replies = converse(relay, proxy_v2_header("10.1.2.3", "10.0.0.5"), [
        b"EHLO app.internal", b"MAIL FROM:<app@example.com>", b"RCPT TO:<x@example.org>",
        b"DATA", b"Subject: via nlb\r\n\r\nhello\r\n.", b"QUIT"])
    assert replies[0].startswith(b"220 relay.example.net")
    assert replies[3].startswith(b"250 2.1.5")  # 10.1.2.3 is in mynetworks: relays anywhere
    assert replies[5].startswith(b"250 2.0.0 Ok: queued as")
    [spooled] = spool_account.queued()
    assert spooled.envelope.client_address == "10.1.2.3"
    assert spooled.raw.startswith(b"Received: from app.internal (unknown [10.1.2.3])")


def test_untrusted_address_in_proxy_header_is_an_untrusted_client(start_relay) -> None:
    relay = start_relay(**BEHIND_NLB)
    replies = converse(relay, proxy_v2_header("192.0.2.7", "10.0.0.5"), [
        b"EHLO outside", b"MAIL FROM:<a@example.com>", b"RCPT TO:<x@example.org>",
        b"RCPT TO:<y@example.com>"])
    assert replies[3] == b"554 5.7.1 <x@example.org>: Relay access denied\r\n"
    assert replies[4].startswith(b"250 2.1.5")


def test_ipv6_source_address(start_relay, spool_account) -> None:
    relay = start_relay(**{**BEHIND_NLB, "mynetworks": "[2001:db8::]/32"})
    replies = converse(relay, proxy_v2_header("2001:db8::7", "2001:db8::1"), [
        b"EHLO v6", b"MAIL FROM:<a@example.com>", b"RCPT TO:<x@example.org>"])
    assert replies[3].startswith(b"250 2.1.5")


def test_local_health_check_is_accepted_quietly(start_relay, caplog) -> None:
    relay = start_relay(**BEHIND_NLB)
    replies = converse(relay, proxy_v2_local_header(), [b"QUIT"])
    assert replies[0].startswith(b"220 ")
    assert replies[1].startswith(b"221")
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


def test_proxy_header_from_an_untrusted_peer_is_refused(start_relay, spool_account) -> None:
    relay = start_relay(**{**BEHIND_NLB, "sesrelay_proxy_networks": "10.99.0.0/16"})
    with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
        # A spoofed header claiming a trusted client address.
        sock.sendall(proxy_v2_header("10.1.2.3", "10.0.0.5") + b"EHLO spoof\r\n")
        assert sock.recv(1024) == b""  # closed without a greeting
    assert spool_account.queued() == []


def test_connection_without_proxy_header_is_refused(start_relay) -> None:
    relay = start_relay(**BEHIND_NLB)
    with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
        sock.sendall(b"EHLO direct\r\n")
        assert sock.recv(1024) == b""


def test_proxy_header_is_ignored_as_smtp_when_protocol_is_off(start_relay) -> None:
    relay = start_relay()
    with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
        greeting = sock.recv(1024)
        sock.sendall(proxy_v2_header("10.1.2.3", "10.0.0.5") + b"\r\nQUIT\r\n")
        data = b""
        while chunk := sock.recv(1024):
            data += chunk
    assert greeting.startswith(b"220 ")
    assert b"221 2.0.0 Bye" in data and b"250" not in data


@pytest.mark.parametrize("sent", [b"", b"P", b"PROX", b"\r\n\r\n"])
def test_peer_leaving_within_the_proxy_signature_is_no_session_error(
        start_relay, caplog: pytest.LogCaptureFixture, sent: bytes) -> None:
    # Found by the fuzzer (test_fuzz.py): fewer than the signature's 5 octets, then end
    # of input, raised out of aiosmtpd's get_proxy() and was logged as a session error.
    relay = start_relay(**BEHIND_NLB)
    with caplog.at_level(logging.DEBUG):
        with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
            sock.sendall(sent)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(1024) == b""  # closed without a greeting
        deadline = time.monotonic() + 2
        while relay.server.relay.sessions and time.monotonic() < deadline:
            time.sleep(0.02)
    assert not relay.server.relay.sessions
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert "Connection lost while waiting for signature" in caplog.text
