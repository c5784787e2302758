"""Commit records: the one fact that decides whether a spooled message may be sent.

The relay commits a message by sending its envelope to SQS. When SendMessage fails in a
way that leaves its outcome unknown (the answer was lost, or came too late), the
envelope may be in the queue although the relay is about to tell the client 451. The
relay then writes a *refused* record for the queue ID. The worker, before it sends
anything, *claims* the queue ID. Both writes are conditional on the same DynamoDB item,
so exactly one of them wins:

- the relay's refusal wins: the client is told 451 and the worker drops the envelope
  whenever it arrives ("refused, never sent");
- the worker's claim wins: the envelope reached SQS and is being delivered, and the
  relay answers 250 after all ("acknowledged, sent once").

An operator's `sesrelay delete` marks the record *deleted*, which the worker's claim
also refuses. Records live in the idempotency table (sesrelay_idempotency_table) under
the key prefix COMMIT_PREFIX and expire with the table's TTL, after SQS can no longer
hold the envelope.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from sesrelay.aws import error_code

COMMIT_PREFIX = "sesrelay.commit#"
# SQS keeps a message (and its dead-letter copy) at most 14 days.
RECORD_TTL = 14 * 24 * 3600
KEY_ATTRIBUTE = "id"
TTL_ATTRIBUTE = "expiration"


class CommitState(enum.Enum):
    """What the commit record says about a queue ID."""

    CLAIMED = "claimed"  # the worker is delivering it
    REFUSED = "refused"  # the relay told the client 451: never send
    DELETED = "deleted"  # an operator deleted it: never send


@dataclass(frozen=True)
class CommitRecord:
    """A commit record as read back."""

    state: CommitState
    at: float
    by: str = ""


def commit_key(queue_id: str) -> str:
    """The idempotency-table key of a queue ID's commit record."""
    return f"{COMMIT_PREFIX}{queue_id}"


def _parse(item: dict[str, Any]) -> CommitRecord:
    return CommitRecord(CommitState(item["state"]["S"]), float(item["at"]["N"]),
                        item.get("by", {}).get("S", ""))


def _write(dynamodb: Any, table: str, queue_id: str, state: CommitState, allowed: str,
           now: float, by: str = "") -> CommitRecord | None:
    """Write state unless the record holds a state outside `allowed` (a condition
    expression); return None when written, else the record that stopped the write."""
    item = {KEY_ATTRIBUTE: {"S": commit_key(queue_id)}, "state": {"S": state.value},
            "at": {"N": f"{now:.3f}"}, TTL_ATTRIBUTE: {"N": str(int(now) + RECORD_TTL)}}
    if by:
        item["by"] = {"S": by}
    try:
        dynamodb.put_item(
            TableName=table, Item=item,
            ConditionExpression=f"attribute_not_exists({KEY_ATTRIBUTE}) OR {allowed}",
            ExpressionAttributeNames={"#s": "state"},
            # DynamoDB refuses values the condition does not use.
            ExpressionAttributeValues={name: value for name, value in (
                (":same", {"S": state.value}),
                (":claimed", {"S": CommitState.CLAIMED.value})) if name in allowed},
            ReturnValuesOnConditionCheckFailure="ALL_OLD")
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
        old = exc.response.get("Item")
        if old is None:  # an emulator that does not return the item: read it
            old = dynamodb.get_item(TableName=table, ConsistentRead=True,
                                    Key={KEY_ATTRIBUTE: {"S": commit_key(queue_id)}})["Item"]
        return _parse(old)
    return None


def refuse(dynamodb: Any, table: str, queue_id: str, now: float | None = None) -> bool:
    """The relay's refusal. True: the record now says refused, and no worker will send
    the message. False: a worker claimed it first (or an operator deleted it), so the
    envelope is in the queue. Raises botocore errors: the question is then still open.
    Safe to repeat."""
    stopped = _write(dynamodb, table, queue_id, CommitState.REFUSED, "#s = :same",
                     time.time() if now is None else now)
    return stopped is None


def claim(dynamodb: Any, table: str, queue_id: str, now: float | None = None
          ) -> CommitRecord | None:
    """The worker's claim before it sends. None: the message may be sent. Otherwise the
    record that forbids it (refused by the relay, or deleted). Safe to repeat: a claim
    already made is made again."""
    return _write(dynamodb, table, queue_id, CommitState.CLAIMED, "#s = :same",
                  time.time() if now is None else now)


def delete(dynamodb: Any, table: str, queue_id: str, by: str,
           now: float | None = None) -> CommitRecord | None:
    """An operator's deletion: no send of this message starts after it. None when
    written; the refused record when the relay had refused it anyway."""
    return _write(dynamodb, table, queue_id, CommitState.DELETED,
                  "#s = :same OR #s = :claimed", time.time() if now is None else now, by)


def read(dynamodb: Any, table: str, queue_id: str) -> CommitRecord | None:
    """The commit record of a queue ID, if there is one (a consistent read)."""
    item = dynamodb.get_item(TableName=table, ConsistentRead=True,
                             Key={KEY_ATTRIBUTE: {"S": commit_key(queue_id)}}).get("Item")
    return _parse(item) if item else None
