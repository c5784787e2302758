"""Every AWS call's time budget, in one place: connect and read timeouts, attempts, and
the worst cases they add up to.

Two promises depend on these numbers. The relay answers a client only once its store has
finished or been resolved, and ECS stops a task at most STOP_TIMEOUT seconds after
SIGTERM, so the drain plus the slowest possible store must fit in that. The worker must
never be killed by Lambda's timeout in the middle of a SendEmail (whose outcome would then
be unknown), so it starts a send only when the rest of its invocation can hold the
slowest possible one.

botocore's read timeout is the longest wait for the next bytes of an answer, not a limit
on the whole call, so each worst case below counts an upload at MIN_BANDWIDTH as well.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.config import Config as BotoConfig

from sesrelay.send_rate import MAX_RECIPIENTS_PER_CALL

# ECS waits at most this long after SIGTERM before it kills the container (Fargate's
# maximum stopTimeout); the CDK stack sets it.
STOP_TIMEOUT = 120
# The slowest link to S3 or SES a message is expected to cross, in bytes per second.
MIN_BANDWIDTH = 5 * 1024 * 1024


@dataclass(frozen=True)
class CallBudget:
    """Timeouts and attempts of one kind of AWS call."""

    connect: float
    read: float
    attempts: int  # every attempt botocore makes, the first included

    def boto_config(self, pool: int = 10) -> BotoConfig:
        """The botocore configuration that enforces this budget."""
        return BotoConfig(connect_timeout=self.connect, read_timeout=self.read,
                          retries={"mode": "standard", "total_max_attempts": self.attempts},
                          max_pool_connections=pool)

    def worst_case(self, upload_bytes: int = 0) -> float:
        """Seconds the slowest call can take: every attempt connecting, uploading at
        MIN_BANDWIDTH and waiting the full read timeout."""
        return self.attempts * (self.connect + upload_bytes / MIN_BANDWIDTH + self.read)


# AWS calls with no budget of their own (the CLI, the dev set-up).
DEFAULT = CallBudget(connect=5, read=20, attempts=3)

# The relay's store. PutObject is idempotent (same key, same bytes), so botocore may
# retry it. SendMessage and the commit record are retried by the relay itself, which
# must know whether any attempt may have taken effect (handoff.py).
RELAY_S3 = CallBudget(connect=3, read=10, attempts=2)
RELAY_SQS = CallBudget(connect=3, read=5, attempts=1)
RELAY_SQS_TRIES = 3
RELAY_COMMIT = CallBudget(connect=3, read=5, attempts=1)
# Pause before the relay's second and third SendMessage attempt.
RELAY_RETRY_PAUSES = (0.1, 0.4)
# After a SendMessage whose outcome is unknown, the relay tries to settle it with a commit
# record for this long (a try that starts in time may run its own budget), with these
# pauses (the last repeats), while the client waits for its answer: a client waits
# minutes for the reply to DATA (RFC 5321 4.5.3.2.6: 10), and an outage of SQS and
# DynamoDB together (the task's network) shorter than this leaves no message in doubt.
RELAY_SETTLE_SECONDS = 18.0
RELAY_SETTLE_PAUSES = (0.1, 0.4, 1.0, 2.0)


def relay_store_worst_case(message_size: int) -> float:
    """Seconds from the end of DATA to the relay's answer, at worst, for a message of
    message_size bytes: the S3 upload, every SendMessage and every commit-record try."""
    return (RELAY_S3.worst_case(message_size)
            + RELAY_SQS_TRIES * RELAY_SQS.worst_case() + sum(RELAY_RETRY_PAUSES)
            + RELAY_SETTLE_SECONDS + RELAY_COMMIT.worst_case())


# `sesrelay serve --drain-seconds`: how long sessions in mid-transaction may go on after
# SIGTERM. Stores under way when it ends still finish (they fit in STOP_TIMEOUT).
DRAIN_SECONDS = 25.0

# The worker's SendEmail: never retried by botocore, because SES has no idempotency
# token and a retry after a lost answer is a second copy. The worker retries itself, and
# only what certainly did not reach SES (ses_worker/sending.py). The read timeout covers
# SES's work after the last byte of a 40 MB message.
WORKER_SES = CallBudget(connect=5, read=30, attempts=1)
# SES v2 carries the raw message base64-encoded in a JSON body.
SES_REQUEST_OVERHEAD = 4 / 3


# The worker function's timeout when an environment does not set one (cdk.json's
# worker.timeout_seconds); `sesrelay dev` gives its worker the same.
WORKER_TIMEOUT = 60
# AWS's advice for an SQS event source: the queue's visibility timeout is six times the
# function's timeout, so a batch retried inside the function is not handed out twice.
VISIBILITY_PER_TIMEOUT = 6


# Seconds a worker invocation keeps in hand after the worst case of its last send.
INVOCATION_MARGIN = 2.0


def ses_send_worst_case(message_size: int) -> float:
    """Seconds one SendEmail of a message_size-byte message can take, at worst."""
    return WORKER_SES.worst_case(int(message_size * SES_REQUEST_OVERHEAD))


def worker_timeout_needed(message_size: int) -> float:
    """The shortest worker timeout in which a fresh invocation may start a send of a
    message_size-byte message."""
    return ses_send_worst_case(message_size) + INVOCATION_MARGIN


# Records per SQS batch: the most an SQS event source hands over without a batching
# window, delivered concurrently by the worker.
WORKER_BATCH_SIZE = 10


class WorkerTimingError(ValueError):
    """A worker timeout, message size and send rate that cannot work together."""


@dataclass(frozen=True)
class WorkerTiming:
    """The worker function's timeout, its event source's batch size and the queue's
    visibility timeout, derived from each other and from the send rate."""

    timeout: int  # seconds
    batch_size: int
    visibility_timeout: int  # seconds


def worker_timing(timeout: int, message_size: int, send_rate: float,
                  concurrency: int) -> WorkerTiming:
    """The worker's timing for a function timeout (seconds), the largest message
    (message_size_limit), the configured send rate (recipients per second, 0: none) and
    the event source's maximum concurrency.

    A fresh invocation must be able to start the largest SendEmail it may owe: one call
    of the most recipients SES takes (sesrelay.send_rate.MAX_RECIPIENTS_PER_CALL),
    after waiting for them at this worker's share of the send rate, and still hold the
    call's worst case (ses_send_worst_case). Else such a message would never start, come
    back unstarted on every receive and end in the DLQ: WorkerTimingError says so.

    The worker then stops starting sends when the rest of its invocation cannot hold the
    next one, and returns the records it did not start (ses_worker.delivery), so a batch
    never needs more time than the timeout: the batch size stays WORKER_BATCH_SIZE. The
    queue's visibility timeout is VISIBILITY_PER_TIMEOUT times the function timeout.
    """
    share = send_rate / max(1, concurrency) if send_rate > 0 else 0.0
    wait = MAX_RECIPIENTS_PER_CALL / share if share else 0.0
    slowest = worker_timeout_needed(message_size)
    if timeout < slowest + wait:
        raise WorkerTimingError(
            f"{timeout} s is too short: a fresh invocation needs {slowest + wait:.0f} s to "
            f"start a {MAX_RECIPIENTS_PER_CALL}-recipient SendEmail of message_size_limit "
            f"({message_size} bytes): {wait:.0f} s for its turn at this worker's share of "
            f"ses_max_send_rate ({send_rate:g}/s over {concurrency} concurrent workers) "
            f"and {slowest:.0f} s for the slowest call; raise the timeout or the rate, "
            "or lower the concurrency or message_size_limit")
    return WorkerTiming(timeout, WORKER_BATCH_SIZE, timeout * VISIBILITY_PER_TIMEOUT)


# Other worker calls (S3, SQS visibility, DynamoDB): retried by botocore, all idempotent.
WORKER_AWS = CallBudget(connect=3, read=10, attempts=3)
# The worker's SendMessage of a deferred copy (ses_worker/requeue.py). Not idempotent:
# botocore's retry after a lost answer can store the copy twice, which the commit record
# and the send ledger make harmless, and the original is deleted only after an answer.
WORKER_REQUEUE = CallBudget(connect=3, read=10, attempts=3)
