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
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import TYPE_CHECKING

from aiosmtpd.smtp import SMTP, Session, syntax

from smtp_relay import replies
from smtp_relay.headers import is_header_start

if TYPE_CHECKING:
    from smtp_relay.relay import Relay

log = logging.getLogger("sesrelay.relay")


_TIMEOUT_RESET_BYTES = 256 * 1024


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

    async def _read_data(self, transaction) -> tuple[_Data | None, list[bytes] | None,
                                                        bytearray]:
        """Read DATA up to <CRLF>.<CRLF>. Returns the final state, the header lines if the
        body never started, and the buffer (Received: + checked headers + body)."""
        limit = self.data_size_limit or 0
        state = _Data.HEADERS
        header_lines: list[bytes] | None = []
        buffer = bytearray()
        size = 0
        partial = False  # the previous piece was a line longer than the reader's limit
        next_timeout_reset = _TIMEOUT_RESET_BYTES
        reader = self._reader
        while True:
            try:
                line = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:
                line = await reader.read(exc.consumed)
                if state in (_Data.HEADERS, _Data.BODY):
                    state = _Data.TOO_LONG
                    buffer = bytearray()
                partial = True
                continue
            except (asyncio.IncompleteReadError, ConnectionError):
                return None, None, buffer
            if partial:
                partial = False
                continue
            if line == b".\r\n":
                return state, header_lines, buffer
            size += len(line)
            if size >= next_timeout_reset:
                # smtpd_timeout is an idle limit, not a limit on a long upload.
                self._reset_timeout()
                next_timeout_reset = size + _TIMEOUT_RESET_BYTES
            if state not in (_Data.HEADERS, _Data.BODY):
                continue
            if size > limit:
                state = _Data.TOO_MUCH
                buffer = bytearray()
                continue
            end = len(line)
            if line.find(b"\n") != end - 1 or line.find(b"\r") != end - 2:
                state = _Data.BARE_NEWLINE
                buffer = bytearray()
                continue
            if line[:1] == b".":
                line = line[1:]
            if state is _Data.BODY:
                buffer += line
                continue
            assert header_lines is not None
            if line == b"\r\n":
                buffer = transaction.start_body(header_lines, separator=line)
                header_lines = None
                state = _Data.BODY
            elif is_header_start(line) or (line[:1] in (b" ", b"\t") and header_lines):
                header_lines.append(line)
            else:
                # A body line with no empty line before it: Postfix adds the separator.
                buffer = transaction.start_body(header_lines, separator=b"\r\n")
                buffer += line
                header_lines = None
                state = _Data.BODY

    def _create_session(self) -> Session:
        session = super()._create_session()
        session.client_address = None  # set from the PROXY header or the socket peer
        return session
