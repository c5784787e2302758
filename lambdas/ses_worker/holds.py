"""Receives that are not delivery attempts, so that they do not advance a message's retry
schedule.

SQS counts every receive (ApproximateReceiveCount), and the worker's backoff is keyed
on it. Two kinds of receive are no attempt of the message's own: one held by a
configuration error (the account, not the message, failed) and one whose send was
never started because the invocation ran out of time. Each such receive adds one to a
counter item in the idempotency table, keyed on the SQS message ID, since SQS counts
receives per SQS message and a deferred copy (ses_worker.requeue) is a new one that
carries the attempts made before it; the attempt number is the envelope's attempts plus
this SQS message's receive count less its counter. The counter is read only when a
message fails (to choose its delay), so a message sent at once costs nothing more.

The queue's maxReceiveCount still counts every receive: a held message waits the
longest backoff each time, which keeps it inside the count the stack derives
(stacks/spool.py), and a receive without time is rare by construction
(sesrelay.timeouts.worker_timing sizes the batch to the invocation).
"""

from __future__ import annotations

import time
from typing import Any

HOLD_PREFIX = "sesrelay.held#"
# SQS keeps no message longer than 14 days.
RECORD_TTL = 14 * 24 * 3600


class HeldReceives:
    """The held-receive counters of one idempotency table."""

    def __init__(self, dynamodb: Any, table: str):
        self.dynamodb = dynamodb
        self.table = table

    def _key(self, message_id: str) -> dict[str, Any]:
        return {"id": {"S": f"{HOLD_PREFIX}{message_id}"}}

    def add(self, message_id: str) -> None:
        """Count one receive of an SQS message that was not a delivery attempt."""
        self.dynamodb.update_item(
            TableName=self.table, Key=self._key(message_id),
            UpdateExpression="ADD held :one SET expiration = :expires",
            ExpressionAttributeValues={":one": {"N": "1"},
                                       ":expires": {"N": str(int(time.time()) + RECORD_TTL)}})

    def count(self, message_id: str) -> int:
        """How many receives of an SQS message were held."""
        item = self.dynamodb.get_item(TableName=self.table, Key=self._key(message_id),
                                      ConsistentRead=True).get("Item")
        return int(item["held"]["N"]) if item else 0

    def attempt(self, message_id: str, receive_count: int) -> int:
        """The receives of an SQS message that were attempts: its receive count less the
        held ones, at least this one."""
        return max(1, receive_count - self.count(message_id))
