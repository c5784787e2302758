"""Hostile strings from a client (issue 15), end to end through `sesrelay dev`: control
characters, 8-bit octets and very long names in EHLO and in each address position are
refused or neutralised, and every message that reaches the outbox has a clean header
section: the relay's Received: header intact and no header the client did not write."""

from __future__ import annotations

import re
import socket

import pytest

from tests.conftest import DevRelay
from tests.support import read_reply

SENDER, RECIPIENT = b"<app@example.com>", b"<someone@example.org>"
HOSTILE = [
    b"evil\rBcc: victim@example.com", b"evil\x00Bcc: victim@example.com", b"evil\x1b[31m",
    b"evil\x7f", b"evil\x01\x02", b"\xc3\xa9vil", b"\xffevil", b"evil\nBcc: victim@example.com",
    b"e" * 2000,
]
HOSTILE_ADDRESSES = [
    b'<"a\rBcc: victim@example.com"@example.com>', b"<a\x00b@example.com>",
    b"<a\x1b[31m@example.com>", b"<a\x7f@example.com>", b'<"a\x01"@example.com>',
    b"<\xc3\xa9@example.com>", b"<\xff@example.com>", b'<"a\nBcc: victim@example.com"@x>',
    b"<" + b"a" * 300 + b"@example.com>",
]
CASES = ([("EHLO", h) for h in HOSTILE] + [("MAIL", a) for a in HOSTILE_ADDRESSES]
         + [("RCPT", a) for a in HOSTILE_ADDRESSES])
# What a client may send after the relay's Received: header, and nothing else.
CLIENT_HEADERS = ["From", "To", "Subject"]


def session(port: int, number: int, where: str, value: bytes) -> list[str]:
    """One session with value in one place; a refused value is followed by a clean one,
    as a client would retry. Returns the replies."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    stream = sock.makefile("rb")
    replies = [read_reply(stream).decode("latin-1")]

    def send(line: bytes) -> str:
        sock.sendall(line + b"\r\n")
        reply = read_reply(stream).decode("latin-1")
        replies.append(reply)
        return reply

    try:
        for command, argument, clean in ((b"EHLO ", b"EHLO", b"client.example.org"),
                                         (b"MAIL FROM:", b"MAIL", SENDER),
                                         (b"RCPT TO:", b"RCPT", RECIPIENT)):
            hostile = argument.decode() == where
            reply = send(command + (value if hostile else clean))
            if hostile and not reply.startswith("2"):
                if reply.startswith("221") or not reply:
                    return replies  # the relay hung up (a non-SMTP command)
                send(command + clean)
        if not send(b"DATA").startswith("354"):
            return replies
        sock.sendall(b"From: app@example.com\r\nTo: someone@example.org\r\n"
                     b"Subject: hostile %d\r\n\r\nbody\r\n.\r\n" % number)
        replies.append(read_reply(stream).decode("latin-1"))
        send(b"QUIT")
    except OSError:
        pass
    finally:
        sock.close()
    return replies


def header_section(raw: str) -> str:
    return raw.split("\r\n\r\n", 1)[0]


@pytest.fixture(scope="module")
def outcomes(dev_relay_module: DevRelay) -> tuple[list[list[str]], list[dict]]:
    port = dev_relay_module.smtp_port
    replies = [session(port, number, where, value)
               for number, (where, value) in enumerate(CASES)]
    queued = sum(1 for r in replies if any(x.startswith("250 2.0.0 Ok: queued") for x in r))
    sends = dev_relay_module.wait_for_outbox(lambda s: len(s) >= queued, timeout=90)
    return replies, sends


@pytest.mark.parametrize("number", range(len(CASES)),
                         ids=[f"{w}-{v[:20]!r}" for w, v in CASES])
def test_hostile_string_is_refused_or_neutralised(outcomes, number: int) -> None:
    replies, sends = outcomes
    where, value = CASES[number]
    refused_with_the_session = b"\n" in value  # the rest of the line is a non-SMTP command
    answered = "".join(replies[number])
    assert "Error: (" not in answered and "Traceback" not in answered
    for reply in replies[number]:
        assert reply == "" or re.fullmatch(r"(\d{3}[- ][ -~]*\r\n)+", reply), reply
    sent = [s for s in sends if f"Subject: hostile {number}\r\n" in s["raw"]]
    if refused_with_the_session:
        assert "221 2.7.0 Error: I can break rules, too. Goodbye.\r\n" in replies[number]
        assert not sent
        return
    [message] = sent
    headers = header_section(message["raw"])
    lines = headers.split("\r\n")
    assert all(re.fullmatch(r"[\t -~]*", line) for line in lines), lines
    names = [line.split(":", 1)[0] for line in lines if line[:1] not in ("\t", " ")]
    assert names == ["Received", *CLIENT_HEADERS]
    received = [line for line in lines if not line.startswith(tuple(CLIENT_HEADERS))]
    assert received[0].startswith("Received: from ")
    assert re.fullmatch(r"Received: from \S{1,255} \(unknown \[127\.0\.0\.1\]\)", received[0])
    assert received[1].startswith("\tby relay.example.net (sesrelay) with ESMTP id ")
    assert received[2].startswith("\tfor <someone@example.org>; ")
    assert message["mail_from"] == "app@example.com"
    assert message["rcpt_to"] == ["someone@example.org"]
    if where == "EHLO":  # the name was neutered, not refused
        assert "victim" not in received[0] or "Bcc:?victim?example.com" in received[0]
