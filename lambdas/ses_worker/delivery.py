"""Delivery of one spooled message: claim it, send each recipient chunk once, then sent,
deferred, bounced or left for the dead-letter queue.

Outcomes, in Postfix's terms:
- sent: every recipient accepted by SES. The MessageIds are logged, and the message is
  kept in S3 or not per sesrelay_spool_retention.
- deferred: a retryable failure, or a send whose outcome is not known yet. A copy of the
  envelope goes back on the queue, delayed by the backoff (ses_worker.requeue), and the
  record is done; a short delay instead becomes the record's visibility timeout and the
  record is reported as a batch item failure, so SQS redelivers it.
- held: a mail system configuration error (ses_worker.errors): deferred by the longest
  backoff without advancing the message's retry schedule (ses_worker.holds), never
  bounced for it; one log line a minute says why.
- not started: the invocation had no time left for the send; the record goes back to
  the queue at once, again without advancing its retry schedule.
- bounced: a permanent failure (or the queue lifetime ran out): an RFC 3464 DSN goes
  to the envelope sender and the record is done.
- undeliverable: cannot be sent nor bounced (null sender, soft_bounce, the bounce
  itself refused). The reason is logged and the record fails until SQS moves it to
  the dead-letter queue.
- dropped: never committed (the relay refused it after a lost SQS answer), deleted by an
  operator, an SQS body that is no envelope, or a spool object that is gone. The record
  is logged and deleted.

Exactly once (docs/COMMIT.md): the worker claims the queue ID's commit record before it
sends anything (sesrelay.commit), and each SendEmail it owes has a send-ledger item
(ses_worker.ledger) that a redelivery, a concurrent invocation or a lost answer cannot
get past without knowing what SES did.
"""

from __future__ import annotations

import enum
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NoReturn

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from ses_worker.backoff import paused_delay, retry_delay
from ses_worker.dsn import RELAYED, FailedRecipient, build_dsn
from ses_worker.errors import (
    CONFIGURATION_STATUS,
    ErrorClass,
    SendFailure,
    SendUnknown,
    classify,
    effective_class,
    systemic,
)
from ses_worker.holds import HeldReceives
from ses_worker.ledger import (
    DSN_PREFIX,
    RELAYED_PREFIX,
    SEND_PREFIX,
    Found,
    LedgerConflict,
    SendLedger,
    send_key,
)
from ses_worker.message import (
    header_section_problem,
    remove_fields,
    smtp_header_checks,
    strip_blind_headers,
)
from ses_worker.observability import count, log_keys, logger, seconds
from ses_worker.report import Report, Timing, first_seen
from ses_worker.requeue import Hop, Requeued, Requeuer, attempt_number
from ses_worker.sending import NotStarted, Outgoing, SesSender, recipient_chunks
from ses_worker.settle import Settler, Verdict
from ses_worker.warm import Warm
from sesrelay import aws, commit, maillog, ses_headers, trail
from sesrelay.config import Config
from sesrelay.long_lines import fit_lines
from sesrelay.spool import (
    TAG_SES_MESSAGE_ID,
    ContractError,
    Envelope,
    NewerContract,
    object_key,
    utc_now,
)
from sesrelay.telemetry import (
    BOUNCED,
    CONFIGURATION_ERROR,
    DEFERRED,
    DEFERRED_AGE,
    FAILED,
    SENDS_IN_DOUBT,
    SENT,
)
from sesrelay.timeouts import INVOCATION_MARGIN, WORKER_AWS, WORKER_SES, ses_send_worst_case
from sesrelay.trail import Attempt, TrailReader, TrailWriter, new_attempt_id

EXPIRED_STATUS = "5.4.7"  # RFC 3463: delivery time expired
UNKNOWN_STATUS = "4.4.2"  # RFC 3463: bad connection (the answer never came)
S3_TAG_MAX = 256
# A send's ledger lease outlasts its worst case by this much.
LEASE_MARGIN = 10.0


class MessageDeferred(Exception):
    """The record is to be retried after its (already extended) visibility timeout."""


class MessageUndeliverable(Exception):
    """The message can be neither sent nor bounced: it belongs in the dead-letter queue."""


@functools.lru_cache(maxsize=8)
def _queue_url(event_source_arn: str) -> str:
    # arn:aws:sqs:<region>:<account>:<name>: the event names its queue, whatever the
    # configuration says, and GetQueueUrl gives the URL in this endpoint's form.
    _, _, _, region, account, name = event_source_arn.split(":", 5)
    response = aws.client("sqs", region, WORKER_AWS).get_queue_url(
        QueueName=name, QueueOwnerAWSAccountId=account)
    return str(response["QueueUrl"])


def _queue_id_hint(body: str) -> str:
    """The queue ID of a malformed envelope, if it has one, for the log line."""
    try:
        data = json.loads(body)
    except ValueError:
        return "unknown"
    queue_id = data.get("queue_id") if isinstance(data, dict) else None
    return queue_id if isinstance(queue_id, str) else "unknown"


class SpoolObjectMissing(Exception):
    """The spooled message's S3 object does not exist."""


class SpooledMessage:
    """A record's message, from the envelope or S3, read on first use, without its
    blind-copy headers and with its X-SES-* headers turned into request parameters.

    Reading lazily means a redelivered record whose chunks all went out already (the
    ledger says so) never touches S3, where its object may be gone.
    """

    def __init__(self, s3: Any, envelope: Envelope, config: Config,
                 outbound: Callable[[bytes], bytes]):
        self._s3 = s3
        self._envelope = envelope
        self._config = config
        self._outbound = outbound  # smtp_header_checks
        self._original: bytes | None = None
        self._outgoing: Outgoing | None = None

    def read(self) -> Outgoing:
        """The bytes to send and what their X-SES-* headers ask of SES. Raises
        SpoolObjectMissing, or SendFailure when S3 fails, the header section is
        malformed or an X-SES-* header is not allowed here (permanent)."""
        if self._outgoing is None:
            body = self.original()
            problem = header_section_problem(body)
            if problem:  # permanent: sending it again cannot help
                raise SendFailure(ErrorClass.PERMANENT, "MalformedHeaders", problem, "5.6.0")
            # smtp_header_checks sees the header block as Postfix's smtp(8) would hand it
            # to SES's SMTP interface, which then removes the X-SES-* headers it applies.
            body = self._outbound(strip_blind_headers(body))
            body, fields = remove_fields(body, ses_headers.is_ses_header)
            try:
                request = ses_headers.requested(fields, self._config)
            except ses_headers.SesHeaderError as exc:  # the relay refuses these at DATA
                raise SendFailure(ErrorClass.PERMANENT, "SesHeaders", str(exc),
                                  exc.status) from None
            # SES refuses a line over 1,000 characters; Postfix accepts any length.
            self._outgoing = Outgoing(fit_lines(body), request)
        return self._outgoing

    def original(self) -> bytes:
        """The message as spooled, unchecked (a DSN quotes its headers)."""
        if self._original is None:
            self._original = (self._envelope.message() if self._envelope.inline
                              else self._fetch())
        return self._original

    def _fetch(self) -> bytes:
        bucket, key = self._envelope.bucket, self._envelope.key
        try:
            return bytes(self._s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                raise SpoolObjectMissing(f"spool object s3://{bucket}/{key} is "
                                         "missing") from None
            raise classify(exc) from exc
        except BotoCoreError as exc:
            raise classify(exc) from exc


class Status(enum.Enum):
    """What became of one send (a recipient chunk, or the DSN)."""

    SENT = "sent"
    FAILED = "failed"  # SES certainly did not accept it: failure says why
    IN_DOUBT = "in_doubt"  # SES may have accepted it; not settled yet
    WAITING = "waiting"  # not tried now (another invocation has it, no time left, ...)


@dataclass(frozen=True)
class SendResult:
    """The outcome of one send."""

    status: Status
    recipients: tuple[str, ...]
    message_id: str = ""
    failure: SendFailure | None = None
    reason: str = ""
    doubted: bool = False  # some attempt of this send was ever in doubt
    logged: bool = False  # its maillog lines were written in an earlier receive
    timing: Timing | None = None
    no_time: bool = False  # not started: too little time left in this invocation

    @property
    def held(self) -> bool:
        """True if a mail system configuration error stopped this send."""
        return self.failure is not None and self.failure.kind is ErrorClass.CONFIGURATION

    @property
    def defers(self) -> bool:
        """True if this send is to be tried again later rather than bounced now."""
        return self.status is not Status.FAILED or (
            self.failure is not None and self.failure.kind.defers)


class Deliverer:
    """Delivers the records of one invocation. Thread-safe: records run concurrently."""

    def __init__(self, config: Config, context: LambdaContext | None, warm: Warm):
        if not config.sesrelay_idempotency_table:
            raise RuntimeError("sesrelay_idempotency_table is not set: without it a "
                               "redelivered record could be sent twice")
        self.config = config
        self.context = context
        self.s3 = aws.client("s3", budget=WORKER_AWS)
        self.dynamodb = aws.client("dynamodb", budget=WORKER_AWS)
        self.ledger = SendLedger(self.dynamodb, config.sesrelay_idempotency_table)
        self.holds = HeldReceives(self.dynamodb, config.sesrelay_idempotency_table)
        self.warm = warm
        ses = aws.client("sesv2", config.ses_region, WORKER_SES)
        warm.prepare(config, ses)
        self.sender = SesSender(config, ses, warm.limiter)
        writer = reader = None
        if config.sesrelay_trail_table:
            writer = TrailWriter(self.dynamodb, config.sesrelay_trail_table,
                                 config.sesrelay_trail_retention)
            reader = TrailReader(self.dynamodb, config.sesrelay_trail_table)
        self.report = Report(config, writer)
        self.settler = Settler(config, reader)
        self.requeuer = Requeuer()

    # The record ---------------------------------------------------------------------

    def deliver(self, record: SQSRecord) -> None:
        """Deliver one SQS record. Returns when the record is done (sent, bounced or
        dropped); raises MessageDeferred or MessageUndeliverable when SQS must keep it."""
        try:
            envelope = Envelope.from_json(record.body)
        except NewerContract as exc:
            with log_keys(queue_id=_queue_id_hint(record.body),
                          sqs_message_id=record.message_id):
                self._keep_for_a_newer_worker(record, exc)
        except ContractError as exc:
            with log_keys(queue_id=_queue_id_hint(record.body),
                          sqs_message_id=record.message_id):
                logger.error(f"malformed SQS message dropped: {exc}")
                count(FAILED)
            return
        with log_keys(queue_id=envelope.queue_id, sqs_message_id=record.message_id):
            try:
                if envelope.not_before:  # a deferred copy: due, or sent back for the rest
                    hop = self.requeuer.hop(_queue_url(record.event_source_arn), envelope,
                                            record.receipt_handle)
                    if hop is Hop.SENT_BACK:
                        return
                    if hop is Hop.HELD:
                        raise MessageDeferred("not due yet")
                self._deliver(envelope, record)
            except Requeued:
                return  # its delayed copy is on the queue: this record is done
            except (MessageDeferred, MessageUndeliverable):
                raise  # logged where decided
            except Exception:
                logger.exception("unexpected error; the record returns after the queue's "
                                 "visibility timeout")
                raise
            finally:
                self.report.flush(envelope.queue_id)

    def _deliver(self, envelope: Envelope, record: SQSRecord) -> None:
        receive_count = attempt_number(
            envelope, int(record.attributes.approximate_receive_count or 1))
        seen = envelope.first_seen_at or first_seen(record.attributes, utc_now())
        if not self._claim(envelope, record, receive_count, seen):
            return
        self.report.received(envelope, record.message_id, receive_count)
        message = SpooledMessage(self.s3, envelope, self.config,
                                 functools.partial(self._outbound, envelope.queue_id))
        results: list[SendResult] = []
        for recipients in recipient_chunks(envelope.rcpt_to):
            previous = results[-1].failure if results else None
            # An account-wide condition fails every chunk alike: do not ask SES again.
            if previous is not None and previous.kind in (ErrorClass.THROTTLED,
                                                         ErrorClass.CONFIGURATION):
                results.append(replace(results[-1], recipients=recipients, doubted=False))
                continue
            try:
                results.append(self._send(
                    trail.PURPOSE_MESSAGE, SEND_PREFIX, envelope, recipients, recipients,
                    envelope.mail_from, message.read, seen))
            except SpoolObjectMissing as exc:
                self._drop(envelope, f"{exc} (the bucket's lifecycle rule removed it, or "
                           "an earlier delivery finished without its SQS message deleted)",
                           level="error")
                count(FAILED)
                return
        for result in results:
            if result.status is Status.SENT and not result.logged and result.timing:
                self.report.statuses(envelope, result.recipients, result.timing,
                                     "2.0.0", "sent", _sent_text(result))
        failures = [r for r in results if r.status is not Status.SENT]
        if not failures:
            count(SENT)
            self._notify_relayed(envelope, message, results, seen)
            self._finish(envelope, message, results, trail.STATE_SENT)
            return
        self._conclude(envelope, record, receive_count, failures, message, results, seen)

    def _claim(self, envelope: Envelope, record: SQSRecord, receive_count: int,
               seen: datetime) -> bool:
        """Claim the queue ID (sesrelay.commit); False if the message must not be sent."""
        try:
            stopped = commit.claim(self.dynamodb, self.config.sesrelay_idempotency_table,
                                   envelope.queue_id)
        except (BotoCoreError, ClientError) as exc:
            self._defer(record, envelope, receive_count, seen, [SendResult(
                Status.WAITING, envelope.rcpt_to,
                reason=f"the commit record could not be claimed: {exc}")])
        if stopped is None:
            return True
        if stopped.state is commit.CommitState.REFUSED:
            self._drop(envelope, "never committed: the relay lost SQS's answer, told the "
                       "client 451 and refused the message (the client sends it again)")
        else:
            self._drop(envelope, f"deleted by {stopped.by or 'an operator'}",
                       final=trail.STATE_DELETED, level="info")
        return False

    def _drop(self, envelope: Envelope, reason: str, final: str = trail.STATE_DROPPED,
              level: str = "warning") -> None:
        getattr(logger, level)(f"{envelope.queue_id}: {reason}; record dropped, nothing sent")
        self.report.note(envelope.queue_id, trail.DROPPED, reason=reason)
        self.report.line(maillog.QMGR, maillog.removed(envelope.queue_id))
        self.report.finished(envelope, final, last_reason=reason)

    # One send -------------------------------------------------------------------------

    def _outbound(self, queue_id: str, raw: bytes) -> bytes:
        """raw after smtp_header_checks, which Postfix's smtp(8) applies to every message
        it delivers, bounces included; each action is logged as smtp(8) logs it."""
        checked, events = smtp_header_checks(self.config.smtp_header_checks, raw)
        for event in events:
            text = maillog.header_check(queue_id, event.action, event.header, event.text)
            if text:
                self.report.line(maillog.SMTP, text)
        return checked

    def _time_left(self, size: int) -> float:
        """Seconds this invocation can still give a send of size bytes and its retries
        (negative: too little to start one)."""
        if self.context is None:
            return float("inf")
        remaining = self.context.get_remaining_time_in_millis() / 1000
        return remaining - ses_send_worst_case(size) - INVOCATION_MARGIN

    def _send(self, purpose: str, prefix: str, envelope: Envelope,
              key_recipients: tuple[str, ...], destination: tuple[str, ...], sender: str,
              build: Callable[[], Outgoing], seen: datetime) -> SendResult:
        """Make one send the ledger says is owed, at most once, and return its outcome."""
        queue_id = envelope.queue_id
        key = send_key(prefix, queue_id, list(key_recipients))
        size = envelope.size if purpose == trail.PURPOSE_MESSAGE else 64 * 1024
        lease = ses_send_worst_case(size) + LEASE_MARGIN
        started = utc_now()
        waiting = functools.partial(SendResult, Status.WAITING, key_recipients)
        if self._time_left(size) < 0:
            return waiting(reason="too little time left in this invocation for the send",
                           no_time=True)
        attempt = new_attempt_id()
        try:
            entry = self.ledger.begin(key, attempt, lease)
        except (BotoCoreError, ClientError) as exc:
            # The write may have landed with its answer lost. SES was not called: give the
            # claim back, or the next try would wait out its lease and then SES's events
            # about a send that never happened.
            self._give_back(key, attempt)
            return waiting(reason=f"the send ledger could not be written: {exc}")
        doubted = entry.doubted
        if entry.found is Found.SENT:
            return SendResult(Status.SENT, key_recipients, entry.message_id, logged=True,
                              doubted=doubted)
        if entry.found is Found.BUSY:
            return waiting(reason="another invocation is sending it right now")
        if entry.found is Found.IN_DOUBT:
            settled = self._settle(purpose, envelope, key, entry.attempt, entry.attempt_at,
                                   entry.doubts, key_recipients, attempt, lease, seen, started)
            if settled is not None:
                return settled
            doubted = True
        timing = Timing(envelope.received, seen, utc_now(), 0.0)
        try:
            outgoing = build()
        except SendFailure as failure:  # the message could not be read
            self._release(key, attempt, doubted)
            return SendResult(Status.FAILED, key_recipients, failure=failure,
                              reason=failure.diagnostic, doubted=doubted)
        except BaseException:
            self._release(key, attempt, doubted)
            raise
        clock = time.monotonic()
        try:
            message_id = self.sender.send(outgoing, sender, list(destination), queue_id,
                                          attempt, time_left=lambda: self._time_left(size))
        except NotStarted as not_started:
            self._release(key, attempt, doubted)
            return waiting(reason=str(not_started), no_time=True, doubted=doubted)
        except SendFailure as failure:
            seconds = time.monotonic() - clock
            self._release(key, attempt, doubted)
            failure = systemic(failure, sender, list(destination), self.config.ses_identities,
                               dsn=purpose == trail.PURPOSE_DSN)
            self.report.attempt(queue_id, Attempt(
                attempt, purpose, key_recipients, trail.FAILED, reason=failure.diagnostic,
                dsn=failure.status, error_class=failure.kind.value,
                started=trail.stamp(started), seconds=seconds))
            return SendResult(Status.FAILED, key_recipients, failure=failure,
                              reason=failure.diagnostic, doubted=doubted,
                              timing=replace(timing, send_seconds=seconds))
        except SendUnknown as unknown:
            seconds = time.monotonic() - clock
            try:
                self.ledger.doubt(key, attempt)
            except (BotoCoreError, ClientError, LedgerConflict) as exc:
                # The item stays SENDING under this attempt; its lease runs out and the
                # next receive treats it as in doubt all the same.
                logger.warning(f"could not mark the send in doubt: {exc}")
            self.report.attempt(queue_id, Attempt(
                attempt, purpose, key_recipients, trail.IN_DOUBT, reason=unknown.diagnostic,
                started=trail.stamp(started), seconds=seconds))
            logger.warning(f"send {attempt} in doubt: {unknown.diagnostic}",
                           extra={"attempt": attempt, "recipients": list(key_recipients)})
            count(SENDS_IN_DOUBT)
            return SendResult(Status.IN_DOUBT, key_recipients,
                              reason=self._doubt_text(unknown.diagnostic), doubted=True,
                              timing=replace(timing, send_seconds=seconds))
        seconds = time.monotonic() - clock
        self._complete(key, attempt, message_id)
        self.report.attempt(queue_id, Attempt(
            attempt, purpose, key_recipients, trail.SENT, ses_message_id=message_id,
            dsn="2.0.0", started=trail.stamp(started), seconds=seconds))
        return SendResult(Status.SENT, key_recipients, message_id, doubted=doubted,
                          timing=replace(timing, send_seconds=seconds))

    def _settle(self, purpose: str, envelope: Envelope, key: str, old: str, old_at: float,
                doubts: int, recipients: tuple[str, ...], attempt: str, lease: float,
                seen: datetime, started: datetime) -> SendResult | None:
        """Decide about an earlier send in doubt: a result, or None when this attempt is
        to send again (ses_unknown_outcome = resend)."""
        queue_id = envelope.queue_id
        settlement = self.settler.settle(queue_id, old, old_at)
        timing = Timing(envelope.received, seen, utc_now(), 0.0)
        verdict = settlement.verdict
        if verdict is Verdict.WAIT:
            return SendResult(Status.IN_DOUBT, recipients, doubted=True,
                              reason=self._doubt_text(settlement.reason))
        try:
            if verdict in (Verdict.ACCEPTED, Verdict.ASSUME_SENT):
                message_id = settlement.message_id or "(unknown)"
                self.ledger.complete(key, old, message_id)
                outcome = (trail.SETTLED_SENT if verdict is Verdict.ACCEPTED
                           else trail.ASSUMED_SENT)
                self.report.attempt(queue_id, Attempt(
                    old, purpose, recipients, outcome, ses_message_id=settlement.message_id,
                    dsn="2.0.0", reason=settlement.reason, started=trail.stamp(started)))
                return SendResult(Status.SENT, recipients, message_id, doubted=True,
                                  reason=settlement.reason, timing=timing)
            if verdict is Verdict.REJECTED:
                # SES refused this attempt; an earlier one resent after a doubt may
                # still have been accepted.
                earlier_doubt = doubts > 1
                self.ledger.release(key, old, doubted=earlier_doubt)
                failure = SendFailure(ErrorClass.PERMANENT, "Reject", settlement.reason,
                                      "5.7.1")
                self.report.attempt(queue_id, Attempt(
                    old, purpose, recipients, trail.SETTLED_REJECTED,
                    ses_message_id=settlement.message_id, reason=settlement.reason,
                    dsn="5.7.1", started=trail.stamp(started)))
                return SendResult(Status.FAILED, recipients, failure=failure,
                                  reason=failure.diagnostic, doubted=earlier_doubt,
                                  timing=timing)
            self.ledger.retry(key, old, attempt, lease)
        except LedgerConflict:
            return SendResult(Status.WAITING, recipients,
                              reason="another invocation settled the send meanwhile")
        except (BotoCoreError, ClientError) as exc:
            if verdict is Verdict.RESEND:  # the hand-over may have landed: undo it
                self._give_back(key, attempt)
            return SendResult(Status.WAITING, recipients,
                              reason=f"the send ledger could not be written: {exc}")
        logger.warning(f"send {old} in doubt and not settled by SES's events: sending again "
                       f"as {attempt} (ses_unknown_outcome = resend); the recipients may "
                       "get two copies")
        return None

    def _doubt_text(self, cause: str) -> str:
        if self.settler.events_expected:
            then = (f"waiting up to {self.config.ses_unknown_outcome_wait}s for SES's "
                    "events, then")
        else:
            then = "no SES events to settle it, so"
        action = ("will resend" if self.config.ses_unknown_outcome == "resend"
                  else "will assume it was sent")
        return f"delivery status unknown ({cause}); {then} {action}"

    def _complete(self, key: str, attempt: str, message_id: str) -> None:
        try:
            self.ledger.complete(key, attempt, message_id)
        except (BotoCoreError, ClientError, LedgerConflict) as exc:
            # SES took it; if the ledger does not say so, the lease runs out and the
            # attempt is settled from SES's events (or ses_unknown_outcome).
            logger.error(f"SES accepted the send as {message_id}, but the send ledger could "
                         f"not record it: {exc}")

    def _give_back(self, key: str, attempt: str) -> None:
        """Release a claim this attempt may or may not hold (its write went unanswered).
        The item is kept, RELEASED: whether an earlier send was in doubt is not known
        here, and that memory must survive."""
        try:
            self.ledger.release(key, attempt, doubted=True)
        except LedgerConflict:
            pass  # the write never landed
        except (BotoCoreError, ClientError) as exc:
            logger.warning(f"could not release the send ledger item: {exc}; the next try "
                           "waits for its lease")

    def _release(self, key: str, attempt: str, doubted: bool) -> None:
        try:
            self.ledger.release(key, attempt, doubted)
        except (BotoCoreError, ClientError, LedgerConflict) as exc:
            logger.warning(f"could not release the send ledger item: {exc}; the next try "
                           "waits for its lease")

    # Outcomes -----------------------------------------------------------------------

    def _conclude(self, envelope: Envelope, record: SQSRecord, receive_count: int,
                  failures: list[SendResult], message: SpooledMessage,
                  results: list[SendResult], seen: datetime) -> None:
        """Some sends did not succeed: defer, bounce them, or give up to the DLQ."""
        if all(r.no_time for r in failures):
            self._return_unstarted(record, envelope, failures)
        age = (utc_now() - envelope.received).total_seconds()
        expired = age >= self.config.maximal_queue_lifetime
        held = [r for r in failures if r.held]
        if not held:
            for result in failures:
                logger.warning(f"{len(result.recipients)} recipient(s) not sent "
                               f"({result.status.value}): {result.reason}",
                               extra={"recipients": list(result.recipients)})
        if held and expired:
            # A configuration error is the system's, not the sender's: the mail is kept
            # for the operator to redrive, not bounced.
            self._give_up(envelope, "held by a mail system configuration error past "
                          "maximal_queue_lifetime, not bounced: " + held[0].reason,
                          [rcpt for r in failures for rcpt in r.recipients], receive_count)
        # The attempt number, not the receive count, moves a message along its schedule.
        receive_count = self._attempt(envelope, record)
        retry = [r for r in failures if self.config.soft_bounce or (
            r.defers and (r.failure is None
                          or effective_class(r.failure, receive_count).defers))]
        if retry and not expired:
            self._defer(record, envelope, receive_count, seen, failures)

        failed = [self._failed(result, rcpt, receive_count, age)
                  for result in failures for rcpt in result.recipients]
        timing = Timing(envelope.received, seen, utc_now(), 0.0)
        for item in failed:
            self.report.statuses(envelope, [item.recipient], timing, item.status,
                                 "bounced", item.diagnostic)
        if not envelope.mail_from or self.config.soft_bounce:
            why = "the sender is <>" if not envelope.mail_from else "soft_bounce = yes"
            self._give_up(envelope, f"undeliverable and not bounced because {why}: "
                          + "; ".join(f"<{f.recipient}>: {f.diagnostic}" for f in failed),
                          [f.recipient for f in failed], receive_count)
        # NOTIFY (RFC 3461) without FAILURE (NEVER, or SUCCESS/DELAY only): no bounce.
        unwanted = [f for f in failed if _notify(envelope, f.recipient)
                    and "FAILURE" not in _notify(envelope, f.recipient)]
        if unwanted:
            logger.info("no DSN for " + ", ".join(
                f"<{f.recipient}> (NOTIFY={','.join(sorted(_notify(envelope, f.recipient)))})"
                for f in unwanted))
        notify = [f for f in failed if f not in unwanted and (
            not f.maybe_delivered or self.config.ses_unknown_outcome_dsn == "notice")]
        if notify:
            self._bounce(envelope, record, receive_count, message, notify, seen)
        elif len(unwanted) < len(failed):
            logger.warning("no DSN: every failed recipient may have been delivered by an "
                           "earlier send whose outcome was unknown (ses_unknown_outcome_dsn "
                           "= none)")
        self._notify_relayed(envelope, message, results, seen)
        self._finish(envelope, message, results, trail.STATE_BOUNCED)

    def _attempt(self, envelope: Envelope, record: SQSRecord) -> int:
        """This receive's attempt number: the attempts its envelope carries (a deferred
        copy's), plus this SQS message's receives less those held by a configuration
        error or returned unstarted (ses_worker.holds, counted per SQS message)."""
        receives = int(record.attributes.approximate_receive_count or 1)
        if receives <= 1:
            return attempt_number(envelope, 1)
        try:
            return attempt_number(envelope, self.holds.attempt(record.message_id, receives))
        except (BotoCoreError, ClientError) as exc:
            logger.warning(f"could not read the held receives ({exc}); the receive count "
                           "stands for the attempt number")
            return attempt_number(envelope, receives)

    def _hold(self, record: SQSRecord) -> None:
        """Count this receive of the record's SQS message as held, not as an attempt."""
        try:
            self.holds.add(record.message_id)
        except (BotoCoreError, ClientError) as exc:
            logger.warning(f"could not count the held receive ({exc}): it counts as an "
                           "attempt")

    def _return_unstarted(self, record: SQSRecord, envelope: Envelope,
                          failures: list[SendResult]) -> NoReturn:
        """No send of this record was started for lack of time: back to the queue at
        once, as a batch item failure that does not advance its retry schedule."""
        self._hold(record)
        try:
            aws.client("sqs", budget=WORKER_AWS).change_message_visibility(
                QueueUrl=_queue_url(record.event_source_arn),
                ReceiptHandle=record.receipt_handle, VisibilityTimeout=0)
        except (ClientError, BotoCoreError) as exc:
            logger.warning(f"could not return the record at once ({exc}); SQS retries "
                           "after the queue's visibility timeout")
        reason = failures[0].reason
        logger.info(f"not started: {reason}; back in the queue for the next invocation",
                    extra={"recipients": [rcpt for r in failures for rcpt in r.recipients]})
        raise MessageDeferred(reason)

    def _failed(self, result: SendResult, recipient: str, receive_count: int,
                age: float) -> FailedRecipient:
        maybe = result.doubted or result.status is Status.IN_DOUBT
        if (result.failure is not None and result.status is Status.FAILED
                and effective_class(result.failure, receive_count) is ErrorClass.PERMANENT):
            return FailedRecipient(recipient, result.failure.status, result.failure.diagnostic,
                                   maybe_delivered=maybe)
        return FailedRecipient(recipient, EXPIRED_STATUS,
                               f"message expired after {age / 86400:.1f} days in the queue "
                               f"(maximal_queue_lifetime); last error {result.reason}",
                               maybe_delivered=maybe)

    def _keep_for_a_newer_worker(self, record: SQSRecord, exc: NewerContract) -> NoReturn:
        """Leave an envelope this worker cannot read on the queue, untouched, and raise.

        It is retried on the usual backoff schedule, so a worker that reads it (deployed
        meanwhile) sends it at the next try; until then it waits for as long as any
        deferred message may (the queue's maxReceiveCount follows that schedule), then
        SQS moves it to the DLQ, whose alarm fires: kept either way, never sent by a
        worker that could misread it."""
        receive_count = int(record.attributes.approximate_receive_count or 1)
        delay = retry_delay(receive_count, self.config.minimal_backoff_time,
                            self.config.maximal_backoff_time)
        try:
            aws.client("sqs", budget=WORKER_AWS).change_message_visibility(
                QueueUrl=_queue_url(record.event_source_arn),
                ReceiptHandle=record.receipt_handle, VisibilityTimeout=delay)
        except (ClientError, BotoCoreError) as error:
            logger.warning(f"could not set the retry delay ({error}); SQS retries after "
                           "the queue's visibility timeout")
        count(DEFERRED)
        logger.error(f"{exc}: kept in the queue, not sent; retry in {delay}s. Deploy the "
                     f"worker of the relay's release (see docs/DEPLOY.md, Upgrades and "
                     f"rollbacks); if it reached the DLQ meanwhile, redrive it then",
                     extra={"retry_delay": delay, "envelope_version": exc.version})
        raise MessageDeferred(str(exc))

    def _defer(self, record: SQSRecord, envelope: Envelope, receive_count: int,
               seen: datetime, failures: list[SendResult]) -> NoReturn:
        """Retry later: a delayed copy of the envelope (raises Requeued), or the record's
        visibility set to the backoff delay (raises MessageDeferred)."""
        minimal, maximal = self.config.minimal_backoff_time, self.config.maximal_backoff_time
        held = [r for r in failures if r.held]
        # A send in doubt is looked at again on the usual schedule: SES's events come
        # within it, and every receive counts towards the queue's maxReceiveCount, which
        # the stack derives from this schedule. A held message waits the longest delay:
        # nothing gets through until an operator acts, and that delay keeps its receives
        # within maxReceiveCount although they do not advance its schedule.
        if held:
            delay = paused_delay(minimal, maximal)
        else:
            delay = retry_delay(receive_count, minimal, maximal)
        queue_url = _queue_url(record.event_source_arn)
        # A held receive is no attempt: its copy carries the attempts made before it.
        requeued = self.requeuer.defer(queue_url, record.receipt_handle, envelope,
                                       receive_count - 1 if held else receive_count, seen,
                                       delay)
        count(DEFERRED)
        seconds(DEFERRED_AGE, (utc_now() - envelope.received).total_seconds())
        reason = (held or failures)[0].reason
        timing = Timing(envelope.received, seen, utc_now(), 0.0)
        if held:
            count(CONFIGURATION_ERROR)
            if not requeued:  # in flight: the counter keeps this receive out of the count
                self._hold(record)
            self._say_held(envelope, held[0], timing)
        for result in ([] if held else failures):
            dsn = (result.failure.status if result.failure is not None
                   and result.failure.status.startswith("4") else
                   UNKNOWN_STATUS if result.status is Status.IN_DOUBT else "4.0.0")
            self.report.statuses(envelope, result.recipients, result.timing or timing,
                                 dsn, "deferred", result.reason)
        self.report.deferred(
            envelope, reason=reason, delay=delay, receive_count=receive_count,
            pending=[rcpt for r in failures for rcpt in r.recipients],
            # A deleted record's handle can do nothing: sesrelay flush says so.
            receipt_handle="" if requeued else record.receipt_handle, queue_url=queue_url,
            in_doubt=[rcpt for r in failures if r.status is Status.IN_DOUBT
                      for rcpt in r.recipients])
        if not held:
            logger.warning(f"deferred: retry in {delay}s (attempt {receive_count}"
                           f"{', re-enqueued' if requeued else ''}): {reason}",
                           extra={"retry_delay": delay, "receive_count": receive_count,
                                  "requeued": requeued})
        if requeued:
            raise Requeued(reason)
        raise MessageDeferred(reason)

    def _say_held(self, envelope: Envelope, result: SendResult, timing: Timing) -> None:
        """The one maillog line a minute (per execution environment) that says mail is
        held by a configuration error, in Postfix's words; the trail has every message."""
        held = self.warm.alert.held()
        if held is None:
            return
        delay, delays = timing.delays(utc_now())
        text = (f"mail system configuration error: {result.reason}; {held} message(s) held "
                "since the last such line, none bounced, retried until it is fixed")
        self.report.line(maillog.SMTP, maillog.delivery(
            envelope.queue_id, result.recipients[0], relay=self.report.relay, delay=delay,
            delays=delays, dsn=CONFIGURATION_STATUS, status="deferred", text=text),
            "error", dsn=CONFIGURATION_STATUS, status="deferred", held_messages=held,
            reason=result.reason)

    def _give_up(self, envelope: Envelope, reason: str, pending: list[str],
                 receive_count: int) -> NoReturn:
        where = "inline in the SQS message" if envelope.inline else (
            f"s3://{envelope.bucket}/{envelope.key}, kept")
        logger.error(f"{reason}; the record stays on the queue until SQS moves it to the "
                     f"dead-letter queue (message {where})")
        self.report.undeliverable(envelope, reason, pending, receive_count)
        count(FAILED)
        raise MessageUndeliverable(reason)

    def _bounce(self, envelope: Envelope, record: SQSRecord, receive_count: int,
                message: SpooledMessage, failed: list[FailedRecipient],
                seen: datetime) -> None:
        """Send the DSN for failed recipients to the envelope sender."""
        def build() -> Outgoing:
            return Outgoing(fit_lines(self._outbound(envelope.queue_id, build_dsn(
                envelope, message.original(), failed, self.config.ses_bounce_sender,
                self.config.myhostname, utc_now()))))

        recipients = tuple(sorted(f.recipient for f in failed))
        # SES cannot send from the null sender a DSN should have (RFC 3464): the bounce
        # address is the envelope sender instead.
        result = self._send(trail.PURPOSE_DSN, DSN_PREFIX, envelope, recipients,
                            (envelope.mail_from,), self.config.ses_bounce_sender, build, seen)
        if result.status is Status.FAILED and result.failure is not None and not (
                effective_class(result.failure, receive_count).defers):
            self._give_up(envelope, f"the bounce to <{envelope.mail_from}> was refused: "
                          f"{result.reason}", list(recipients), receive_count)
        if result.no_time:  # the bounce did not fit this invocation: the next one
            self._return_unstarted(record, envelope, [result])
        if result.status is not Status.SENT:
            self._defer(record, envelope, receive_count, seen,
                        [replace(result, reason=f"the bounce to <{envelope.mail_from}> was "
                                 f"not sent: {result.reason}")])
        count(BOUNCED)
        if not result.logged:
            self.report.line(maillog.BOUNCE, maillog.bounce_notice(envelope.queue_id,
                                                                   result.message_id))
        self.report.note(envelope.queue_id, trail.BOUNCED, recipients=list(recipients),
                         dsn_sent=True, ses_message_id=result.message_id)
        logger.info(f"bounced {len(failed)} recipient(s): DSN to <{envelope.mail_from}> "
                    f"as SES MessageId {result.message_id}",
                    extra={"bounced": [f.recipient for f in failed]})

    def _notify_relayed(self, envelope: Envelope, message: SpooledMessage,
                        results: list[SendResult], seen: datetime) -> None:
        """The "relayed" DSN (RFC 3464) for recipients that asked NOTIFY=SUCCESS, as
        Postfix sends it when it relays to a next hop that offers no DSN: SES accepted
        the message for them. Sent once (its own send ledger key); a notice that fails
        is logged, and never holds up the message that was sent."""
        relayed = [FailedRecipient(rcpt, "2.0.0", f"250 Ok {result.message_id}")
                   for result in results if result.status is Status.SENT
                   for rcpt in result.recipients if "SUCCESS" in _notify(envelope, rcpt)]
        if not relayed or not envelope.mail_from:
            return

        def build() -> Outgoing:
            return Outgoing(fit_lines(self._outbound(envelope.queue_id, build_dsn(
                envelope, message.original(), relayed, self.config.ses_bounce_sender,
                self.config.myhostname, utc_now(), action=RELAYED))))

        recipients = tuple(sorted(r.recipient for r in relayed))
        result = self._send(trail.PURPOSE_DSN, RELAYED_PREFIX, envelope, recipients,
                            (envelope.mail_from,), self.config.ses_bounce_sender, build, seen)
        if result.status is not Status.SENT:
            logger.warning(f"the delivery notice (NOTIFY=SUCCESS) to <{envelope.mail_from}> "
                           f"was not sent: {result.reason}")
            return
        if not result.logged:
            self.report.line(maillog.BOUNCE, maillog.success_notice(envelope.queue_id,
                                                                    result.message_id))

    def _finish(self, envelope: Envelope, message: SpooledMessage,
                results: list[SendResult], status: str) -> None:
        """The message is done: keep it in S3 for sesrelay_spool_retention (tagged with
        the SES MessageIds) or delete it. Failures here only log: the mail went out."""
        message_ids = [r.message_id for r in results if r.message_id]
        if message_ids:
            logger.info(f"sent to {sum(len(r.recipients) for r in results if r.message_id)} "
                        f"recipient(s): SES MessageId {', '.join(message_ids)}",
                        extra={"ses_message_ids": message_ids})
        try:
            self._keep_or_delete(envelope, message, message_ids)
        except (ClientError, BotoCoreError, SpoolObjectMissing, SendFailure) as exc:
            logger.warning(f"could not keep or delete the message in S3: {exc}")
        self.report.line(maillog.QMGR, maillog.removed(envelope.queue_id))
        self.report.finished(envelope, status, ses_message_ids=message_ids)

    def _keep_or_delete(self, envelope: Envelope, message: SpooledMessage,
                        message_ids: list[str]) -> None:
        tagging = {"TagSet": [{"Key": TAG_SES_MESSAGE_ID, "Value": _tag_ids(message_ids)}]}
        if self.config.sesrelay_spool_retention == 0:
            if not envelope.inline:
                self.s3.delete_object(Bucket=envelope.bucket, Key=envelope.key)
        elif not message_ids:
            return
        elif envelope.inline:
            # Kept as if it had been spooled to S3, so retention means the same for all.
            if self.config.sesrelay_spool_bucket:
                self.s3.put_object(
                    Bucket=self.config.sesrelay_spool_bucket,
                    Key=object_key(envelope.queue_id, envelope.received), Body=envelope.message(),
                    ContentType="message/rfc822",
                    Tagging="&".join(f"{t['Key']}={t['Value'].replace(' ', '+')}"
                                     for t in tagging["TagSet"]))
        else:
            self.s3.put_object_tagging(Bucket=envelope.bucket, Key=envelope.key,
                                       Tagging=tagging)


def _notify(envelope: Envelope, recipient: str) -> frozenset[str]:
    """The NOTIFY keywords recipient gave (empty: none given, the default)."""
    if recipient not in envelope.rcpt_to:
        return frozenset()
    return envelope.notify_of(envelope.rcpt_to.index(recipient))


def _sent_text(result: SendResult) -> str:
    text = f"250 Ok {result.message_id}"
    if result.reason:
        text += f" ({result.reason}, after a send whose answer was lost)"
    return text


def _tag_ids(message_ids: list[str]) -> str:
    """MessageIds for the S3 tag: as many whole IDs as fit in a tag value (all of them
    are in the log line)."""
    value = message_ids[0][:S3_TAG_MAX] if message_ids else ""
    for message_id in message_ids[1:]:
        if len(value) + 1 + len(message_id) > S3_TAG_MAX:
            break
        value += " " + message_id
    return value
