"""The README's five-minute tour: `sesrelay dev`, swaks, then `sesrelay outbox`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import SESRELAY, DevRelay, running_dev


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", *args],
                          capture_output=True, text=True, timeout=60)


def test_swaks_message_appears_in_the_outbox(dev_relay: DevRelay) -> None:
    result = swaks(dev_relay.smtp_port, "--to", "someone@example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  250 2.0.0 Ok: queued as " in result.stdout

    [sent] = dev_relay.wait_for_outbox(lambda sends: len(sends) >= 1, timeout=30)
    assert sent["rcpt_to"] == ["someone@example.com"]
    assert sent["raw"].startswith("Received: from ")
    assert "This is a test mailing" in sent["raw"]

    listing = subprocess.run([SESRELAY, "outbox", "--endpoint", dev_relay.endpoint],
                             capture_output=True, text=True, check=True, timeout=30)
    assert "to=someone@example.com" in listing.stdout
    assert "subject=test " in listing.stdout


def test_unverified_sender_bounces_back_to_the_sender(dev_relay: DevRelay) -> None:
    result = swaks(dev_relay.smtp_port, "--from", "app@example.com",
                   "--to", "someone@example.org", "--header", "Subject: from a verified domain")
    assert result.returncode == 0
    result = swaks(dev_relay.smtp_port, "--from", "app@unverified.example",
                   "--to", "someone@example.org")
    assert result.returncode == 0  # accepted: the relay does not know SES's identities
    sends = dev_relay.wait_for_outbox(
        lambda sends: any("multipart/report" in s["raw"] for s in sends), timeout=60)
    dsn = next(s for s in sends if "multipart/report" in s["raw"])
    assert dsn["rcpt_to"] == ["app@unverified.example"]
    assert "someone@example.org" in dsn["raw"]


def test_outbox_without_dev_running_says_so() -> None:
    result = subprocess.run([SESRELAY, "outbox", "--endpoint", "http://127.0.0.1:9"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "is `sesrelay dev` running?" in result.stderr


def test_tls_tour_starttls_and_auth(tmp_path: Path) -> None:
    """The README's TLS tour: a user added with `sesrelay users add`, then `sesrelay dev
    --tls --users`, then swaks --tls and swaks --tls --auth; the certificate's path and
    fingerprint are printed (and are openssl's)."""
    users = tmp_path / "dev-users.json"
    subprocess.run([SESRELAY, "users", "add", "app1", "--table", str(users),
                    "--password-stdin"], input="app1 password\n", text=True, check=True,
                   timeout=30)
    with running_dev(tmp_path, "--tls", "--users", str(users)) as dev:
        plain = swaks(dev.smtp_port, "--tls", "--to", "someone@example.com")
        assert plain.returncode == 0, plain.stdout + plain.stderr
        assert "TLS started with cipher TLSv1.3" in plain.stdout
        authenticated = swaks(dev.smtp_port, "--tls", "--auth", "LOGIN", "--auth-user", "app1",
                              "--auth-password", "app1 password", "--to", "someone@example.com")
        assert authenticated.returncode == 0, authenticated.stdout + authenticated.stderr
        assert "<~  235 2.7.0 Authentication successful" in authenticated.stdout
        sends = dev.wait_for_outbox(lambda sends: len(sends) >= 2, timeout=30)
        assert any("with ESMTPSA id" in s["raw"] for s in sends)
        trace = subprocess.run([SESRELAY, "trace", "someone@example.com", "--endpoint",
                                dev.endpoint], capture_output=True, text=True, timeout=30)
        assert "client=[127.0.0.1], sasl_username=app1, helo=<" in trace.stdout, trace.stdout
        printed = dev.output.read_text()
    match = re.search(r"TLS certificate (\S+) \(self-signed\), SHA-256 fingerprint (\S+)",
                      printed)
    assert match, printed
    openssl = subprocess.run(["openssl", "x509", "-in", match.group(1), "-noout",
                              "-fingerprint", "-sha256"], capture_output=True, text=True,
                             check=True)
    assert openssl.stdout.strip().split("=", 1)[1] == match.group(2)
