"""Hostile and broken clients (issue 15), over real sockets against an in-process relay:
end of input, malformed addresses, timeouts, connection and error limits. Each reply is
Postfix's, word for word; where it comes from is noted beside it."""

from __future__ import annotations

import logging
import smtplib
import socket
import threading
import time

import pytest

from tests.relay.conftest import RunningRelay, SpoolAccount
from tests.support import read_reply

HOST = "relay.example.net"
MESSAGE = b"From: app@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"


class Raw:
    """A raw SMTP client: bytes out, one reply at a time in."""

    def __init__(self, relay: RunningRelay, timeout: float = 10) -> None:
        self.sock = socket.create_connection((relay.host, relay.port), timeout=timeout)
        self.stream = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> str:
        return read_reply(self.stream).decode("latin-1").rstrip("\r\n")

    def command(self, line: bytes) -> str:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def rest(self) -> bytes:
        """Everything the relay still sends, up to its end of the connection."""
        return self.stream.read()

    def close(self) -> None:
        self.sock.close()


def wait_until(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def sessions(relay: RunningRelay) -> int:
    return len(relay.server.relay.sessions)


# --- end of input ---------------------------------------------------------------------

@pytest.mark.parametrize(("sent", "answers", "where"), [
    (b"", [], "CONNECT"),
    (b"EHLO x", [], "CONNECT"),  # an incomplete line is not a command
    (b"EHLO client.example.org\r\n", ["250"], "EHLO"),
    (b"EHLO c.example.org\r\nMAIL FROM:<a@example.com>\r\n", ["250", "250"], "MAIL"),
    (b"EHLO c.example.org\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
     b"DATA\r\nSubject: cut\r\n\r\nhalf a mes", ["250", "250", "250", "354"],
     "DATA (26 bytes)"),
])
def test_half_close_answers_what_was_sent_then_closes(
        start_relay, spool_account: SpoolAccount, caplog: pytest.LogCaptureFixture,
        sent: bytes, answers: list[str], where: str) -> None:
    relay = start_relay()
    with caplog.at_level(logging.INFO, logger="sesrelay.relay"):
        client = Raw(relay, timeout=5)
        client.sock.sendall(sent)
        client.sock.shutdown(socket.SHUT_WR)
        # Up to the relay's end of the connection, within the client's 5 s: a relay that
        # waited for its smtpd_timeout (300 s) would time this read out.
        rest = client.rest()
        client.close()
        assert wait_until(lambda: sessions(relay) == 0, 1.0)
    codes = [line[:3].decode() for line in rest.split(b"\r\n") if line[3:4] == b" "]
    assert codes == answers
    assert f"lost connection after {where} from unknown[127.0.0.1]" in caplog.text
    assert "Traceback" not in caplog.text and "Error: (" not in rest.decode("latin-1")
    assert spool_account.queued() == []  # an incomplete DATA is never queued


def test_pipelined_message_then_half_close_is_queued(start_relay, spool_account) -> None:
    relay = start_relay()
    client = Raw(relay)
    client.sock.sendall(b"EHLO c.example.org\r\nMAIL FROM:<a@example.com>\r\n"
                        b"RCPT TO:<b@example.org>\r\nDATA\r\n" + MESSAGE + b".\r\n")
    client.sock.shutdown(socket.SHUT_WR)
    answer = client.rest().decode()
    [spooled] = spool_account.queued()
    assert f"250 2.0.0 Ok: queued as {spooled.envelope.queue_id}\r\n" in answer


def test_session_log_in_postfix_words(start_relay, spool_account, caplog) -> None:
    relay = start_relay()
    with caplog.at_level(logging.INFO, logger="sesrelay.relay"):
        with smtplib.SMTP(relay.host, relay.port, timeout=10) as client:
            client.ehlo("client.example.org")
            client.sendmail("app@example.com", ["a@example.org"], MESSAGE)
            client.docmd("BOGUS")
        assert wait_until(lambda: "disconnect from" in caplog.text, 2.0)
    assert "connect from unknown[127.0.0.1]" in caplog.text
    # Postfix's smtpd_format_cmd_stats(): its command table's order, "unknown" last.
    assert ("disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 "
            "unknown=0/1 commands=5/6") in caplog.text
    assert "Traceback" not in caplog.text


# --- addresses ------------------------------------------------------------------------

SENDER_SYNTAX = "501 5.1.7 Bad sender address syntax"  # smtpd.c mail_cmd()
RECIPIENT_SYNTAX = "501 5.1.3 Bad recipient address syntax"  # smtpd.c rcpt_cmd()


@pytest.mark.parametrize("argument", [
    b"a@", b'"', b"%@[", b"<a@b", b'<"unterminated@x>', b"<a@b>junk", b"<@>", b"<a b>",
    b"<a@b..c>", b"<a@-b>", b"<a@b,c@d>", b'<"a"b@c>', b"<a@.>",
])
def test_malformed_senders_get_postfix_reply(start_relay, argument: bytes) -> None:
    relay = start_relay()
    client = Raw(relay)
    client.command(b"EHLO client.example.org")
    assert client.command(b"MAIL FROM:" + argument) == SENDER_SYNTAX
    assert client.command(b"MAIL FROM:<a@example.com>") == "250 2.1.0 Ok"  # session goes on


def test_unknown_mail_parameters_get_postfix_reply(start_relay) -> None:
    relay = start_relay()
    client = Raw(relay)
    client.command(b"EHLO client.example.org")
    assert client.command(b"MAIL FROM:<a@b.example> junk<") == (
        "555 5.5.4 Unsupported option: junk<")
    assert client.command(b"MAIL FROM:<a@b.example> SIZE=x") == (
        "501 5.5.4 Bad message size syntax")
    assert client.command(b"MAIL FROM:<a@b.example> RET=BODY") == (
        "501 5.5.4 Bad RET parameter syntax")
    assert client.command(b"MAIL FROM:<a@b.example> BODY=8BITMIME") == "250 2.1.0 Ok"
    assert client.command(b"RCPT TO:<c@d.example> NOTIFY=NEVER,DELAY") == (
        "501 5.5.4 Error: Bad NOTIFY parameter syntax")
    assert client.command(b"RCPT TO c@d.example") == "501 5.5.4 Syntax: RCPT TO:<address>"
    assert client.command(b"DATA x") == "554 5.5.1 Error: no valid recipients"
    assert client.command(b"RSET x") == "501 5.5.4 Syntax: RSET"
    assert client.command(b"\xffNOOP".decode("unicode_escape").encode("latin-1")) == (
        "500 5.5.2 Error: bad UTF-8 syntax")


@pytest.mark.parametrize("argument", [b"x@", b"<>", b"<a@b", b'"', b"<@a.example:>"])
def test_malformed_recipients_get_postfix_reply(start_relay, argument: bytes) -> None:
    relay = start_relay()
    client = Raw(relay)
    client.command(b"EHLO client.example.org")
    client.command(b"MAIL FROM:<a@example.com>")
    assert client.command(b"RCPT TO:" + argument) == RECIPIENT_SYNTAX
    assert client.command(b"RCPT TO:<b@example.org>") == "250 2.1.5 Ok"


def test_unterminated_address_literal_is_accepted_as_postfix_does(start_relay,
                                                                 spool_account) -> None:
    relay = start_relay()
    client = Raw(relay)
    client.command(b"EHLO client.example.org")
    client.command(b"MAIL FROM:<a@example.com>")
    assert client.command(b"RCPT TO:<a@[192.0.2.1>") == "250 2.1.5 Ok"


@pytest.mark.parametrize("argument", [
    b'<"a\rBcc: victim@example.com"@example.org>', b"<a\x00b@example.org>",
    b"<a\x1b[31m@example.org>", b"<a\x7f@example.org>", b'<"a\tb"@example.org>',
    b"<a@exa\x01mple.org>", b"<@rou\x02te:a@example.org>",
])
def test_control_characters_in_addresses_are_refused(start_relay, argument: bytes) -> None:
    relay = start_relay()
    client = Raw(relay)
    client.command(b"EHLO client.example.org")
    assert client.command(b"MAIL FROM:" + argument) == SENDER_SYNTAX
    client.command(b"MAIL FROM:<a@example.com>")
    assert client.command(b"RCPT TO:" + argument) == RECIPIENT_SYNTAX


# --- timeouts -------------------------------------------------------------------------

def test_idle_client_gets_postfix_timeout_reply(start_relay, caplog) -> None:
    relay = start_relay(smtpd_timeout="1s")
    with caplog.at_level(logging.INFO, logger="sesrelay.relay"):
        client = Raw(relay)
        client.command(b"EHLO client.example.org")
        started = time.monotonic()
        assert client.reply() == f"421 4.4.2 {HOST} Error: timeout exceeded"
        assert client.rest() == b""
        # Not before smtpd_timeout; not much after is the client's own 10 s read timeout
        # (an upper bound here would fail on a busy machine, not on a wrong relay).
        assert time.monotonic() - started >= 0.9
        assert wait_until(lambda: "timeout after EHLO from" in caplog.text, 1.0)
    assert "timeout after EHLO from unknown[127.0.0.1]" in caplog.text


def test_timeout_in_data_names_the_bytes_received(start_relay, caplog) -> None:
    relay = start_relay(smtpd_timeout="1s")
    with caplog.at_level(logging.INFO, logger="sesrelay.relay"):
        client = Raw(relay)
        for line in (b"EHLO c.example.org", b"MAIL FROM:<a@example.com>",
                     b"RCPT TO:<b@example.org>", b"DATA"):
            client.command(line)
        client.sock.sendall(b"Subject: slow\r\n\r\n12345")
        assert client.reply() == f"421 4.4.2 {HOST} Error: timeout exceeded"
        assert wait_until(lambda: "timeout after DATA" in caplog.text, 1.0)
    assert "timeout after DATA (22 bytes) from unknown[127.0.0.1]" in caplog.text


def test_a_steady_slow_upload_is_never_cut(start_relay, spool_account) -> None:
    relay = start_relay(smtpd_timeout="1s")
    client = Raw(relay)
    for line in (b"EHLO c.example.org", b"MAIL FROM:<a@example.com>",
                 b"RCPT TO:<b@example.org>", b"DATA"):
        client.command(line)
    client.sock.sendall(b"Subject: slow\r\n\r\n")
    for number in range(12):  # 3 s in all, three times smtpd_timeout
        client.sock.sendall(b"line %d\r\n" % number)
        time.sleep(0.25)
    client.sock.sendall(b".\r\n")
    assert client.reply().startswith("250 2.0.0 Ok: queued as ")
    assert len(spool_account.queued()) == 1


def test_a_client_that_never_reads_is_cut_off_after_the_timeout(start_relay) -> None:
    relay = start_relay(smtpd_timeout="1s", smtpd_junk_command_limit=10**6)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
    sock.settimeout(10)
    sock.connect((relay.host, relay.port))
    assert wait_until(lambda: sessions(relay) == 1)

    def flood() -> None:
        try:
            for _ in range(200):
                sock.sendall(b"NOOP\r\n" * 2000)
        except OSError:
            pass

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    # The relay's replies pile up unread (several MB fit in the kernel's buffers first);
    # once a write has waited smtpd_timeout, it drops the connection.
    assert wait_until(lambda: sessions(relay) == 0, 20.0)
    sock.close()
    sender.join(timeout=10)


# --- limits ---------------------------------------------------------------------------

def test_connection_count_limit(start_relay, caplog) -> None:
    relay = start_relay(smtpd_client_connection_count_limit=2)
    first, second = Raw(relay), Raw(relay)
    with caplog.at_level(logging.INFO, logger="sesrelay.relay"):
        third = Raw(relay)
    assert third.greeting == f"421 4.7.0 {HOST} Error: too many connections from 127.0.0.1"
    assert third.rest() == b""
    assert ("Connection concurrency limit exceeded: 3 from unknown[127.0.0.1] for service "
            "smtp") in caplog.text
    first.command(b"QUIT")
    first.close()
    assert wait_until(lambda: sessions(relay) == 1)
    assert Raw(relay).greeting.startswith("220 ")
    second.close()


def test_connection_count_limit_exceptions(start_relay) -> None:
    relay = start_relay(smtpd_client_connection_count_limit=1,
                        smtpd_client_event_limit_exceptions="127.0.0.0/8")
    clients = [Raw(relay) for _ in range(3)]
    assert all(c.greeting.startswith("220 ") for c in clients)


def test_overlong_command_is_truncated_and_answered(start_relay, caplog) -> None:
    relay = start_relay()
    client = Raw(relay)
    client.command(b"EHLO client.example.org")
    with caplog.at_level(logging.INFO, logger="sesrelay.relay"):
        reply = client.command(b"MAIL FROM:<" + b"a" * 5000 + b"@example.com>")
    assert reply == SENDER_SYNTAX  # the first 2048 octets: an unterminated <...>
    assert "request longer than 2048: MAIL FROM:<aaaaaaaaaaaaaaaaaaa..." in caplog.text
    assert client.command(b"NOOP") == "250 2.0.0 Ok"


def test_hard_error_limit_ends_the_session(start_relay, caplog) -> None:
    relay = start_relay(smtpd_hard_error_limit=3, smtpd_soft_error_limit=10)
    client = Raw(relay)
    with caplog.at_level(logging.INFO, logger="sesrelay.relay"):
        for _ in range(3):
            assert client.command(b"BOGUS") == "500 5.5.2 Error: command not recognized"
        # Unasked: smtpd checks the limit before it reads the next command.
        assert client.reply() == f"421 4.7.0 {HOST} Error: too many errors"
        assert client.rest() == b""
        assert wait_until(lambda: "too many errors after" in caplog.text, 1.0)
    assert "too many errors after UNKNOWN from unknown[127.0.0.1]" in caplog.text


def test_soft_error_limit_slows_the_client_down(start_relay) -> None:
    relay = start_relay(smtpd_soft_error_limit=1, smtpd_error_sleep_time="1s")
    client = Raw(relay)
    assert client.command(b"BOGUS").startswith("500 ")
    started = time.monotonic()
    assert client.command(b"BOGUS").startswith("500 ")
    assert time.monotonic() - started >= 0.9
