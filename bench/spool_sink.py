"""The spool's smtp-sink: an S3+SQS-compatible HTTP endpoint that keeps nothing.

`sesrelay serve` is pointed at it with AWS_ENDPOINT_URL, so the benchmark measures the
relay and not a network or an emulator. It answers, with responses botocore accepts:

- S3 PutObject (PUT /bucket/key) and DeleteObject (DELETE /bucket/key);
- SQS SendMessage and SendMessageBatch (AWS JSON 1.0, X-Amz-Target), with the
  MD5OfMessageBody SQS computes (AWS's work, which the bench counts on the sink's side);

and counts every request by operation. With --s3-latency-ms/--sqs-latency-ms it holds
each answer that long, as far away as AWS (the bench's sizing load). GET /_stats returns
the counts as JSON and POST /_reset zeroes them. It runs on one asyncio loop and parses
HTTP/1.1 itself (keep-alive, Content-Length and chunked bodies): a general HTTP framework
would make the sink, not the relay, the bottleneck. `--measure` drives it with a built-in
load generator and prints its capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import signal
import time
from collections import Counter

import uvloop

_OK = b"HTTP/1.1 200 OK\r\n"
# Request and message IDs: unique within a run is all a client needs, and a counter costs
# the sink less CPU (which the relay shares) than uuid4's random bytes.
_ids = itertools.count(1)


def _id() -> str:
    return f"{os.getpid():08x}-{next(_ids):024x}"


def _response(status: bytes, body: bytes = b"", headers: bytes = b"",
              content_type: bytes = b"application/x-amz-json-1.0") -> bytes:
    return (status + b"x-amzn-RequestId: " + _id().encode() + b"\r\n" + headers
            + b"Content-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class Counts:
    """Requests answered, by operation, and request body bytes received."""

    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.entries = 0  # SQS messages, counting each entry of a batch
        self.body_bytes = 0

    def as_json(self) -> bytes:
        """The counters for GET /_stats."""
        return json.dumps({"ops": dict(self.ops), "sqs_messages": self.entries,
                           "body_bytes": self.body_bytes}).encode()


class SinkProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: parse requests as bytes arrive, answer each in order."""

    def __init__(self, counts: Counts, latency: dict[str, float] | None = None) -> None:
        """latency: seconds to hold each answer, by service ("s3", "sqs")."""
        self.counts = counts
        self.latency = latency or {}
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.continued = False  # 100 Continue sent for the request being read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport to answer on."""
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Answer every complete request in the buffer."""
        self.buffer += data
        while self._one_request():
            pass

    def _one_request(self) -> bool:
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        assert self.transport is not None
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, consumed = _dechunk(buffer, start)
        else:
            length = int(headers.get("content-length", "0"))
            body, consumed = None, start + length
            if len(buffer) >= consumed:
                body = bytes(buffer[start:consumed])
        if body is None:
            if headers.get("expect", "").lower() == "100-continue" and not self.continued:
                # botocore sends large S3 bodies only after this, or after waiting 1 s.
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.continued = True
            return False
        self.continued = False
        del buffer[:consumed]
        answer = self._answer(method, target, headers, body)
        delay = self.latency.get("sqs" if "x-amz-target" in headers else
                                 "s3" if not target.startswith("/_") else "", 0.0)
        if delay:
            # As far away as AWS: the client waits; this loop serves others meanwhile.
            asyncio.get_running_loop().call_later(delay, self.transport.write, answer)
        else:
            self.transport.write(answer)
        return True

    def _answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
        counts = self.counts
        counts.body_bytes += len(body)
        amz_target = headers.get("x-amz-target", "")
        if amz_target:
            return self._sqs(amz_target.rpartition(".")[2], body)
        if target == "/_stats":
            return _response(_OK, counts.as_json(), content_type=b"application/json")
        if target == "/_reset":
            counts.ops.clear()
            counts.entries = counts.body_bytes = 0
            return _response(_OK, content_type=b"application/json")
        if method == "PUT":
            counts.ops["s3:PutObject"] += 1
            return _response(_OK, headers=b'ETag: "' + _id().encode() + b'"\r\n',
                             content_type=b"application/xml")
        if method == "DELETE":
            counts.ops["s3:DeleteObject"] += 1
            return _response(b"HTTP/1.1 204 No Content\r\n", content_type=b"application/xml")
        counts.ops[f"unsupported:{method}"] += 1
        return _response(b"HTTP/1.1 501 Not Implemented\r\n", content_type=b"text/plain")

    def _sqs(self, operation: str, body: bytes) -> bytes:
        request = json.loads(body)
        counts = self.counts
        counts.ops[f"sqs:{operation}"] += 1
        if operation == "SendMessage":
            counts.entries += 1
            answer = {"MessageId": _id(),
                      "MD5OfMessageBody": _md5(request["MessageBody"])}
        elif operation == "SendMessageBatch":
            entries = request["Entries"]
            counts.entries += len(entries)
            answer = {"Successful": [{"Id": e["Id"], "MessageId": _id(),
                                      "MD5OfMessageBody": _md5(e["MessageBody"])}
                                     for e in entries], "Failed": []}
        else:
            return _response(b"HTTP/1.1 400 Bad Request\r\n", json.dumps(
                {"__type": "com.amazonaws.sqs#UnsupportedOperation",
                 "message": operation}).encode())
        return _response(_OK, json.dumps(answer).encode())


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes | None, int]:
    """A chunked body starting at start: (body, bytes consumed), or (None, 0) if partial."""
    body = bytearray()
    pos = start
    while True:
        eol = buffer.find(b"\r\n", pos)
        if eol < 0:
            return None, 0
        size = int(bytes(buffer[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", pos - 2)
            if trailer_end < 0:
                return None, 0
            return bytes(body), trailer_end + 4
        if len(buffer) < pos + size + 2:
            return None, 0
        body += buffer[pos:pos + size]
        pos += size + 2


async def serve(host: str, port: int, ready_file: str | None,
                latency: dict[str, float] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; latency as SinkProtocol takes it."""
    counts = Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(counts, latency), host, port,
                                      backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    if ready_file:
        with open(ready_file + ".tmp", "w") as handle:
            handle.write(str(bound))
        os.replace(ready_file + ".tmp", ready_file)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def _requests(size: int) -> tuple[bytes, bytes]:
    """A PutObject of size bytes and a SendMessage, as botocore would send them."""
    put = (b"PUT /bench/spool/2026/01/01/X HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"Content-Type: message/rfc822\r\nContent-Length: " + str(size).encode()
           + b"\r\n\r\n" + b"x" * size)
    message = json.dumps({"QueueUrl": "http://127.0.0.1/1/q",
                          "MessageBody": json.dumps({"queue_id": "X" * 16, "size": size})})
    send = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: AmazonSQS.SendMessage\r\n"
            b"Content-Type: application/x-amz-json-1.0\r\nContent-Length: "
            + str(len(message)).encode() + b"\r\n\r\n" + message.encode())
    return put, send


async def _drive(port: int, connections: int, seconds: float, size: int) -> int:
    """Send PutObject+SendMessage pairs over keep-alive connections; return pairs done."""
    put, send = _requests(size)
    done = 0
    deadline = time.monotonic() + seconds

    async def one_connection() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            for request in (put, send):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            done += 1
        writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return done


def measure(port: int, processes: int, connections: int, seconds: float, size: int) -> float:
    """Capacity of the sink on port in messages/s (one PutObject + one SendMessage each),
    driven by several load-generator processes so that the generator is not the limit."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.starmap(_drive_sync, [(port, connections, seconds, size)] * processes)
    return sum(results) / seconds


def _drive_sync(port: int, connections: int, seconds: float, size: int) -> int:
    return asyncio.run(_drive(port, connections, seconds, size))


def main() -> None:
    """Run the sink, or measure a running one (--measure PORT)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", help="write the bound port here once listening")
    parser.add_argument("--measure", type=int, metavar="PORT",
                        help="measure the capacity of the sink on PORT and print msg/s")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--generators", type=int, default=1)
    parser.add_argument("--s3-latency-ms", type=float, default=0.0,
                        help="hold each S3 answer this long (AWS's distance)")
    parser.add_argument("--sqs-latency-ms", type=float, default=0.0,
                        help="hold each SQS answer this long")
    args = parser.parse_args()
    if args.measure:
        rate = measure(args.measure, args.generators, 16, args.seconds, args.size)
        print(json.dumps({"msg_per_s": rate}))
        return
    # On the loop the relay runs on (uvloop, a relay dependency): the sink stands for AWS,
    # whose CPU is not on the relay's machine, so its share of the two cores is kept small.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.host, args.port, args.ready_file,
                         {"s3": args.s3_latency_ms / 1000, "sqs": args.sqs_latency_ms / 1000}))


if __name__ == "__main__":
    main()
