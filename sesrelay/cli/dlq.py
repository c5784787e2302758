"""Reading the dead-letter queue without consuming it.

SQS has no "peek": a message is read by receiving it, which hides it for a visibility
timeout. The commands receive DLQ messages with a short visibility timeout
(PEEK_VISIBILITY) and, once done with them, make the ones they keep visible again at
once (ChangeMessageVisibility 0). If the command dies in between, they reappear by
themselves after PEEK_VISIBILITY seconds. Receiving raises each message's receive count;
the DLQ has no redrive policy of its own, so that count decides nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from sesrelay.spool import ContractError, Envelope

PEEK_VISIBILITY = 30
# The longest the last, empty receive waits: long polling asks every SQS server, so an
# empty answer means the queue has nothing visible left (a short poll may answer empty
# while messages remain).
LAST_WAIT_SECONDS = 1


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ message, received: the SQS message and its envelope (None if its body is
    not a sesrelay envelope; error says why)."""

    message: dict[str, Any]
    envelope: Envelope | None
    error: str = ""

    @property
    def queue_id(self) -> str:
        """The envelope's queue ID ("" when the body is not an envelope)."""
        return self.envelope.queue_id if self.envelope else ""

    @property
    def receipt_handle(self) -> str:
        """This receive's receipt handle."""
        return str(self.message["ReceiptHandle"])


def receive_all(sqs: Any, queue_url: str, visibility: int = PEEK_VISIBILITY
                ) -> list[DeadLetter]:
    """Receive every visible message of queue_url, hiding each for visibility seconds."""
    found: list[DeadLetter] = []
    seen: set[str] = set()
    final = False  # this receive is the long poll that confirms the queue is empty
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=visibility,
            WaitTimeSeconds=LAST_WAIT_SECONDS if final else 0, AttributeNames=["All"],
            MessageAttributeNames=["All"]).get("Messages", [])
        if not batch:
            if final:
                return found
            final = True
            continue
        final = False
        for message in batch:
            if message["MessageId"] in seen:
                continue
            seen.add(message["MessageId"])
            try:
                found.append(DeadLetter(message, Envelope.from_json(message["Body"])))
            except ContractError as exc:
                found.append(DeadLetter(message, None, str(exc)))


def release(sqs: Any, queue_url: str, letters: Iterable[DeadLetter]) -> None:
    """Make received messages visible again now. A message whose handle no longer works
    (deleted or received by someone else meanwhile) is left as it is."""
    letters = list(letters)
    for start in range(0, len(letters), 10):
        chunk = letters[start:start + 10]
        try:
            sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": letter.receipt_handle, "VisibilityTimeout": 0}
                for i, letter in enumerate(chunk)])
        except ClientError:
            # They reappear by themselves after PEEK_VISIBILITY seconds.
            continue


def peek(sqs: Any, queue_url: str) -> list[DeadLetter]:
    """Every message of the DLQ, left in it and visible again."""
    letters = receive_all(sqs, queue_url)
    release(sqs, queue_url, letters)
    return letters


def visible(sqs: Any, queue_url: str) -> int:
    """How many of the queue's messages wait to be received (SQS's approximate count)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"].get("ApproximateNumberOfMessages", 0))


def not_visible(sqs: Any, queue_url: str) -> int:
    """How many of the queue's messages are hidden right now (being read by someone)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    return int(attributes["Attributes"].get("ApproximateNumberOfMessagesNotVisible", 0))
