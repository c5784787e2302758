"""Lines of any length, as Postfix accepts them, reach SES intact (issue 22, item 1):
sent with smtplib and swaks through `sesrelay dev`, read back from the emulated SES's
outbox, where no line is over 1,000 characters and every part decodes byte for byte to
what the client sent."""

from __future__ import annotations

import email
import smtplib
import subprocess
import uuid
from email.policy import compat32
from pathlib import Path

import pytest

from tests.conftest import DevRelay

LENGTHS = (2_000, 10_000, 100_000)


def long_line(length: int, tag: str) -> bytes:
    """An unwrapped HTML-like line of length octets, with what QP must escape in it."""
    unit = f"<td class=\"{tag}\">caf\u00e9 = 100%\t</td>".encode()
    return (unit * (length // len(unit) + 1))[:length]


def leaves(raw: bytes) -> list[tuple[str, bytes]]:
    message = email.message_from_bytes(raw, policy=compat32)
    return [(part.get_content_type(), part.get_payload(decode=True))
            for part in message.walk() if not part.is_multipart()]


def sent(dev: DevRelay, subject: str) -> bytes:
    """The one message with this subject that the emulated SES accepted."""
    def mine(sends: list[dict]) -> list[str]:
        return [s["raw"] for s in sends if f"Subject: {subject}" in s["raw"]]
    [raw] = mine(dev.wait_for_outbox(lambda sends: bool(mine(sends)), timeout=60))
    return raw.encode("utf-8", "surrogateescape")


def assert_fits(raw: bytes) -> None:
    assert max(len(line) for line in raw.split(b"\n")) <= 1000  # with its <CR><LF>


@pytest.mark.parametrize("length", LENGTHS)
def test_smtplib_plain_and_html_parts(dev_relay_module: DevRelay, length: int) -> None:
    subject = f"long {length} {uuid.uuid4().hex}"
    text = b"Hello,\r\n" + long_line(length, "plain") + b"\r\nBye.\r\n"
    html = b"<html><body>" + long_line(length, "html") + b"</body></html>\r\n"
    message = (
        f"From: app@example.com\r\nTo: someone@example.org\r\nSubject: {subject}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n"
        "\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + text + (
        b"\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n") + html + b"\r\n--b1--\r\n"
    with smtplib.SMTP("127.0.0.1", dev_relay_module.smtp_port, timeout=30) as client:
        client.sendmail("app@example.com", ["someone@example.org"], message)

    raw = sent(dev_relay_module, subject)
    assert_fits(raw)
    assert leaves(raw) == [("text/plain", text), ("text/html", html)]


def test_swaks_single_part_message(dev_relay_module: DevRelay, tmp_path: Path) -> None:
    subject = f"swaks long {uuid.uuid4().hex}"
    body = long_line(10_000, "swaks") + b"\r\n" + long_line(2_000, "two") + b"\r\n"
    data = tmp_path / "message.eml"
    # swaks ends what it sends with <CR><LF> itself.
    data.write_bytes(f"From: app@example.com\r\nTo: someone@example.org\r\n"
                     f"Subject: {subject}\r\n\r\n".encode() + body[:-2])
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{dev_relay_module.smtp_port}",
         "--from", "app@example.com", "--to", "someone@example.org",
         "--data", f"@{data}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

    raw = sent(dev_relay_module, subject)
    assert_fits(raw)
    [(kind, decoded)] = leaves(raw)
    assert (kind, decoded) == ("text/plain", body)
    headers = email.message_from_bytes(raw, policy=compat32)
    assert headers["MIME-Version"] == "1.0"
    assert headers["Content-Transfer-Encoding"] == "quoted-printable"


def test_long_header_lines_are_folded(dev_relay_module: DevRelay) -> None:
    subject = f"folded {uuid.uuid4().hex}"
    words = " ".join(f"recipient-{n}@example.org" for n in range(150))  # about 4,000
    message = (f"From: app@example.com\r\nSubject: {subject}\r\nX-List: {words}\r\n"
               f"X-Token: {'t' * 3000}\r\n\r\nbody\r\n").encode()
    with smtplib.SMTP("127.0.0.1", dev_relay_module.smtp_port, timeout=30) as client:
        client.sendmail("app@example.com", ["someone@example.org"], message)

    raw = sent(dev_relay_module, subject)
    assert_fits(raw)
    headers = email.message_from_bytes(raw, policy=compat32)
    assert headers["X-List"].replace("\r\n", "") == words
    assert headers["X-Token"].replace("\r\n ", "") == "t" * 3000


def test_signed_message_with_a_long_line_is_refused_at_data(
        dev_relay_module: DevRelay) -> None:
    message = (
        b"From: app@example.com\r\nSubject: signed\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; "
        b"micalg=sha-256; boundary=\"s1\"\r\n\r\n--s1\r\nContent-Type: text/html\r\n\r\n"
        + long_line(2_000, "signed") + b"\r\n--s1\r\n"
        b"Content-Type: application/pkcs7-signature\r\n\r\nMIIB\r\n--s1--\r\n")
    with (smtplib.SMTP("127.0.0.1", dev_relay_module.smtp_port, timeout=30) as client,
          pytest.raises(smtplib.SMTPDataError) as refused):
        client.sendmail("app@example.com", ["someone@example.org"], message)
    assert refused.value.smtp_code == 554
    assert b"multipart/signed" in refused.value.smtp_error
