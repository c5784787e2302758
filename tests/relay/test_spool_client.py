"""The relay's lean spool client (smtp_relay/spool_client.py) on real sockets: against
moto's server (what it writes is what S3 and SQS hold), against the bench's spool sink,
and against a scripted HTTP server for the answers moto never gives (throttling, 5xx, an
expired token, a lost connection, no answer). Each failure must say whether the request
may have taken effect, as the commit protocol needs (docs/COMMIT.md)."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sesrelay.certificates import self_signed
from sesrelay.spool import spool_envelope
from sesrelay.timeouts import RELAY_S3, RELAY_SQS, CallBudget
from smtp_relay import eventloop, spool_client
from smtp_relay.spool_client import (
    EXPECT_CONTINUE_MIN,
    LeanSpoolClient,
    SpoolCallError,
    json_string,
)
from tests.relay.conftest import REGION
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
FAST = CallBudget(connect=1, read=1, attempts=1)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Point botocore's endpoint and credential chain at `endpoint` with static keys."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS",
                 "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)

    def point(endpoint: str) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)

    return point


# --- moto's server ---------------------------------------------------------------------

@pytest.fixture
def moto_spool(moto_server: str, aws_env: Callable[[str], None]) -> Iterator[tuple[str, str]]:
    """A bucket and a queue in moto's server; (bucket, queue URL)."""
    aws_env(moto_server)
    name = f"lean-{free_port()}"
    boto3.client("s3", endpoint_url=moto_server, region_name=REGION).create_bucket(Bucket=name)
    queue_url = boto3.client("sqs", endpoint_url=moto_server, region_name=REGION
                             ).create_queue(QueueName=name)["QueueUrl"]
    yield name, queue_url


@pytest.mark.parametrize("key", ["spool/2026/11/29/ABC123", "a key with  spaces/+plus%25",
                                 "ünïcödé/日本語/😀 ~tilde"])
@pytest.mark.parametrize("size", [0, 10 * 1024, 3 * 1024 * 1024 + 5])
def test_put_object_stores_the_bytes_and_metadata(moto_spool: tuple[str, str], key: str,
                                                   size: int) -> None:
    bucket, _ = moto_spool
    body = bytearray((n * 7 + 3) % 256 for n in range(size))

    async def put() -> None:
        client = LeanSpoolClient(RELAY_S3, RELAY_SQS, bucket)
        await client.put_object(bucket, key, body, {"queue-id": "ABC123", "version": "2"})
        client.close()

    eventloop.run(put())
    stored = boto3.client("s3", region_name=REGION).get_object(Bucket=bucket, Key=key)
    assert stored["Body"].read() == bytes(body)
    assert stored["Metadata"] == {"queue-id": "ABC123", "version": "2"}
    assert stored["ContentType"] == "message/rfc822"


@settings(max_examples=300, deadline=None)
@given(mail_from=st.text(), rcpt_to=st.lists(st.text(), min_size=1, max_size=3),
       helo=st.text(), message=st.binary(max_size=4096))
def test_an_envelope_is_escaped_as_json_escapes_it(mail_from: str, rcpt_to: list[str],
                                                  helo: str, message: bytes) -> None:
    # The SQS request carries each envelope's JSON as a JSON string: the lean client's
    # escaping must be the encoder's, byte for byte, whatever the client sent.
    _, envelope = spool_envelope(
        {"queue_id": "5XQL9QB70NKQJ197", "mail_from": mail_from, "rcpt_to": tuple(rcpt_to),
         "size": len(message), "client_address": "10.0.0.1", "client_helo": helo,
         "received_at": "2026-11-29T12:00:00Z"}, message, "bucket", "key")
    assert json_string(envelope) == json.dumps(envelope)


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_any_text_is_escaped_to_json_that_reads_back(text: str) -> None:
    assert json.loads(json_string(text), strict=False) == text


def test_send_messages_queues_single_and_batched_bodies(moto_spool: tuple[str, str]) -> None:
    bucket, queue_url = moto_spool
    bodies = [json.dumps({"n": n, "text": "héllo 😀 " * n}) for n in range(11)]

    async def send() -> list[dict[str, str]]:
        client = LeanSpoolClient(RELAY_S3, RELAY_SQS, bucket)
        failed = [await client.send_messages(queue_url, [("single", bodies[0])]),
                  await client.send_messages(queue_url, [(f"id{n}", b) for n, b in
                                                         enumerate(bodies[1:])])]
        client.close()
        return failed

    assert eventloop.run(send()) == [{}, {}]
    sqs = boto3.client("sqs", region_name=REGION)
    received: list[str] = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                       VisibilityTimeout=60).get("Messages", []):
        received += [m["Body"] for m in batch]
    assert sorted(received) == sorted(bodies)


def test_the_bench_sink_takes_the_requests(aws_env: Callable[[str], None],
                                           tmp_path: Path) -> None:
    """bench/spool_sink.py answers the lean client as it answers botocore."""
    ready = tmp_path / "sink.port"
    sink = subprocess.Popen([sys.executable, str(REPO / "bench" / "spool_sink.py"),
                             "--ready-file", str(ready)])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        endpoint = f"http://127.0.0.1:{ready.read_text()}"
        aws_env(endpoint)

        async def send() -> None:
            client = LeanSpoolClient(RELAY_S3, RELAY_SQS, "bench-spool")
            await client.put_object("bench-spool", "k", b"x" * 300_000, {})
            await client.send_messages(f"{endpoint}/000000000000/q", [("a", "1")])
            await client.send_messages(f"{endpoint}/000000000000/q", [("a", "1"), ("b", "2")])
            client.close()

        eventloop.run(send())
        with __import__("urllib.request").request.urlopen(f"{endpoint}/_stats") as answer:
            stats = json.loads(answer.read())
    finally:
        sink.terminate()
        sink.wait()
    assert stats["ops"] == {"s3:PutObject": 1, "sqs:SendMessage": 1,
                            "sqs:SendMessageBatch": 1}
    assert stats["sqs_messages"] == 3


# --- a scripted server -----------------------------------------------------------------

@dataclass
class Script:
    """Answers in order, one per request: (status, body, headers), or "close" (read the
    request, then close the connection) or "hang" (read it and never answer). Records each
    request's head, and how many body octets it read. A request that asks for
    "100 Continue" gets it, unless its answer is an error, which it gets at once, its body
    unread (as S3 refuses); or, with silent_on_expect, nothing until the body came."""

    answers: list[tuple[int, bytes, dict[str, str]] | str]
    requests: list[str] = field(default_factory=list)
    bodies: list[int] = field(default_factory=list)
    connections: int = 0
    silent_on_expect: bool = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("utf-8")
                length = int(head.lower().split("content-length: ")[1].split("\r\n")[0])
                self.requests.append(head)
                if "expect: 100-continue" in head.lower() and not self.silent_on_expect:
                    if not isinstance(self.answers[0], str) and self.answers[0][0] >= 400:
                        status, body, _ = self.answers.pop(0)  # type: ignore[misc]
                        self.bodies.append(0)
                        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}"
                                     "\r\nConnection: close\r\n\r\n".encode() + body)
                        await writer.drain()
                        writer.close()
                        return
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await reader.readexactly(length)
                self.bodies.append(length)
                answer = self.answers.pop(0)
                if answer == "close":
                    writer.close()
                    return
                if answer == "hang":
                    await asyncio.sleep(3600)
                status, body, headers = answer  # type: ignore[misc]
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n".encode()
                             + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
                             + b"\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def run_scripted(script: Script, aws_env: Callable[[str], None],
                 calls: Callable[[LeanSpoolClient], Awaitable[object]],
                 s3: CallBudget = FAST, sqs: CallBudget = FAST,
                 tls: ssl.SSLContext | None = None) -> object:
    """Start the scripted server (over TLS, as "localhost", with tls), point the client
    at it, run calls; their result."""
    async def main() -> object:
        server = await asyncio.start_server(script.handle, "127.0.0.1", 0, ssl=tls)
        port = server.sockets[0].getsockname()[1]
        aws_env(f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}")
        client = LeanSpoolClient(s3, sqs, "bucket")
        try:
            return await calls(client)
        finally:
            client.close()
            server.close()

    return eventloop.run(main())


def sqs_error(code: str, status: int = 400) -> tuple[int, bytes, dict[str, str]]:
    """An SQS JSON error answer."""
    return status, json.dumps({"__type": f"com.amazonaws.sqs#{code}",
                               "message": "scripted"}).encode(), {}


def s3_error(code: str, status: int) -> tuple[int, bytes, dict[str, str]]:
    """An S3 XML error answer."""
    return status, f"<Error><Code>{code}</Code><Message>scripted</Message></Error>".encode(), {}


def sqs_ok(body: str = "m") -> tuple[int, bytes, dict[str, str]]:
    """SendMessage's answer for the body `body`."""
    import hashlib
    return 200, json.dumps({"MessageId": "1", "MD5OfMessageBody": hashlib.md5(
        body.encode()).hexdigest()}).encode(), {}


def failure(call: Callable[[LeanSpoolClient], Awaitable[object]]
            ) -> Callable[[LeanSpoolClient], Awaitable[object]]:
    """The SpoolCallError the call raises (the test fails if it raises none)."""
    async def run(client: LeanSpoolClient) -> object:
        with pytest.raises(SpoolCallError) as caught:
            await call(client)
        return caught.value

    return run


def send_one(client: LeanSpoolClient) -> Awaitable[object]:
    return client.send_messages("http://q/1/q", [("a", "m")])


def put_one(client: LeanSpoolClient) -> Awaitable[object]:
    return client.put_object("bucket", "key", b"message", {})


def test_connections_are_kept_alive(aws_env: Callable[[str], None]) -> None:
    """Calls in a row share one connection per service (S3 and SQS have their own
    endpoints): a new one per message would cost a TCP (and, against AWS, a TLS)
    handshake each."""
    script = Script([sqs_ok(), (200, b"", {})] * 5)

    async def calls(client: LeanSpoolClient) -> None:
        for _ in range(5):
            await send_one(client)
            await put_one(client)

    run_scripted(script, aws_env, calls)
    assert (len(script.requests), script.connections) == (10, 2)


LARGE = b"x" * EXPECT_CONTINUE_MIN


def put_large(client: LeanSpoolClient) -> Awaitable[object]:
    return client.put_object("bucket", "key", LARGE, {})


def test_a_large_body_waits_for_100_continue(aws_env: Callable[[str], None]) -> None:
    script = Script([(200, b"", {})])
    run_scripted(script, aws_env, put_large)
    assert "expect: 100-continue" in script.requests[0].lower()
    assert script.bodies == [len(LARGE)]


def test_a_refusal_before_the_body_spares_sending_it(aws_env: Callable[[str], None]) -> None:
    """S3 throttles (SlowDown) on the head alone: the megabytes are not sent, and the
    retry (on a new connection) stores the object."""
    script = Script([s3_error("SlowDown", 503), (200, b"", {})])
    run_scripted(script, aws_env, put_large, s3=RELAY_S3)
    assert script.bodies == [0, len(LARGE)]
    assert script.connections == 2


def test_a_server_that_never_says_continue_gets_the_body(
        aws_env: Callable[[str], None]) -> None:
    script = Script([(200, b"", {})], silent_on_expect=True)
    run_scripted(script, aws_env, put_large)
    assert script.bodies == [len(LARGE)]


def test_s3_slowdown_is_retried_and_succeeds(aws_env: Callable[[str], None]) -> None:
    script = Script([s3_error("SlowDown", 503), (200, b"", {})])
    run_scripted(script, aws_env, put_one, s3=RELAY_S3)
    assert len(script.requests) == 2


@pytest.mark.parametrize("first", [sqs_error("ThrottlingException"),
                                   sqs_error("RequestThrottled"), sqs_error("InternalError",
                                                                            500)])
def test_sqs_throttling_and_5xx_are_retried(aws_env: Callable[[str], None],
                                            first: tuple[int, bytes, dict[str, str]]) -> None:
    script = Script([first, sqs_ok()])
    assert run_scripted(script, aws_env, send_one,
                        sqs=CallBudget(connect=1, read=1, attempts=2)) == {}
    assert len(script.requests) == 2


def test_throttling_to_the_last_attempt_certainly_did_nothing(
        aws_env: Callable[[str], None]) -> None:
    script = Script([sqs_error("ThrottlingException")] * 3)
    error = run_scripted(script, aws_env, failure(send_one),
                         sqs=CallBudget(connect=1, read=1, attempts=3))
    assert isinstance(error, SpoolCallError)
    assert (error.certain, error.code, len(script.requests)) == (True, "ThrottlingException", 3)


def test_a_5xx_on_any_attempt_leaves_the_outcome_unknown(
        aws_env: Callable[[str], None]) -> None:
    script = Script([sqs_error("InternalError", 500), sqs_error("ThrottlingException")])
    error = run_scripted(script, aws_env, failure(send_one),
                         sqs=CallBudget(connect=1, read=1, attempts=2))
    assert isinstance(error, SpoolCallError) and not error.certain


def test_a_client_error_is_not_retried(aws_env: Callable[[str], None]) -> None:
    script = Script([sqs_error("AccessDenied"), sqs_ok()])
    error = run_scripted(script, aws_env, failure(send_one),
                         sqs=CallBudget(connect=1, read=1, attempts=3))
    assert isinstance(error, SpoolCallError)
    assert (error.certain, error.code, len(script.requests)) == (True, "AccessDenied", 1)


@pytest.mark.parametrize("answer", [sqs_error("ExpiredToken", 403),
                                    s3_error("ExpiredToken", 400)])
def test_an_expired_token_is_a_clear_error(aws_env: Callable[[str], None],
                                           answer: tuple[int, bytes, dict[str, str]]) -> None:
    script = Script([answer, answer])
    call = send_one if b"sqs" in answer[1] else put_one
    error = run_scripted(script, aws_env, failure(call),
                         s3=RELAY_S3, sqs=CallBudget(connect=1, read=1, attempts=2))
    assert isinstance(error, SpoolCallError)
    assert "credentials have expired" in str(error) and error.code == "ExpiredToken"
    assert error.certain and len(script.requests) == 1


def test_a_lost_connection_after_the_request_leaves_the_outcome_unknown(
        aws_env: Callable[[str], None]) -> None:
    error = run_scripted(Script(["close"]), aws_env, failure(send_one))
    assert isinstance(error, SpoolCallError) and not error.certain


def test_no_answer_in_time_leaves_the_outcome_unknown(aws_env: Callable[[str], None]) -> None:
    started = time.monotonic()
    error = run_scripted(Script(["hang"]), aws_env, failure(send_one))
    assert isinstance(error, SpoolCallError) and not error.certain
    assert time.monotonic() - started < 10  # the read timeout (1 s) ended it


def test_no_connection_certainly_did_nothing(aws_env: Callable[[str], None]) -> None:
    aws_env(f"http://127.0.0.1:{free_port()}")  # nobody listens there

    async def call() -> object:
        client = LeanSpoolClient(FAST, FAST, "bucket")
        with pytest.raises(SpoolCallError) as caught:
            await client.send_messages("http://q/1/q", [("a", "m")])
        return caught.value

    error = eventloop.run(call())
    assert isinstance(error, SpoolCallError) and error.certain


def test_refreshable_credentials_are_refreshed_before_they_expire(
        aws_env: Callable[[str], None], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """Credentials come from botocore's provider chain; ones about to expire (as the ECS
    task role's do) are refreshed before a request is signed with them. (The client asks
    botocore at most once a CREDENTIALS_CHECK; here at every request.)"""
    monkeypatch.setattr(spool_client, "CREDENTIALS_CHECK", 0.0)
    counter = tmp_path / "count"
    counter.write_text("0")
    process = tmp_path / "credentials.py"
    process.write_text(
        "import datetime, json, pathlib\n"
        f"path = pathlib.Path({str(counter)!r})\n"
        "n = int(path.read_text()) + 1\n"
        "path.write_text(str(n))\n"
        "soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': f'KEY{n}', 'SecretAccessKey': 's',"
        " 'SessionToken': f'token{n}', 'Expiration': soon.isoformat()}))\n")
    config = tmp_path / "config"
    config.write_text(f"[profile rotating]\ncredential_process = {sys.executable} {process}\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_PROFILE", "rotating")
    script = Script([sqs_ok(), sqs_ok()])

    async def twice(client: LeanSpoolClient) -> None:
        await send_one(client)
        await send_one(client)

    run_scripted(script, aws_env, twice)
    keys = [r.split("Credential=")[1].split("/")[0] for r in script.requests]
    tokens = [r.split("X-Amz-Security-Token: ")[1].split("\r\n")[0] for r in script.requests]
    assert keys[0] != keys[1] and tokens[0] != tokens[1]
    assert all(k.startswith("KEY") for k in keys)


def test_https_with_the_configured_ca_bundle(aws_env: Callable[[str], None],
                                             monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    """As against AWS: TLS, the server's certificate checked against botocore's ca_bundle
    (AWS_CA_BUNDLE); the body is not signed (UNSIGNED-PAYLOAD) but carries its CRC32."""
    files = self_signed(tmp_path, ["localhost"])
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(files.cert_file, files.key_file)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(files.cert_file))
    script = Script([(200, b"", {})])
    run_scripted(script, aws_env, put_one, tls=tls)
    (head,) = script.requests
    assert "X-Amz-Content-SHA256: UNSIGNED-PAYLOAD\r\n" in head
    assert "x-amz-checksum-crc32: " in head


def test_https_to_an_untrusted_server_certainly_did_nothing(
        aws_env: Callable[[str], None], tmp_path: Path) -> None:
    files = self_signed(tmp_path, ["localhost"])
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(files.cert_file, files.key_file)
    script = Script([(200, b"", {})])
    error = run_scripted(script, aws_env, failure(put_one), tls=tls)
    assert isinstance(error, SpoolCallError) and error.certain
    assert script.requests == []
