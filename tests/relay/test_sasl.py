"""SMTP AUTH with real clients (smtplib, swaks), Postfix's replies and log lines, the
failure table, smtpd_sender_login_maps, and the policy matrix: trusted network x
authenticated x relay domain x smtpd_tls_security_level."""

from __future__ import annotations

import base64
import io
import logging
import smtplib
import socket
import subprocess
from pathlib import Path

import pytest

from sesrelay.users import UserStore, UserTable, hash_password
from tests.relay.conftest import SpoolAccount
from tests.relay.tls_support import Chain, client_context, make_chain, starttls
from tests.support import proxy_v2_header, read_reply

PASSWORD = "correct horse battery staple"
MESSAGE = b"Subject: authenticated\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return make_chain(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users.json"
    UserStore(str(path)).save(UserTable({"alice": hash_password(PASSWORD),
                                         "bob": hash_password("bob's own")}))
    return path


def auth_settings(chain: Chain, users: Path, level: str = "may",
                  **more: object) -> dict[str, object]:
    """TLS and AUTH on; only 10.0.0.0/8 is trusted, so 127.0.0.1 must authenticate."""
    return {"smtpd_tls_security_level": level, "smtpd_tls_cert_file": str(chain.cert_file),
            "smtpd_tls_key_file": str(chain.key_file), "smtpd_sasl_auth_enable": "yes",
            "sesrelay_sasl_users": str(users), "mynetworks": "10.0.0.0/8",
            "relay_domains": "example.com", "sesrelay_auth_failure_delay": "0", **more}


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_smtplib_starttls_login_relays_anywhere_and_records_the_user(
        start_relay, spool_account: SpoolAccount, chain: Chain, users: Path, caplog) -> None:
    caplog.set_level(logging.INFO, "sesrelay.relay")
    relay = start_relay(**auth_settings(chain, users))
    with smtplib.SMTP(relay.host, relay.port, local_hostname="app.example.org") as client:
        client.ehlo()
        assert not client.has_extn("auth")  # not before TLS
        client.starttls(context=client_context(chain.ca_file))
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        client.login("alice", PASSWORD)
        client.sendmail("app@example.com", ["someone@example.org"], MESSAGE)
    [spooled] = spool_account.queued()
    assert spooled.envelope.sasl_username == "alice"
    assert b" with ESMTPSA id " in spooled.raw
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.endswith(": client=unknown[127.0.0.1], sasl_method=PLAIN, "
                             "sasl_username=alice") for line in lines)


def swaks(relay, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(["swaks", "--server", f"{relay.host}:{relay.port}", "--tls",
                           "--from", "app@example.com", "--to", "x@example.org",
                           "--helo", "app.example.org", "--timeout", "20", *args],
                          capture_output=True, text=True, timeout=60)


def test_swaks_auth_plain_and_login_and_wrong_passwords(
        start_relay, spool_account: SpoolAccount, chain: Chain, users: Path, caplog) -> None:
    caplog.set_level(logging.INFO, "sesrelay.relay")
    relay = start_relay(**auth_settings(chain, users))
    for mechanism in ("PLAIN", "LOGIN"):
        good = swaks(relay, "--auth", mechanism, "--auth-user", "alice",
                     "--auth-password", PASSWORD)
        assert good.returncode == 0, good.stdout + good.stderr
        assert "<~  235 2.7.0 Authentication successful" in good.stdout
        bad = swaks(relay, "--auth", mechanism, "--auth-user", "alice",
                    "--auth-password", "wrong")
        assert bad.returncode != 0
        assert ("<~* 535 5.7.8 Error: authentication failed: authentication failure"
                in bad.stdout)
    assert len(spool_account.queued()) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for mechanism in ("PLAIN", "LOGIN"):
        assert (f"unknown[127.0.0.1]: SASL {mechanism} authentication failed: "
                "authentication failure, sasl_username=alice") in warnings


def converse(sock, stream, *commands: bytes) -> list[bytes]:  # type: ignore[no-untyped-def]
    replies = []
    for command in commands:
        sock.sendall(command + b"\r\n")
        replies.append(read_reply(stream))
    return replies


def test_auth_replies_as_postfix(start_relay, chain: Chain, users: Path, caplog) -> None:
    caplog.set_level(logging.INFO, "sesrelay.relay")
    relay = start_relay(**auth_settings(chain, users))
    with socket.create_connection((relay.host, relay.port), timeout=10) as raw:
        raw_stream = raw.makefile("rb")
        read_reply(raw_stream)
        assert converse(raw, raw_stream, b"AUTH PLAIN", b"EHLO app.example.org",
                        b"AUTH PLAIN " + plain("alice", PASSWORD).encode())[::2] == [
            b"503 5.5.1 Error: send HELO/EHLO first\r\n",
            b"504 5.5.4 Encryption required for requested authentication mechanism\r\n"]
    with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
        secure, _ = starttls(sock, client_context(chain.ca_file))
        stream = secure.makefile("rb")
        hostile = base64.b64encode(b"\0evil\x1b[31m\r\nname\0pw").decode()
        replies = converse(
            secure, stream, b"EHLO app.example.org", b"AUTH CRAM-MD5", b"AUTH PLAIN %%%",
            b"AUTH PLAIN " + hostile.encode(), b"AUTH LOGIN", b"*",
            b"AUTH LOGIN " + base64.b64encode(b"alice"), PASSWORD.encode(),
            b"AUTH PLAIN " + plain("alice", PASSWORD).encode(),
            b"MAIL FROM:<app@example.com> AUTH=<>")
    assert replies[1:] == [
        b"535 5.7.8 Error: authentication failed: Invalid authentication mechanism\r\n",
        b"535 5.7.8 Error: authentication failed: Invalid base64 data in initial response\r\n",
        b"535 5.7.8 Error: authentication failed: authentication failure\r\n",
        b"334 VXNlcm5hbWU6\r\n",
        b"501 5.7.0 Authentication aborted\r\n",
        b"334 UGFzc3dvcmQ6\r\n",
        b"535 5.7.8 Error: authentication failed: Invalid base64 data in continued response"
        b"\r\n",
        b"235 2.7.0 Authentication successful\r\n",
        b"250 2.1.0 Ok\r\n"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert ("unknown[127.0.0.1]: SASL PLAIN authentication failed: authentication failure, "
            "sasl_username=evil?[31m??name") in warnings


def authenticated_session(relay, chain: Chain, *commands: bytes,  # type: ignore[no-untyped-def]
                          user: str = "alice", password: str = PASSWORD,
                          header: bytes = b"") -> list[bytes]:
    """STARTTLS, EHLO, AUTH PLAIN user, then commands: the reply to AUTH and the rest."""
    with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
        if header:
            sock.sendall(header)
        secure, _ = starttls(sock, client_context(chain.ca_file))
        stream = secure.makefile("rb")
        return converse(secure, stream, b"EHLO app.example.org",
                        b"AUTH PLAIN " + plain(user, password).encode(), *commands)[1:]


def test_a_client_that_keeps_failing_is_cut_off(start_relay, chain: Chain, users: Path,
                                                 caplog) -> None:
    relay = start_relay(**auth_settings(chain, users, sesrelay_auth_failure_limit="3"))
    for _ in range(3):
        assert authenticated_session(relay, chain, password="guess")[0].startswith(b"535 ")
    # Now even the right password is refused, with the 4xx of Postfix's AUTH rate limit.
    assert authenticated_session(relay, chain) == [
        b"450 4.7.1 Error: too many AUTH commands from 127.0.0.1\r\n"]
    assert any(r.getMessage() == "unknown[127.0.0.1]: AUTH refused: too many "
               "authentication failures" for r in caplog.records)


def test_an_unreadable_user_table_is_a_temporary_failure(start_relay, chain: Chain,
                                                         tmp_path: Path) -> None:
    relay = start_relay(**auth_settings(chain, tmp_path / "missing.json"))
    assert authenticated_session(relay, chain) == [
        b"454 4.7.0 Temporary authentication failure: user table not available\r\n"]


def test_sender_login_maps(start_relay, chain: Chain, users: Path, tmp_path: Path) -> None:
    owners = tmp_path / "sender_login"
    owners.write_text("app@example.com alice\n@example.net bob, alice\n")
    relay = start_relay(**auth_settings(
        chain, users, smtpd_sender_login_maps=f"texthash:{owners}", mynetworks="127.0.0.0/8",
        smtpd_relay_restrictions="reject_sender_login_mismatch, permit_mynetworks, "
                                 "permit_sasl_authenticated, reject_unauth_destination"))

    def rcpt(sender: bytes, **login: str) -> bytes:
        commands = (b"MAIL FROM:<" + sender + b">", b"RCPT TO:<x@example.org>")
        return authenticated_session(relay, chain, *commands, **login)[2]

    assert rcpt(b"app@example.com").startswith(b"250 ")
    assert rcpt(b"ops@example.net").startswith(b"250 ")
    assert rcpt(b"app@example.com", user="bob", password="bob's own") == (
        b"553 5.7.1 <app@example.com>: Sender address rejected: not owned by user bob\r\n")
    assert rcpt(b"other@example.org") == (
        b"553 5.7.1 <other@example.org>: Sender address rejected: not owned by user alice\r\n")
    with smtplib.SMTP(relay.host, relay.port) as client:  # trusted, not logged in
        client.ehlo("app.example.org")
        client.mail("app@example.com")
        assert client.rcpt("x@example.org") == (
            553, b"5.7.1 <app@example.com>: Sender address rejected: not logged in")
        client.rset()
        client.mail("someone@example.org")
        assert client.rcpt("x@example.org")[0] == 250


@pytest.mark.parametrize("level", ["may", "encrypt"])
def test_policy_matrix(start_relay, chain: Chain, users: Path, level: str) -> None:
    """Every combination of trusted network, authenticated and relay domain, with the reply
    to the first command that decides: MAIL (530 without TLS under encrypt) or RCPT. An
    unauthenticated client does not start TLS; an authenticated one must first."""
    relay = start_relay(**auth_settings(
        chain, users, level, smtpd_upstream_proxy_protocol="haproxy",
        sesrelay_proxy_networks="127.0.0.0/8"))
    found = {}
    for trusted in (True, False):
        source = "10.1.2.3" if trusted else "192.0.2.7"
        header = proxy_v2_header(source, "10.0.0.5")
        for authenticated in (True, False):
            for relay_domain in (True, False):
                recipient = b"x@example.com" if relay_domain else b"x@example.org"
                commands = (b"MAIL FROM:<app@example.com>", b"RCPT TO:<" + recipient + b">")
                if authenticated:
                    replies = authenticated_session(relay, chain, *commands, header=header)[1:]
                else:
                    with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
                        sock.sendall(header)
                        stream = sock.makefile("rb")
                        read_reply(stream)
                        replies = converse(sock, stream, b"EHLO app.example.org",
                                           *commands)[1:]
                decisive = replies[0] if not replies[0].startswith(b"250") else replies[1]
                found[trusted, authenticated, relay_domain] = decisive[:3].decode()
    plaintext = "530" if level == "encrypt" else None
    assert found == {
        (True, True, True): "250", (True, True, False): "250",
        (True, False, True): plaintext or "250", (True, False, False): plaintext or "250",
        (False, True, True): "250", (False, True, False): "250",
        (False, False, True): plaintext or "250", (False, False, False): plaintext or "554",
    }



def test_a_client_in_auth_networks_relays_only_after_auth(
        start_relay, spool_account: SpoolAccount, chain: Chain, users: Path) -> None:
    """sesrelay_auth_networks admits clients at the load balancer, not to relaying: from
    there (as the NLB's PROXY header says) a client relays after AUTH and gets Relay
    access denied without it."""
    relay = start_relay(**auth_settings(
        chain, users, smtpd_upstream_proxy_protocol="haproxy",
        sesrelay_proxy_networks="127.0.0.0/8", sesrelay_auth_networks="172.20.0.0/16"))
    # 172.20.1.2 is outside mynetworks (10.0.0.0/8), inside sesrelay_auth_networks.
    header = proxy_v2_header("172.20.1.2", "10.0.0.5")
    commands = (b"MAIL FROM:<app@example.com>", b"RCPT TO:<x@example.org>", b"DATA",
                MESSAGE + b".", b"QUIT")
    replies = authenticated_session(relay, chain, *commands, header=header)
    assert replies[0] == b"235 2.7.0 Authentication successful\r\n"
    assert replies[2].startswith(b"250 2.1.5") and replies[4].startswith(b"250 2.0.0 Ok")
    [spooled] = spool_account.queued()
    assert (spooled.envelope.client_address, spooled.envelope.sasl_username) == (
        "172.20.1.2", "alice")
    with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
        sock.sendall(header)
        secure, _ = starttls(sock, client_context(chain.ca_file))
        stream = secure.makefile("rb")
        assert converse(secure, stream, b"EHLO app.example.org", *commands[:2])[1:] == [
            b"250 2.1.0 Ok\r\n", b"554 5.7.1 <x@example.org>: Relay access denied\r\n"]

def test_the_user_table_in_secrets_manager_is_reread(start_relay, chain: Chain,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`sesrelay users add` writes the secret; the relay reads it at start and again once
    sesrelay_sasl_users_refresh has passed (0s here: at every AUTH)."""
    from sesrelay.cli import main

    table = "secretsmanager:sesrelay-test/smtp-users"

    def set_password(password: str) -> None:
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        assert main(["users", "add", "alice", "--table", table, "--password-stdin"]) == 0

    set_password("first password")
    relay = start_relay(**auth_settings(chain, Path("unused"), sesrelay_sasl_users=table,
                                        sesrelay_sasl_users_refresh="0s"))
    assert authenticated_session(relay, chain, password="first password")[0].startswith(
        b"235 ")
    set_password("second password")
    assert authenticated_session(relay, chain, password="first password")[0].startswith(
        b"535 ")
    assert authenticated_session(relay, chain, password="second password")[0].startswith(
        b"235 ")
