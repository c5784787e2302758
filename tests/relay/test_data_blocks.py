"""DATA read in blocks of whole lines: the same bytes stored and the same replies whatever
way the client's bytes are split into TCP segments."""

from __future__ import annotations

import itertools
import socket
import time

import pytest

from smtp_relay import replies
from tests.relay.conftest import RunningRelay, SpoolAccount
from tests.support import read_reply

HEAD = b"From: app@example.com\r\nSubject: blocks\r\n\r\n"


def body_lines(count: int) -> bytes:
    """count lines, every seventh dot-stuffed (as a client sends a line starting with ".")."""
    return b"".join((b".." if n % 7 == 0 else b"") + b"line %06d " % n + b"x" * 60 + b"\r\n"
                    for n in range(count))


def unstuffed(data: bytes) -> bytes:
    return b"".join(line[1:] if line.startswith(b".") else line
                    for line in data.splitlines(keepends=True))


class Session:
    """A raw SMTP session up to DATA, then the message bytes in the pieces given."""

    def __init__(self, relay: RunningRelay) -> None:
        self.sock = socket.create_connection((relay.host, relay.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = self.sock.makefile("rb")
        self.reply()
        for command in (b"EHLO client.example.org", b"MAIL FROM:<app@example.com>",
                        b"RCPT TO:<someone@example.org>", b"DATA"):
            self.sock.sendall(command + b"\r\n")
            self.reply()

    def reply(self) -> str:
        return read_reply(self.stream).decode().rstrip("\r\n")

    def send(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.sock.sendall(piece)
            time.sleep(0.02)  # let each piece arrive as its own read

    def close(self) -> None:
        self.sock.close()


def split_at(data: bytes, *offsets: int) -> list[bytes]:
    bounds = [0, *offsets, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("cut", [
    -1,  # between "\r\n." and "\r\n" of the final dot
    -2,  # between "." and "\r\n"
    -3,  # just before the final dot
    -4,  # between "\r" and "\n" of the last line
])
def test_end_of_data_split_across_reads(start_relay, spool_account: SpoolAccount,
                                        cut: int) -> None:
    relay = start_relay()
    body = body_lines(3000)  # about 230 KB: many reads
    data = HEAD + body + b".\r\n"
    session = Session(relay)
    session.send(*split_at(data, 100_000, len(data) + cut))
    assert session.reply().startswith("250 2.0.0 Ok: queued as")
    session.close()
    [spooled] = spool_account.queued()
    assert spooled.raw.endswith(HEAD + unstuffed(body))


def test_dot_stuffed_line_at_the_start_of_a_read(start_relay, spool_account) -> None:
    relay = start_relay()
    first = HEAD + body_lines(50)
    data = first + b"..starts a read\r\n" + body_lines(50) + b".\r\n"
    session = Session(relay)
    session.send(*split_at(data, len(first)))
    assert session.reply().startswith("250")
    session.close()
    [spooled] = spool_account.queued()
    assert b"\r\n.starts a read\r\n" in spooled.raw
    assert b"\r\n..starts" not in spooled.raw


@pytest.mark.parametrize("length", [1000, 2_000, 10_000, 100_000])
@pytest.mark.parametrize("where", [0, 500, 1999])  # first, middle and last body line
def test_a_line_of_any_length_is_stored_as_sent(start_relay, spool_account,
                                                length: int, where: int) -> None:
    relay = start_relay()
    lines = [b"line %06d " % n + b"x" * 60 + b"\r\n" for n in range(2000)]
    lines[where] = b"y" * length + b"\r\n"
    session = Session(relay)
    session.send(HEAD + b"".join(lines) + b".\r\n")  # one read holds many lines
    reply = session.reply()
    session.close()
    assert reply.startswith("250 2.0.0 Ok: queued as")
    [spooled] = spool_account.queued()
    assert spooled.raw.endswith(HEAD + b"".join(lines))


def test_a_long_line_split_across_many_reads(start_relay, spool_account) -> None:
    relay = start_relay()
    long_line = b"." + b"z" * 300_000 + b"\r\n"  # dot-stuffed, in about 20 reads
    data = HEAD + body_lines(10) + long_line + body_lines(10) + b".\r\n"
    session = Session(relay)
    session.send(*split_at(data, *range(len(HEAD) + 500, len(data) - 900, 16_000)))
    assert session.reply().startswith("250 2.0.0 Ok: queued as")
    session.close()
    [spooled] = spool_account.queued()
    assert spooled.raw.endswith(HEAD + unstuffed(body_lines(10) + long_line + body_lines(10)))


def test_a_line_longer_than_the_size_limit_is_refused_and_the_session_goes_on(
        start_relay, spool_account) -> None:
    relay = start_relay(message_size_limit=100_000)
    session = Session(relay)
    session.send(HEAD + b"w" * 150_000, b"\r\nmore\r\n.\r\n")
    assert session.reply() == replies.SIZE_EXCEEDED
    session.sock.sendall(b"NOOP\r\n")
    assert session.reply() == replies.OK
    session.close()
    assert spool_account.queued() == []


def test_long_header_lines_are_kept_up_to_header_size_limit(start_relay,
                                                            spool_account) -> None:
    relay = start_relay(header_size_limit=5000)
    head = (b"From: app@example.com\r\nX-Long: " + b"h" * 3000 + b"\r\n"
            b"X-Folded: start\r\n " + b"f" * 4000 + b"\r\n " + b"g" * 4000 + b"\r\n"
            b"Subject: after\r\n\r\n")
    session = Session(relay)
    session.send(head + b"body\r\n.\r\n")
    assert session.reply().startswith("250 2.0.0 Ok: queued as")
    session.close()
    [spooled] = spool_account.queued()
    assert b"X-Long: " + b"h" * 3000 + b"\r\n" in spooled.raw  # under the limit: whole
    # Over it: the header's first 5,000 octets (line ends not counted), then the next
    # header, as Postfix's cleanup discards the excess.
    kept = 5000 - len(b"X-Folded: start") - len(b" " + b"f" * 4000) - len(b" ")
    assert (b"X-Folded: start\r\n " + b"f" * 4000 + b"\r\n " + b"g" * kept
            + b"\r\nSubject: after\r\n\r\nbody\r\n") in spooled.raw


def test_dot_stuffed_lines_in_one_read(start_relay, spool_account) -> None:
    relay = start_relay()
    body = b"..first line\r\n" + body_lines(500) + b"...\r\n..\r\n"
    session = Session(relay)
    session.send(HEAD + body + b".\r\n")
    assert session.reply().startswith("250")
    session.close()
    [spooled] = spool_account.queued()
    assert spooled.raw.endswith(HEAD + unstuffed(body))
    assert spooled.raw.endswith(b"\r\n..\r\n.\r\n")  # "..." and ".." unstuffed


def test_pipelined_commands_after_the_final_dot_are_answered(start_relay,
                                                             spool_account) -> None:
    relay = start_relay()
    session = Session(relay)
    session.send(HEAD + body_lines(2000) + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n")
    assert session.reply().startswith("250 2.0.0 Ok: queued as")
    assert [session.reply() for _ in range(3)] == [replies.OK, replies.OK, "221 2.0.0 Bye"]
    session.close()
    assert len(spool_account.queued()) == 1


def test_pipelined_commands_then_half_close(start_relay, spool_account) -> None:
    relay = start_relay()
    session = Session(relay)
    session.send(HEAD + body_lines(200) + b".\r\nQUIT\r\n")
    session.sock.shutdown(socket.SHUT_WR)
    assert session.reply().startswith("250 2.0.0 Ok: queued as")
    assert session.reply() == "221 2.0.0 Bye"
    session.close()
    assert len(spool_account.queued()) == 1


def test_long_line_split_between_cr_and_lf(start_relay, spool_account) -> None:
    relay = start_relay()
    long_line = b"y" * 3000 + b"\r"
    data = HEAD + body_lines(100) + long_line + b"\n" + body_lines(10) + b".\r\n"
    session = Session(relay)
    session.send(*split_at(data, len(HEAD) + 100 * 78 + len(long_line)))
    assert session.reply().startswith("250 2.0.0 Ok: queued as")
    session.close()
    [spooled] = spool_account.queued()
    assert spooled.raw.endswith(HEAD + unstuffed(body_lines(100)) + long_line + b"\n"
                                + unstuffed(body_lines(10)))


def test_bare_newline_deep_in_a_large_body_is_normalized(start_relay,
                                                         spool_account) -> None:
    relay = start_relay()
    data = HEAD + body_lines(2000) + b"bare\n.\r\n" + body_lines(10) + b".\r\n"
    session = Session(relay)
    session.send(data)
    assert session.reply().startswith("250 2.0.0 Ok: queued as")
    session.close()
    [spooled] = spool_account.queued()
    # The bare <LF> is a line end, the "." after it a line of content (unstuffed), and
    # the message ends only at <CR><LF>.<CR><LF>.
    assert spooled.raw.endswith(HEAD + unstuffed(body_lines(2000)) + b"bare\r\n\r\n"
                                + unstuffed(body_lines(10)))


def test_bare_newline_deep_in_a_large_body_under_reject(start_relay, spool_account) -> None:
    relay = start_relay(smtpd_forbid_bare_newline="reject",
                        smtpd_forbid_bare_newline_exclusions="")
    data = HEAD + body_lines(2000) + b"bare\n.\r\n" + body_lines(10) + b".\r\n"
    session = Session(relay)
    session.send(data)
    assert session.reply() == replies.bare_newline("relay.example.net")
    session.sock.sendall(b"NOOP\r\n")
    assert session.reply() == replies.OK  # Postfix 3.9's reject does not hang up
    session.close()
    assert spool_account.queued() == []


def test_size_limit_crossed_inside_a_read(start_relay, spool_account) -> None:
    relay = start_relay(message_size_limit=100_000)
    session = Session(relay)
    session.send(HEAD + body_lines(3000) + b".\r\n")
    assert session.reply() == replies.SIZE_EXCEEDED
    session.sock.sendall(b"NOOP\r\n")
    assert session.reply() == replies.OK  # the session goes on
    session.close()
    assert spool_account.queued() == []
