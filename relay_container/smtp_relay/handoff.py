"""The durable handoff: message bytes to S3, then the envelope to SQS.

The relay answers 250 only after both calls succeeded. If either call fails (or times
out, when it may still have taken effect) the S3 object is deleted again, so an envelope
that reached SQS anyway finds no object and the worker drops it: nothing the client was
told to retry is ever sent by us.

SQS sends are group-committed: envelopes of messages that finish at about the same time,
in different sessions, go out together in one SendMessageBatch (at most 10 entries), which
costs one request instead of ten. An envelope waits only while other messages are still
being written to S3 (their envelopes are about to come), never longer than BATCH_WINDOW,
so a lone client sees no added latency. Each message still waits for its own entry's
result: a failed entry withdraws that message's object and gives that client alone a 451.
A batch of one is sent as a plain SendMessage.
"""

from __future__ import annotations

import asyncio
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import determine_content_length

from sesrelay import aws
from sesrelay.spool import META_CONTRACT_VERSION, META_QUEUE_ID, Envelope

log = logging.getLogger("sesrelay.relay")

# Enough threads to keep the HTTP connection pool (aws.CLIENT_CONFIG) busy.
_executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="spool")

MAX_BATCH = 10  # SQS's limit on SendMessageBatch entries
# SQS's limit on the bodies of one SendMessageBatch call (and on one message) is 256 KiB.
MAX_BATCH_BYTES = 256 * 1024
# The longest an envelope waits for the messages still being written to S3 to join its
# batch. It ends sooner when the batch is full or no write is under way; only the messages
# of a busy relay wait, and a large upload holds the rest up at most this long. Bigger
# batches save more CPU than the wait costs (5 ms and 1 ms measured worse, 50 ms no better).
BATCH_WINDOW = 0.02
# SendMessageBatch calls in flight at once. While all are busy, envelopes queue up and leave
# in full batches as soon as a call returns. One would batch most, but would cap a process
# at 10 messages per SQS round trip.
MAX_BATCHES_IN_FLIGHT = 2


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


@dataclass(frozen=True)
class _Entry:
    """An envelope waiting for its SQS send: its JSON body, made once, and the future its
    session awaits."""

    envelope: Envelope
    body: str
    done: asyncio.Future[None]


class SpoolError(Exception):
    """The message could not be made durable; the client must retry (451)."""


class Spool:
    """Writes accepted messages to the S3 bucket and SQS queue named in the configuration."""

    def __init__(self, bucket: str, queue_url: str) -> None:
        self.bucket = bucket
        self.queue_url = queue_url
        self._s3 = aws.client("s3")
        # Registered last on "before-call.s3", where botocore's own handler sits.
        self._s3.meta.events.register_last("before-call.s3", _expect_continue_for_large_bodies,
                                           unique_id="sesrelay-expect-continue")
        self._sqs = aws.client("sqs")
        self._batch_window = BATCH_WINDOW
        self._max_in_flight = MAX_BATCHES_IN_FLIGHT
        self._pending: list[_Entry] = []
        self._in_flight = 0
        self._putting = 0  # messages being written to S3, whose envelopes will follow
        self._timer: asyncio.TimerHandle | None = None

    async def store(self, envelope: Envelope, message: bytes | bytearray) -> None:
        """Make the message durable, off the event loop. Raises SpoolError on any failure."""
        loop = asyncio.get_running_loop()
        self._putting += 1
        try:
            await loop.run_in_executor(_executor, self._put, envelope, message)
        except BaseException:
            self._putting -= 1
            if self._pending:  # they may have been waiting for this message alone
                self._schedule(loop)
            raise
        self._putting -= 1
        entry = _Entry(envelope, envelope.to_json(), loop.create_future())
        self._pending.append(entry)
        self._schedule(loop)
        try:
            await entry.done
        except SpoolError:
            await loop.run_in_executor(_executor, self._withdraw, envelope)
            raise

    def _put(self, envelope: Envelope, message: bytes | bytearray) -> None:
        try:
            self._s3.put_object(
                Bucket=envelope.bucket, Key=envelope.key, Body=MessageBody(message),
                ContentType="message/rfc822",
                Metadata={META_QUEUE_ID: envelope.queue_id, META_CONTRACT_VERSION:
                          str(envelope.version)},
            )
        except (BotoCoreError, ClientError) as exc:
            # A failed or timed-out PutObject may still have stored the object.
            self._withdraw(envelope)
            raise SpoolError(f"S3 PutObject failed: {exc}") from exc

    # --- group commit of SQS sends ------------------------------------------------------

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send now if a batch is full or no other envelope is on its way, else when the
        window ends; while every call slot is busy, when a call returns."""
        if self._in_flight >= self._max_in_flight:
            return  # _sent() flushes what queued up meanwhile
        if len(self._pending) >= MAX_BATCH or not self._putting:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._batch_window, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        while self._pending and self._in_flight < self._max_in_flight:
            batch = self._take_batch()
            self._in_flight += 1
            future = loop.run_in_executor(_executor, self._send, batch)
            future.add_done_callback(lambda f, batch=batch: self._sent(batch, f))

    def _sent(self, batch: list[_Entry], result: asyncio.Future[dict[str, str]]) -> None:
        """Resolve each message of a returned call with its own entry's outcome."""
        self._in_flight -= 1
        exc = result.exception()
        failed = {} if exc is not None else result.result()
        for entry in batch:
            queue_id, done = entry.envelope.queue_id, entry.done
            if done.cancelled():
                continue  # the session is gone (connection lost); no one to answer
            if exc is not None:
                done.set_exception(exc)
            elif queue_id in failed:
                done.set_exception(SpoolError(
                    f"SQS SendMessageBatch entry failed: {failed[queue_id]}"))
            else:
                done.set_result(None)
        if self._pending:
            self._flush()

    def _take_batch(self) -> list[_Entry]:
        """The oldest pending envelopes that fit one call: at most MAX_BATCH entries and
        MAX_BATCH_BYTES of bodies (an envelope with many recipients is large)."""
        count, size = 0, 0
        for entry in self._pending[:MAX_BATCH]:
            size += len(entry.body)
            if count and size > MAX_BATCH_BYTES:
                break
            count += 1
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    def _send(self, batch: list[_Entry]) -> dict[str, str]:
        """One SendMessage or SendMessageBatch call; the failed entries by queue ID."""
        try:
            if len(batch) == 1:
                self._sqs.send_message(QueueUrl=self.queue_url, MessageBody=batch[0].body)
                return {}
            answer = self._sqs.send_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": e.envelope.queue_id, "MessageBody": e.body} for e in batch])
        except (BotoCoreError, ClientError) as exc:
            operation = "SendMessage" if len(batch) == 1 else "SendMessageBatch"
            raise SpoolError(f"SQS {operation} failed: {exc}") from exc
        return {f["Id"]: f"{f.get('Code', '')}: {f.get('Message', '')}"
                for f in answer.get("Failed", [])}

    def _withdraw(self, envelope: Envelope) -> None:
        try:
            self._s3.delete_object(Bucket=envelope.bucket, Key=envelope.key)
        except (BotoCoreError, ClientError) as exc:
            # The worker never sends an object without an envelope, and the bucket's
            # lifecycle rule expires it; this is untidy, not dangerous.
            log.warning("%s: could not delete s3://%s/%s after the failed store: %s",
                        envelope.queue_id, envelope.bucket, envelope.key, exc)
