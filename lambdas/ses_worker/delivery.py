"""Delivery of one spooled message: fetch, send in chunks, then sent, deferred, bounced
or left for the dead-letter queue.

Outcomes, in Postfix's terms:
- sent: every recipient accepted by SES. The MessageIds are logged and tagged on the
  S3 object, which is then handled per sesrelay_spool_retention.
- deferred: a retryable failure. The record's visibility timeout becomes the backoff
  delay and the record is reported as a batch item failure, so SQS redelivers it.
- bounced: a permanent failure (or the queue lifetime ran out): an RFC 3464 DSN goes
  to the envelope sender and the record is done.
- undeliverable: cannot be sent nor bounced (null sender, soft_bounce, the bounce
  itself refused). The reason is logged and the record fails until SQS moves it to
  the dead-letter queue; its S3 object is kept for a redrive.
- dropped: an SQS body that is no envelope, or a spool object that is gone. Retrying
  cannot help, so the record is logged, counted Failed and deleted.
"""

from __future__ import annotations

import functools
import json
from typing import Any, NoReturn

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from ses_worker.backoff import paused_delay, retry_delay
from ses_worker.dsn import FailedRecipient, build_dsn
from ses_worker.errors import ErrorClass, SendFailure, classify, effective_class
from ses_worker.message import header_section_problem, split_headers, strip_blind_headers
from ses_worker.observability import count, log_keys, logger
from ses_worker.ratelimit import RecipientRateLimiter
from ses_worker.sending import SesSender, recipient_chunks
from sesrelay import aws
from sesrelay.config import Config
from sesrelay.spool import TAG_SES_MESSAGE_ID, ContractError, Envelope, utc_now
from sesrelay.telemetry import BOUNCED, DEFERRED, FAILED, SENDING_PAUSED, SENT

# SQS keeps a message (and its dead-letter copy) at most 14 days, so no redelivery can
# come later than that: idempotency records need to live no longer.
IDEMPOTENCY_TTL = 14 * 24 * 3600
# Fixed key prefixes keep idempotency keys stable across function renames and deploys.
SEND_KEY_PREFIX = "sesrelay.send"
DSN_KEY_PREFIX = "sesrelay.dsn"
EXPIRED_STATUS = "5.4.7"  # RFC 3463: delivery time expired
S3_TAG_MAX = 256


class MessageDeferred(Exception):
    """The record is to be retried after its (already extended) visibility timeout."""


class MessageUndeliverable(Exception):
    """The message can be neither sent nor bounced: it belongs in the dead-letter queue."""


@functools.lru_cache(maxsize=8)
def _queue_url(event_source_arn: str) -> str:
    # arn:aws:sqs:<region>:<account>:<name>: the event names its queue, whatever the
    # configuration says, and GetQueueUrl gives the URL in this endpoint's form.
    _, _, _, region, account, name = event_source_arn.split(":", 5)
    response = aws.client("sqs", region).get_queue_url(QueueName=name,
                                                      QueueOwnerAWSAccountId=account)
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
    """A record's message, read from S3 on first use and without its blind-copy headers.

    Reading lazily means a redelivered record whose chunks all went out already (the
    idempotency records say so) never touches S3, where its object may be gone.
    """

    def __init__(self, s3: Any, envelope: Envelope):
        self._s3 = s3
        self._envelope = envelope
        self._raw: bytes | None = None

    def read(self) -> bytes:
        """The bytes to send. Raises SpoolObjectMissing, or SendFailure when S3 fails or
        the header section is malformed (permanent)."""
        if self._raw is None:
            bucket, key = self._envelope.bucket, self._envelope.key
            try:
                body = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                    raise SpoolObjectMissing(f"spool object s3://{bucket}/{key} is "
                                             "missing") from None
                raise classify(exc) from exc
            except BotoCoreError as exc:
                raise classify(exc) from exc
            problem = header_section_problem(body)
            if problem:  # permanent: sending it again cannot help
                raise SendFailure(ErrorClass.PERMANENT, "MalformedHeaders", problem, "5.6.0")
            self._raw = strip_blind_headers(bytes(body))
        return self._raw


class Deliverer:
    """Delivers the records of one invocation. Thread-safe: records run concurrently."""

    def __init__(self, config: Config, context: LambdaContext | None):
        if not config.sesrelay_idempotency_table:
            raise RuntimeError("sesrelay_idempotency_table is not set: without it a "
                               "redelivered record could be sent twice")
        self.config = config
        self.s3 = aws.client("s3")
        self.sender = SesSender(config, aws.client("sesv2", config.ses_region),
                                RecipientRateLimiter(config.ses_max_send_rate))
        idempotency = IdempotencyConfig(expires_after_seconds=IDEMPOTENCY_TTL,
                                        lambda_context=context)
        dynamodb = aws.client("dynamodb")
        # One persistence layer per idempotent function: a layer holds the key prefix
        # of the call in progress, so sharing one across threads would mix prefixes.
        self._send_chunk = idempotent_function(
            self._send_chunk_once, data_keyword_argument="chunk", config=idempotency,
            key_prefix=SEND_KEY_PREFIX,
            persistence_store=DynamoDBPersistenceLayer(
                config.sesrelay_idempotency_table, boto3_client=dynamodb))
        self._send_dsn = idempotent_function(
            self._send_dsn_once, data_keyword_argument="bounce", config=idempotency,
            key_prefix=DSN_KEY_PREFIX,
            persistence_store=DynamoDBPersistenceLayer(
                config.sesrelay_idempotency_table, boto3_client=dynamodb))

    # The record ---------------------------------------------------------------------

    def deliver(self, record: SQSRecord) -> None:
        """Deliver one SQS record. Returns when the record is done (sent, bounced or
        dropped); raises MessageDeferred or MessageUndeliverable when SQS must keep it."""
        try:
            envelope = Envelope.from_json(record.body)
        except ContractError as exc:
            with log_keys(queue_id=_queue_id_hint(record.body),
                          sqs_message_id=record.message_id):
                logger.error(f"malformed SQS message dropped: {exc}")
                count(FAILED)
            return
        with log_keys(queue_id=envelope.queue_id, sqs_message_id=record.message_id):
            try:
                self._deliver(envelope, record)
            except (MessageDeferred, MessageUndeliverable):
                raise  # logged where decided
            except Exception:
                logger.exception("unexpected error; the record returns after the queue's "
                                 "visibility timeout")
                raise

    def _deliver(self, envelope: Envelope, record: SQSRecord) -> None:
        receive_count = int(record.attributes.approximate_receive_count or 1)
        message = SpooledMessage(self.s3, envelope)
        message_ids: list[str] = []
        sent = 0
        failures: list[tuple[tuple[str, ...], SendFailure]] = []
        for recipients in recipient_chunks(envelope.rcpt_to):
            # An account-wide condition fails every chunk alike: do not ask SES again.
            if failures and failures[-1][1].kind in (ErrorClass.THROTTLED, ErrorClass.PAUSED):
                failures.append((recipients, failures[-1][1]))
                continue
            try:
                message_ids.append(self._send_chunk(
                    chunk={"queue_id": envelope.queue_id, "recipients": list(recipients)},
                    message=message, envelope=envelope)["message_id"])
                sent += len(recipients)
            except SpoolObjectMissing as exc:
                logger.error(f"{exc}; record dropped (a relay that could not queue the "
                             "message deletes its object and told the client 451, so the "
                             "client retries)")
                count(FAILED)
                return
            except SendFailure as failure:
                failures.append((recipients, failure))
            except IdempotencyAlreadyInProgressError:
                failures.append((recipients, SendFailure(
                    ErrorClass.TRANSIENT, "InProgress",
                    "another invocation is sending to these recipients")))
            except IdempotencyPersistenceLayerError as exc:
                failures.append((recipients, SendFailure(
                    ErrorClass.TRANSIENT, "IdempotencyStore", str(exc))))

        if message_ids:
            logger.info(f"sent to {sent} recipient(s): SES MessageId {', '.join(message_ids)}",
                        extra={"ses_message_ids": message_ids})
        if not failures:
            count(SENT)
            self._finish(envelope, message_ids)
            return
        self._conclude(envelope, record, receive_count, failures, message, message_ids)

    # Outcomes -----------------------------------------------------------------------

    def _conclude(self, envelope: Envelope, record: SQSRecord, receive_count: int,
                  failures: list[tuple[tuple[str, ...], SendFailure]],
                  message: SpooledMessage, message_ids: list[str]) -> None:
        """Some recipients failed: defer, bounce them, or give up to the DLQ."""
        age = (utc_now() - envelope.received).total_seconds()
        expired = age >= self.config.maximal_queue_lifetime
        for recipients, failure in failures:
            logger.warning(f"{len(recipients)} recipient(s) failed "
                           f"({failure.kind.value}): {failure.diagnostic}",
                           extra={"recipients": list(recipients)})
        retry = [f for f in failures
                 if effective_class(f[1], receive_count).defers or self.config.soft_bounce]
        if retry and not expired:
            self._defer(record, envelope, retry, receive_count)

        failed = [
            FailedRecipient(rcpt, failure.status, failure.diagnostic)
            if effective_class(failure, receive_count) is ErrorClass.PERMANENT
            else FailedRecipient(rcpt, EXPIRED_STATUS,
                                 f"message expired after {age / 86400:.1f} days in the queue "
                                 f"(maximal_queue_lifetime); last error {failure.diagnostic}")
            for recipients, failure in failures for rcpt in recipients
        ]
        if not envelope.mail_from or self.config.soft_bounce:
            why = "the sender is <>" if not envelope.mail_from else "soft_bounce = yes"
            self._give_up(envelope, f"undeliverable and not bounced because {why}: "
                          + "; ".join(f"<{f.recipient}>: {f.diagnostic}" for f in failed))
        self._bounce(envelope, record, receive_count, message, failed)
        self._finish(envelope, message_ids)

    def _defer(self, record: SQSRecord, envelope: Envelope,
               failures: list[tuple[tuple[str, ...], SendFailure]], receive_count: int) -> NoReturn:
        """Retry later: set the record's visibility to the backoff delay and raise."""
        minimal, maximal = self.config.minimal_backoff_time, self.config.maximal_backoff_time
        paused = any(f.kind is ErrorClass.PAUSED for _, f in failures)
        delay = (paused_delay(minimal, maximal) if paused
                 else retry_delay(receive_count, minimal, maximal))
        try:
            aws.client("sqs").change_message_visibility(
                QueueUrl=_queue_url(record.event_source_arn),
                ReceiptHandle=record.receipt_handle, VisibilityTimeout=delay)
        except (ClientError, BotoCoreError) as exc:
            logger.warning(f"could not set the retry delay ({exc}); SQS retries after the "
                           "queue's visibility timeout")
        if paused:
            count(SENDING_PAUSED)
        count(DEFERRED)
        reason = failures[0][1].diagnostic
        logger.warning(f"deferred: retry in {delay}s (receive {receive_count}): {reason}",
                       extra={"retry_delay": delay, "receive_count": receive_count})
        raise MessageDeferred(reason)

    def _give_up(self, envelope: Envelope, reason: str) -> NoReturn:
        logger.error(f"{reason}; the record stays on the queue until SQS moves it to the "
                     f"dead-letter queue (spool object s3://{envelope.bucket}/{envelope.key} "
                     "kept)")
        count(FAILED)
        raise MessageUndeliverable(reason)

    def _bounce(self, envelope: Envelope, record: SQSRecord, receive_count: int,
                message: SpooledMessage, failed: list[FailedRecipient]) -> None:
        """Send the DSN for failed recipients to the envelope sender."""
        try:
            message_id = self._send_dsn(
                bounce={"queue_id": envelope.queue_id,
                        "recipients": sorted(f.recipient for f in failed)},
                envelope=envelope, message=message, failed=failed)["message_id"]
        except SendFailure as failure:
            if effective_class(failure, receive_count).defers:
                self._defer(record, envelope, [(envelope.rcpt_to, failure)], receive_count)
            self._give_up(envelope, f"the bounce to <{envelope.mail_from}> was refused: "
                          f"{failure.diagnostic}")
        except (IdempotencyAlreadyInProgressError, IdempotencyPersistenceLayerError) as exc:
            self._defer(record, envelope, [(envelope.rcpt_to, SendFailure(
                ErrorClass.TRANSIENT, type(exc).__name__, str(exc)))], receive_count)
        count(BOUNCED)
        logger.info(f"bounced {len(failed)} recipient(s): DSN to <{envelope.mail_from}> "
                    f"as SES MessageId {message_id}",
                    extra={"bounced": [f.recipient for f in failed]})

    def _finish(self, envelope: Envelope, message_ids: list[str]) -> None:
        """The message is done: tag its S3 object with the SES MessageIds, or delete it
        when sesrelay_spool_retention is 0. Failures here only log: the mail went out."""
        try:
            if self.config.sesrelay_spool_retention == 0:
                self.s3.delete_object(Bucket=envelope.bucket, Key=envelope.key)
            elif message_ids:
                self.s3.put_object_tagging(
                    Bucket=envelope.bucket, Key=envelope.key,
                    Tagging={"TagSet": [{"Key": TAG_SES_MESSAGE_ID,
                                         "Value": _tag_ids(message_ids)}]})
        except (ClientError, BotoCoreError) as exc:
            logger.warning(f"could not tag or delete s3://{envelope.bucket}/{envelope.key}: "
                           f"{exc}")

    # Idempotent sends (the data argument is the idempotency key) ---------------------

    def _send_chunk_once(self, chunk: dict[str, Any], message: SpooledMessage,
                         envelope: Envelope) -> dict[str, str]:
        return {"message_id": self.sender.send(message.read(), envelope.mail_from,
                                               chunk["recipients"], envelope.queue_id)}

    def _send_dsn_once(self, bounce: dict[str, Any], envelope: Envelope,
                       message: SpooledMessage, failed: list[FailedRecipient]) -> dict[str, str]:
        headers, _ = split_headers(message.read())
        dsn = build_dsn(envelope, headers, failed, self.config.ses_bounce_sender,
                        self.config.myhostname, utc_now())
        # SES cannot send from the null sender a DSN should have (RFC 3464): the bounce
        # address is the envelope sender instead.
        return {"message_id": self.sender.send(dsn, self.config.ses_bounce_sender,
                                               [envelope.mail_from], envelope.queue_id)}


def _tag_ids(message_ids: list[str]) -> str:
    """MessageIds for the S3 tag: as many whole IDs as fit in a tag value (all of them
    are in the log line)."""
    value = message_ids[0][:S3_TAG_MAX]
    for message_id in message_ids[1:]:
        if len(value) + 1 + len(message_id) > S3_TAG_MAX:
            break
        value += " " + message_id
    return value
