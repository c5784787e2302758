"""The relay's hot-path AWS requests: S3 PutObject and SQS SendMessage/SendMessageBatch.

Two clients with one interface, chosen by `sesrelay_spool_client`:

- LeanSpoolClient signs the requests itself (sigv4.py) and sends them on keep-alive
  connections of the relay's own event loop (spool_http.py): no thread pool and no botocore
  request pipeline per message. botocore still supplies what is not per request: the
  credentials (its provider chain: environment, profiles, the ECS task role, refreshed
  before they expire), the endpoints and the region.
- BotocoreSpoolClient makes the same calls with boto3 clients in a thread pool.

Both raise SpoolCallError, which says whether the request certainly had no effect
(docs/COMMIT.md). Everything off the hot path (the commit record, the worker, the CLI)
uses botocore.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import random
import re
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol
from urllib.parse import urlsplit

import botocore.session
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import determine_content_length

from sesrelay import aws
from sesrelay.timeouts import CallBudget
from smtp_relay import sigv4
from smtp_relay.spool_http import HttpError, Origin, Response

# Error codes botocore's standard retry mode retries (botocore.retries.standard), as far
# as S3 and SQS answer them: throttling and transient errors.
RETRYABLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestThrottled", "SlowDown", "RequestLimitExceeded",
    "BandwidthLimitExceeded", "LimitExceededException", "RequestTimeout",
    "RequestTimeoutException", "PriorRequestNotComplete", "InternalError",
    "ServiceUnavailable"})
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
MAX_BACKOFF = 20.0  # seconds, botocore's cap
CREDENTIALS_CHECK = 1.0  # seconds between asking botocore for the current credentials
# Bodies from this size are hashed in a thread: SHA-256 of 40 MiB would hold the loop
# for tens of milliseconds (hashlib lets go of the interpreter lock meanwhile).
HASH_IN_THREAD = 1024 * 1024
_CODE_XML = re.compile(rb"<Code>([^<]*)</Code>")
_MESSAGE_XML = re.compile(rb"<Message>([^<]*)</Message>")


class SpoolCallError(Exception):
    """An S3 or SQS call that failed. certain: it certainly had no effect (an answer of
    4xx, or no connection); otherwise the service may have acted."""

    def __init__(self, message: str, certain: bool, code: str = "") -> None:
        super().__init__(message)
        self.certain = certain
        self.code = code


class SpoolClient(Protocol):
    """The calls of the handoff's commit protocol."""

    async def put_object(self, bucket: str, key: str, body: bytes | bytearray,
                         metadata: dict[str, str]) -> None:
        """Write one message object (content type message/rfc822)."""

    async def send_messages(self, queue_url: str,
                            entries: Sequence[tuple[str, str]]) -> dict[str, str]:
        """Send (id, body) entries: SendMessage for one, SendMessageBatch for more. The
        entries SQS reported failed (it did not queue them), by id, with the reason."""


def _backoff(attempt: int) -> float:
    """botocore's standard-mode pause before retry number `attempt` (1, 2, ...): full
    jitter, doubling, at most MAX_BACKOFF."""
    return random.random() * min(MAX_BACKOFF, 2.0 ** (attempt - 1))


def _sqs_error(response: Response) -> tuple[str, str]:
    """(code, message) of an SQS JSON error answer."""
    try:
        answer = json.loads(response.body)
    except ValueError:
        answer = {}
    code = str(answer.get("__type", "")).rpartition("#")[2]
    query = response.headers.get("x-amzn-query-error", "").partition(";")[0]
    return (code or query.rpartition(".")[2] or f"HTTP {response.status}",
            str(answer.get("message", answer.get("Message", ""))))


def _s3_error(response: Response) -> tuple[str, str]:
    """(code, message) of an S3 XML error answer."""
    code, message = _CODE_XML.search(response.body), _MESSAGE_XML.search(response.body)
    return (code.group(1).decode() if code else f"HTTP {response.status}",
            message.group(1).decode() if message else "")


def put_digests(body: bytes | bytearray | memoryview, https: bool) -> tuple[str, str]:
    """A PutObject body's x-amz-checksum-crc32 header and its payload hash for the
    signature: over HTTPS UNSIGNED-PAYLOAD (TLS and the checksum guard the body; botocore's
    rule for a streaming body with a checksum header), over HTTP its SHA-256."""
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    return crc, sigv4.UNSIGNED_PAYLOAD if https else hashlib.sha256(body).hexdigest()


class LeanSpoolClient:
    """S3 and SQS over the relay's own HTTP connections, signed with sigv4.py."""

    def __init__(self, s3_budget: CallBudget, sqs_budget: CallBudget, bucket: str) -> None:
        session = botocore.session.Session()
        self._credentials = session.get_credentials()
        if self._credentials is None:
            raise RuntimeError("no AWS credentials: the relay's spool client needs them")
        self._frozen = sigv4.Credentials("", "")
        self._credentials_checked = -CREDENTIALS_CHECK  # not yet
        self._stamp = (-1, "")
        # botocore resolves the endpoints (AWS_ENDPOINT_URL*, the region, virtual-hosted
        # or path-style S3 addressing) once; a presigned URL shows the address it chose.
        s3 = session.create_client("s3")
        url = urlsplit(s3.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60))
        self._bucket = bucket
        self._s3_prefix = url.path[:-1]  # "/<bucket>/" (path-style) or "/" (virtual)
        self._s3_https = url.scheme == "https"
        ca_file = session.get_config_variable("ca_bundle")  # AWS_CA_BUNDLE, profiles
        # Like botocore with the handler below: only a large body waits for 100 Continue.
        self._s3 = Origin(f"{url.scheme}://{url.netloc}", s3_budget.connect, s3_budget.read,
                          ca_file, expect_continue_min=EXPECT_CONTINUE_MIN)
        self._s3_region = s3.meta.region_name
        self._s3_attempts = s3_budget.attempts
        sqs = session.create_client("sqs")
        self._sqs = Origin(sqs.meta.endpoint_url, sqs_budget.connect, sqs_budget.read,
                           ca_file)
        self._sqs_region = sqs.meta.region_name
        self._sqs_attempts = sqs_budget.attempts

    async def _frozen_credentials(self) -> sigv4.Credentials:
        """The current credentials, asked of botocore at most once a CREDENTIALS_CHECK
        (its checks cost more than signing; it refreshes role credentials 10 to 15
        minutes before they expire). A refresh (an HTTP call to the ECS credentials
        endpoint, or STS) runs in a thread, so that it never blocks the loop."""
        now = time.monotonic()
        if now < self._credentials_checked + CREDENTIALS_CHECK:
            return self._frozen
        provider = self._credentials
        refresh_needed = getattr(provider, "refresh_needed", None)
        if refresh_needed is not None and refresh_needed():
            frozen = await asyncio.to_thread(provider.get_frozen_credentials)
        else:
            frozen = provider.get_frozen_credentials()
        self._frozen = sigv4.Credentials(frozen.access_key, frozen.secret_key, frozen.token)
        self._credentials_checked = now
        return self._frozen

    def _timestamp(self) -> str:
        """The time for X-Amz-Date, "YYYYMMDDTHHMMSSZ", formatted once a second."""
        second = int(time.time())
        if second != self._stamp[0]:
            self._stamp = (second, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second)))
        return self._stamp[1]

    async def _call(self, origin: Origin, method: str, path: str, headers: dict[str, str],
                    body: bytes | bytearray | memoryview, payload_hash: str, region: str,
                    service: str, attempts: int, error: Any) -> Response:
        """Sign and send, retrying throttling, 5xx and connection failures with jittered
        backoff up to `attempts` in all; the 2xx response, or SpoolCallError."""
        certain = True  # every attempt so far certainly had no effect
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(_backoff(attempt))
            credentials = await self._frozen_credentials()
            signed = sigv4.sign(method, origin.host, path, headers, payload_hash, credentials,
                                region, service, self._timestamp(), s3=service == "s3")
            try:
                response = await origin.request(method, path, signed, body)
            except HttpError as exc:
                certain = certain and exc.certain
                failure = SpoolCallError(str(exc), certain)
                continue
            if 200 <= response.status < 300:
                return response
            code, message = error(response)
            text = f"{service} {method} {path}: HTTP {response.status} {code}: {message}"
            if code in EXPIRED_CODES:
                raise SpoolCallError(
                    f"the AWS credentials have expired ({code}) and were not refreshed: "
                    f"{message}", certain, code)
            # A 5xx may have taken effect; a 4xx (throttling included) did not.
            certain = certain and response.status < 500
            failure = SpoolCallError(text, certain, code)
            if response.status < 500 and code not in RETRYABLE_CODES:
                raise failure
        raise failure

    async def put_object(self, bucket: str, key: str, body: bytes | bytearray,
                         metadata: dict[str, str]) -> None:
        """S3 PutObject with a CRC32 checksum. Over HTTPS the payload is not signed (TLS
        and the checksum guard it, as botocore does); over HTTP its SHA-256 is."""
        if bucket != self._bucket:
            raise ValueError(f"this client writes to {self._bucket}, not {bucket}")
        if len(body) >= HASH_IN_THREAD:
            crc, digest = await asyncio.to_thread(put_digests, body, self._s3_https)
        else:
            crc, digest = put_digests(body, self._s3_https)
        headers = {"Host": self._s3.host, "Content-Type": "message/rfc822",
                   "Content-Length": str(len(body)), "x-amz-checksum-crc32": crc,
                   **{f"x-amz-meta-{name}": value for name, value in metadata.items()}}
        await self._call(self._s3, "PUT", self._s3_prefix + sigv4.uri_path(key), headers,
                         body, digest, self._s3_region, "s3", self._s3_attempts, _s3_error)

    async def send_messages(self, queue_url: str,
                            entries: Sequence[tuple[str, str]]) -> dict[str, str]:
        """SQS SendMessage (one entry) or SendMessageBatch.

        SQS's MD5OfMessageBody is not checked, as botocore does not check it: the request
        is signed over its body's SHA-256, so SQS refuses a body altered on the way, and
        json_string's escaping is held to json.dumps by property tests."""
        if len(entries) == 1:
            operation = "SendMessage"
            request = (f'{{"QueueUrl":{json.dumps(queue_url)},'
                       f'"MessageBody":{json_string(entries[0][1])}}}')
        else:
            operation = "SendMessageBatch"
            request = (f'{{"QueueUrl":{json.dumps(queue_url)},"Entries":['
                       + ",".join(f'{{"Id":{json.dumps(id_)},"MessageBody":{json_string(text)}}}'
                                  for id_, text in entries) + "]}")
        body = request.encode()
        headers = {"Host": self._sqs.host, "X-Amz-Target": f"AmazonSQS.{operation}",
                   "Content-Type": "application/x-amz-json-1.0",
                   "Content-Length": str(len(body))}
        response = await self._call(self._sqs, "POST", "/", headers, body,
                                    hashlib.sha256(body).hexdigest(), self._sqs_region,
                                    "sqs", self._sqs_attempts, _sqs_error)
        try:
            answer = json.loads(response.body)
        except ValueError as exc:
            raise SpoolCallError(f"SQS {operation}: unreadable answer: {exc}", False) from exc
        if operation == "SendMessage":
            return {}
        return {f["Id"]: f"{f.get('Code', '')}: {f.get('Message', '')}"
                for f in answer.get("Failed", [])}

    def close(self) -> None:
        """Close the idle connections."""
        self._s3.close()
        self._sqs.close()


def json_string(text: str) -> str:
    """json.dumps(text), cheaply for a spool envelope's JSON (Envelope.to_json): ASCII
    without line breaks or tabs (json.dumps escapes them, base64 has none), so only its
    quotes and backslashes need escaping, and the long run between its last two quotes (an
    inline message's base64) needs none. That run is copied, not scanned character by
    character as the encoder (and str.replace) would (a 100 KB message: 0.39 ms of
    json.dumps per request). Any other text goes through the encoder, except that control
    characters other than tab, CR and LF are left as they are: SQS refuses a body with
    them either way (a certain failure)."""
    if not text.isascii() or "\n" in text or "\r" in text or "\t" in text:
        return json.dumps(text)
    end = text.rfind('"')
    if end < 0:  # no quote at all
        end = len(text)
    start = text.rfind('"', 0, end) + 1
    if text.find("\\", start, end) >= 0:  # not base64: no run to spare
        start = end = len(text)
    return "".join(('"', _escape_quotes(text[:start]), text[start:end],
                    _escape_quotes(text[end:]), '"'))


def _escape_quotes(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# --- botocore, in a thread pool -------------------------------------------------------

# Enough threads to keep the HTTP connection pools busy.
POOL = 64
_executor = ThreadPoolExecutor(max_workers=POOL, thread_name_prefix="spool")

# botocore asks S3 for "100 Continue" before sending any PutObject body, a round trip more
# per message. It only pays when S3 rejects a large upload before it is sent, so, like the
# AWS SDK for Go, the relay asks for it only from this size on.
EXPECT_CONTINUE_MIN = 2 * 1024 * 1024


def _expect_continue_for_large_bodies(params: dict[str, Any], **_: Any) -> None:
    """botocore event handler (after botocore's own add_expect_header): drop the Expect
    header of an S3 request whose body is under EXPECT_CONTINUE_MIN."""
    length = determine_content_length(params.get("body"))
    if length is not None and length < EXPECT_CONTINUE_MIN:
        params["headers"].pop("Expect", None)


class MessageBody(io.RawIOBase):
    """The message buffer as a read-only, seekable file, for PutObject's Body.

    botocore (checksum, signing) and urllib3 read a file in blocks, so a message is sent
    without a copy. A bytes-like Body would be wrapped whole in io.BytesIO, a full copy.
    A retry seeks back to the start.
    """

    def __init__(self, data: bytes | bytearray) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._position = 0

    def readable(self) -> bool:
        """Always: it is a reader."""
        return True

    def seekable(self) -> bool:
        """Always: botocore rewinds the body for a retry."""
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        """Copy the next bytes into target; 0 at the end."""
        count = min(len(target), len(self._view) - self._position)
        target[:count] = self._view[self._position:self._position + count]
        self._position += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the read position, as for any file."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def tell(self) -> int:
        """The read position."""
        return self._position


class BotocoreSpoolClient:
    """S3 and SQS through boto3 clients, each call in a thread of a shared pool. The
    clients (`s3`, `sqs`) are where tests register botocore event handlers."""

    def __init__(self, s3_budget: CallBudget, sqs_budget: CallBudget) -> None:
        self.s3 = aws.client("s3", budget=s3_budget, pool=POOL)
        # Registered last on "before-call.s3", where botocore's own handler sits.
        self.s3.meta.events.register_last("before-call.s3", _expect_continue_for_large_bodies,
                                          unique_id="sesrelay-expect-continue")
        self.sqs = aws.client("sqs", budget=sqs_budget, pool=POOL)

    async def put_object(self, bucket: str, key: str, body: bytes | bytearray,
                         metadata: dict[str, str]) -> None:
        """S3 PutObject; the body is read from the message buffer without a copy."""
        def put() -> None:
            self.s3.put_object(Bucket=bucket, Key=key, Body=MessageBody(body),
                               ContentType="message/rfc822", Metadata=metadata)

        await self._run(put)

    async def send_messages(self, queue_url: str,
                            entries: Sequence[tuple[str, str]]) -> dict[str, str]:
        """SendMessage or SendMessageBatch; the entries SQS reported failed."""
        def send() -> dict[str, str]:
            if len(entries) == 1:
                self.sqs.send_message(QueueUrl=queue_url, MessageBody=entries[0][1])
                return {}
            answer = self.sqs.send_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": id_, "MessageBody": body} for id_, body in entries])
            return {f["Id"]: f"{f.get('Code', '')}: {f.get('Message', '')}"
                    for f in answer.get("Failed", [])}

        return await self._run(send)

    @staticmethod
    async def _run(call: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(_executor, call)
        except (BotoCoreError, ClientError) as exc:
            raise SpoolCallError(f"{type(exc).__name__}: {exc}", aws.certainly_not_done(exc),
                                 aws.error_code(exc)) from exc
