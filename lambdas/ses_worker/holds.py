"""Receives that are not delivery attempts, so that they do not advance a message's retry
schedule.

SQS counts every receive (ApproximateReceiveCount), and the worker's backoff is keyed
on it. Two kinds of receive are no attempt of the message's own: one held by a
configuration error (the account, not the message, failed) and one whose send was
never started because the invocation ran out of time. Each such receive adds one to a
counter item in the idempotency table; the message's attempt number is its receive
count less that counter. The counter is read only when a message fails (to choose its
delay), so a message sent at once costs nothing more.

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

    def _key(self, queue_id: str) -> dict[str, Any]:
        return {"id": {"S": f"{HOLD_PREFIX}{queue_id}"}}

    def add(self, queue_id: str) -> None:
        """Count one receive of queue_id that was not a delivery attempt."""
        self.dynamodb.update_item(
            TableName=self.table, Key=self._key(queue_id),
            UpdateExpression="ADD held :one SET expiration = :expires",
            ExpressionAttributeValues={":one": {"N": "1"},
                                       ":expires": {"N": str(int(time.time()) + RECORD_TTL)}})

    def count(self, queue_id: str) -> int:
        """How many receives of queue_id were held."""
        item = self.dynamodb.get_item(TableName=self.table, Key=self._key(queue_id),
                                      ConsistentRead=True).get("Item")
        return int(item["held"]["N"]) if item else 0

    def attempt(self, queue_id: str, receive_count: int) -> int:
        """The attempt number of this receive: its receive count less the held ones."""
        return max(1, receive_count - self.count(queue_id))
