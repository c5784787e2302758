"""What the worker tells about each message: Postfix's maillog lines (through the
powertools Logger, with the line under the "maillog" key) and the message trail.

A failed trail write is logged and forgotten: the trail explains deliveries, it must
never stop one. The maillog lines are written whatever happens to the trail.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ses_worker.observability import logger
from sesrelay import maillog, trail
from sesrelay.config import Config
from sesrelay.spool import Envelope, utc_now
from sesrelay.trail import Attempt, TrailWriter


@dataclass(frozen=True)
class Timing:
    """The times Postfix's delays= splits a delivery into, in seconds: a (before the
    worker first saw it: the relay and SQS), b (in the worker before the send), c
    (connection setup: none with an API call), d (the SendEmail call)."""

    received: datetime
    first_seen: datetime
    send_started: datetime
    send_seconds: float

    def delays(self, now: datetime) -> tuple[float, tuple[float, float, float, float]]:
        """(delay, (a, b, c, d)) as of now."""
        total = max(0.0, (now - self.received).total_seconds())
        a = max(0.0, (self.first_seen - self.received).total_seconds())
        b = max(0.0, (self.send_started - self.first_seen).total_seconds())
        d = self.send_seconds
        return total, (min(a, total), max(0.0, min(b, total - a)), 0.0, d)


def first_seen(record_attributes: Any, fallback: datetime) -> datetime:
    """When SQS first handed the record to a worker (ApproximateFirstReceiveTimestamp)."""
    stamp = getattr(record_attributes, "approximate_first_receive_timestamp", None)
    try:
        return datetime.fromtimestamp(int(stamp) / 1000, fallback.tzinfo)
    except (TypeError, ValueError):
        return fallback


class Report:
    """The maillog lines and trail items of one invocation's messages. Thread-safe."""

    def __init__(self, config: Config, writer: TrailWriter | None) -> None:
        self.config = config
        self.writer = writer
        self.relay = maillog.ses_relay(config.ses_region or _default_region())

    # --- maillog ------------------------------------------------------------------------

    def line(self, program: str, text: str, level: str = "info", **extra: Any) -> None:
        """One maillog line (the text after "sesrelay/<program>[pid]: ")."""
        getattr(logger, level)(text, extra={"maillog": text, "maillog_program": program,
                                            **extra})

    def statuses(self, queue_id: str, recipients: Iterable[str], timing: Timing, dsn: str,
                 status: str, text: str) -> None:
        """Postfix's per-recipient delivery lines: status is sent, deferred or bounced."""
        delay, delays = timing.delays(utc_now())
        level = "info" if status == "sent" else "warning"
        for recipient in recipients:
            self.line(maillog.SMTP, maillog.delivery(
                queue_id, recipient, relay=self.relay, delay=delay, delays=delays, dsn=dsn,
                status=status, text=text), level, recipient=recipient, status=status)

    # --- trail --------------------------------------------------------------------------

    def _trail(self, action: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        if self.writer is None:
            return None
        try:
            return call(*args, **kwargs)
        except (BotoCoreError, ClientError, RuntimeError) as exc:
            logger.warning(f"trail: could not record {action}: {exc}")
            return None

    def received(self, envelope: Envelope, sqs_message_id: str) -> None:
        """The message's first sight by a worker (recorded once)."""
        if self.writer is not None:
            self._trail("the arrival", self.writer.received, queue_id=envelope.queue_id,
                        sender=envelope.mail_from, recipients=envelope.rcpt_to,
                        size=envelope.size, received_at=trail.stamp(envelope.received),
                        client_address=envelope.client_address,
                        client_helo=envelope.client_helo, sqs_message_id=sqs_message_id)

    def attempt(self, queue_id: str, attempt: Attempt) -> None:
        """One send attempt and its outcome."""
        if self.writer is not None:
            self._trail("a send attempt", self.writer.attempt, queue_id, attempt)

    def note(self, queue_id: str, kind: str, **values: Any) -> None:
        """Another history step."""
        if self.writer is not None:
            self._trail(kind, self.writer.note, queue_id, kind, **values)

    def deferred(self, queue_id: str, *, reason: str, delay: int, receive_count: int,
                 pending: list[str], receipt_handle: str, queue_url: str,
                 in_doubt: list[str]) -> None:
        """The message waits for its next try."""
        next_try = trail.stamp(utc_now() + timedelta(seconds=delay))
        self.note(queue_id, trail.DEFERRED, reason=reason, next_try=next_try,
                  receive_count=receive_count, recipients=pending)
        if self.writer is not None:
            self._trail("the deferral", self.writer.update_state, queue_id,
                        status=trail.WAITING, pending=pending, attempts=receive_count,
                        last_reason=reason, next_try=next_try, receipt_handle=receipt_handle,
                        queue_url=queue_url, in_doubt=in_doubt)

    def finished(self, queue_id: str, status: str, **values: Any) -> None:
        """Nothing more will be done: Postfix's "removed", and the final state."""
        self.note(queue_id, trail.FINISHED, status=status, **values)
        if self.writer is not None:
            self._trail("the end", self.writer.update_state, queue_id, finished=True,
                        status=status, pending=[], **values)

    def undeliverable(self, queue_id: str, reason: str, pending: list[str]) -> None:
        """Neither sent nor bounced: left for the dead-letter queue."""
        self.note(queue_id, trail.BOUNCED, recipients=pending, reason=reason, dsn_sent=False)
        if self.writer is not None:
            self._trail("the state", self.writer.update_state, queue_id,
                        status=trail.STATE_UNDELIVERABLE, pending=pending, last_reason=reason)


def _default_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
