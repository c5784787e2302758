"""HTTP/1.1 over asyncio streams, with keep-alive connections, for spool_client.py.

Just what the relay's S3 and SQS requests need: one origin per pool, a request with a
Content-Length body, a response with a Content-Length or chunked body. Every failure says
whether the request may have reached the server (docs/COMMIT.md): a connection that could
not be opened, or timed out opening, certainly did not carry it; once its first byte was
written, a lost connection or a late answer leaves the outcome unknown.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

# Idle connections older than this are closed rather than reused: a server may close an
# idle connection at any time (AWS endpoints after about 20 s), and a request written to a
# connection the server is closing has an unknown outcome.
IDLE_SECONDS = 10.0
MAX_HEAD = 64 * 1024  # a response head longer than this is not from S3 or SQS
CHUNK = 1024 * 1024  # bodies from this size are written in pieces of this size
# How long a request that asked for "100 Continue" waits for it before it sends its body
# anyway (botocore's wait, for servers that never answer the header).
CONTINUE_WAIT = 1.0


class HttpError(Exception):
    """No response. certain: the request certainly did not reach the server."""

    def __init__(self, message: str, certain: bool) -> None:
        super().__init__(message)
        self.certain = certain


@dataclass(frozen=True)
class Response:
    """A response: status, headers (names in lower case) and body."""

    status: int
    headers: dict[str, str]
    body: bytes
    keep_alive: bool = True  # the server keeps the connection open after it


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0


class Origin:
    """Keep-alive connections to one scheme://host:port."""

    def __init__(self, url: str, connect_timeout: float, read_timeout: float,
                 ca_file: str | None = None, expect_continue_min: int | None = None) -> None:
        """ca_file: the certificates to trust for HTTPS (botocore's ca_bundle), else the
        system's. expect_continue_min: a body of this size or more is sent only once the
        server has answered "100 Continue" (or not answered in CONTINUE_WAIT), so that a
        refusal (S3's SlowDown, an expired token) comes before megabytes are sent."""
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.hostname = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        default = 443 if self.https else 80
        # The Host header, as botocore derives it from the URL (no default port).
        self.host = self.hostname if self.port == default else f"{self.hostname}:{self.port}"
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._ssl = ssl.create_default_context(cafile=ca_file) if self.https else None
        self._expect_continue_min = expect_continue_min
        self._idle: list[_Connection] = []

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if (now - connection.idle_since < IDLE_SECONDS
                    and not connection.writer.is_closing() and not connection.reader.at_eof()):
                return connection
            connection.writer.close()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.hostname, self.port, ssl=self._ssl,
                                        limit=MAX_HEAD), self.connect_timeout)
        except (TimeoutError, OSError) as exc:
            raise HttpError(f"could not connect to {self.host}: {exc!r}", True) from exc
        return _Connection(reader, writer)

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes | bytearray | memoryview = b"") -> Response:
        """Send one request on an idle or new connection and read its response."""
        connection = await self._connection()
        expect = self._expect_continue_min is not None and len(body) >= self._expect_continue_min
        if expect:  # not signed, as botocore leaves it out of the signature too
            headers = {**headers, "Expect": "100-continue"}
        head = "".join([f"{method} {path} HTTP/1.1\r\n",
                        *(f"{name}: {value}\r\n" for name, value in headers.items()),
                        "\r\n"]).encode("latin-1")
        try:
            if expect:
                connection.writer.write(head)
                early = await self._await_continue(connection)
                if early is not None:  # answered before the body: the body was not sent
                    connection.writer.close()
                    return early
            if len(body) < CHUNK and not expect:
                connection.writer.write(head + body)
            else:  # in chunks, so the transport never holds a copy of a large body
                if not expect:
                    connection.writer.write(head)
                view = memoryview(body)
                for start in range(0, len(view), CHUNK):
                    connection.writer.write(view[start:start + CHUNK])
                    async with asyncio.timeout(self.read_timeout):
                        await connection.writer.drain()
            # Usually the socket took the request whole: nothing to drain. (A connection
            # lost meanwhile is found by the read.) asyncio.timeout, not wait_for: wait_for
            # runs what it awaits as a task of its own.
            if connection.writer.transport.get_write_buffer_size():  # type: ignore[attr-defined]
                async with asyncio.timeout(self.read_timeout):
                    await connection.writer.drain()
            async with asyncio.timeout(self.read_timeout):
                response = await _read_response(connection.reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:  # OSError includes TimeoutError
            connection.writer.close()
            what = "no answer in time" if isinstance(exc, TimeoutError) else \
                f"connection lost: {exc!r}"
            raise HttpError(f"{method} {self.host}{path}: {what}", False) from exc
        except BaseException:
            connection.writer.close()  # cancelled mid-request: the stream is unusable
            raise
        if not response.keep_alive:
            connection.writer.close()
        else:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        return response

    async def _await_continue(self, connection: _Connection) -> Response | None:
        """After a head with "Expect: 100-continue": None when the body is to follow (the
        server said "100 Continue", or nothing within CONTINUE_WAIT), else the server's
        final answer, given without the body."""
        await asyncio.wait_for(connection.writer.drain(), self.read_timeout)
        try:
            # A cancelled readuntil leaves the stream's buffer as it was.
            head = await asyncio.wait_for(connection.reader.readuntil(b"\r\n\r\n"),
                                          CONTINUE_WAIT)
        except TimeoutError:
            return None
        version, status = _status_line(head)
        if status == 100:
            return None
        response = await asyncio.wait_for(_read_rest(connection.reader, version, status,
                                                     head), self.read_timeout)
        return Response(response.status, response.headers, response.body, keep_alive=False)

    def close(self) -> None:
        """Close the idle connections."""
        for connection in self._idle:
            connection.writer.close()
        self._idle.clear()


def _status_line(head: bytes) -> tuple[str, int]:
    """(HTTP version, status) of a response head."""
    version, status_text = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)[:2]
    return version, int(status_text)


async def _read_response(reader: asyncio.StreamReader) -> Response:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        version, status = _status_line(head)
        if status != 100:  # a 100 Continue (late, or not asked for) precedes the answer
            return await _read_rest(reader, version, status, head)


async def _read_rest(reader: asyncio.StreamReader, version: str, status: int,
                     head_bytes: bytes) -> Response:
    """The response whose head was read: its headers and body."""
    head = head_bytes.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                break
            body += await reader.readexactly(size + 2)
            del body[-2:]
        return Response(status, headers, bytes(body), keep_alive)
    length = int(headers.get("content-length", "0"))
    return Response(status, headers, await reader.readexactly(length) if length else b"",
                    keep_alive)
