"""One SMTP connection: Postfix's smtpd command loop, replies, limits and DATA rules.

aiosmtpd gives the connection plumbing, the session and envelope objects and the PROXY
protocol parser. The command loop is Postfix's (smtpd.c smtpd_proto()), because a relay
that replaces Postfix must behave like it with broken and hostile clients too:

- End of input: the commands already received are answered, then the session ends with
  "lost connection after CMD from ..." (no reply loop, no traceback). A DATA that did
  not end with "." is never queued.
- smtpd_timeout limits each wait for the client (a read, or a write the client does not
  take), never a whole upload and never the time spent storing a message: one timer per
  session, re-armed lazily, tells how long the current wait has gone without a byte.
  On timeout: 421 4.4.2, "timeout after CMD", hang up (abort if the 421 cannot be sent).
- smtpd_hard_error_limit, smtpd_soft_error_limit + smtpd_error_sleep_time,
  smtpd_junk_command_limit, smtpd_client_connection_count_limit, overlong command lines
  cut at 2048 octets (Postfix's line_length_limit), non-SMTP commands (HTTP) refused.
- Every client string is checked at the edge (edge.py) before it is used or logged.
- Postfix's session log: connect from, disconnect from ... with the command counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from aiosmtpd.proxy_protocol import V2_CMD, ProxyData, get_proxy
from aiosmtpd.smtp import SMTP, Session

from sesrelay.config.sasl import mechanisms
from sesrelay.long_lines import MAX_LINE, lines_fit, signed_with_long_lines
from sesrelay.spool import MAX_ADDRESS_LENGTH
from smtp_relay import dsn_params, replies, sasl, tls
from smtp_relay.edge import (
    Token,
    client_address,
    command_text,
    helo_name,
    local_part_is_utf8,
    parse_path,
    printable,
    tokenize,
)
from smtp_relay.headers import is_header_start

if TYPE_CHECKING:
    from smtp_relay.relay import Relay, Transaction

log = logging.getLogger("sesrelay.relay")

_T = TypeVar("_T")

# Larger than anything a StreamReader holds: one read() takes all of it (see _read_body).
_READ_ALL = 1 << 24
# Postfix reads command lines in pieces of line_length_limit (2048) octets and skips the
# rest of a longer one (smtpd_chat_query: "request longer than ...").
COMMAND_LINE_LIMIT = 2048
# smtpd.c: the commands counted against smtpd_junk_command_limit (SMTPD_CMD_FLAG_LIMIT).
_JUNK = frozenset({"HELO", "EHLO", "RSET", "NOOP", "VRFY", "ETRN"})
# The order of Postfix's command table, which its disconnect line follows.
_COMMAND_ORDER = ("HELO", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BDAT",
                  "RSET", "NOOP", "VRFY", "ETRN", "QUIT", "UNKNOWN")
# smtpd_forbidden_commands' default: CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}.
_FORBIDDEN = frozenset({"CONNECT", "GET", "POST"})
_HEADER_NAME = re.compile(r"[!-9;-~]+:")
# Where the session was, for the log (Postfix's state->where).
_AFTER_CONNECT, _AFTER_DATA, _AFTER_EOM = "CONNECT", "DATA content", "END-OF-MESSAGE"
_LOST, _TIMEOUT, _TOO_MANY_ERRORS = "lost connection", "timeout", "too many errors"
_TCP_CORK = getattr(socket, "TCP_CORK", None)  # Linux
_INET = (socket.AF_INET, socket.AF_INET6)


class _Data(enum.Enum):
    HEADERS = 1
    BODY = 2
    TOO_MUCH = 3
    BARE_NEWLINE = 4
    BARE_CR = 5


class _Lost(Exception):
    """The client's end of input came where the relay needed more."""


class RelaySession(SMTP):
    """An SMTP connection to the relay."""

    def __init__(self, relay: Relay, proxy_header: bytes | None = None,
                 **kwargs: object) -> None:
        self.relay = relay
        # Implicit TLS: the PROXY header, read in clear text before the handshake.
        self._proxy_header = proxy_header
        self.tls: tls.TlsSession | None = None
        config = relay.config
        super().__init__(
            relay,
            hostname=config.myhostname,
            ident=config.mail_name,
            data_size_limit=config.message_size_limit,
            enable_SMTPUTF8=False,
            decode_data=False,
            timeout=config.smtpd_timeout,
            proxy_protocol_timeout=(config.smtpd_upstream_proxy_timeout
                                    if config.smtpd_upstream_proxy_protocol else None),
            # Sessions are made on the running loop; without it aiosmtpd looks the loop up
            # under warnings.catch_warnings() for every connection (1 % of the relay's CPU).
            loop=asyncio.get_running_loop(),
            **kwargs,  # type: ignore[arg-type]
        )
        self.namaddr = "unknown[unknown]"  # Postfix's name[address], set once known
        self._where = _AFTER_CONNECT
        self._reason: str | None = None
        self._reason_logged = False
        self._counts: dict[str, list[int]] = {}  # command: [successes, total]
        self._errors = 0
        self._junk = 0
        self._data_bytes = 0
        self._counted_client: str | None = None  # for the connection count limit
        self._quiet = False  # a load balancer's health check: no session log
        # The timeout: while the relay waits for the client, _waiting_since is when the
        # wait began or the last byte came; None while the relay itself is busy.
        self._wait_limit = float(config.smtpd_timeout)
        self._waiting_since: float | None = None

    def __dir__(self) -> list[str]:
        """Nothing: aiosmtpd builds its command and AUTH tables from dir() for every
        connection (a measurable part of each connection's cost, docs/BENCHMARKS.md), and
        this session dispatches commands itself (_COMMANDS)."""
        return []

    # --- connection lifecycle -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register with the relay so that a drain can find idle sessions."""
        if transport.get_extra_info("ssl_object") is not None:  # implicit TLS
            self.tls = tls.TlsSession.of(transport)
        super().connection_made(transport)
        self.relay.sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        """Unregister; stop the timer and the command loop (aiosmtpd's, without its
        log lines)."""
        self.relay.sessions.discard(self)
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
            self._timeout_handle = None
        asyncio.StreamReaderProtocol.connection_lost(self, error)
        # A reset leaves its error in the protocol's "closed" future, which nothing here
        # awaits. asyncio marks it seen only when the protocol is deleted, and when both
        # are freed together in a garbage-collected cycle the future may go first and log
        # "Future exception was never retrieved": mark it seen now.
        closed = getattr(self, "_closed", None)
        if isinstance(closed, asyncio.Future) and closed.done() and not closed.cancelled():
            closed.exception()
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()
        self.transport = None

    def eof_received(self) -> bool | None:
        """The client half-closed: answer what it already sent (say a pipelined DATA and
        QUIT) before closing, instead of aiosmtpd's cancelling the session at once."""
        return asyncio.StreamReaderProtocol.eof_received(self)

    def data_received(self, data: bytes) -> None:
        """Bytes from the client: a wait for it is making progress."""
        if self._waiting_since is not None:
            self._waiting_since = self.loop.time()
        super().data_received(data)

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd re-arms a timer for every command; here the timer is armed by the
        first wait for the client (_wait)."""

    @property
    def in_transaction(self) -> bool:
        """True between MAIL FROM and the reply to DATA: the client is owed an answer."""
        return self.envelope is not None and self.envelope.mail_from is not None

    def close_idle(self) -> None:
        """Tell an idle client the relay is going away, and hang up."""
        if self.transport is not None and not self.in_transaction:
            self.transport.write(replies.SHUTTING_DOWN.encode() + b"\r\n")
            self._hang_up()

    def _hang_up(self) -> None:
        """Close after the replies already written; if the client does not take them
        within smtpd_timeout, drop the connection (no CLOSE-WAIT with unsent replies)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.close()
        if transport.get_write_buffer_size():  # type: ignore[attr-defined]
            self.loop.call_later(self.relay.config.smtpd_timeout, transport.abort)

    # --- the timeout --------------------------------------------------------------------

    async def _wait(self, operation: Awaitable[_T]) -> _T:
        """Await a read from or a write to the client under the timeout."""
        self._waiting_since = now = self.loop.time()
        if self._timeout_handle is None:
            self._timeout_handle = self.loop.call_at(now + self._wait_limit, self._on_timer)
        try:
            return await operation
        finally:
            self._waiting_since = None

    def _on_timer(self) -> None:
        since = self._waiting_since
        if since is None:  # the relay is busy, not waiting: the next wait re-arms
            self._timeout_handle = None
            return
        due = since + self._wait_limit
        if self.loop.time() < due:
            self._timeout_handle = self.loop.call_at(due, self._on_timer)
            return
        self._timeout_handle = None
        self._timed_out()

    def _timed_out(self) -> None:
        """Postfix's SMTP_ERR_TIME: 421, log, hang up; abort if the 421 cannot go."""
        transport = self.transport
        if transport is None:
            return
        self._reason = _TIMEOUT
        if self._wait_limit == self.relay.config.smtpd_timeout:  # not the PROXY header
            transport.write(replies.timeout(self.hostname).encode() + b"\r\n")
        self._log_reason()
        if transport.get_write_buffer_size():  # type: ignore[attr-defined]
            transport.abort()
        else:
            transport.close()

    # --- the command loop ---------------------------------------------------------------

    async def _handle_client(self) -> None:
        try:
            await self._converse()
        except _Lost:
            self._reason = self._reason or _LOST
            self._hang_up()
        except (asyncio.CancelledError, ConnectionError):
            # The connection went away under the relay (timeout, drain, reset).
            self._reason = self._reason or _LOST
        except Exception:
            log.exception("%s: session error after %s", self.namaddr, self._where)
            if self.transport is not None:
                self.transport.abort()
        finally:
            self._end_session()

    async def _converse(self) -> None:
        assert self.session is not None
        config = self.relay.config
        if self._proxy_timeout is not None and not await self._read_proxy_header():
            return
        client = self._client_address()
        self.namaddr = f"unknown[{client}]"
        if not self._quiet:
            log.info("connect from %s", self.namaddr)
            if self.tls is not None:
                tls.log_established(self.namaddr, self.tls, config.smtpd_tls_loglevel)
            if not await self._admit(client):
                return
        await self.push(f"220 {config.smtpd_banner}")
        while self.transport is not None and not self.transport.is_closing():
            if self._errors >= config.smtpd_hard_error_limit:
                self._reason = _TOO_MANY_ERRORS
                await self.push(replies.too_many_errors(self.hostname))
                self._hang_up()
                return
            line = await self._read_command()
            if not await self._command(line):
                return

    async def _read_proxy_header(self) -> bool:
        """The PROXY header the load balancer sends first, within its own timeout."""
        assert self.session is not None and self._proxy_timeout is not None
        self._wait_limit = float(self._proxy_timeout)
        reader = self._reader
        if self._proxy_header is not None:  # read before the TLS handshake
            reader = asyncio.StreamReader()
            reader.feed_data(self._proxy_header)
            reader.feed_eof()
        try:
            self.session.proxy_data = await self._wait(get_proxy(reader))
        except asyncio.IncompleteReadError:
            # aiosmtpd reads the 5-octet signature outside its own error handling: a peer
            # that leaves within it is refused as one that leaves later in the header is.
            self.session.proxy_data = ProxyData(version=None).with_error(
                "PROXY exception: Connection lost while waiting for signature", False)
        self._wait_limit = float(self.relay.config.smtpd_timeout)
        proxy = self.session.proxy_data
        accepted = bool(proxy) and await self.relay.handle_PROXY(
            self, self.session, self.envelope, proxy)
        if not accepted:
            self._quiet = True
            self._hang_up()
            return False
        self._quiet = proxy.command == V2_CMD.LOCAL  # the NLB's health check
        return True

    def _client_address(self) -> str:
        assert self.session is not None
        return client_address(self.session)

    async def _admit(self, client: str) -> bool:
        """smtpd_client_connection_count_limit, counted per relay process."""
        config = self.relay.config
        count = self.relay.connected(client)
        self._counted_client = client
        limit = config.smtpd_client_connection_count_limit
        if limit and count > limit and client not in config.smtpd_client_event_limit_exceptions:
            log.warning("Connection concurrency limit exceeded: %d from %s for service smtp",
                        count, self.namaddr)
            await self.push(replies.too_many_connections(self.hostname, client))
            self._hang_up()
            return False
        return True

    async def _read_command(self) -> bytes:
        """One command line, without its LF and the CRs before it; a longer line than
        Postfix reads is cut, logged and answered as Postfix does. Raises _Lost at the
        end of input (an incomplete last line is not a command)."""
        reader = self._reader
        try:
            try:
                line = await self._wait(reader.readuntil(b"\n"))
            except asyncio.LimitOverrunError as exc:
                line = await self._read_long_line(exc.consumed)
        except asyncio.IncompleteReadError:
            raise _Lost from None
        return line.rstrip(b"\n").rstrip(b"\r")

    async def _read_long_line(self, consumed: int) -> bytes:
        reader = self._reader
        kept = await self._wait(reader.read(consumed))
        while not kept.endswith(b"\n"):
            try:
                piece = await self._wait(reader.readuntil(b"\n"))
            except asyncio.LimitOverrunError as exc:
                piece = await self._wait(reader.read(exc.consumed))
            if len(kept) < COMMAND_LINE_LIMIT:
                kept += piece[:COMMAND_LINE_LIMIT - len(kept)]
            if piece.endswith(b"\n"):
                break
        if len(kept) > COMMAND_LINE_LIMIT or not kept.endswith(b"\n"):
            kept = kept[:COMMAND_LINE_LIMIT]
            log.warning("%s: request longer than %d: %.30s...", self.namaddr,
                        COMMAND_LINE_LIMIT, printable(kept.decode("latin-1")))
        return kept

    async def _command(self, line: bytes) -> bool:
        """Run one command line; False when the session is over."""
        if b"\0" in line:  # Postfix's smtpd sees a C string: it ends at a NUL
            line = line[:line.index(b"\0")]
        text = command_text(line)
        if text is None:
            return await self._error(replies.BAD_UTF8)
        words = tokenize(text)
        if not words:
            return await self._error(replies.BAD_SYNTAX)
        verb = words[0].text.upper()
        handler = _COMMANDS.get(verb)
        if handler is None:
            self._where = "UNKNOWN"
            self._counts.setdefault("UNKNOWN", [0, 0])[1] += 1
            if (verb in _FORBIDDEN or not "A" <= verb[:1] <= "Z"
                    or _HEADER_NAME.match(words[0].text)):
                log.warning("non-SMTP command from %s: %.100s", self.namaddr,
                            printable(text))
                await self.push(replies.NON_SMTP_COMMAND)
                self._hang_up()
                return False
            return await self._error(replies.UNKNOWN_COMMAND)
        self._where = verb
        counts = self._counts.setdefault(verb, [0, 0])
        counts[1] += 1  # counted before it runs: a session may end inside it
        ok = await handler(self, words)
        counts[0] += ok
        if not ok:
            self._errors += 1
        if verb in _JUNK:
            self._junk += 1
            if self._junk > self.relay.config.smtpd_junk_command_limit:
                self._errors += 1
        return self.transport is not None and not self.transport.is_closing()

    async def _error(self, reply: str) -> bool:
        self._errors += 1
        await self.push(reply)
        return True

    async def push(self, status: str | bytes) -> None:
        """Write a reply; a client that makes many errors waits smtpd_error_sleep_time
        first (Postfix's smtpd_soft_error_limit)."""
        config = self.relay.config
        if self._errors >= config.smtpd_soft_error_limit and config.smtpd_error_sleep_time:
            await asyncio.sleep(config.smtpd_error_sleep_time)
        if self.transport is None or self.transport.is_closing():
            return
        data = status.encode("ascii", "replace") if isinstance(status, str) else status
        writer = self._writer
        writer.write(data + b"\r\n")
        # Usually the socket took the reply whole, and drain() would return at once.
        if writer.transport.get_write_buffer_size():  # type: ignore[attr-defined]
            await self._wait(writer.drain())

    # --- the session log ----------------------------------------------------------------

    def _log_reason(self) -> None:
        """Postfix's "lost connection after DATA (N bytes) from ..." and its kind."""
        reason, where = self._reason, self._where
        if reason is None or self._reason_logged or self._quiet:
            return
        self._reason_logged = True
        if where == _AFTER_DATA:
            log.info("%s after DATA (%d bytes) from %s", reason, self._data_bytes,
                     self.namaddr)
        elif where != _AFTER_EOM or reason != _LOST:
            log.info("%s after %s from %s", reason, where, self.namaddr)

    def _end_session(self) -> None:
        if self._counted_client is not None:
            self.relay.disconnected(self._counted_client)
            self._counted_client = None
        if self._quiet:
            return
        self._log_reason()
        stats = []
        success = total = 0
        for verb in _COMMAND_ORDER:
            if verb in self._counts:
                ok, count = self._counts[verb]
                stats.append(f"{verb.lower()}={ok}" + (f"/{count}" if ok != count else ""))
                success += ok
                total += count
        stats.append(f"commands={success}" + (f"/{total}" if success != total or not total
                                              else ""))
        log.info("disconnect from %s %s", self.namaddr, " ".join(stats))

    # --- commands (each returns True for success, False for an error reply) -------------

    async def _refuse_when_draining(self) -> bool:
        if not self.relay.draining:
            return False
        await self.push(replies.SHUTTING_DOWN)
        self._hang_up()
        return True

    async def smtp_HELO(self, words: list[Token]) -> bool:
        """HELO: the name is kept printable and neutered (edge.helo_name)."""
        return await self._helo(words, extended=False)

    async def smtp_EHLO(self, words: list[Token]) -> bool:
        """EHLO: as HELO, and the extensions Postfix would offer that the relay has."""
        return await self._helo(words, extended=True)

    async def _helo(self, words: list[Token], extended: bool) -> bool:
        if await self._refuse_when_draining():
            return False
        assert self.session is not None
        if len(words) < 2:
            await self.push(f"501 Syntax: {'EHLO' if extended else 'HELO'} hostname")
            return False
        self._set_rset_state()
        self.session.host_name = helo_name(words[1:])
        self.session.extended_smtp = extended
        if not extended:
            await self.push(f"250 {self.hostname}")
            return True
        await self.push("\r\n".join((
            f"250-{self.hostname}", "250-PIPELINING",
            f"250-SIZE {self.relay.config.message_size_limit}",
            *(f"250-{extension}" for extension in self._security_extensions()),
            "250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN", "250 SMTPUTF8")))
        return True

    def _security_extensions(self) -> list[str]:
        """STARTTLS until TLS is on (when offered), then AUTH with the mechanisms this
        session may use, in Postfix's place in the list."""
        config = self.relay.config
        found = []
        if self.tls is None and self.relay.starttls_context is not None:
            found.append("STARTTLS")
        offered = " ".join(mechanisms(config, self.tls is not None))
        if offered:
            found.append(f"AUTH {offered}")
            if config.broken_sasl_auth_clients:
                found.append(f"AUTH={offered}")
        return found

    @property
    def client(self) -> str:
        """The client's address (from the PROXY header behind the load balancer)."""
        return self._client_address()

    async def read_line(self) -> bytes:
        """One line from the client, under the timeout (an AUTH response)."""
        return await self._read_command()

    async def smtp_AUTH(self, words: list[Token]) -> bool:
        """AUTH (Postfix's smtpd_sasl_auth_cmd()): see sasl.auth_command."""
        return await sasl.auth_command(self, [word.text for word in words])

    async def smtp_STARTTLS(self, words: list[Token]) -> bool:
        """STARTTLS (smtpd.c starttls_cmd()): a new session over TLS; what the client sent
        before the handshake is discarded (tls.discard_buffered)."""
        if len(words) != 1:
            await self.push(tls.SYNTAX)
            return False
        if self.tls is not None:
            await self.push(tls.ALREADY_ACTIVE)
            return False
        context = self.relay.starttls_context
        if context is None:
            await self.push(replies.NOT_IMPLEMENTED)
            return False
        await self.push(tls.READY)
        tls.discard_buffered(self._reader)
        try:
            await self._writer.start_tls(
                context, ssl_handshake_timeout=self.relay.config.smtpd_starttls_timeout)
        except (OSError, TimeoutError) as exc:
            tls.log_handshake_error(self.namaddr, exc)
            self._reason = _LOST
            if self.transport is not None:
                self.transport.abort()
            return False
        self.transport = self._writer.transport
        self.tls = tls.TlsSession.of(self.transport)
        tls.log_established(self.namaddr, self.tls, self.relay.config.smtpd_tls_loglevel)
        # RFC 3207, 4.2: forget everything learnt in clear text, the EHLO too.
        assert self.session is not None
        self._set_rset_state()
        self.session.host_name = None
        self.session.extended_smtp = False
        self.session.auth_data = None
        self.session.authenticated = False
        return True

    async def smtp_MAIL(self, words: list[Token]) -> bool:
        """MAIL FROM, with Postfix's checks in Postfix's order (smtpd.c mail_cmd())."""
        if await self._refuse_when_draining():
            return False
        assert self.session is not None and self.envelope is not None
        if not self.session.host_name and self.relay.config.smtpd_helo_required:
            await self.push(replies.NEED_HELO)
            return False
        if self.in_transaction:
            await self.push(replies.NESTED_MAIL)
            return False
        if self.tls is None and self.relay.config.tls_level == "encrypt":
            await self.push(tls.MUST_STARTTLS)
            return False
        if len(words) < 3 or words[1].text.lower() != "from:":
            await self.push(replies.MAIL_SYNTAX)
            return False
        address = parse_path(words[2].text) if words[2].ok else None
        if address is None and words[2].ok and local_part_is_utf8(words[2].text):
            await self.push(self._utf8_local_part("Sender", words[2].text))
            return False
        if address is None or len(address) > MAX_ADDRESS_LENGTH:  # as RCPT: SES refuses
            self._log_bad_address(words[2])
            await self.push(replies.BAD_SENDER)
            return False
        size = 0
        for word in words[3:]:
            option = word.text.upper()
            # SMTPUTF8 (RFC 6531) needs nothing more here: what reaches SES is ASCII in
            # the envelope (A-label domains), and header octets pass as they came.
            if option in ("BODY=8BITMIME", "BODY=7BIT"):
                continue
            if option == "SMTPUTF8":  # named in the Received: header (UTF8SMTP)
                self.envelope.smtp_utf8 = True
                continue
            if option.startswith("SIZE="):
                if not option[5:].isdigit() or not option[5:].isascii():
                    await self.push(replies.BAD_SIZE)
                    return False
                size = int(option[5:])
            elif dsn_params.is_mail_parameter(option):
                reply = dsn_params.mail_parameter(dsn_params.state(self.envelope), word.text)
                if reply:
                    await self.push(reply)
                    return False
            elif option.startswith("AUTH="):  # RFC 4954 5: accepted, and not trusted
                if self.relay.authenticator is None:
                    await self.push(sasl.AUTH_DISABLED)
                    return False
            else:
                await self.push(replies.unsupported_option(printable(word.text)))
                return False
        if size > self.relay.config.message_size_limit:
            await self.push(replies.SIZE_EXCEEDED)
            return False
        reply = await self.relay.handle_MAIL(self, self.session, self.envelope,
                                             address or "<>", [w.text for w in words[3:]])
        await self.push(reply)
        return reply.startswith("2")

    async def smtp_RCPT(self, words: list[Token]) -> bool:
        """RCPT TO (smtpd.c rcpt_cmd()); the relay policy decides (relay.handle_RCPT)."""
        assert self.session is not None and self.envelope is not None
        if not self.in_transaction:
            await self.push(replies.NEED_MAIL)
            return False
        if len(words) < 3 or words[1].text.lower() != "to:":
            await self.push(replies.RCPT_SYNTAX)
            return False
        address = parse_path(words[2].text) if words[2].ok else None
        if address is None and words[2].ok and local_part_is_utf8(words[2].text):
            await self.push(self._utf8_local_part("Recipient", words[2].text))
            return False
        if not address:  # malformed, or <>
            self._log_bad_address(words[2])
            await self.push(replies.BAD_ADDRESS)
            return False
        dsn = dsn_params.RecipientParameters()
        for word in words[3:]:
            try:
                reply = dsn.take(word.text)
            except KeyError:
                reply = replies.unsupported_option(printable(word.text))
            if reply:
                await self.push(reply)
                return False
        reply = await self.relay.handle_RCPT(self, self.session, self.envelope, address, dsn)
        await self.push(reply)
        return reply.startswith("2") or reply.startswith("452")

    def _utf8_local_part(self, role: str, token: str) -> str:
        """The 553 for an address SES cannot take, logged as Postfix logs a reject."""
        shown = printable(token.strip("<>"))[:200]
        reply = replies.soften(replies.utf8_local_part(role, shown),
                               self.relay.config.soft_bounce)
        log.info("NOQUEUE: reject: %s from %s: %s", self._where, self.namaddr, reply)
        return reply

    def _log_bad_address(self, word: Token) -> None:
        if word.ok:  # Postfix warns about what its address parser refused
            log.warning("Illegal address syntax from %s in %s command: %s", self.namaddr,
                        self._where, printable(word.text)[:200])

    async def smtp_RSET(self, words: list[Token]) -> bool:
        """RSET."""
        if len(words) != 1:
            await self.push(replies.RSET_SYNTAX)
            return False
        self._set_rset_state()
        await self.push(replies.OK)
        return True

    async def smtp_NOOP(self, words: list[Token]) -> bool:
        """NOOP (arguments ignored, as Postfix does)."""
        await self.push(replies.OK)
        return True

    async def smtp_QUIT(self, words: list[Token]) -> bool:
        """QUIT: Postfix does not check its syntax."""
        self._cork()
        await self.push(replies.BYE)
        self._hang_up()
        return True

    def _cork(self) -> None:
        """Hold what is written next until the close, so that the last reply and the FIN
        leave in one segment: the client is woken once, not twice (on loopback, waking
        the peer is most of a send's cost). Plain TCP only: a TLS close first waits for
        the client's close_notify, which must not wait for the kernel's cork timer."""
        if self.tls is not None or self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None and _TCP_CORK is not None and sock.family in _INET:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)

    async def smtp_VRFY(self, words: list[Token]) -> bool:
        """VRFY: a relay has no mailboxes to verify (disable_vrfy_command = yes)."""
        await self.push(replies.VRFY_DISABLED)
        return False

    async def _not_implemented(self, words: list[Token]) -> bool:
        await self.push(replies.NOT_IMPLEMENTED)
        return False

    async def smtp_BDAT(self, words: list[Token]) -> bool:
        """BDAT without CHUNKING: what follows would be raw content, so hang up."""
        await self.push(replies.BDAT_NOT_IMPLEMENTED)
        self._hang_up()
        return False

    async def smtp_DATA(self, words: list[Token]) -> bool:
        """DATA: read the message into one buffer, then hand it to the relay."""
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push(replies.NO_VALID_RECIPIENTS if self.in_transaction
                            else replies.NEED_RECIPIENT)
            return False
        if len(words) != 1:
            await self.push(replies.DATA_SYNTAX)
            return False
        transaction = self.relay.begin_data(self.session, self.envelope, self.tls)
        await self.push(replies.START_DATA)
        self._where = _AFTER_DATA
        self._data_bytes = 0
        data = await self._read_data(transaction)
        self._where = _AFTER_EOM
        if data.state is _Data.TOO_MUCH:
            reply = replies.SIZE_EXCEEDED
        elif data.state is _Data.BARE_NEWLINE:
            log.info("%s: bare <LF> received from %s", transaction.queue_id, self.namaddr)
            reply = replies.bare_newline(self.hostname,
                                         self.relay.config.smtpd_forbid_bare_newline_reject_code)
        elif data.state is _Data.BARE_CR:
            reply = replies.bare_cr_in_header(self.hostname)
        else:
            buffer = data.buffer
            if data.header_lines is not None:  # the message had no body
                buffer = transaction.start_body(data.header_lines, separator=b"")
            if data.truncated:
                log.warning("%s: %d header(s) longer than header_size_limit (%d) from %s: "
                            "the excess was discarded", transaction.queue_id, data.truncated,
                            data.header_limit, self.namaddr)
            if data.long_lines and signed_with_long_lines(buffer):
                reply = replies.SIGNED_LONG_LINES
            else:
                reply = await self.relay.finish_data(transaction, buffer)
        self.relay.record_reply(transaction, reply)
        self._set_post_data_state()
        if reply.startswith("2"):  # Postfix forgives earlier errors once mail is accepted
            self._errors = self._junk = 0
        await self.push(reply)
        return reply.startswith("2")

    async def _read_data(self, transaction: Transaction) -> _DataReader:
        """Read DATA up to <CRLF>.<CRLF> and return the reader: its final state, the
        header lines if the body never started, and the buffer (Received: + checked
        headers + body). Raises _Lost if the input ends first: an incomplete message is
        never queued.

        Headers are read line by line while they are short (header_checks needs them
        whole, and they are few); the body, and any line longer than the stream's limit,
        in blocks of whole lines (_read_body)."""
        config = self.relay.config
        data = _DataReader(transaction, self.data_size_limit or 0, config.header_size_limit,
                           reject_bare_lf=transaction.rejects_bare_newline)
        carry = b""
        reader = self._reader
        while data.state is _Data.HEADERS:
            try:
                line = await self._wait(reader.readuntil(b"\r\n"))
            except asyncio.LimitOverrunError as exc:
                carry = await self._wait(reader.read(exc.consumed))
                self._data_bytes += len(carry)
                break
            except asyncio.IncompleteReadError as exc:
                self._data_bytes += len(exc.partial)
                raise _Lost from None
            self._data_bytes += len(line)
            if line == b".\r\n":
                return data
            data.lines(line, dotted=True)
        await self._read_body(data, carry)
        return data

    async def _read_body(self, data: _DataReader, start: bytes) -> None:
        """Read the rest of DATA in blocks of whole lines; raises _Lost at end of input.
        start is the beginning of a line already read.

        Each read takes everything the stream holds (never more than 2 x its limit plus one
        socket read, since the transport pauses above that), so what follows the final "."
        (pipelined commands) can be handed back to the stream in order. A line may be of
        any length: it is carried until its end arrives, unless the message is refused
        already, in which case the rest of the line is skipped."""
        reader = self._reader
        carry, at_line_start = bytearray(start), True
        while True:
            chunk = await self._wait(reader.read(_READ_ALL))
            if not chunk:
                raise _Lost
            self._data_bytes += len(chunk)
            if carry and at_line_start and b"\n" not in chunk:
                carry += chunk  # a long line goes on: no copy of what came before
                if not data.keeps(len(carry)):
                    carry, at_line_start = _trailing_cr(carry), False
                continue
            block = bytes(carry) + chunk if carry else chunk
            if not at_line_start:  # skip the rest of a line of a refused message
                eol = block.find(b"\r\n")
                if eol < 0:
                    carry = _trailing_cr(block)
                    continue
                block, at_line_start = block[eol + 2:], True
            end, dotted = _find_end(block)
            if end >= 0:
                data.lines(block[:end], dotted)
                rest = block[end + 3:]
                self._data_bytes -= len(rest)
                self._unread(rest)
                return
            cut = block.rfind(b"\r\n") + 2  # 1 if there is no line end
            if cut > 1:
                data.lines(block[:cut], dotted)
            carry = bytearray(block[cut:] if cut > 1 else block)
            if len(carry) > self.line_length_limit and not data.keeps(len(carry)):
                # Keep a trailing <CR>: the <LF> that ends the line may be next.
                carry, at_line_start = _trailing_cr(carry), False

    def _unread(self, rest: bytes) -> None:
        """Give back what the client sent after the final "." (pipelined commands)."""
        if not rest:
            return
        if self._reader.at_eof():
            # The client half-closed after pipelining; a stream cannot take data after
            # its end, so the session reads the rest from a new one.
            reader = asyncio.StreamReader(limit=self.line_length_limit)
            reader.feed_data(rest)
            reader.feed_eof()
            self._reader = reader
        else:
            self._reader.feed_data(rest)

    def _create_session(self) -> Session:
        session = super()._create_session()
        session.client_address = None  # set from the PROXY header or the socket peer
        return session


_COMMANDS: dict[str, Callable[[RelaySession, list[Token]], Awaitable[bool]]] = {
    "HELO": RelaySession.smtp_HELO,
    "EHLO": RelaySession.smtp_EHLO,
    "MAIL": RelaySession.smtp_MAIL,
    "RCPT": RelaySession.smtp_RCPT,
    "DATA": RelaySession.smtp_DATA,
    "BDAT": RelaySession.smtp_BDAT,
    "RSET": RelaySession.smtp_RSET,
    "NOOP": RelaySession.smtp_NOOP,
    "VRFY": RelaySession.smtp_VRFY,
    "QUIT": RelaySession.smtp_QUIT,
    "STARTTLS": RelaySession.smtp_STARTTLS,
    "AUTH": RelaySession.smtp_AUTH,
    # No fast flush: ETRN has nothing to do.
    "ETRN": RelaySession._not_implemented,
}


def _trailing_cr(data: bytes | bytearray) -> bytearray:
    """A skipped line's last <CR>, if it ends in one: the <LF> after it may end the line."""
    return bytearray(b"\r" if data.endswith(b"\r") else b"")


def _find_end(block: bytes) -> tuple[int, bool]:
    """Where the final "." line starts in block (which starts at a line start), or -1;
    and whether a line before it may start with a dot (dot-stuffed). One pass in C for
    the usual block, which has neither."""
    if block.startswith(b".\r\n"):
        return 0, False
    dotted = block.startswith(b".")
    found = block.find(b"\r\n.")
    while found >= 0:
        if block.startswith(b"\r\n", found + 3):
            return found + 2, dotted
        dotted = True
        found = block.find(b"\r\n.", found + 3)
    return -1, dotted


class _DataReader:
    """What DATA has read so far, with Postfix's rules applied line by line or to blocks of
    whole lines: size limit, bare <LF> (smtpd_forbid_bare_newline), dot-unstuffing,
    header_size_limit, and the header/body split where header_checks and the Received:
    header are applied. Lines may be of any length (Postfix's line_length_limit is only
    the size of the pieces it reads); long_lines tells whether one exceeds SMTP's 998."""

    def __init__(self, transaction: Transaction, size_limit: int, header_limit: int,
                 reject_bare_lf: bool) -> None:
        self.transaction = transaction
        self.size_limit = size_limit
        self.header_limit = header_limit
        self.reject_bare_lf = reject_bare_lf
        self.state = _Data.HEADERS
        self.header_lines: list[bytes] | None = []
        self.buffer = bytearray()
        self.size = 0
        self.long_lines = False
        self.truncated = 0  # headers cut at header_limit
        self._header_size = 0  # of the header being read, with its continuation lines
        self._cutting = False  # the rest of the current header is being discarded

    def keeps(self, pending: int) -> bool:
        """Whether the message still wants a line of which pending octets have arrived;
        False once it is refused (then the rest of the line is skipped)."""
        if self.state in (_Data.HEADERS, _Data.BODY) and self.size + pending > self.size_limit:
            self._refuse(_Data.TOO_MUCH)
        return self.state in (_Data.HEADERS, _Data.BODY)

    def lines(self, block: bytes, dotted: bool) -> None:
        """Whole lines of the message, the last ending in <CRLF>; dotted False when no
        line of the block starts with a dot. Header lines go line by line; the usual block
        of body lines (the rest of the block once the headers ended), all <CRLF> line
        ends, is checked and appended with a few passes in C; any other goes line by line,
        so that the first offence decides the reply exactly as when reading line by
        line."""
        if self.state is _Data.HEADERS:
            block = self._headers_of(block)
        if self.state is not _Data.BODY or not block:
            return
        if self.size + len(block) <= self.size_limit and (
                block.count(b"\n") == block.count(b"\r\n")):
            self.size += len(block)
            if not self.long_lines and not lines_fit(block):
                self.long_lines = True
            if dotted:
                if block[:1] == b".":
                    block = block[1:]
                block = block.replace(b"\r\n.", b"\r\n")
            self.buffer += block
            return
        self._each_line(block)

    def _headers_of(self, block: bytes) -> bytes:
        """The header lines at the start of block, line by line; what follows them (the
        body's first lines, checked as a block)."""
        start = 0
        while start < len(block) and self.state is _Data.HEADERS:
            end = block.index(b"\n", start) + 1
            self.line(block[start:end])
            start = end
        return block[start:]

    def _each_line(self, block: bytes) -> None:
        start = 0
        while start < len(block):
            end = block.index(b"\n", start) + 1
            self.line(block[start:end])
            start = end

    def line(self, line: bytes) -> None:
        """One line, ending in <LF> (<CRLF>, or a bare <LF>), not the final "."."""
        self.size += len(line)
        if self.state not in (_Data.HEADERS, _Data.BODY):
            return
        if self.size > self.size_limit:
            self._refuse(_Data.TOO_MUCH)
            return
        if line[-2:-1] != b"\r":
            if self.reject_bare_lf:
                self._refuse(_Data.BARE_NEWLINE)
                return
            line = line[:-1] + b"\r\n"  # normalize, as Postfix 3.9 does by default
        if len(line) > MAX_LINE + 2:
            self.long_lines = True
        if line[:1] == b".":
            line = line[1:]
        if self.state is _Data.BODY:
            self.buffer += line
            return
        header_lines = self.header_lines
        assert header_lines is not None
        continued = line[:1] in (b" ", b"\t") and bool(header_lines)
        if line == b"\r\n":
            self.buffer = self.transaction.start_body(header_lines, separator=line)
            self.header_lines = None
            self.state = _Data.BODY
        elif is_header_start(line) or continued:
            if b"\r" in line[:-2]:
                self._refuse(_Data.BARE_CR)
            else:
                self._header_line(line, continued)
        else:
            # A body line with no empty line before it: Postfix adds the separator.
            self.buffer = self.transaction.start_body(header_lines, separator=b"\r\n")
            self.buffer += line
            self.header_lines = None
            self.state = _Data.BODY

    def _header_line(self, line: bytes, continued: bool) -> None:
        """A header line, or what header_size_limit leaves of it (Postfix's cleanup keeps
        the start of a longer header and discards the excess)."""
        assert self.header_lines is not None
        if not continued:
            self._header_size, self._cutting = 0, False
        if self._cutting:
            return
        room = self.header_limit - self._header_size
        self._header_size += len(line) - 2
        if len(line) - 2 > room:
            self._cutting = True
            self.truncated += 1
            line = line[:room] + b"\r\n"
            if not line.strip():
                return
        self.header_lines.append(line)

    def _refuse(self, state: _Data) -> None:
        self.state = state
        self.buffer = bytearray()
