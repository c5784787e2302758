"""TLS in the relay: STARTTLS inside a session, and listeners with implicit TLS (port 465,
Postfix's smtpd_tls_wrappermode), with Postfix's replies and log lines.

The handshakes and the encryption are Python's ssl module (OpenSSL) under asyncio's
start_tls; this module only decides when they happen and what the client sees:

- STARTTLS: whatever the client sent after the command and before the handshake is
  plaintext that an attacker in the path may have injected (CVE-2011-0411): it is
  discarded, never read as commands.
- Implicit TLS behind the load balancer: the PROXY v2 header arrives in clear text before
  the TLS ClientHello. ImplicitTlsGate reads exactly the header's octets from the socket
  (a buffered protocol that asks for no more than the header still needs), so the first
  octet of the ClientHello is the first octet the TLS layer sees.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiosmtpd.proxy_protocol import V2_SIGNATURE

from smtp_relay.edge import printable

if TYPE_CHECKING:
    from smtp_relay.relay import Relay

log = logging.getLogger("sesrelay.relay")

READY = "220 2.0.0 Ready to start TLS"  # smtpd.c starttls_cmd()
SYNTAX = "501 5.5.4 Syntax: STARTTLS"
ALREADY_ACTIVE = "554 5.5.1 Error: TLS already active"
MUST_STARTTLS = "530 5.7.0 Must issue a STARTTLS command first"  # mail_cmd(), encrypt

_V1_MAX = 107  # the longest PROXY v1 line, CRLF included (the specification, 2.1)
_V2_FIXED = 16  # signature (12), version and command, family, length (2)
_V2_MAX_TLVS = 4096  # far more than any load balancer sends after the addresses


@dataclass(frozen=True)
class TlsSession:
    """What a session's TLS is, for the log, the Received: header and the envelope."""

    protocol: str  # TLSv1.3
    cipher: str  # TLS_AES_256_GCM_SHA384
    bits: int

    @classmethod
    def of(cls, transport: asyncio.BaseTransport) -> TlsSession:
        """The TLS parameters of a transport whose handshake is done."""
        ssl_object = transport.get_extra_info("ssl_object")
        name, _, bits = ssl_object.cipher()
        return cls(ssl_object.version() or "unknown", name, int(bits or 0))

    def describe(self) -> str:
        """Postfix's wording: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)."""
        return f"{self.protocol} with cipher {self.cipher} ({self.bits}/{self.bits} bits)"

    def received_clause(self) -> str:
        """The comment Postfix puts in Received: with smtpd_tls_received_header = yes."""
        return f"(using {self.describe()})"


def log_established(namaddr: str, tls: TlsSession, loglevel: int) -> None:
    """smtpd_tls_loglevel 1 and up: Postfix's one line per TLS session."""
    if loglevel >= 1:
        log.info("Anonymous TLS connection established from %s: %s", namaddr, tls.describe())


def log_handshake_error(namaddr: str, error: BaseException) -> None:
    """A failed handshake, as Postfix logs SSL_accept errors (at every log level)."""
    reason = getattr(error, "reason", None) or type(error).__name__
    log.info("SSL_accept error from %s: %s", namaddr, printable(str(reason)))


def discard_buffered(reader: asyncio.StreamReader) -> int:
    """Drop what the client sent after STARTTLS before the handshake; return its size.

    asyncio has no public way to empty a StreamReader; aiosmtpd's own STARTTLS does the
    same (RFC 3207, section 4.2: the server must discard such data)."""
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
    size = len(buffer)
    buffer.clear()
    return size


class ImplicitTlsGate(asyncio.BufferedProtocol):
    """The first protocol of a connection to an implicit-TLS listener: reads the PROXY
    header in clear text (when smtpd_upstream_proxy_protocol is set), then hands the
    connection to a RelaySession over TLS."""

    def __init__(self, relay: Relay, context: ssl.SSLContext) -> None:
        self.relay = relay
        self.context = context
        self.transport: asyncio.Transport | None = None
        self._header = bytearray(_V2_FIXED + _V2_MAX_TLVS)
        self._have = 0
        self._need = 5  # the signature's first octets tell v1 from v2
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start reading the PROXY header, or the handshake at once without one."""
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        config = self.relay.config
        if config.smtpd_upstream_proxy_protocol:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(config.smtpd_upstream_proxy_timeout, transport.abort)
        else:
            self._start(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Never more than the header still needs: the rest is TLS."""
        return memoryview(self._header)[self._have:self._need]

    def buffer_updated(self, nbytes: int) -> None:
        """Octets of the header arrived; once it is whole, start TLS."""
        self._have += nbytes
        if self._have < self._need:
            return
        header = self._header
        if self._have == 5 and header[:5] == V2_SIGNATURE[:5]:
            self._need = _V2_FIXED
        elif self._have == _V2_FIXED and header[:5] == V2_SIGNATURE[:5]:
            length = struct.unpack("!H", header[14:16])[0]
            if length > _V2_MAX_TLVS:
                assert self.transport is not None
                self.transport.abort()
                return
            self._need = _V2_FIXED + length
            if length == 0:
                self._start(bytes(header[:self._need]))
        elif header[:5] == b"PROXY" and not header[:self._have].endswith(b"\r\n"):
            if self._have >= _V1_MAX:
                self._start(bytes(header[:self._have]))  # malformed: the session refuses it
            else:
                self._need += 1
        else:  # a whole header, or something else that the session refuses quietly
            self._start(bytes(header[:self._have]))

    def eof_received(self) -> bool:
        """The peer left before the header was whole (a port probe): close quietly."""
        return False

    def connection_lost(self, error: Exception | None) -> None:
        """Stop the PROXY timer; a handshake under way fails on its own."""
        if self._timer is not None:
            self._timer.cancel()

    def _start(self, proxy_header: bytes | None) -> None:
        assert self.transport is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport.pause_reading()
        self._task = asyncio.get_running_loop().create_task(self._handshake(proxy_header))

    async def _handshake(self, proxy_header: bytes | None) -> None:
        from smtp_relay.session import RelaySession  # the session module imports this one

        transport = self.transport
        assert transport is not None
        session = RelaySession(self.relay, proxy_header=proxy_header)
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(
                transport, session, self.context, server_side=True,
                ssl_handshake_timeout=self.relay.config.smtpd_starttls_timeout)
        except (OSError, TimeoutError) as exc:
            if not (proxy_header and _is_local(proxy_header)):  # not a health check
                peer = transport.get_extra_info("peername")
                address = peer[0] if isinstance(peer, tuple) else "unknown"
                log_handshake_error(f"unknown[{address}]", exc)
            transport.abort()
            return
        session.connection_made(secure)


def _is_local(header: bytes) -> bool:
    """A PROXY v2 LOCAL header: the load balancer's own health check."""
    return header[:12] == V2_SIGNATURE and len(header) > 12 and header[12] & 0x0F == 0
