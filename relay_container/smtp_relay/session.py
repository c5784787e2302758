"""One SMTP connection: aiosmtpd's protocol with Postfix's replies, limits and DATA rules.

aiosmtpd gives the SMTP state machine and the PROXY protocol parser. This subclass adds
what a Postfix relay does that aiosmtpd does not: 552 5.3.4 size replies, rejection of bare
<CR>/<LF> in DATA (SMTP smuggling), header_checks and the Received: header applied while
DATA is read into a single buffer, source routes kept visible to the relay policy, and
421 to new transactions once the relay is draining.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import TYPE_CHECKING

from aiosmtpd.smtp import SMTP, Session, syntax

from smtp_relay import replies
from smtp_relay.headers import is_header_start

if TYPE_CHECKING:
    from smtp_relay.relay import Relay, Transaction

log = logging.getLogger("sesrelay.relay")


_TIMEOUT_RESET_BYTES = 256 * 1024
# <dot-atom@domain> with plain labels: what nearly every client sends. Anything else
# (quoted local parts, source routes, address literals, trailing dots) takes the full parser.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_SIMPLE_PATH = re.compile(rf"\s*<({_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*)>(.*)\Z",
                          re.DOTALL)
# Larger than anything a StreamReader holds: one read() takes all of it (see _read_body).
_READ_ALL = 1 << 24


class _Data(enum.Enum):
    HEADERS = 1
    BODY = 2
    TOO_MUCH = 3
    TOO_LONG = 4
    BARE_NEWLINE = 5


class RelaySession(SMTP):
    """An SMTP connection to the relay."""

    def __init__(self, relay: Relay, **kwargs: object) -> None:
        self.relay = relay
        config = relay.config
        banner = config.smtpd_banner
        # aiosmtpd greets with "220 <hostname> <ident>"; RFC 5321 wants the host name first.
        ident = banner.removeprefix(config.myhostname).lstrip() or config.mail_name
        super().__init__(
            relay,
            hostname=config.myhostname,
            ident=ident,
            data_size_limit=config.message_size_limit,
            enable_SMTPUTF8=False,
            decode_data=False,
            timeout=config.smtpd_timeout,
            proxy_protocol_timeout=(config.smtpd_upstream_proxy_timeout
                                    if config.smtpd_upstream_proxy_protocol else None),
            **kwargs,  # type: ignore[arg-type]
        )

    def __dir__(self) -> list[str]:
        """Only the command and AUTH method names: aiosmtpd builds its command tables
        from dir() for every connection, and the full list made that a measurable part
        of each connection's cost (docs/BENCHMARKS.md)."""
        return _COMMAND_NAMES

    # --- connection lifecycle -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register with the relay so that a drain can find idle sessions."""
        super().connection_made(transport)
        self.relay.sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        """Unregister from the relay."""
        self.relay.sessions.discard(self)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        """The client half-closed: answer what it already sent (say a pipelined DATA and
        QUIT) before closing, instead of aiosmtpd's cancelling the session at once."""
        return asyncio.StreamReaderProtocol.eof_received(self)

    async def _handle_client(self) -> None:
        try:
            await super()._handle_client()
        except (asyncio.IncompleteReadError, ConnectionError):
            # A peer that connects and leaves (a TCP probe) is not an error.
            if self.transport is not None:
                self.transport.close()

    @property
    def in_transaction(self) -> bool:
        """True between MAIL FROM and the reply to DATA: the client is owed an answer."""
        return self.envelope is not None and self.envelope.mail_from is not None

    def close_idle(self) -> None:
        """Tell an idle client the relay is going away, and hang up."""
        if self.transport is not None and not self.in_transaction:
            self.transport.write(replies.SHUTTING_DOWN.encode() + b"\r\n")
            self.transport.close()

    async def _refuse_when_draining(self) -> bool:
        if not self.relay.draining:
            return False
        await self.push(replies.SHUTTING_DOWN)
        if self.transport is not None:
            self.transport.close()
        return True

    # --- commands -----------------------------------------------------------------------

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """Like aiosmtpd's, but a source route (<@a,@b:user@domain>) stays in the address,
        so that the policy can see sender-specified routing."""
        if not arg:
            return "", ""
        simple = _SIMPLE_PATH.match(arg)
        if simple:  # the usual <local@domain>: no need for the full RFC 5322 parser
            return simple.group(1), simple.group(2).strip()
        try:
            if arg.lstrip().startswith("<"):
                parsed, rest = get_angle_addr(arg)
                route = getattr(parsed, "route", None)
                address = parsed.addr_spec
                if route:
                    address = ",".join("@" + hop for hop in route) + ":" + address
            else:
                parsed, rest = get_addr_spec(arg)
                address = parsed.addr_spec
        except HeaderParseError:
            return None, None
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        """EHLO, refused with 421 while draining."""
        if await self._refuse_when_draining():
            return
        await super().smtp_EHLO(hostname)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        """HELO, refused with 421 while draining."""
        if await self._refuse_when_draining():
            return
        await super().smtp_HELO(hostname)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        """MAIL FROM, with Postfix's SIZE= reply, refused with 421 while draining."""
        if await self._refuse_when_draining():
            return
        limit = self.relay.config.message_size_limit
        for param in (arg or "").upper().split()[1:]:
            name, _, value = param.partition("=")
            if name == "SIZE" and value.isdigit() and int(value) > limit:
                await self.push(replies.SIZE_EXCEEDED)
                return
        await super().smtp_MAIL(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """DATA: read the message into one buffer, then hand it to the relay."""
        if await self.check_helo_needed():
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        transaction = self.relay.begin_data(self.session, self.envelope)
        await self.push(replies.START_DATA)
        state, header_lines, buffer = await self._read_data(transaction)
        if state is None:
            return  # connection lost
        if state is _Data.BARE_NEWLINE:
            await self.push(replies.bare_newline(self.hostname))
            self._set_post_data_state()
            assert self.transport is not None
            self.transport.close()
            return
        if state is _Data.TOO_MUCH:
            reply = replies.SIZE_EXCEEDED
        elif state is _Data.TOO_LONG:
            reply = replies.LINE_TOO_LONG
        else:
            if header_lines is not None:  # the message had no body
                buffer = transaction.start_body(header_lines, separator=b"")
            reply = await self.relay.finish_data(transaction, buffer)
        self.relay.record_reply(transaction, reply)
        self._set_post_data_state()
        await self.push(reply)

    async def _read_data(self, transaction: Transaction
                         ) -> tuple[_Data | None, list[bytes] | None, bytearray]:
        """Read DATA up to <CRLF>.<CRLF>. Returns the final state, the header lines if the
        body never started, and the buffer (Received: + checked headers + body).

        Headers are read line by line (header_checks needs them whole, and they are few);
        the body, where nearly all the bytes are, in blocks of whole lines (_read_body)."""
        data = _DataReader(transaction, self.data_size_limit or 0, self.line_length_limit)
        partial = False  # the previous piece was a line longer than the reader's limit
        reader = self._reader
        while data.state is _Data.HEADERS:
            if data.size >= _TIMEOUT_RESET_BYTES:
                # A long header section is an upload too (see _read_body).
                self._reset_timeout()
            try:
                line = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:
                await reader.read(exc.consumed)
                data.too_long()
                partial = True
                break
            except (asyncio.IncompleteReadError, ConnectionError):
                return None, None, data.buffer
            if line == b".\r\n":
                return data.state, data.header_lines, data.buffer
            data.line(line)
        if not await self._read_body(data, at_line_start=not partial):
            return None, None, data.buffer
        return data.state, data.header_lines, data.buffer

    async def _read_body(self, data: _DataReader, at_line_start: bool) -> bool:
        """Read the rest of DATA in blocks of whole lines; False if the connection was lost.

        Each read takes everything the stream holds (never more than 2 x its limit plus one
        socket read, since the transport pauses above that), so what follows the final "."
        (pipelined commands) can be handed back to the stream in order."""
        reader = self._reader
        carry = b""  # the start of a line whose end has not arrived yet
        next_timeout_reset = _TIMEOUT_RESET_BYTES
        received = 0
        while True:
            try:
                chunk = await reader.read(_READ_ALL)
            except ConnectionError:
                return False
            if not chunk:
                return False
            received += len(chunk)
            if received >= next_timeout_reset:
                # smtpd_timeout is an idle limit, not a limit on a long upload.
                self._reset_timeout()
                next_timeout_reset = received + _TIMEOUT_RESET_BYTES
            block = carry + chunk if carry else chunk
            if not at_line_start:  # skip the rest of an overlong line
                eol = block.find(b"\r\n")
                if eol < 0:
                    carry = block[-1:] if block.endswith(b"\r") else b""
                    continue
                block, at_line_start = block[eol + 2:], True
            end, dotted = _find_end(block)
            if end >= 0:
                data.lines(block[:end], dotted)
                self._unread(block[end + 3:])
                return True
            cut = block.rfind(b"\r\n") + 2  # 1 if there is no line end
            if cut > 1:
                data.lines(block[:cut], dotted)
                carry = block[cut:]
            else:
                carry = block
            if len(carry) - carry.endswith(b"\r") > data.line_limit:
                data.too_long()
                # Keep a trailing <CR>: the <LF> that ends the overlong line may be next.
                carry, at_line_start = carry[-1:] if carry.endswith(b"\r") else b"", False

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


def _lines_fit(block: bytes, limit: int) -> bool:
    """No line of block (whole <CRLF> lines, no bare <CR> or <LF>) has more than limit
    octets before its <CRLF>. Each step jumps to the last line end within limit + 2 octets
    of a line start: a few C searches per kilobyte, not a split of every line."""
    start, size = 0, len(block)
    while size - start > limit + 2:
        end = block.rfind(b"\n", start, start + limit + 2)
        if end < 0:
            return False
        start = end + 1
    return True


class _DataReader:
    """What DATA has read so far, with Postfix's rules applied line by line or to blocks of
    whole lines: size limit, overlong lines, bare <CR>/<LF>, dot-unstuffing, and the
    header/body split where header_checks and the Received: header are applied."""

    def __init__(self, transaction: Transaction, size_limit: int, line_limit: int) -> None:
        self.transaction = transaction
        self.size_limit = size_limit
        self.line_limit = line_limit  # longest line content the SMTP stream accepts
        self.state = _Data.HEADERS
        self.header_lines: list[bytes] | None = []
        self.buffer = bytearray()
        self.size = 0

    def too_long(self) -> None:
        """A line longer than line_limit: the message will be refused."""
        if self.state in (_Data.HEADERS, _Data.BODY):
            self.state = _Data.TOO_LONG
            self.buffer = bytearray()

    def lines(self, block: bytes, dotted: bool) -> None:
        """Whole lines (each ending in <CRLF>) of the body; dotted False when no line of
        the block starts with a dot. The usual block, all clean, is checked and appended
        with a few passes in C; any other goes line by line, so that the first offence
        decides the reply exactly as when reading line by line."""
        if self.state is not _Data.BODY:
            if self.state is _Data.HEADERS:
                self._each_line(block)
            return
        crlf = block.count(b"\r\n")
        if (self.size + len(block) <= self.size_limit and block.count(b"\n") == crlf
                and block.count(b"\r") == crlf and _lines_fit(block, self.line_limit)):
            self.size += len(block)
            if dotted:
                if block[:1] == b".":
                    block = block[1:]
                block = block.replace(b"\r\n.", b"\r\n")
            self.buffer += block
            return
        self._each_line(block)

    def _each_line(self, block: bytes) -> None:
        for piece in block.split(b"\r\n")[:-1]:
            if len(piece) > self.line_limit:
                self.too_long()
            else:
                self.line(piece + b"\r\n")

    def line(self, line: bytes) -> None:
        """One line, ending in <CRLF>, not the final "."."""
        self.size += len(line)
        if self.state not in (_Data.HEADERS, _Data.BODY):
            return
        if self.size > self.size_limit:
            self.state = _Data.TOO_MUCH
            self.buffer = bytearray()
            return
        end = len(line)
        if line.find(b"\n") != end - 1 or line.find(b"\r") != end - 2:
            self.state = _Data.BARE_NEWLINE
            self.buffer = bytearray()
            return
        if line[:1] == b".":
            line = line[1:]
        if self.state is _Data.BODY:
            self.buffer += line
            return
        header_lines = self.header_lines
        assert header_lines is not None
        if line == b"\r\n":
            self.buffer = self.transaction.start_body(header_lines, separator=line)
            self.header_lines = None
            self.state = _Data.BODY
        elif is_header_start(line) or (line[:1] in (b" ", b"\t") and header_lines):
            header_lines.append(line)
        else:
            # A body line with no empty line before it: Postfix adds the separator.
            self.buffer = self.transaction.start_body(header_lines, separator=b"\r\n")
            self.buffer += line
            self.header_lines = None
            self.state = _Data.BODY


# RelaySession's smtp_* and auth_* attributes, the names aiosmtpd looks for.
_COMMAND_NAMES = [name for name in dir(RelaySession) if name.startswith(("smtp_", "auth_"))]
