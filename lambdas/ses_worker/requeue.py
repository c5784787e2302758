"""Deferral by re-enqueue: a deferred message waits on the queue as a delayed copy of its
envelope, not as an in-flight record.

A standard SQS queue holds about 120,000 messages in flight (received, not deleted).
A record deferred by extending its visibility timeout stays in flight for the whole
backoff, so an SES outage would fill that allowance and stop the worker from receiving
anything, new mail included. Delayed messages do not count against it. So a deferral
longer than IN_FLIGHT_MAX_DELAY sends a copy of the envelope with DelaySeconds (SQS
allows at most 900) and the record is then reported as processed, which deletes it.

The copy carries what SQS's receive count used to tell (sesrelay.spool): the attempts
made so far (the backoff schedule and the error classes follow them), when a worker
first received the message (maillog delays), and ``not_before``, the end of the backoff.
A copy received before its not_before goes back again with the delay that is left (a
hop): one SendMessage, nothing else, before the claim, SES or S3.

The original is deleted only after SQS answered the SendMessage: a copy that is not
known to be stored never replaces it (docs/COMMIT.md). When the answer was lost, both
may exist, and botocore's retry after a read timeout can store the copy twice; every
copy has the message's queue ID, so the commit record and the send ledger send each
recipient chunk once whichever copy comes first.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError

from ses_worker.backoff import MAX_DELAY
from ses_worker.observability import logger
from sesrelay import aws
from sesrelay.spool import CONTRACT_VERSION, Envelope, utc_now
from sesrelay.timeouts import WORKER_AWS, WORKER_REQUEUE

# Deferrals up to this long stay visibility changes: one request instead of a SendMessage
# and a DeleteMessage, and `sesrelay flush` can make them due at once (SQS cannot hand
# out a delayed message sooner). That is the first retry with the default
# minimal_backoff_time (300 s, +10 % jitter). They keep at most (deferrals per second) x
# 330 s records in flight: 66,000 at 200 messages a second, 11,550 at 35, against SQS's
# 120,000; every later retry waits as a delayed copy.
IN_FLIGHT_MAX_DELAY = 330
# SQS's longest DelaySeconds.
SQS_MAX_DELAY = 900
# A copy received less than this before its not_before is tried rather than sent back:
# SQS delivers a delayed message on time, within the clocks' skew.
HOP_SLACK = 1.0


class Hop(enum.Enum):
    """What became of a record that was looked at for its not_before."""

    DUE = "due"  # try it now
    SENT_BACK = "sent back"  # a copy waits for the rest; the record is done
    HELD = "held"  # the copy could not be stored: the record waits in flight instead


class Requeued(Exception):
    """The message is on the queue again as a delayed copy; this record is done."""


def attempt_number(envelope: Envelope, receive_count: int) -> int:
    """The delivery attempt this receive is: the attempts made before the envelope's
    copy was enqueued, plus this copy's SQS receive count."""
    return envelope.attempts + receive_count


def deferred_copy(envelope: Envelope, attempts: int, first_seen: datetime,
                  not_before: datetime) -> Envelope:
    """The envelope to enqueue for a deferral: the same message reference (inline body
    or S3 bucket and key) and addresses, with the attempt count and times that SQS's
    receive count and first-receive timestamp no longer give."""
    return replace(envelope, version=CONTRACT_VERSION, attempts=attempts,
                   first_seen=first_seen.isoformat(), not_before=not_before.isoformat())


class Requeuer:
    """Enqueues deferred copies and sends early copies back (hops)."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock

    def now(self) -> datetime:
        """The current time in UTC (the injected clock's, if any)."""
        return self._clock() if self._clock else utc_now()

    def defer(self, queue_url: str, receipt_handle: str, envelope: Envelope, attempts: int,
              first_seen: datetime, delay: int) -> bool:
        """Defer a message by delay seconds. True: a copy is enqueued and the record is to
        be reported processed (deleted). False: the record waits in flight, its
        visibility timeout set to delay, and is to be reported as a failure; so is a
        short delay, and a copy that could not be stored (SQS's answer was an error or
        was lost: the record stays, so nothing is lost, and a copy that may exist anyway
        is harmless)."""
        if delay > IN_FLIGHT_MAX_DELAY and self._enqueue(
                queue_url, deferred_copy(envelope, attempts, first_seen,
                                         self.now() + timedelta(seconds=delay)), delay):
            return True
        _hold(queue_url, receipt_handle, delay)
        return False

    def hop(self, queue_url: str, envelope: Envelope, receipt_handle: str) -> Hop:
        """Look at a record's not_before: due now, or sent back with the delay left."""
        not_before = envelope.not_before_at
        if not_before is None:
            return Hop.DUE
        left = (not_before - self.now()).total_seconds()
        if left < HOP_SLACK:
            return Hop.DUE
        wait = math.ceil(left)
        if self._enqueue(queue_url, envelope, wait):
            logger.info(f"not due for {wait}s: sent back", extra={"not_before": not_before})
            return Hop.SENT_BACK
        # Keep the record in flight for the rest instead. Its next receive counts as one
        # more attempt than was made: the schedule moves on by one step, never back.
        _hold(queue_url, receipt_handle, min(wait, MAX_DELAY))
        return Hop.HELD

    def _enqueue(self, queue_url: str, copy: Envelope, delay: int) -> bool:
        try:
            # SQS refuses a copy over the queue's message size (the few dozen bytes a
            # copy adds can take an inline envelope at the limit over it): in flight, then.
            aws.client("sqs", budget=WORKER_REQUEUE).send_message(
                QueueUrl=queue_url, MessageBody=copy.to_json(),
                DelaySeconds=min(delay, SQS_MAX_DELAY))
        except (ClientError, BotoCoreError) as exc:
            logger.warning(f"could not re-enqueue the message ({exc}): deferred in flight "
                           "instead")
            return False
        return True


def _hold(queue_url: str, receipt_handle: str, delay: int) -> None:
    """Keep a record in flight for delay seconds (its visibility timeout)."""
    try:
        aws.client("sqs", budget=WORKER_AWS).change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay)
    except (ClientError, BotoCoreError) as exc:
        logger.warning(f"could not set the retry delay ({exc}); SQS retries after the "
                       "queue's visibility timeout")
