"""The send ledger: one DynamoDB item per SendEmail the worker owes (a recipient chunk of
a message, or its DSN), saying whether it was sent, is being sent, or may have been.

SES has no idempotency token, so a SendEmail whose answer was lost may or may not have
been accepted. The ledger never lets such a send be repeated blindly:

    (none) --begin--> SENDING --complete--> SENT      (SES answered with a MessageId)
                         |  \\--release--> (none)     (certainly not accepted: may retry;
                         |                            RELEASED if ever in doubt)
                         \\--doubt---> IN_DOUBT       (answer lost or late)
    IN_DOUBT --settle (SES events, or ses_unknown_outcome)--> SENT, or SENDING again
    SENDING whose lease ran out (the sender died mid-call) counts as IN_DOUBT.

Every write is conditional on the attempt ID that owns the item, so two invocations
holding the same SQS record (a redelivery) never both send. The items use the key and
attribute names of powertools' idempotency layer, which the worker used before: its
COMPLETED items still mean "sent", and an INPROGRESS item of it whose lease ran out is in
doubt, so an upgrade neither resends nor loses a chunk.
"""

from __future__ import annotations

import enum
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from sesrelay.aws import error_code

SEND_PREFIX = "sesrelay.send"
DSN_PREFIX = "sesrelay.dsn"
RELAYED_PREFIX = "sesrelay.relayed"  # the "relayed" DSN of NOTIFY=SUCCESS
# SQS keeps a message (and its dead-letter copy) at most 14 days: no redelivery later.
RECORD_TTL = 14 * 24 * 3600
# powertools' attribute names and status values.
KEY = "id"
STATUS = "status"
EXPIRATION = "expiration"
LEASE = "in_progress_expiration"  # epoch milliseconds
DATA = "data"
SENDING = "INPROGRESS"
SENT = "COMPLETED"
IN_DOUBT = "IN_DOUBT"
RELEASED = "RELEASED"  # an attempt certainly failed; kept only to remember a doubt
ATTEMPT = "attempt"
ATTEMPT_AT = "attempt_at"
DOUBTED = "doubted"  # some attempt of this send was ever in doubt
DOUBTS = "doubts"  # how many attempts were


def send_key(prefix: str, queue_id: str, recipients: list[str]) -> str:
    """The item key of one send: powertools' key for the same data (prefix#md5 of the
    sorted-key JSON of {"queue_id", "recipients"})."""
    data = json.dumps({"queue_id": queue_id, "recipients": recipients}, sort_keys=True)
    return f"{prefix}#{hashlib.md5(data.encode()).hexdigest()}"


class Found(enum.Enum):
    """What begin() found."""

    MINE = 1  # the send is ours to make
    SENT = 2  # already sent: message_id
    BUSY = 3  # another invocation is sending it right now
    IN_DOUBT = 4  # an earlier attempt's outcome is unknown: attempt, attempt_at


@dataclass(frozen=True)
class Entry:
    """The ledger's answer about one send."""

    found: Found
    attempt: str = ""  # the attempt that owns the item
    attempt_at: float = 0.0  # when that attempt began (epoch seconds)
    message_id: str = ""  # for SENT
    doubted: bool = False  # an attempt of this send was in doubt at some point
    doubts: int = 0  # how many attempts were


class LedgerConflict(Exception):
    """The item is no longer owned by the attempt that tried to change it."""


class SendLedger:
    """Send records in the idempotency table."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self.dynamodb = dynamodb
        self.table = table

    def begin(self, key: str, attempt: str, lease_seconds: float,
              now: float | None = None) -> Entry:
        """Claim the send for this attempt, or say why not."""
        now = time.time() if now is None else now
        try:
            answer = self.dynamodb.update_item(
                TableName=self.table, Key={KEY: {"S": key}},
                UpdateExpression="SET #s = :sending, #a = :attempt, #at = :now, #e = :exp, "
                                 "#l = :lease",
                ConditionExpression="attribute_not_exists(#k) OR #e < :now_s "
                                    "OR #s = :released",
                ExpressionAttributeNames={"#k": KEY, "#s": STATUS, "#a": ATTEMPT,
                                          "#at": ATTEMPT_AT, "#e": EXPIRATION, "#l": LEASE},
                ExpressionAttributeValues={
                    ":sending": {"S": SENDING}, ":attempt": {"S": attempt},
                    ":now": {"N": f"{now:.3f}"}, ":now_s": {"N": str(int(now))},
                    ":exp": {"N": str(int(now) + RECORD_TTL)},
                    ":lease": {"N": str(int((now + lease_seconds) * 1000))},
                    ":released": {"S": RELEASED}},
                ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item") or self._read(key)
            if old is None:  # expired and removed meanwhile: try again
                return self.begin(key, attempt, lease_seconds, now)
            return self._interpret(old, attempt, now)
        attributes = answer.get("Attributes", {})
        return Entry(Found.MINE, attempt, now,
                     doubted=attributes.get(DOUBTED, {}).get("BOOL", False),
                     doubts=int(attributes.get(DOUBTS, {}).get("N", "0")))

    def _read(self, key: str) -> dict[str, Any] | None:
        return self.dynamodb.get_item(TableName=self.table, ConsistentRead=True,
                                      Key={KEY: {"S": key}}).get("Item")

    @staticmethod
    def _interpret(item: dict[str, Any], attempt: str, now: float) -> Entry:
        status = item[STATUS]["S"]
        owner = item.get(ATTEMPT, {}).get("S", "")
        began = float(item.get(ATTEMPT_AT, {}).get("N", "0"))
        doubted = item.get(DOUBTED, {}).get("BOOL", False)
        doubts = int(item.get(DOUBTS, {}).get("N", "0"))
        if status == SENT:
            data = json.loads(item.get(DATA, {}).get("S", "{}") or "{}")
            return Entry(Found.SENT, owner, began, str(data.get("message_id", "")), doubted,
                         doubts)
        if owner == attempt:  # our own write, whose answer was lost and retried
            return Entry(Found.MINE, owner, began, doubted=doubted, doubts=doubts)
        if status == SENDING and int(item.get(LEASE, {}).get("N", "0")) > now * 1000:
            return Entry(Found.BUSY, owner, began, doubted=doubted, doubts=doubts)
        # IN_DOUBT, or SENDING by a sender that died mid-call (its lease ran out).
        return Entry(Found.IN_DOUBT, owner, began, doubted=True,
                     doubts=doubts + (status == SENDING))

    def _update(self, key: str, attempt: str, expression: str,
                values: dict[str, Any], names: dict[str, str] | None = None) -> None:
        condition = "#a = :owner" if attempt else "attribute_not_exists(#a)"
        values = {**values, ":owner": {"S": attempt}} if attempt else values
        try:
            self.dynamodb.update_item(
                TableName=self.table, Key={KEY: {"S": key}}, UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#a": ATTEMPT, **(names or {})},
                **({"ExpressionAttributeValues": values} if values else {}))
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise LedgerConflict(f"{key} is no longer owned by attempt {attempt}") from None
            raise

    def complete(self, key: str, attempt: str, message_id: str) -> None:
        """SES accepted the send (or it is taken as accepted)."""
        self._update(key, attempt, "SET #s = :sent, #d = :data REMOVE #l",
                     {":sent": {"S": SENT},
                      ":data": {"S": json.dumps({"message_id": message_id})}},
                     {"#s": STATUS, "#d": DATA, "#l": LEASE})

    def doubt(self, key: str, attempt: str) -> None:
        """The send's outcome is unknown."""
        self._update(key, attempt, "SET #s = :doubt, #db = :yes ADD #n :one REMOVE #l",
                     {":doubt": {"S": IN_DOUBT}, ":yes": {"BOOL": True}, ":one": {"N": "1"}},
                     {"#s": STATUS, "#db": DOUBTED, "#n": DOUBTS, "#l": LEASE})

    def release(self, key: str, attempt: str, doubted: bool) -> None:
        """SES certainly did not accept this attempt: the next attempt may send. A send
        that was ever in doubt keeps its item (RELEASED, doubted) so that the doubt is
        remembered when the message ends in a bounce."""
        if doubted:
            self._update(key, attempt, "SET #s = :released REMOVE #l",
                         {":released": {"S": RELEASED}}, {"#s": STATUS, "#l": LEASE})
            return
        condition = "#a = :owner" if attempt else "attribute_not_exists(#a)"
        try:
            self.dynamodb.delete_item(
                TableName=self.table, Key={KEY: {"S": key}}, ConditionExpression=condition,
                ExpressionAttributeNames={"#a": ATTEMPT},
                **({"ExpressionAttributeValues": {":owner": {"S": attempt}}}
                   if attempt else {}))
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise LedgerConflict(f"{key} is no longer owned by attempt {attempt}") from None
            raise

    def retry(self, key: str, old_attempt: str, attempt: str, lease_seconds: float,
              now: float | None = None) -> None:
        """Hand an in-doubt send to a new attempt (ses_unknown_outcome = resend)."""
        now = time.time() if now is None else now
        self._update(key, old_attempt,
                     "SET #s = :sending, #a = :new, #at = :now, #l = :lease, #db = :yes",
                     {":sending": {"S": SENDING}, ":new": {"S": attempt},
                      ":now": {"N": f"{now:.3f}"},
                      ":lease": {"N": str(int((now + lease_seconds) * 1000))},
                      ":yes": {"BOOL": True}},
                     {"#s": STATUS, "#at": ATTEMPT_AT, "#l": LEASE, "#db": DOUBTED})
