"""A fault-injecting HTTP proxy between sesrelay and the AWS emulation.

Point AWS_ENDPOINT_URL (or a client's endpoint_url) at the proxy: it forwards each AWS
request to moto's server and can, per operation, lose the answer after the request was
delivered (the service acted, the client never hears), drop the request before it was
delivered (the service did nothing, but the client cannot know), hold the answer past the
client's read timeout, answer an AWS error, fail chosen entries of an SQS batch, and call
a test's function with the request first (to hold it, look at it, or act at the moment
the service does). moto's own state (its queues, what its SES accepted) is then the oracle
of what really happened.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

LOSE_ANSWER, SLOW_ANSWER = "lose_answer", "slow_answer"
# Answer with an AWS error (Rule.status, Rule.code) instead of forwarding: the service did
# nothing, as when it throttles or refuses a request.
ERROR_ANSWER = "error_answer"
# Close the connection without forwarding: the service never saw the request, and the
# client, whose request was written, cannot know that.
DROP = "drop"
# Forward unchanged: for a rule that only calls its function.
PASS = "pass"
# SQS SendMessageBatch: answer the entries Rule.entries picks as "Failed" (SQS did not
# queue them, Rule.code says why), and forward the others.
FAIL_ENTRIES = "fail_entries"
SQS_JSON = "application/x-amz-json-1.0"


def operation(method: str, path: str, headers: dict[str, str]) -> str:
    """service.Operation of an AWS request, as botocore names it."""
    target = headers.get("x-amz-target", "")
    if target:  # JSON protocols: SQS, DynamoDB
        prefix, _, name = target.partition(".")
        service = {"AmazonSQS": "sqs"}.get(prefix, "dynamodb" if "DynamoDB" in prefix
                                           else prefix.lower())
        return f"{service}.{name}"
    if path.startswith("/v2/email/outbound-emails"):
        return "sesv2.SendEmail"
    if path.startswith("/v2/email/"):
        return "sesv2.Other"
    s3 = {"PUT": "PutObject", "GET": "GetObject", "DELETE": "DeleteObject",
          "HEAD": "HeadObject"}.get(method, method)
    if "?tagging" in path:
        s3 = f"{s3}Tagging"
    return f"s3.{s3}"


@dataclass(frozen=True)
class Request:
    """An AWS request as the proxy received it (header names in lower case)."""

    operation: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body of a JSON-protocol request (SQS, DynamoDB), parsed."""
        return json.loads(self.body)


@dataclass
class Rule:
    """A fault for requests of one operation that `when` accepts (None: all): `times` of
    them (None: every one), each with `probability`. `call`, if any, is called with the
    request before the action (on the proxy's thread for that connection, so it may block
    to hold the request)."""

    operation: str
    action: str
    times: int | None = None
    probability: float = 1.0
    seconds: float = 0.0  # how long SLOW_ANSWER holds the answer
    status: int = 0  # ERROR_ANSWER's HTTP status; its, and FAIL_ENTRIES's, AWS error code
    code: str = ""
    when: Callable[[Request], bool] | None = None
    call: Callable[[Request], object] | None = None
    entries: Callable[[dict[str, Any]], bool] | None = None  # FAIL_ENTRIES (None: all)


@dataclass
class FaultProxy:
    """The proxy; start() returns its URL."""

    upstream: str
    seed: int = 1
    rules: list[Rule] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    applied: dict[tuple[str, str], int] = field(default_factory=dict)
    # Answers of 5xx from upstream, and requests that could not be forwarded at all.
    upstream_errors: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._server: ThreadingHTTPServer | None = None
        self._local = threading.local()
        self._connections: set[socket.socket] = set()

    def add(self, operation_name: str, action: str, times: int | None = None,
            probability: float = 1.0, seconds: float = 0.0, status: int = 0,
            code: str = "", when: Callable[[Request], bool] | None = None,
            call: Callable[[Request], object] | None = None,
            entries: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """Add a rule (rules are tried in order; the first that fires wins)."""
        with self._lock:
            self.rules.append(Rule(operation_name, action, times, probability, seconds,
                                   status, code, when, call, entries))

    def clear(self) -> None:
        """Remove every rule: all requests pass."""
        with self._lock:
            self.rules.clear()

    def decide(self, request: Request) -> Rule | None:
        """The rule that fires for this request, if any; counts what it sees."""
        name = request.operation
        with self._lock:
            self.seen[name] = self.seen.get(name, 0) + 1
            for rule in self.rules:
                if rule.operation != name or rule.times == 0:
                    continue
                if rule.when is not None and not rule.when(request):
                    continue
                if self._random.random() >= rule.probability:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                key = (name, rule.action)
                self.applied[key] = self.applied.get(key, 0) + 1
                return rule
        return None

    def forward(self, method: str, path: str, body: bytes,
                headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
        """Send a request upstream on this thread's kept-alive connection."""
        connection = getattr(self._local, "connection", None)
        for fresh in (False, True):
            if connection is None or fresh:
                upstream = urlsplit(self.upstream)
                connection = http.client.HTTPConnection(upstream.hostname, upstream.port,
                                                        timeout=60)
                self._local.connection = connection
            try:
                connection.request(method, path, body=body, headers=headers)
                answer = connection.getresponse()
                return answer, answer.read()
            except (http.client.HTTPException, OSError):
                connection.close()
                if fresh:
                    raise
        raise AssertionError("unreachable")

    def count_error(self, what: str) -> None:
        """Count an upstream failure the proxy did not inject."""
        with self._lock:
            self.upstream_errors[what] = self.upstream_errors.get(what, 0) + 1

    def start(self) -> str:
        """Listen on a free loopback port; return the endpoint URL."""
        return self._listen(0)

    def pause(self) -> None:
        """Stop listening and drop every open connection, as an endpoint that is down:
        new connections are refused."""
        self.stop()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._connections.clear()

    def resume(self) -> None:
        """Listen again on the same port."""
        assert self._server is not None
        self._listen(self._server.server_address[1])

    def _listen(self, port: int) -> str:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._connections.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._connections.discard(self.connection)
                super().finish()

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = Request(operation(self.command, self.path, headers), self.command,
                                  self.path, headers, body)
                rule = proxy.decide(request)
                if rule is not None and rule.call is not None:
                    rule.call(request)
                action = rule.action if rule is not None else PASS
                if action == ERROR_ANSWER:
                    assert rule is not None
                    self._error(rule, headers)
                    return
                if action == DROP:
                    self._hang_up()
                    return
                if action == FAIL_ENTRIES:
                    assert rule is not None
                    self._fail_entries(rule, request)
                    return
                status, answer_headers, payload = self._upstream(request, body)
                if action == LOSE_ANSWER:
                    self._hang_up()
                    return
                if action == SLOW_ANSWER:
                    assert rule is not None
                    time.sleep(rule.seconds)
                self._answer(status, answer_headers, payload)

            def _upstream(self, request: Request, body: bytes
                          ) -> tuple[int, list[tuple[str, str]], bytes]:
                """Forward the request with this body (Content-Length follows it)."""
                forwarded = {k: v for k, v in self.headers.items()
                             if k.lower() not in ("expect", "connection", "content-length")}
                try:
                    answer, payload = proxy.forward(self.command, self.path, body, forwarded)
                except (http.client.HTTPException, OSError) as exc:
                    proxy.count_error(f"{request.operation} {type(exc).__name__}")
                    raise
                if answer.status >= 500:
                    proxy.count_error(f"{request.operation} {answer.status}")
                return answer.status, answer.getheaders(), payload

            def _answer(self, status: int, headers: list[tuple[str, str]],
                        payload: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("transfer-encoding", "connection",
                                            "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _hang_up(self) -> None:
                self.close_connection = True
                self.connection.close()

            def _fail_entries(self, rule: Rule, request: Request) -> None:
                """SendMessageBatch with the chosen entries failed, in SQS's JSON
                protocol: the others are forwarded, and the answer lists both."""
                batch = request.json()
                failing = [e for e in batch["Entries"]
                           if rule.entries is None or rule.entries(e)]
                kept = [e for e in batch["Entries"] if e not in failing]
                answer: dict[str, list[dict[str, Any]]] = {"Successful": [], "Failed": []}
                if kept:  # SQS refuses an empty batch: answer for it alone then
                    status, headers, payload = self._upstream(
                        request, json.dumps({**batch, "Entries": kept}).encode())
                    if status != 200:
                        self._answer(status, headers, payload)
                        return
                    answer = json.loads(payload)
                answer.setdefault("Failed", []).extend(
                    {"Id": e["Id"], "SenderFault": False, "Code": rule.code or "InternalError",
                     "Message": "injected by the fault proxy"} for e in failing)
                self._answer(200, [("Content-Type", SQS_JSON)], json.dumps(answer).encode())

            def _error(self, rule: Rule, headers: dict[str, str]) -> None:
                """An AWS error answer in the service's format (JSON for SQS and
                DynamoDB, XML for S3)."""
                if headers.get("x-amz-target"):
                    prefix = "com.amazonaws.sqs" if "AmazonSQS" in headers["x-amz-target"] \
                        else "com.amazonaws.dynamodb.v20120810"
                    payload = json.dumps({"__type": f"{prefix}#{rule.code}",
                                          "message": "injected by the fault proxy"}).encode()
                    content_type = SQS_JSON
                else:
                    payload = (f"<Error><Code>{rule.code}</Code><Message>injected by the "
                               "fault proxy</Message></Error>").encode()
                    content_type = "application/xml"
                self.send_response(rule.status)
                self.send_header("Content-Type", content_type)
                self.send_header("x-amzn-query-error", f"{rule.code};Sender")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that gave up on a held answer: what the proxy is for

        self._server = Server(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        # A short poll: stop() waits for the serving loop to notice.
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
