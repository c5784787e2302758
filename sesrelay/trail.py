"""The message trail: what happened to each message from 250 to the recipient's mailbox.

This module is the one definition of the trail's contract: the DynamoDB table layout,
the items each writer puts there, and the queries readers make. One table per
environment (sesrelay_trail_table):

- partition key ``qid`` (the queue ID), sort key ``sk``;
- ``sk = "state"``: the message's current state, one item updated at each step;
- ``sk = "rcpt#<address>"``: one item per recipient, written once, for lookups by address;
- ``sk = "<time>#<kind>#<suffix>"``: the history, in time order (ISO 8601 UTC with
  microseconds sorts as time does). Kinds are the HISTORY_KINDS below;
- GSI ``by-message-id`` (``ses_message_id``, ``sk``): send attempts and SES events by SES
  MessageId;
- GSI ``by-recipient`` (``rcpt``, ``at``): recipient items by address and arrival time;
- GSI ``unfinished`` (``open``, ``received_at``): state items of messages not finished
  yet, spread over OPEN_SHARDS partitions (mailq reads them all);
- TTL attribute ``expires`` (sesrelay_trail_retention after the last write).

Writers: the worker (received, each send attempt, deferrals, bounces, the end), the SES
events handler (SES's own events), and the CLI (deleted, flushed, redriven). The relay
writes nothing: its hot path gains no calls. SES events that name no queue ID are kept
under ``qid = "unmatched#<YYYY-MM-DD>"``, never dropped.

Every SES send carries two tags (SES returns them in each event): QUEUE_ID_TAG and
ATTEMPT_TAG, an ID unique to that one SendEmail call. The attempt ID is what ties an
event to the exact send it belongs to, so that events about a DSN or another recipient
chunk are never taken for this one, and so that a send whose answer was lost can be
settled by SES's events (ses_worker.ledger).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

# --- SES message tags (letters, digits, '_' and '-' only) -----------------------------
QUEUE_ID_TAG = "sesrelay-queue-id"
ATTEMPT_TAG = "sesrelay-attempt"

# --- table layout ----------------------------------------------------------------------
PARTITION_KEY = "qid"
SORT_KEY = "sk"
TTL_ATTRIBUTE = "expires"
STATE_SK = "state"
RECIPIENT_SK_PREFIX = "rcpt#"
INDEX_BY_MESSAGE_ID = "by-message-id"
INDEX_BY_RECIPIENT = "by-recipient"
INDEX_UNFINISHED = "unfinished"
OPEN_SHARDS = 10
UNMATCHED_PREFIX = "unmatched#"

# --- history kinds ---------------------------------------------------------------------
RECEIVED = "received"  # the worker's first sight of the envelope
ATTEMPT = "attempt"  # one SendEmail call (a recipient chunk or a DSN) and its outcome
DEFERRED = "deferred"  # the message waits for its next try
BOUNCED = "bounced"  # recipients failed; a DSN went to the sender (or none could)
EVENT = "event"  # an SES event
FINISHED = "finished"  # nothing more will be done (Postfix's "removed")
DROPPED = "dropped"  # never sent: refused by the relay, deleted, malformed, object gone
DELETED = "deleted"  # `sesrelay delete`
FLUSHED = "flushed"  # `sesrelay flush`
REDRIVEN = "redriven"  # `sesrelay redrive`
HISTORY_KINDS = (RECEIVED, ATTEMPT, DEFERRED, BOUNCED, EVENT, FINISHED, DROPPED, DELETED,
                 FLUSHED, REDRIVEN)

# --- attempt outcomes (ATTEMPT items) --------------------------------------------------
SENT = "sent"  # SES accepted it: ses_message_id
FAILED = "failed"  # SES refused it, or it certainly did not reach SES: error, error_class
IN_DOUBT = "in_doubt"  # the answer was lost or late: SES may or may not have accepted it
SETTLED_SENT = "settled_sent"  # an in-doubt send that SES's events show accepted
SETTLED_REJECTED = "settled_rejected"  # an in-doubt send that SES's events show refused
ASSUMED_SENT = "assumed_sent"  # in doubt, no deciding event: ses_unknown_outcome
PURPOSE_MESSAGE = "message"
PURPOSE_DSN = "dsn"

# --- the state item --------------------------------------------------------------------
# Fields: status (below), sender, recipients (all), pending (not finished yet), size,
# received_at, updated_at, attempts (send attempts so far), last_reason (the latest
# deferral's reason), next_try (stamp of the next try while deferred), receipt_handle and
# queue_url (the SQS message as last received: `sesrelay flush` makes it visible now,
# `sesrelay delete` removes it), open (present while unfinished), dsn_sent (a DSN went
# out), in_doubt (sends whose outcome is not known yet).

# --- message states (the state item's "status") ---------------------------------------
ACTIVE = "active"  # being delivered
WAITING = "deferred"  # waiting for its next try
STATE_SENT = "sent"
STATE_BOUNCED = "bounced"  # every recipient finished, at least one bounced
STATE_UNDELIVERABLE = "undeliverable"  # neither sent nor bounced: left for the DLQ
STATE_DROPPED = "dropped"
STATE_DELETED = "deleted"
FINAL_STATES = (STATE_SENT, STATE_BOUNCED, STATE_DROPPED, STATE_DELETED)

# --- SES event types, as configuration sets name them ----------------------------------
EVENT_SEND = "SEND"
EVENT_DELIVERY = "DELIVERY"
EVENT_BOUNCE = "BOUNCE"
EVENT_COMPLAINT = "COMPLAINT"
EVENT_REJECT = "REJECT"
EVENT_DELIVERY_DELAY = "DELIVERY_DELAY"
EVENT_TYPES = (EVENT_SEND, EVENT_DELIVERY, EVENT_BOUNCE, EVENT_COMPLAINT, EVENT_REJECT,
               EVENT_DELIVERY_DELAY)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def stamp(when: datetime | None = None) -> str:
    """A trail timestamp: ISO 8601 in UTC with microseconds (sorts as time does)."""
    return (when or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def new_attempt_id() -> str:
    """A fresh attempt ID (the ATTEMPT_TAG value): 16 characters SES accepts in a tag."""
    return secrets.token_hex(8)


def open_shard(queue_id: str) -> str:
    """The ``open`` value of a queue ID's state item while unfinished."""
    return str(int(hashlib.sha256(queue_id.encode()).hexdigest()[:8], 16) % OPEN_SHARDS)


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """A plain dict as a DynamoDB item (None values left out; floats kept to the
    millisecond, as DynamoDB takes numbers only as Decimal)."""
    return {k: _serializer.serialize(_decimals(v)) for k, v in values.items() if v is not None}


def _decimals(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(f"{value:.3f}")
    if isinstance(value, list | tuple):
        return [_decimals(v) for v in value]
    if isinstance(value, dict):
        return {k: _decimals(v) for k, v in value.items()}
    return value


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as a plain dict (numbers as int when whole)."""
    plain = {k: _deserializer.deserialize(v) for k, v in item.items()}
    return {k: _plain_number(v) for k, v in plain.items()}


def _plain_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_plain_number(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_number(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Attempt:
    """One SendEmail call and its outcome (an ATTEMPT history item)."""

    attempt_id: str
    purpose: str  # PURPOSE_MESSAGE or PURPOSE_DSN
    recipients: tuple[str, ...]
    outcome: str  # SENT, FAILED, IN_DOUBT, SETTLED_*, ASSUMED_SENT
    ses_message_id: str = ""
    dsn: str = ""  # RFC 3463 status, as Postfix logs it (2.0.0 when sent)
    reason: str = ""  # SES's answer, the error, or why the outcome is unknown
    error_class: str = ""  # ses_worker.errors.ErrorClass value, for FAILED
    started: str = ""  # stamp() of the call's start
    seconds: float = 0.0  # how long the call took


@dataclass(frozen=True)
class SesEventRecord:
    """One SES event as the trail keeps it (an EVENT history item). ``recipients`` has
    one entry per recipient the event is about: address, and where SES gives them, the
    action, status and diagnostic (bounces, delays)."""

    event_type: str  # one of EVENT_TYPES
    ses_message_id: str
    timestamp: str  # the event's own time (ISO 8601)
    queue_id: str = ""  # from QUEUE_ID_TAG; "" when the send was not sesrelay's
    attempt_id: str = ""  # from ATTEMPT_TAG
    recipients: tuple[dict[str, str], ...] = ()
    bounce_type: str = ""  # Permanent, Transient, Undetermined (BOUNCE)
    bounce_subtype: str = ""
    detail: str = ""  # one line: SMTP response, reject reason, complaint type, ...
    source: str = ""  # mail.source: the sender

    @property
    def partition(self) -> str:
        """The trail partition the event belongs to."""
        return self.queue_id or f"{UNMATCHED_PREFIX}{self.timestamp[:10]}"

    @property
    def sort_key(self) -> str:
        """Stable for a redelivered event, so that it is stored once."""
        digest = hashlib.sha256("|".join(
            [self.event_type, self.ses_message_id, self.timestamp,
             *sorted(r.get("address", "") for r in self.recipients)]).encode()).hexdigest()
        return f"{self.timestamp}#{EVENT}#{digest[:16]}"

    @property
    def settles_as_accepted(self) -> bool | None:
        """For an in-doubt send: True if this event proves SES accepted the message,
        False if it proves SES refused it, None if it says neither."""
        if self.event_type == EVENT_REJECT:
            return False
        return True if self.event_type in EVENT_TYPES else None


@dataclass
class TrailWriter:
    """Puts trail items. Raises botocore errors; callers decide whether a failed write
    matters (the worker logs and goes on, the events handler retries)."""

    dynamodb: Any
    table: str
    retention: int  # seconds (sesrelay_trail_retention)
    _sequence: Iterator[int] = field(default_factory=lambda: iter(range(1 << 62)),
                                     repr=False)

    def _expires(self) -> int:
        return int(time.time()) + self.retention

    def _history(self, queue_id: str, kind: str, at: str | None = None,
                 **values: Any) -> dict[str, Any]:
        at = at or stamp()
        suffix = f"{next(self._sequence):04x}{secrets.token_hex(2)}"
        return {PARTITION_KEY: queue_id, SORT_KEY: f"{at}#{kind}#{suffix}", "kind": kind,
                "at": at, TTL_ATTRIBUTE: self._expires(), **values}

    # Items, for writers that put several at once (write()) --------------------------

    def history_item(self, queue_id: str, kind: str, at: str | None = None,
                     **values: Any) -> dict[str, Any]:
        """A history item of kind (RECEIVED, DEFERRED, BOUNCED, FINISHED, ...)."""
        return self._history(queue_id, kind, at, **values)

    def attempt_item(self, queue_id: str, attempt: Attempt) -> dict[str, Any]:
        """One send attempt and its outcome, in the history at the time it started, so
        that SES's events about it (which may be stored before the call returns) sort
        after it."""
        values = {k: v for k, v in attempt.__dict__.items() if v not in ("", 0.0, ())}
        values["recipients"] = list(attempt.recipients)
        item = self._history(queue_id, ATTEMPT, at=attempt.started or None, **values)
        if attempt.ses_message_id:
            item["ses_message_id"] = attempt.ses_message_id
        return item

    def state_item(self, queue_id: str, *, unfinished: bool, **fields: Any) -> dict[str, Any]:
        """The whole state item (its fields: see "the state item" above); unfinished
        puts it in the unfinished index."""
        item = {**fields, PARTITION_KEY: queue_id, SORT_KEY: STATE_SK, "updated_at": stamp(),
                TTL_ATTRIBUTE: self._expires()}
        if unfinished:
            item["open"] = open_shard(queue_id)
        return item

    def recipient_items(self, queue_id: str, recipients: Iterable[str],
                        received_at: str) -> list[dict[str, Any]]:
        """One item per recipient, for lookups by address."""
        return [{PARTITION_KEY: queue_id, SORT_KEY: f"{RECIPIENT_SK_PREFIX}{r.lower()}",
                 "rcpt": r.lower(), "at": received_at, TTL_ATTRIBUTE: self._expires()}
                for r in dict.fromkeys(recipients)]

    def write(self, items: Iterable[dict[str, Any]]) -> None:
        """Put items, 25 to a BatchWriteItem call (one call for most steps). Of items with
        the same key, the last is put (a call may not name an item twice: two receives
        of one message can share a flush). An unfinished state item is put on its own, on
        condition that the message has not finished: a step written late (a deferral
        whose message another receive finished meanwhile) must never reopen it."""
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for item in items:
            key = (item[PARTITION_KEY], item[SORT_KEY])
            latest.pop(key, None)  # the last one, in its place in the order
            latest[key] = item
        batch = []
        for item in latest.values():
            if item[SORT_KEY] == STATE_SK and "open" in item:
                self._put_unless_finished(item)
            else:
                batch.append(item)
        self._put_all(batch)

    def _put_unless_finished(self, state: dict[str, Any]) -> None:
        """Put an unfinished state item unless the message's state says it finished (then
        the step is history, not the message's state)."""
        with contextlib.suppress(self.dynamodb.exceptions.ConditionalCheckFailedException):
            self.dynamodb.put_item(
                TableName=self.table, Item=to_item(state),
                ConditionExpression="attribute_not_exists(#pk) OR attribute_exists(#open)",
                ExpressionAttributeNames={"#pk": PARTITION_KEY, "#open": "open"})

    def _put_all(self, items: Iterable[dict[str, Any]]) -> None:
        batch: list[dict[str, Any]] = []
        for item in items:
            batch.append({"PutRequest": {"Item": to_item(item)}})
            if len(batch) == 25:  # BatchWriteItem's limit
                self._batch_write(batch)
                batch = []
        if batch:
            self._batch_write(batch)

    def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        pending = {self.table: requests}
        for pause in (0, 0.05, 0.2, 0.5, 1.0):
            time.sleep(pause)
            pending = self.dynamodb.batch_write_item(RequestItems=pending).get(
                "UnprocessedItems") or {}
            if not pending:
                return
        raise RuntimeError(f"trail: {len(pending[self.table])} items left unwritten "
                           "after retries (DynamoDB throttling)")

    def received(self, *, queue_id: str, sender: str, recipients: tuple[str, ...],
                 size: int, received_at: str, client_address: str, client_helo: str,
                 sqs_message_id: str) -> bool:
        """The message's arrival, as the worker first sees it: its state item (open),
        one item per recipient and a RECEIVED history item. False (and nothing written)
        if it was already recorded (a redelivery)."""
        state = {PARTITION_KEY: queue_id, SORT_KEY: STATE_SK, "status": ACTIVE,
                 "sender": sender, "recipients": list(recipients),
                 "pending": list(recipients), "size": size, "received_at": received_at,
                 "updated_at": stamp(), "attempts": 0, "open": open_shard(queue_id),
                 TTL_ATTRIBUTE: self._expires()}
        try:
            self.dynamodb.put_item(TableName=self.table, Item=to_item(state),
                                   ConditionExpression="attribute_not_exists(#pk)",
                                   ExpressionAttributeNames={"#pk": PARTITION_KEY})
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        self._put_all([
            self._history(queue_id, RECEIVED, at=received_at, sender=sender,
                          recipients=list(recipients), size=size,
                          client_address=client_address, client_helo=client_helo,
                          sqs_message_id=sqs_message_id),
            *self.recipient_items(queue_id, recipients, received_at),
        ])
        return True

    def attempt(self, queue_id: str, attempt: Attempt) -> None:
        """One send attempt and its outcome (attempt_item)."""
        self._put_all([self.attempt_item(queue_id, attempt)])

    def note(self, queue_id: str, kind: str, **values: Any) -> None:
        """Any other history step (DEFERRED, BOUNCED, FINISHED, DROPPED, DELETED,
        FLUSHED, REDRIVEN) with its details."""
        self._put_all([self._history(queue_id, kind, **values)])

    def update_state(self, queue_id: str, *, finished: bool = False,
                     **values: Any) -> None:
        """Set fields of the state item (status, pending, attempts, last_reason,
        next_try, receipt_handle, queue_arn, ...). finished removes it from the
        unfinished index."""
        values = {**values, "updated_at": stamp(), TTL_ATTRIBUTE: self._expires()}
        names = {f"#a{i}": name for i, name in enumerate(values)}
        sets = ", ".join(f"#a{i} = :v{i}" for i in range(len(values)))
        expression = f"SET {sets}" + (" REMOVE #open" if finished else "")
        if finished:
            names["#open"] = "open"
        self.dynamodb.update_item(
            TableName=self.table, Key=to_item({PARTITION_KEY: queue_id, SORT_KEY: STATE_SK}),
            UpdateExpression=expression, ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":v{i}": _serializer.serialize(_decimals(v))
                                       for i, v in enumerate(values.values())})

    def event(self, event: SesEventRecord) -> bool:
        """An SES event (stored once however often it is delivered). True when this
        call stored it first, False when the same event was already there (a
        redelivery; or, rarely, this call's own earlier attempt whose answer was lost)."""
        item = {PARTITION_KEY: event.partition, SORT_KEY: event.sort_key, "kind": EVENT,
                "at": event.timestamp, "event_type": event.event_type,
                "ses_message_id": event.ses_message_id, "attempt_id": event.attempt_id,
                "recipients": [dict(r) for r in event.recipients],
                "bounce_type": event.bounce_type, "bounce_subtype": event.bounce_subtype,
                "detail": event.detail, "source": event.source,
                TTL_ATTRIBUTE: self._expires()}
        old = self.dynamodb.put_item(TableName=self.table,
                                     Item=to_item({k: v for k, v in item.items() if v != ""}),
                                     ReturnValues="ALL_OLD").get("Attributes")
        return not old


@dataclass
class TrailReader:
    """Queries of the trail (the CLI, and the worker settling sends in doubt)."""

    dynamodb: Any
    table: str

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        paginator = self.dynamodb.get_paginator("query")
        for page in paginator.paginate(TableName=self.table, **kwargs):
            for item in page.get("Items", []):
                yield from_item(item)

    def items(self, queue_id: str) -> list[dict[str, Any]]:
        """Every item of a queue ID: state, recipients and history (in time order)."""
        return list(self._query(KeyConditionExpression="#pk = :q", ConsistentRead=True,
                                ExpressionAttributeNames={"#pk": PARTITION_KEY},
                                ExpressionAttributeValues={":q": {"S": queue_id}}))

    def history(self, queue_id: str) -> list[dict[str, Any]]:
        """The history items of a queue ID, oldest first."""
        return [i for i in self.items(queue_id) if i.get("kind") in HISTORY_KINDS]

    def state(self, queue_id: str) -> dict[str, Any] | None:
        """The state item of a queue ID."""
        item = self.dynamodb.get_item(
            TableName=self.table, ConsistentRead=True,
            Key=to_item({PARTITION_KEY: queue_id, SORT_KEY: STATE_SK})).get("Item")
        return from_item(item) if item else None

    def events_for_attempt(self, queue_id: str, attempt_id: str) -> list[SesEventRecord]:
        """SES's events about one send attempt."""
        found = []
        for item in self._query(
                KeyConditionExpression="#pk = :q", ConsistentRead=True,
                FilterExpression="kind = :event AND attempt_id = :attempt",
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
                ExpressionAttributeValues={":q": {"S": queue_id}, ":event": {"S": EVENT},
                                           ":attempt": {"S": attempt_id}}):
            found.append(event_from_item(item))
        return found

    def queue_ids_by_message_id(self, ses_message_id: str) -> list[str]:
        """Queue IDs whose sends or events carry this SES MessageId."""
        return list(dict.fromkeys(item[PARTITION_KEY] for item in self._query(
            IndexName=INDEX_BY_MESSAGE_ID, KeyConditionExpression="ses_message_id = :m",
            ExpressionAttributeValues={":m": {"S": ses_message_id}})))

    def queue_ids_by_recipient(self, address: str, since: datetime,
                               until: datetime | None = None) -> list[str]:
        """Queue IDs of messages to address received in [since, until]."""
        until = until or datetime.now(UTC) + timedelta(minutes=5)
        return list(dict.fromkeys(item[PARTITION_KEY] for item in self._query(
            IndexName=INDEX_BY_RECIPIENT,
            KeyConditionExpression="rcpt = :r AND #at BETWEEN :a AND :b",
            ExpressionAttributeNames={"#at": "at"},
            ExpressionAttributeValues={":r": {"S": address.lower()},
                                       ":a": {"S": stamp(since)},
                                       ":b": {"S": stamp(until)}})))

    def unfinished(self) -> list[dict[str, Any]]:
        """State items of every message not finished yet, oldest first."""
        found: list[dict[str, Any]] = []
        for shard in range(OPEN_SHARDS):
            found += self._query(IndexName=INDEX_UNFINISHED,
                                 KeyConditionExpression="#open = :s",
                                 ExpressionAttributeNames={"#open": "open"},
                                 ExpressionAttributeValues={":s": {"S": str(shard)}})
        return sorted(found, key=lambda item: item.get("received_at", ""))


def event_from_item(item: dict[str, Any]) -> SesEventRecord:
    """An EVENT item (as from_item returns it) as an SesEventRecord."""
    return SesEventRecord(
        event_type=item["event_type"], ses_message_id=item.get("ses_message_id", ""),
        timestamp=item.get("at", ""),
        queue_id="" if item[PARTITION_KEY].startswith(UNMATCHED_PREFIX)
        else item[PARTITION_KEY],
        attempt_id=item.get("attempt_id", ""),
        recipients=tuple(item.get("recipients", [])),
        bounce_type=item.get("bounce_type", ""), bounce_subtype=item.get("bounce_subtype", ""),
        detail=item.get("detail", ""), source=item.get("source", ""))


def table_definition() -> dict[str, Any]:
    """The table's keys and indexes, as CreateTable takes them (dev, tests). The CDK
    stack declares the same layout from the constants above."""
    def index(name: str, pk: str, sk: str) -> dict[str, Any]:
        return {"IndexName": name, "Projection": {"ProjectionType": "ALL"},
                "KeySchema": [{"AttributeName": pk, "KeyType": "HASH"},
                              {"AttributeName": sk, "KeyType": "RANGE"}]}

    return {
        "AttributeDefinitions": [{"AttributeName": name, "AttributeType": "S"} for name in
                                 (PARTITION_KEY, SORT_KEY, "ses_message_id", "rcpt", "at",
                                  "open", "received_at")],
        "KeySchema": [{"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
                      {"AttributeName": SORT_KEY, "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": [
            index(INDEX_BY_MESSAGE_ID, "ses_message_id", SORT_KEY),
            index(INDEX_BY_RECIPIENT, "rcpt", "at"),
            index(INDEX_UNFINISHED, "open", "received_at"),
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
