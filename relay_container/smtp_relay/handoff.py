"""The durable handoff: the commit protocol from the end of DATA to the relay's reply.

A message is either acknowledged (250) and sent once, or refused (451) and never sent
(docs/COMMIT.md has the whole protocol, step by step):

1. A message whose envelope fits one SQS message travels inside it; a larger one is
   first written to S3 (PutObject, idempotent, retried by the spool client). A failed S3 write
   means 451: no envelope names the object, and the bucket's lifecycle rule removes it.
2. The commit is the envelope's SendMessage. The relay retries it itself, because it must
   know whether any attempt may have reached SQS: an attempt that failed with an answer
   from SQS (4xx) or before any connection certainly did not; a lost or late answer, or a
   5xx, may have. A repeated envelope is harmless (the worker sends each recipient chunk
   once), so a retry is always safe.
3. If every attempt certainly failed: 451. If one may have reached SQS, the relay settles
   it with a commit record (sesrelay.commit): its refusal either wins (451, and the worker
   drops the envelope whenever it comes) or loses to the worker's claim (the message is
   queued and being sent: 250).
4. A client that leaves before step 2 gets nothing queued. Once step 2 has begun the store
   runs to its end even if the session is gone, and a drain waits for it (`stores`).

SQS sends are group-committed: envelopes of messages that finish at about the same time,
in different sessions, go out together in one SendMessageBatch (at most 10 entries and
256 KiB). An envelope waits only while other messages are still being written to S3
(their envelopes are about to come), never longer than BATCH_WINDOW, so a lone client
sees no added latency; while MAX_BATCHES_IN_FLIGHT calls are out, envelopes gather and
leave together when one returns. Each message still waits for its own entry's result.
A batch of one is sent as a plain SendMessage.

The S3 and SQS calls go through a spool client (spool_client.py: botocore in a thread pool,
or the lean client on this event loop, per sesrelay_spool_client); the commit record,
rare, is written with botocore in a thread.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sesrelay import aws, commit
from sesrelay.spool import META_CONTRACT_VERSION, META_QUEUE_ID, Envelope, spool_envelope
from sesrelay.timeouts import (
    RELAY_COMMIT,
    RELAY_RETRY_PAUSES,
    RELAY_S3,
    RELAY_SETTLE_PAUSES,
    RELAY_SETTLE_SECONDS,
    RELAY_SQS,
    RELAY_SQS_TRIES,
)
from smtp_relay.spool_client import (
    BotocoreSpoolClient,
    LeanSpoolClient,
    SpoolCallError,
    SpoolClient,
)

log = logging.getLogger("sesrelay.relay")

# Settling a commit record (rare: only after an SQS answer was lost) waits in a thread,
# up to RELAY_SETTLE_SECONDS each; enough threads, and DynamoDB connections, for an
# outage's worth of them.
SETTLE_THREADS = 64
_settle_executor = ThreadPoolExecutor(max_workers=SETTLE_THREADS, thread_name_prefix="settle")

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


class _Outcome(enum.Enum):
    """What the SQS sends of one envelope came to."""

    QUEUED = 1  # SQS took it
    NOT_QUEUED = 2  # certainly not in the queue
    UNKNOWN = 3  # an attempt may have reached SQS


@dataclass(frozen=True)
class _Entry:
    """An envelope waiting for its SQS send: its JSON body, made once, and the future its
    store awaits."""

    envelope: Envelope
    body: str
    done: asyncio.Future[tuple[_Outcome, str]]


class SpoolError(Exception):
    """The message is not queued and never will be; the client must retry (451)."""


class _Abandoned:
    """Set when the session awaiting a store is gone (connection lost, drain over)."""

    def __init__(self) -> None:
        self.flag = False


class Spool:
    """Commits accepted messages to the SQS queue (and the S3 bucket for large ones)."""

    def __init__(self, bucket: str, queue_url: str, table: str,
                 client: str = "botocore") -> None:
        """client: "lean" (spool_client.LeanSpoolClient) or "botocore"."""
        self.bucket = bucket
        self.queue_url = queue_url
        self.table = table
        self.client: SpoolClient = (
            LeanSpoolClient(RELAY_S3, RELAY_SQS, bucket) if client == "lean"
            else BotocoreSpoolClient(RELAY_S3, RELAY_SQS))
        self._dynamodb = aws.client("dynamodb", budget=RELAY_COMMIT, pool=SETTLE_THREADS)
        self._batch_window = BATCH_WINDOW
        self._max_in_flight = MAX_BATCHES_IN_FLIGHT
        self._pending: list[_Entry] = []
        self._in_flight = 0
        self._putting = 0  # messages being written to S3, whose envelopes will follow
        self._timer: asyncio.TimerHandle | None = None
        self.stores: set[asyncio.Task[Envelope]] = set()  # under way; a drain waits for them

    async def store(self, fields: dict[str, Any], message: bytes | bytearray,
                    key: str) -> Envelope:
        """Commit the message (S3 key `key` if it must go to S3); return its envelope.
        Raises SpoolError when it is not queued. Cancelling the caller abandons the
        store if the commit has not begun, and otherwise lets it finish."""
        abandoned = _Abandoned()
        task = asyncio.get_running_loop().create_task(
            self._store(fields, message, key, abandoned))
        self.stores.add(task)
        task.add_done_callback(self.stores.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            abandoned.flag = True
            raise

    async def _store(self, fields: dict[str, Any], message: bytes | bytearray, key: str,
                     abandoned: _Abandoned) -> Envelope:
        loop = asyncio.get_running_loop()
        envelope, body = spool_envelope(fields, message, self.bucket, key)
        if not envelope.inline:
            self._putting += 1
            try:
                await self._put(envelope, message)
            except BaseException:
                self._putting -= 1
                if self._pending:  # they may have been waiting for this message alone
                    self._schedule(loop)
                raise
            self._putting -= 1
        if abandoned.flag:
            if self._pending:
                self._schedule(loop)
            raise SpoolError("the client left before the message was committed")
        entry = _Entry(envelope, body, loop.create_future())
        self._pending.append(entry)
        self._schedule(loop)
        outcome, error = await entry.done
        if outcome is _Outcome.QUEUED:
            return envelope
        if outcome is _Outcome.NOT_QUEUED:
            raise SpoolError(f"SQS did not take the envelope: {error}")
        if await loop.run_in_executor(_settle_executor, self._settle, envelope.queue_id,
                                      error):
            return envelope
        raise SpoolError(f"SQS may have taken the envelope ({error}); refused it with a "
                         "commit record, so it will never be sent")

    async def _put(self, envelope: Envelope, message: bytes | bytearray) -> None:
        try:
            await self.client.put_object(
                envelope.bucket, envelope.key, message,
                {META_QUEUE_ID: envelope.queue_id, META_CONTRACT_VERSION:
                 str(envelope.version)})
        except SpoolCallError as exc:
            # No envelope will name the object; the lifecycle rule removes it.
            raise SpoolError(f"S3 PutObject failed: {exc}") from exc

    def _settle(self, queue_id: str, error: str) -> bool:
        """After an SQS send whose outcome is unknown: True if the message turned out to
        be queued (a worker claimed it), False once it is refused for good. Tries for
        RELAY_SETTLE_SECONDS; raises SpoolError if neither could be established."""
        deadline = time.monotonic() + RELAY_SETTLE_SECONDS
        tries = 0
        while True:
            try:
                refused = commit.refuse(self._dynamodb, self.table, queue_id)
            except (BotoCoreError, ClientError) as exc:
                last = exc
                pause = RELAY_SETTLE_PAUSES[min(tries, len(RELAY_SETTLE_PAUSES) - 1)]
                tries += 1
                if time.monotonic() + pause >= deadline:
                    break
                time.sleep(pause)
                continue
            if refused:
                log.warning("%s: SQS may have taken the envelope (%s); refused with a "
                            "commit record: it will not be sent", queue_id, error)
                return False
            log.warning("%s: SQS's answer was lost (%s), but a worker has claimed the "
                        "message: it is queued", queue_id, error)
            return True
        log.error("%s: in doubt: SQS may have taken the envelope (%s) and the commit record "
                  "could not be written in %d tries over %.0f s (%s); the client is told to "
                  "retry, so this message may be delivered twice", queue_id, error, tries,
                  RELAY_SETTLE_SECONDS, last)
        raise SpoolError(f"in doubt: {error}; commit record: {last}")

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
            task = loop.create_task(self._send(batch))
            task.add_done_callback(lambda t, batch=batch: self._sent(batch, t))

    def _sent(self, batch: list[_Entry],
              result: asyncio.Future[dict[str, tuple[_Outcome, str]]]) -> None:
        """Resolve each message of a returned call with its own entry's outcome."""
        self._in_flight -= 1
        exc = asyncio.CancelledError() if result.cancelled() else result.exception()
        outcomes = {} if exc is not None else result.result()
        for entry in batch:
            if not entry.done.done():
                entry.done.set_result(outcomes.get(
                    entry.envelope.queue_id, (_Outcome.UNKNOWN, f"internal error: {exc}")))
        if self._pending:
            self._flush()

    def _take_batch(self) -> list[_Entry]:
        """The oldest pending envelopes that fit one call: at most MAX_BATCH entries and
        MAX_BATCH_BYTES of bodies."""
        count, size = 0, 0
        for entry in self._pending[:MAX_BATCH]:
            size += len(entry.body)
            if count and size > MAX_BATCH_BYTES:
                break
            count += 1
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    async def _send(self, batch: list[_Entry]) -> dict[str, tuple[_Outcome, str]]:
        """Send the batch's envelopes, retrying what SQS did not take; the outcome of
        each by queue ID, with the last error."""
        outcomes: dict[str, tuple[_Outcome, str]] = {}
        remaining = {e.envelope.queue_id: e for e in batch}
        maybe: set[str] = set()  # sent by an attempt whose outcome is unknown
        errors: dict[str, str] = {}
        for attempt in range(RELAY_SQS_TRIES):
            if attempt:
                await asyncio.sleep(RELAY_RETRY_PAUSES[attempt - 1])
            try:
                failed = await self.client.send_messages(
                    self.queue_url, [(e.envelope.queue_id, e.body) for e in remaining.values()])
            except SpoolCallError as exc:
                if not exc.certain:
                    maybe.update(remaining)
                errors = dict.fromkeys(remaining, str(exc))
                continue
            for queue_id in list(remaining):
                if queue_id not in failed:
                    outcomes[queue_id] = (_Outcome.QUEUED, "")
                    del remaining[queue_id]
            errors = failed
            if not remaining:
                break
        for queue_id in remaining:
            outcome = _Outcome.UNKNOWN if queue_id in maybe else _Outcome.NOT_QUEUED
            outcomes[queue_id] = (outcome, errors.get(queue_id, "unknown error"))
        return outcomes
