"""What the worker tells about each message: Postfix's maillog lines (through the
powertools Logger, with the line under the "maillog" key) and the message trail.

A failed trail write is logged and forgotten: the trail explains deliveries, it must
never stop one. The maillog lines are written whatever happens to the trail.
"""

from __future__ import annotations

import os
import threading
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
    """The maillog lines and trail items of one invocation's messages. Thread-safe.

    The trail items of one receive are gathered and written together when the receive
    ends (deferred, finished, left for the DLQ, or flush()), so a message costs the
    worker two trail requests in the usual case: its arrival, and its end."""

    def __init__(self, config: Config, writer: TrailWriter | None) -> None:
        self.config = config
        self.writer = writer
        self.relay = maillog.ses_relay(config.ses_region or _default_region())
        self._items: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    # --- maillog ------------------------------------------------------------------------

    def line(self, program: str, text: str, level: str = "info", **extra: Any) -> None:
        """One maillog line (the text after "sesrelay/<program>[pid]: ")."""
        getattr(logger, level)(text, extra={"maillog": text, "maillog_program": program,
                                            **extra})

    def statuses(self, envelope: Envelope, recipients: Iterable[str], timing: Timing,
                 dsn: str, status: str, text: str) -> None:
        """Postfix's per-recipient delivery lines: status is sent, deferred or bounced;
        orig_to= names what the client sent when address rewriting changed it."""
        delay, delays = timing.delays(utc_now())
        level = "info" if status == "sent" else "warning"
        for recipient in recipients:
            self.line(maillog.SMTP, maillog.delivery(
                envelope.queue_id, recipient, relay=self.relay, delay=delay, delays=delays,
                dsn=dsn, status=status, text=text,
                original=envelope.original_recipient(recipient)),
                level, recipient=recipient, status=status, reason=text, dsn=dsn)

    # --- trail --------------------------------------------------------------------------

    def _add(self, queue_id: str, *items: dict[str, Any]) -> None:
        with self._lock:
            self._items.setdefault(queue_id, []).extend(items)

    def flush(self, queue_id: str) -> None:
        """Write what this receive gathered for the message."""
        with self._lock:
            items = self._items.pop(queue_id, [])
        if items and self.writer is not None:
            try:
                self.writer.write(items)
            except (BotoCoreError, ClientError, RuntimeError) as exc:
                logger.warning(f"trail: {len(items)} items not recorded: {exc}")

    def _state(self, envelope: Envelope, *, unfinished: bool, **fields: Any) -> dict[str, Any]:
        assert self.writer is not None
        return self.writer.state_item(
            envelope.queue_id, unfinished=unfinished, sender=envelope.mail_from,
            recipients=list(envelope.rcpt_to), size=envelope.size,
            received_at=trail.stamp(envelope.received), **fields)

    def received(self, envelope: Envelope, sqs_message_id: str, receive_count: int) -> None:
        """The message's first sight by a worker: its state, one item per recipient and
        the RECEIVED history item (on the first receive only)."""
        if self.writer is None or receive_count > 1:
            return
        received_at = trail.stamp(envelope.received)
        self._add(envelope.queue_id,
                  self._state(envelope, unfinished=True, status=trail.ACTIVE,
                              pending=list(envelope.rcpt_to), attempts=0),
                  self.writer.history_item(
                      envelope.queue_id, trail.RECEIVED, at=received_at,
                      sender=envelope.mail_from, recipients=list(envelope.rcpt_to),
                      size=envelope.size, client_address=envelope.client_address,
                      client_helo=envelope.client_helo, sqs_message_id=sqs_message_id,
                      **({"sasl_username": envelope.sasl_username}
                         if envelope.sasl_username else {})),
                  *self.writer.recipient_items(envelope.queue_id, envelope.rcpt_to,
                                               received_at))
        self.flush(envelope.queue_id)  # mailq lists it from now on

    def attempt(self, queue_id: str, attempt: Attempt) -> None:
        """One send attempt and its outcome."""
        if self.writer is not None:
            self._add(queue_id, self.writer.attempt_item(queue_id, attempt))

    def note(self, queue_id: str, kind: str, **values: Any) -> None:
        """Another history step."""
        if self.writer is not None:
            self._add(queue_id, self.writer.history_item(queue_id, kind, **values))

    def deferred(self, envelope: Envelope, *, reason: str, delay: int, receive_count: int,
                 pending: list[str], receipt_handle: str, queue_url: str,
                 in_doubt: list[str]) -> None:
        """The message waits for its next try."""
        next_try = trail.stamp(utc_now() + timedelta(seconds=delay))
        self.note(envelope.queue_id, trail.DEFERRED, reason=reason, next_try=next_try,
                  receive_count=receive_count, recipients=pending)
        if self.writer is not None:
            self._add(envelope.queue_id, self._state(
                envelope, unfinished=True, status=trail.WAITING, pending=pending,
                attempts=receive_count, last_reason=reason, next_try=next_try,
                receipt_handle=receipt_handle, queue_url=queue_url, in_doubt=in_doubt))
        self.flush(envelope.queue_id)

    def finished(self, envelope: Envelope, status: str, **values: Any) -> None:
        """Nothing more will be done: Postfix's "removed", and the final state."""
        self.note(envelope.queue_id, trail.FINISHED, status=status, **values)
        if self.writer is not None:
            self._add(envelope.queue_id, self._state(
                envelope, unfinished=False, status=status, pending=[], **values))
        self.flush(envelope.queue_id)

    def undeliverable(self, envelope: Envelope, reason: str, pending: list[str],
                      receive_count: int) -> None:
        """Neither sent nor bounced: left for the dead-letter queue."""
        self.note(envelope.queue_id, trail.BOUNCED, recipients=pending, reason=reason,
                  dsn_sent=False)
        if self.writer is not None:
            self._add(envelope.queue_id, self._state(
                envelope, unfinished=True, status=trail.STATE_UNDELIVERABLE, pending=pending,
                attempts=receive_count, last_reason=reason))
        self.flush(envelope.queue_id)


def _default_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
