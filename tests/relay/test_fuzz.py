"""A seeded, bounded SMTP fuzzer (issue 22, item 4): thousands of short hostile sessions
against one in-process relay, then checks that it is still sound.

Each session is built from its own random.Random("<seed>:<number>"), so one failing
session can be replayed alone (SESRELAY_FUZZ_SEED, SESRELAY_FUZZ_ONLY) whatever the order
the concurrent sessions ran in. The session kinds: random bytes, overlong lines, NULs, bare
<CR> and <LF>, pipelined junk, commands split across writes, abrupt disconnects (close,
shutdown(SHUT_WR), RST) in every state, PROXY headers where none belongs, STARTTLS, AUTH
and BDAT in the wrong places, and a few complete, valid transactions. Behind a PROXY
relay, the header itself is fuzzed too.

What must hold, whatever the client did:
- every reply line read is a well-formed SMTP reply line, multi-line replies consistent;
- no session hangs (each must end within SESSION_LIMIT), and the relay stays up;
- no log record with a traceback (at any level, from any logger): those are our bugs;
- no session, connection count or store is left behind, and memory stays flat;
- only complete valid transactions are queued, every one acknowledged with 250 is, and a
  normal message sent with smtplib afterwards is accepted and queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import smtplib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from random import Random

from tests.relay.conftest import RunningRelay, SpoolAccount
from tests.support import proxy_v2_header, proxy_v2_local_header

SEED = int(os.environ.get("SESRELAY_FUZZ_SEED", "2204"))
SESSIONS = int(os.environ.get("SESRELAY_FUZZ_SESSIONS", "10000"))
# Replay chosen sessions only ("17,4242"): a failure names its session number.
ONLY = [int(n) for n in os.environ.get("SESRELAY_FUZZ_ONLY", "").split(",") if n]
# Below smtpd_client_connection_count_limit (50), so that every session gets a banner.
CONCURRENCY = 24
# A session of this fuzzer takes milliseconds; one that is not over after this long is
# waiting for an answer that never comes (smtpd_timeout is 300 s).
SESSION_LIMIT = 15.0
RSS_SLACK = 20 * 1024 * 1024
HOST = b"relay.example.net"
SIZE_LIMIT = 65536

# The relay under fuzz. smtpd_error_sleep_time is 0 because the soft error limit's 1 s
# sleep per reply would make the fuzzer measure sleeping; the error limits still apply.
PLAIN = {"smtpd_error_sleep_time": "0s", "message_size_limit": str(SIZE_LIMIT)}
# Behind the load balancer: 127.0.0.1 plays the NLB, 10.1.2.3 (in mynetworks) the client.
BEHIND_NLB = {**PLAIN, "smtpd_upstream_proxy_protocol": "haproxy",
              "sesrelay_proxy_networks": "127.0.0.0/8", "mynetworks": "10.0.0.0/8",
              "smtpd_upstream_proxy_timeout": "5s"}

_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])[\x20-\x7e]*")
_QUEUED = re.compile(rb"^250 2\.0\.0 Ok: queued as ([0-9A-Z]+)\r$", re.MULTILINE)
_MARKER = re.compile(rb"X-Fuzz-Session: (\d+)")


def reply_problems(data: bytes, cut: bool) -> list[str]:
    """What is wrong with the replies in data (everything a session read, in order): each
    line a reply line (code 2xx-5xx, space or hyphen, printable ASCII, CRLF), a multi-line
    reply keeps its code and ends. cut: the relay reset the connection, so the stream may
    stop anywhere (Linux drops received data on a reset)."""
    problems = []
    lines = data.split(b"\r\n")
    tail = lines.pop()  # what follows the last CRLF
    if tail and not cut:
        problems.append(f"reply line without CRLF: {tail[:80]!r}")
    pending: bytes | None = None  # the code of an unfinished multi-line reply
    for line in lines:
        match = _REPLY_LINE.fullmatch(line)
        if match is None:
            problems.append(f"malformed reply line: {line[:80]!r}")
            pending = None
            continue
        code, separator = match.group(1), match.group(2)
        if pending is not None and code != pending:
            problems.append(f"multi-line reply {pending!r} continued as {line[:80]!r}")
        pending = code if separator == b"-" else None
    if pending is not None and not cut:
        problems.append(f"multi-line reply {pending!r} never ended")
    return problems


def test_reply_checker_finds_each_defect() -> None:
    """The oracle itself: each kind of malformed reply is caught."""
    assert reply_problems(b"220 relay ESMTP\r\n250-a\r\n250 b\r\n", cut=False) == []
    assert reply_problems(b"250 ok\r\n250 cut", cut=True) == []
    for bad in (b"250 ok", b"250 ok\n", b"2500 ok\r\n", b"150 ok\r\n", b"250_ok\r\n",
                b"250 caf\xc3\xa9\r\n", b"250 a\x00b\r\n", b"250-a\r\n251 b\r\n",
                b"250-a\r\n", b"250 a\rb\r\n", b"\r\n"):
        assert reply_problems(bad, cut=False), bad


# --- one client ------------------------------------------------------------------------

@dataclass
class Outcome:
    """What the sessions saw, across the run."""

    failures: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    endings: Counter[str] = field(default_factory=Counter)
    completed: set[int] = field(default_factory=set)  # sent a whole valid transaction
    acknowledged: dict[str, int] = field(default_factory=dict)  # queue ID: session
    resets: int = 0  # sessions the relay reset (their replies may be cut short)
    replies: int = 0  # reply lines read


class Client:
    """One fuzz session's connection: what it sends, and every byte it reads."""

    def __init__(self, number: int, rng: Random, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.number = number
        self.rng = rng
        self.reader = reader
        self.writer = writer
        self.received = bytearray()
        self.sent = bytearray()
        self.cut = False  # the relay reset the connection
        self.gone = False  # the connection is over (either side)
        self.may_complete = False  # only a valid transaction may send an end of DATA
        # The relay answered 354: what follows is content, which gets no reply until a
        # final "." (a NUL-cut or junk DATA can get there unplanned).
        self.in_data = False

    async def send(self, data: bytes, pieces: int = 1) -> None:
        """Write data, in that many separate writes (each reaches the relay alone: the
        client waits a moment between them)."""
        if not self.may_complete:
            data = self._defused(data)
        elif b"\r\n.\r\n" in data:  # the end of DATA: its reply is owed
            self.in_data = False
        cuts = sorted(self.rng.sample(range(1, len(data)), min(pieces, len(data)) - 1)
                      ) if len(data) > 1 and pieces > 1 else []
        start = 0
        for end in [*cuts, len(data)]:
            if self.gone:
                return
            try:
                self.writer.write(data[start:end])
                self.sent += data[start:end]
                await self.writer.drain()
                if end != len(data):
                    await asyncio.sleep(0.002 if self.rng.random() < 0.3 else 0)
            except (ConnectionError, OSError):
                self.gone = True
            start = end

    def _defused(self, data: bytes) -> bytes:
        """No ".<CRLF>" at a line start: only a valid transaction may end a DATA, so that
        anything queued is known to come from one."""
        if not self.sent and data.startswith(b".\r\n"):
            data = b"," + data[1:]
        joined = bytes(self.sent[-1:]) + data
        while (found := joined.find(b"\n.\r\n")) >= 0:
            joined = joined[:found + 1] + b"," + joined[found + 2:]
        return joined[len(self.sent[-1:]):]

    async def reply(self) -> bytes:
        """One whole reply (b"" once the relay has closed, or while in DATA)."""
        reply = bytearray()
        while not self.gone and not self.in_data:
            try:
                line = await self.reader.readline()
            except (ConnectionError, OSError):
                self.cut = self.gone = True
                break
            self.received += line
            reply += line
            if not line.endswith(b"\n"):  # end of input
                self.gone = True
                break
            if line[3:4] != b"-":
                self.in_data = line.startswith(b"354")
                break
        return bytes(reply)

    async def command(self, line: bytes, pieces: int = 1) -> bytes:
        """Send one command line (CRLF added) and read its reply."""
        await self.send(line + b"\r\n", pieces)
        return await self.reply()

    async def end(self, how: str) -> None:
        """Leave: close, SHUT_WR (then read all the relay still says), RST, or QUIT."""
        if how == "quit":
            await self.send(b"QUIT\r\n")
            how = "shut_wr"
        if how == "shut_wr" and not self.gone:
            with contextlib.suppress(ConnectionError, OSError):
                self.writer.write_eof()
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except (ConnectionError, OSError):
                    self.cut = True
                    break
                if not chunk:
                    break
                self.received += chunk
        if how == "rst":
            sock = self.writer.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.writer.transport.abort()
        else:
            self.writer.close()
        self.gone = True
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


# --- what sessions send ----------------------------------------------------------------

EHLO, MAIL = b"EHLO fuzz.example", b"MAIL FROM:<fuzz@example.com>"
RCPT = b"RCPT TO:<rcpt@example.org>"
PROXY_V1 = b"PROXY TCP4 10.1.2.3 10.0.0.5 40000 25\r\n"
# Command lines for pipelined junk: SMTP in every case and order, half-valid arguments,
# other protocols, commands the relay does not offer. Never a "." line (see _defused).
VOCABULARY = [
    EHLO, MAIL, RCPT, b"HELO fuzz.example", b"EHLO", b"HELO", b"ehlo x", b"MAIL FROM:<>",
    b"MAIL FROM:", b"MAIL FROM:<a@example.com> SIZE=99999999999", b"MAIL FROM:<a@b> SIZE=x",
    b"MAIL FROM:<a@b> RET=HDRS", b"MAIL FROM:<a@b> BODY=8BITMIME", b"mail from:<x@y.example>",
    b"MAIL FROM:<\"a b\"@example.com>", b"MAIL FROM:<@route:a@b.example>", b"MAIL FROM:a@b",
    b"RCPT TO:<>", b"RCPT TO:<postmaster>", b"RCPT TO:<b@example.org> NOTIFY=NEVER",
    b"RCPT TO:<a@[192.0.2.1]>", b"RCPT TO:<a@[192.0.2.1>", b"rcpt to:<c@d.example>",
    b"DATA", b"DATA x", b"data", b"BDAT 10", b"BDAT 0 LAST", b"BDAT", b"BDAT x LAST",
    b"STARTTLS", b"STARTTLS x", b"AUTH PLAIN AGZvbwBiYXI=", b"AUTH LOGIN", b"AUTH", b"auth =",
    b"RSET", b"RSET x", b"NOOP", b"NOOP x y", b"VRFY root", b"ETRN example.com", b"EXPN x",
    b"HELP", b"QUIT x", b"GET / HTTP/1.0", b"POST /x HTTP/1.1", b"CONNECT a:25 HTTP/1.1",
    b"Subject: hi", b"From: a@example.com", b"XCLIENT ADDR=10.9.9.9", b"XFORWARD NAME=x",
    PROXY_V1.rstrip(), b"PROXY UNKNOWN", b"", b" ", b"\t", b"..", b"\x00", b"\x00EHLO x",
    b"\xff\xfe", b"\xc3\xa9HLO x", b"EHLO \x1b[31mred", b"EHLO a\x7fb", b"MAIL FROM:<a\x00@b>",
    b"EHLO " + b"x" * 300, b"RCPT TO:<" + b"a" * 300 + b"@example.org>", b"\x80\x81\x82",
    b"\xed\xa0\x80", b"EHLO \xf0\x9f\x93\xa7", b"1234", b"-", b"<>", b"MAIL", b"RCPT",
]
# Content lines for a DATA that never ends, some breaking DATA's rules.
CONTENT = [
    b"Subject: fuzz", b"From: a@example.com", b"", b"hello", b"..dotted", b"BDAT 5 LAST",
    b"STARTTLS", b"AUTH PLAIN x", b"QUIT", b"RSET", b"x" * 1200, b"y" * 3000, b"a\rb",
    b"a\nb", b"\x00\x00", b"\xff" * 10, b" folded", b"Received: from evil",
]
ENDINGS = ("close", "shut_wr", "rst", "quit")


def junk_line(rng: Random) -> bytes:
    """One command line from VOCABULARY, or random printable text, or random bytes."""
    roll = rng.random()
    if roll < 0.8:
        return rng.choice(VOCABULARY)
    if roll < 0.9:
        return bytes(rng.choice(range(0x20, 0x7f)) for _ in range(rng.randrange(1, 40)))
    return rng.randbytes(rng.randrange(1, 40)).replace(b"\n", b"")


def line_end(rng: Random) -> bytes:
    """Mostly CRLF; sometimes a bare LF (a line end for commands), bare CR, or CRs."""
    return rng.choices([b"\r\n", b"\n", b"\r\r\n", b"\r", b"\n\r"], [6, 2, 1, 1, 1])[0]


def message(number: int, rng: Random) -> bytes:
    """A valid message, dot-stuffed, ending in CRLF (not the final ".")."""
    body = b"".join(rng.choice([b"line\r\n", b"..stuffed\r\n", b"\r\n", b"x" * 900 + b"\r\n",
                                b"y" * 5000 + b"\r\n", b"bare\nLF\r\n", b"bare\rCR\r\n"])
                    for _ in range(rng.randrange(0, 6)))
    return (b"From: fuzz@example.com\r\nSubject: fuzz %d\r\nX-Fuzz-Session: %d\r\n\r\n"
            % (number, number) + body)


async def reach(client: Client, state: int, strict: bool = True) -> bool:
    """Walk a clean dialogue to a state: 0 before the banner, 1 after it, 2 after EHLO,
    3 after MAIL, 4 after RCPT, 5 inside DATA (after 354). strict: each reply must be
    the expected one (the dialogue is valid), else a failure is recorded."""
    if state == 0:
        return True
    banner = await client.reply()
    if strict and not banner.startswith(b"220 " + HOST):
        raise Unexpected(f"banner {banner!r}")
    for line, code in ((EHLO, b"250"), (MAIL, b"250"), (RCPT, b"250"), (b"DATA", b"354"))[
            :state - 1]:
        answer = await client.command(line, pieces=client.rng.choice([1, 1, 2, 4]))
        if not answer.startswith(code):
            if strict and not client.gone:
                raise Unexpected(f"{line!r} answered {answer!r}")
            return False
    return True


class Unexpected(Exception):
    """A clean dialogue got a reply it should not have."""


# --- the session kinds -----------------------------------------------------------------

async def random_bytes(client: Client, rng: Random) -> None:
    """Random bytes, in any state."""
    await reach(client, rng.randrange(0, 6))
    await client.send(rng.randbytes(rng.randrange(1, 700)), rng.randrange(1, 4))


async def overlong(client: Client, rng: Random) -> None:
    """A line longer than 2048 octets (a command, or text), ended or not, then a NOOP."""
    state = rng.randrange(0, 6)
    await reach(client, state)
    head = rng.choice([b"MAIL FROM:<", b"EHLO ", b"NOOP ", b"", b"RCPT TO:<", b"X"])
    line = head + bytes(rng.choice(b"abcdefgh@.<>: \x00\r") for _ in range(
        rng.choice([2049, 2050, rng.randrange(2040, 9000)])))
    ending = rng.choice([b"\r\n", b"\n", b""])
    await client.send(line + ending + (b"NOOP\r\n" if ending and rng.random() < 0.5 else b""),
                      rng.randrange(1, 5))
    if state != 5 and ending and rng.random() < 0.5:
        await client.reply()


async def nuls(client: Client, rng: Random) -> None:
    """Command lines with NULs in them."""
    state = rng.randrange(1, 6)
    await reach(client, state)
    for _ in range(rng.randrange(1, 6)):
        line = bytearray(rng.choice(VOCABULARY) or b"NOOP")
        for _ in range(rng.randrange(1, 4)):
            line.insert(rng.randrange(0, len(line) + 1), 0)
        await client.send(bytes(line) + b"\r\n")
        if state != 5:
            await client.reply()


async def bare_newlines(client: Client, rng: Random) -> None:
    """Commands and content with bare <CR> and <LF> in them and at their ends."""
    state = rng.randrange(1, 6)
    await reach(client, state)
    lines = CONTENT if state == 5 else VOCABULARY
    data = b"".join(rng.choice(lines) + line_end(rng) for _ in range(rng.randrange(1, 8)))
    await client.send(data, rng.randrange(1, 4))


async def pipelined_junk(client: Client, rng: Random) -> None:
    """Many junk commands in one write, without waiting for replies."""
    await reach(client, rng.randrange(0, 3))
    data = b"".join(junk_line(rng) + line_end(rng) for _ in range(rng.randrange(1, 40)))
    await client.send(data, rng.choice([1, 1, 1, 3]))


async def split_commands(client: Client, rng: Random) -> None:
    """A clean dialogue whose every command comes in several writes, up to some state."""
    await reach(client, rng.randrange(2, 6))
    if rng.random() < 0.5:
        await client.send(b"".join(rng.choice(CONTENT) + b"\r\n" for _ in range(3)), 5)


async def abrupt(client: Client, rng: Random) -> None:
    """Reach a state, maybe send part of a line, and leave (the ending does the rest)."""
    state = rng.randrange(0, 6)
    await reach(client, state)
    if rng.random() < 0.5:
        text = message(client.number, rng) if state == 5 else rng.choice(VOCABULARY)
        await client.send(text[:rng.randrange(0, len(text) + 1)])


async def proxy_misplaced(client: Client, rng: Random) -> None:
    """A PROXY header (v1 or v2) where none belongs: after the banner, after a command,
    inside DATA; maybe followed by a command."""
    state = rng.randrange(0, 6)
    await reach(client, state)
    header = rng.choice([PROXY_V1, proxy_v2_header("10.1.2.3", "10.0.0.5"),
                         proxy_v2_local_header(), proxy_v2_header("2001:db8::7", "::1")])
    await client.send(header + rng.choice([b"", b"NOOP\r\n", b"EHLO again\r\n"]),
                      rng.randrange(1, 3))


async def wrong_place(client: Client, rng: Random) -> None:
    """STARTTLS, AUTH or BDAT in any state (in DATA they are content), with what a real
    client would send next (a TLS hello, an AUTH answer, the chunk)."""
    state = rng.randrange(1, 6)
    await reach(client, state)
    command, follow = rng.choice([
        (b"STARTTLS", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40)),
        (b"AUTH LOGIN", b"Zm9v\r\n"), (b"AUTH PLAIN", b"AGZvbwBiYXI=\r\n"),
        (b"BDAT 12 LAST", b"Subject: x\r\n"), (b"BDAT 5", b"hello"), (b"BDAT 0 LAST", b""),
    ])
    await client.send(command + b"\r\n")
    if state != 5:
        await client.reply()
    await client.send(follow, rng.randrange(1, 3))
    if state != 5 and rng.random() < 0.5:
        await client.command(b"NOOP")


async def valid(client: Client, rng: Random, outcome: Outcome) -> None:
    """A complete, valid transaction: interactive, pipelined or split, maybe after a few
    junk commands and RSET. Interactive and clean, it must be queued (250)."""
    client.may_complete = True
    number = client.number
    junk = rng.random() < 0.3
    pipelined = rng.random() < 0.3
    pieces = rng.choice([1, 1, 3])
    content = message(number, rng) + b".\r\n"
    if pipelined:
        prefix = b"".join(junk_line(rng) + b"\r\n" for _ in range(rng.randrange(3))) if junk \
            else b""
        prefix = prefix.replace(b"\n.\r\n", b"\n,\r\n")
        outcome.completed.add(number)
        await client.send(prefix + b"RSET\r\n" + EHLO + b"\r\n" + MAIL + b"\r\n" + RCPT
                          + b"\r\nDATA\r\n" + content, pieces)
        return
    if junk:
        await client.reply()
        for _ in range(rng.randrange(1, 4)):
            await client.command(junk_line(rng))
        await client.command(b"RSET")
        await client.command(EHLO)
        await client.command(MAIL)
        await client.command(RCPT)
        if not (await client.command(b"DATA")).startswith(b"354"):
            return  # the junk cost it the session (too many errors, a hang-up)
    else:
        await reach(client, 5)
    outcome.completed.add(number)
    await client.send(content, pieces)
    if rng.random() < 0.1:
        return  # left without the answer: it may or may not be queued
    answer = await client.reply()
    if not junk and not _QUEUED.match(answer):
        raise Unexpected(f"a valid message answered {answer!r}")


async def invalid_message(client: Client, rng: Random) -> None:
    """A DATA that ends with "." but breaks a rule (too big, a bare <CR> in a header):
    refused, never queued."""
    client.may_complete = True
    await reach(client, 5)
    head = message(client.number, rng)
    if rng.random() < 0.5:
        data = head + b"big" * (SIZE_LIMIT // 3) + b"\r\n"
    else:
        data = b"X-Broken: bare\rCR\r\n" + head
    await client.send(data + b"more\r\n.\r\n", rng.randrange(1, 4))
    answer = await client.reply()
    if answer[:1] not in (b"5", b""):
        raise Unexpected(f"a broken message answered {answer!r}")


async def proxy_fault(client: Client, rng: Random) -> None:
    """Behind the NLB: no header, part of one, a broken one, one split, two of them."""
    good = rng.choice([PROXY_V1, proxy_v2_header("10.1.2.3", "10.0.0.5")])
    fault = rng.randrange(7)
    if fault == 0:  # nothing, or SMTP instead of a header
        data = rng.choice([b"", b"EHLO x\r\n", b"QUIT\r\n", b"PROX", b"P"])
    elif fault == 1:  # a header cut short
        data = good[:rng.randrange(0, len(good))]
    elif fault == 2:  # a header with bytes flipped
        flipped = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        data = bytes(flipped)
    elif fault == 3:  # a broken v1 line
        data = rng.choice([b"PROXY TCP4 1.2.3\r\n", b"PROXY " + b"9" * 200 + b"\r\n",
                           b"PROXY TCP4 10.1.2.3 10.0.0.5 40000 25\n", b"PROXY\x00\r\n",
                           b"PROXY UNKNOWN\r\n", b"PROXY TCP6 ::1 ::1 1 2\r\n",
                           b"PROXY TCP4 999.1.2.3 10.0.0.5 1 2\r\n", b"PROXY TCP4  \r\n"])
    elif fault == 4:  # random bytes after the v2 signature
        data = good[:12] + rng.randbytes(rng.randrange(0, 40)) if good[:1] == b"\r" \
            else b"PROXY" + rng.randbytes(rng.randrange(0, 120))
    elif fault == 5:  # a good header, then another
        data = good + rng.choice([PROXY_V1, proxy_v2_header("10.9.9.9", "10.0.0.5")])
    else:  # a good header, in several writes, then junk
        data = good + b"".join(junk_line(rng) + b"\r\n" for _ in range(rng.randrange(3)))
    await client.send(data, rng.randrange(1, 4))


KINDS: dict[str, tuple[float, Callable[..., Awaitable[None]]]] = {
    "random bytes": (12, random_bytes), "overlong line": (8, overlong), "NULs": (8, nuls),
    "bare CR/LF": (8, bare_newlines), "pipelined junk": (15, pipelined_junk),
    "split commands": (8, split_commands), "abrupt": (15, abrupt),
    "PROXY misplaced": (6, proxy_misplaced), "STARTTLS/AUTH/BDAT": (8, wrong_place),
    "valid": (1.5, valid), "invalid message": (1, invalid_message),
}


async def fuzz_session(port: int, number: int, seed: int, proxy: bool,
                       outcome: Outcome) -> None:
    """One session, built from its own seeded generator; its failures go to outcome."""
    rng = Random(f"{seed}:{number}")
    header_fault = proxy and rng.random() < 0.3
    if header_fault:
        kind = "PROXY header fault"
    else:
        names = list(KINDS)
        kind = rng.choices(names, [KINDS[n][0] for n in names])[0]
    ending = rng.choice(ENDINGS)
    outcome.kinds[kind] += 1
    outcome.endings[ending] += 1
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        outcome.failures.append(f"session {number} ({kind}): cannot connect: {exc}")
        return
    client = Client(number, rng, reader, writer)
    problem = None
    try:
        async with asyncio.timeout(SESSION_LIMIT):
            if header_fault:
                await proxy_fault(client, rng)
            else:
                if proxy:
                    header = rng.choice([PROXY_V1, proxy_v2_header("10.1.2.3", "10.0.0.5")])
                    await client.send(header, rng.choice([1, 1, 2]))
                if kind == "valid":
                    await valid(client, rng, outcome)
                else:
                    await KINDS[kind][1](client, rng)
            await client.end(ending)
    except TimeoutError:
        problem = f"no end within {SESSION_LIMIT} s (a hang)"
    except Unexpected as exc:
        problem = str(exc)
    finally:
        if not client.gone:
            client.writer.transport.abort()
        # Take a reset's error from the client's side of the connection, so that asyncio
        # never reports it as never retrieved (a record the catcher would count).
        with contextlib.suppress(ConnectionError):
            await client.writer.wait_closed()
    problems = reply_problems(bytes(client.received), client.cut)
    if problem:
        problems.insert(0, problem)
    outcome.resets += client.cut
    outcome.replies += client.received.count(b"\r\n")
    for queue_id in _QUEUED.findall(bytes(client.received)):
        outcome.acknowledged[queue_id.decode()] = number
    if problems:
        outcome.failures.append(
            f"session {number} ({kind}, then {ending}): {'; '.join(problems)}\n"
            f"    sent {bytes(client.sent)[:600]!r}\n"
            f"    read {bytes(client.received)[:600]!r}")


async def fuzz(port: int, numbers: list[int], seed: int, proxy: bool,
               outcome: Outcome) -> None:
    """Run the sessions, CONCURRENCY at a time."""
    pending = iter(numbers)

    async def worker() -> None:
        for number in pending:
            await fuzz_session(port, number, seed, proxy, outcome)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


# --- watching the relay ----------------------------------------------------------------

class TracebackCatcher(logging.Handler):
    """Every log record, at every level: keeps those that carry a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = 0
        self.tracebacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Count the record; keep it, formatted, if it has exc_info or a Traceback."""
        self.records += 1
        try:
            text = record.getMessage()
        except Exception as exc:  # a broken log call is a bug of ours too
            self.tracebacks.append(f"{record.name}: unformattable record: {exc}")
            return
        if record.exc_info or "Traceback" in text:
            if len(self.tracebacks) < 20:
                self.tracebacks.append(f"{record.name} {record.levelname}: "
                                       + logging.Formatter().format(record))
            else:
                self.tracebacks.append(record.name)


@contextlib.contextmanager
def catch_tracebacks() -> Iterator[TracebackCatcher]:
    """Route the relay's own loggers (sesrelay.*, aiosmtpd's mail.*, asyncio) at DEBUG
    to the catcher only, and anything else at WARNING and above through the root logger.
    The relay's loggers stop propagating meanwhile: pytest would otherwise keep each of
    their tens of thousands of records in memory, which the RSS check would measure.
    The AWS libraries stay at WARNING: their DEBUG chatter is per request and costly."""
    catcher = TracebackCatcher()
    root = logging.getLogger()
    saved = []
    for name in ("sesrelay", "smtp_relay", "mail", "asyncio"):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(catcher)
    root.addHandler(catcher)
    hook = threading.excepthook

    def thread_died(args: threading.ExceptHookArgs) -> None:
        catcher.tracebacks.append(f"thread {args.thread}: {args.exc_type.__name__}: "
                                  f"{args.exc_value}")
        hook(args)

    threading.excepthook = thread_died
    try:
        yield catcher
    finally:
        threading.excepthook = hook
        root.removeHandler(catcher)
        for logger, level, propagate in saved:
            logger.removeHandler(catcher)
            logger.setLevel(level)
            logger.propagate = propagate


def rss() -> int:
    """This process's resident set size in bytes, after a full collection."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll condition until it holds or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def run_fuzz(relay: RunningRelay, spool_account: SpoolAccount, sessions: int, proxy: bool
             ) -> None:
    """The whole run and every check on it (see the module docstring)."""
    numbers = ONLY or list(range(sessions))
    half = len(numbers) // 2
    print(f"\nSMTP fuzz: seed {SEED} (SESRELAY_FUZZ_SEED), {len(numbers)} sessions, "
          f"{'behind a PROXY relay' if proxy else 'plain relay'}")
    outcome = Outcome()
    started = time.monotonic()
    with catch_tracebacks() as catcher:
        asyncio.run(fuzz(relay.port, numbers[:half], SEED, proxy, outcome))
        assert wait_until(lambda: not relay.server.relay.sessions)
        before = rss()
        asyncio.run(fuzz(relay.port, numbers[half:], SEED, proxy, outcome))
        assert wait_until(lambda: not relay.server.relay.sessions)
        after = rss()
        fuzz_time = time.monotonic() - started
        # A failing run says what it did first: the seed, the mix, the counts.
        print(f"  {fuzz_time:.1f} s: {dict(outcome.kinds)}; endings {dict(outcome.endings)}; "
          f"{outcome.replies} reply lines read, {outcome.resets} resets by the relay, "
          f"{len(outcome.acknowledged)} acknowledged of {len(outcome.completed)} complete; "
          f"{catcher.records} log records; RSS {before >> 20} -> {after >> 20} MiB")
        final_id = send_normal_message(relay, proxy)

    failures = outcome.failures
    assert not failures, f"{len(failures)} failing sessions (seed {SEED}):\n" + "\n".join(
        failures[:15])
    assert not catcher.tracebacks, (f"{len(catcher.tracebacks)} tracebacks logged (seed "
                                    f"{SEED}):\n" + "\n".join(catcher.tracebacks[:5]))
    assert relay.thread.is_alive()
    relay_state = relay.server.relay
    # The last client (smtplib) has just left: its session may still be ending.
    assert wait_until(lambda: not relay_state.sessions and not relay_state.connections), (
        f"sessions left: {len(relay_state.sessions)}, connection counts left: "
        f"{relay_state.connections}")
    assert not relay_state.connections, f"connection counts left: {relay_state.connections}"
    assert not relay_state.storing and not relay_state.spool.stores
    assert after - before < RSS_SLACK, f"RSS grew {(after - before) >> 20} MiB in {half} sessions"

    queued = {spooled.envelope.queue_id: spooled for spooled in spool_account.queued()}
    assert final_id in queued
    assert b"X-Fuzz-Final: yes" in queued.pop(final_id).raw
    missing = set(outcome.acknowledged) - set(queued)
    assert not missing, f"acknowledged with 250 but not queued: {missing}"
    for queue_id, spooled in queued.items():
        marker = _MARKER.search(spooled.raw)
        assert marker and int(marker.group(1)) in outcome.completed, (
            f"{queue_id} queued, but no session sent it whole: {spooled.raw[:300]!r}")
    assert len(queued) <= len(outcome.completed)


def send_normal_message(relay: RunningRelay, proxy: bool) -> str:
    """After the fuzz: an ordinary smtplib client gets 250; returns the queue ID."""
    message = EmailMessage()
    message["From"], message["To"] = "app@example.com", "someone@example.org"
    message["Subject"], message["X-Fuzz-Final"] = "after the fuzz", "yes"
    message.set_content("Still relaying.\n")
    client = smtplib.SMTP(timeout=10)
    if proxy:  # smtplib cannot send a PROXY header: connect, send it, then take the banner
        client.sock = socket.create_connection((relay.host, relay.port), timeout=10)
        client.sock.sendall(PROXY_V1)
        client.file = None
        code, _ = client.getreply()
        assert code == 220
    else:
        client.connect(relay.host, relay.port)
    with client:
        client.ehlo("app.example.com")
        client.mail("app@example.com")
        assert client.rcpt("someone@example.org")[0] == 250
        code, answer = client.data(message.as_string())  # str: CRLF line ends
        assert code == 250, answer
    match = re.fullmatch(rb"2\.0\.0 Ok: queued as ([0-9A-Z]+)", answer)
    assert match, answer
    return match.group(1).decode()


def test_fuzz_plain_relay(start_relay, spool_account: SpoolAccount) -> None:
    """SESSIONS fuzz sessions against a relay that takes SMTP directly."""
    relay = start_relay(**PLAIN)
    run_fuzz(relay, spool_account, SESSIONS, proxy=False)


def test_fuzz_behind_proxy(start_relay, spool_account: SpoolAccount) -> None:
    """Fewer sessions behind the load balancer, where the PROXY header is fuzzed too."""
    relay = start_relay(**BEHIND_NLB)
    run_fuzz(relay, spool_account, SESSIONS // 10, proxy=True)

