"""TLS with real clients: smtplib's starttls(), swaks --tls and --tls-on-connect (behind a
PROXY v2 header), openssl s_client for the protocol floor and the certificate chain, and
raw sockets for what must never be read as commands."""

from __future__ import annotations

import logging
import smtplib
import socket
import subprocess
from pathlib import Path

import pytest

from tests.relay.conftest import SpoolAccount
from tests.relay.tls_support import (
    SERVER_NAME,
    Chain,
    client_context,
    make_chain,
)
from tests.support import proxy_v2_header, read_reply

MESSAGE = b"Subject: over TLS\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return make_chain(tmp_path_factory.mktemp("tls"))


def tls_settings(chain: Chain, level: str = "may", **more: object) -> dict[str, object]:
    return {"smtpd_tls_security_level": level, "smtpd_tls_cert_file": str(chain.cert_file),
            "smtpd_tls_key_file": str(chain.key_file), **more}


def test_smtplib_starttls_verifies_the_chain_and_the_message_says_so(
        start_relay, spool_account: SpoolAccount, chain: Chain, caplog) -> None:
    caplog.set_level(logging.INFO, "sesrelay.relay")
    relay = start_relay(**tls_settings(chain, smtpd_tls_received_header="yes",
                                       smtpd_tls_loglevel="1"))
    with smtplib.SMTP(relay.host, relay.port, local_hostname="client.example.org") as client:
        client.ehlo()
        assert client.has_extn("starttls")
        client.starttls(context=client_context(chain.ca_file))
        client.ehlo()
        assert not client.has_extn("starttls")  # offered once, before TLS
        client.sendmail("app@example.com", ["someone@example.org"], MESSAGE)
    [spooled] = spool_account.queued()
    headers = spooled.raw.split(b"\r\n\r\n", 1)[0].decode()
    assert headers.startswith("Received: from client.example.org (unknown [127.0.0.1])\r\n"
                              "\t(using TLSv1.3 with cipher TLS_")
    assert "bits))\r\n\t(No client certificate requested)\r\n\tby relay.example.net " \
           "(sesrelay) with ESMTPS id " in headers
    assert any(r.getMessage().startswith("Anonymous TLS connection established from "
                                         "unknown[127.0.0.1]: TLSv1.3 with cipher TLS_")
               for r in caplog.records)


def test_encrypt_refuses_mail_until_starttls(start_relay, chain: Chain) -> None:
    relay = start_relay(**tls_settings(chain, "encrypt"))
    with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        read_reply(stream)
        sock.sendall(b"EHLO client.example.org\r\nMAIL FROM:<app@example.com>\r\n")
        assert b"250-STARTTLS\r\n" in read_reply(stream)
        assert read_reply(stream) == b"530 5.7.0 Must issue a STARTTLS command first\r\n"
    with smtplib.SMTP(relay.host, relay.port) as client:
        client.starttls(context=client_context(chain.ca_file))
        client.ehlo("client.example.org")
        assert client.mail("app@example.com")[0] == 250


@pytest.mark.parametrize("behind_proxy", [False, True])
def test_commands_sent_before_the_handshake_are_discarded(start_relay, chain: Chain,
                                                          behind_proxy: bool) -> None:
    """CVE-2011-0411: STARTTLS and RSET in one write; RSET is answered neither in clear
    text nor after the handshake. Behind the NLB the PROXY header, EHLO, STARTTLS and RSET
    arrive in one write."""
    proxy = {"smtpd_upstream_proxy_protocol": "haproxy",
             "sesrelay_proxy_networks": "127.0.0.0/8"} if behind_proxy else {}
    relay = start_relay(**tls_settings(chain, **proxy))
    with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
        header = proxy_v2_header("127.0.0.9", "10.0.0.5") if behind_proxy else b""
        sock.sendall(header + b"EHLO client.example.org\r\n")
        stream = sock.makefile("rb")
        assert read_reply(stream).startswith(b"220 ")
        assert read_reply(stream).startswith(b"250-relay.example.net")
        sock.sendall(b"STARTTLS\r\nRSET\r\n")
        assert read_reply(stream) == b"220 2.0.0 Ready to start TLS\r\n"
        # A plaintext "250 2.0.0 Ok" here would break the handshake.
        secure = client_context(chain.ca_file).wrap_socket(sock, server_hostname=SERVER_NAME)
        secure.sendall(b"QUIT\r\n")
        assert read_reply(secure.makefile("rb")) == b"221 2.0.0 Bye\r\n"


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["swaks", "--from", "app@example.com", "--to", "x@example.org",
                           "--helo", "client.example.org", "--timeout", "20", *args],
                          capture_output=True, text=True, timeout=60)


def test_swaks_starttls_and_implicit_tls_behind_the_load_balancer(
        start_relay, spool_account: SpoolAccount, chain: Chain) -> None:
    relay = start_relay(**tls_settings(
        chain, sesrelay_smtps_port="465", smtpd_upstream_proxy_protocol="haproxy",
        sesrelay_proxy_networks="127.0.0.0/8", mynetworks="10.0.0.0/8"))
    proxy = ["--proxy-version", "2", "--proxy-family", "AF_INET", "--proxy-source",
             "10.1.2.3", "--proxy-source-port", "40000", "--proxy-dest", "10.0.0.5"]
    verify = ["--tls-verify", "--tls-ca-path", str(chain.ca_file), "--tls-sni", SERVER_NAME]
    on_connect = swaks("--server", f"{relay.host}:{relay.smtps_port}", "--tls-on-connect",
                       *verify, *proxy, "--proxy-dest-port", "465")
    assert on_connect.returncode == 0, on_connect.stdout + on_connect.stderr
    assert "TLS started with cipher TLSv1.3" in on_connect.stdout
    assert "STARTTLS" not in on_connect.stdout  # TLS from the first octet: not offered
    starttls_run = swaks("--server", f"{relay.host}:{relay.port}", "--tls", *verify, *proxy,
                         "--proxy-dest-port", "25")
    assert starttls_run.returncode == 0, starttls_run.stdout + starttls_run.stderr
    assert " -> STARTTLS" in starttls_run.stdout
    spooled = spool_account.queued()
    assert [s.envelope.client_address for s in spooled] == ["10.1.2.3", "10.1.2.3"]
    assert all(b" with ESMTPS id " in s.raw for s in spooled)


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                           "-starttls", "smtp", "-servername", SERVER_NAME, *args],
                          input="QUIT\r\n", capture_output=True, text=True, timeout=60)


def test_openssl_protocol_floor_and_chain(start_relay, chain: Chain) -> None:
    """Debian's OpenSSL 3 refuses TLS 1.1 as a client unless told otherwise; told, it
    reaches a relay that allows TLS 1.1 (the control) and not the default one."""
    tls11 = ("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    default = start_relay(**tls_settings(chain))
    refused = s_client(default.port, *tls11)
    assert refused.returncode != 0
    assert "Cipher is (NONE)" in refused.stdout
    allowing = start_relay(**tls_settings(chain, smtpd_tls_protocols=">=TLSv1"))
    control = s_client(allowing.port, *tls11)
    assert control.returncode == 0, control.stdout + control.stderr
    assert "New, TLSv1.0, Cipher is" in control.stdout or \
        "Protocol  : TLSv1.1" in control.stdout
    verified = s_client(default.port, "-CAfile", str(chain.ca_file), "-verify_return_error",
                        "-verify_hostname", SERVER_NAME)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verify return code: 0 (ok)" in verified.stdout
    assert "1 s:CN = sesrelay test intermediate" in verified.stdout  # the chain is sent


def test_a_failed_handshake_ends_the_session_with_postfix_log_lines(
        start_relay, chain: Chain, caplog) -> None:
    caplog.set_level(logging.INFO, "sesrelay.relay")
    relay = start_relay(**tls_settings(chain))
    with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        read_reply(stream)
        sock.sendall(b"EHLO client.example.org\r\nSTARTTLS\r\n")
        read_reply(stream)
        assert read_reply(stream).startswith(b"220 2.0.0")
        sock.sendall(b"this is not a ClientHello\r\n\r\n")
        assert stream.read() == b""  # closed, nothing in clear text
    relay.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("SSL_accept error from unknown[127.0.0.1]: ") for m in messages)
    assert "lost connection after STARTTLS from unknown[127.0.0.1]" in messages


def test_without_tls_starttls_is_not_offered(start_relay, tmp_path: Path) -> None:
    relay = start_relay()
    with smtplib.SMTP(relay.host, relay.port) as client:
        client.ehlo("client.example.org")
        assert not client.has_extn("starttls")
        assert client.docmd("STARTTLS") == (502, b"5.5.1 Error: command not implemented")
