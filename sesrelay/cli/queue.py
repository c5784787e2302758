"""`sesrelay flush`, `delete` and `redrive`: what postqueue -f / -i, postsuper -d and
postsuper -H do to Postfix's queue, done to the SQS queue, its DLQ and the trail.

A deferred message is an SQS message in flight, hidden until its next try; only the
receipt handle of its latest receive can change it, and the worker records that handle in
the trail's state item at each deferral (receipt_handle, queue_url). Each command notes
what it did in the trail (FLUSHED, DELETED, REDRIVEN) with who did it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError

from sesrelay import commit, trail
from sesrelay.aws import error_code
from sesrelay.cli import dlq, where
from sesrelay.cli.common import trail_reader, trail_writer

# What SQS answers for a receipt handle that no longer works: the message was received
# again (a newer handle replaced it), deleted, or is not in flight any more.
HANDLE_GONE = {"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight",
               "AWS.SimpleQueueService.MessageNotInflight"}
ALL_DEFERRED = "ALL-DEFERRED"
# A redrive hides the DLQ messages it moves for this long: long enough to move them all.
REDRIVE_VISIBILITY = 300


def handle_gone(exc: ClientError) -> bool:
    """True when SQS refused a receipt handle because it no longer works."""
    return error_code(exc) in HANDLE_GONE


def _queue_url(location: where.Location, state: dict[str, Any]) -> str:
    return str(state.get("queue_url") or location.queue_url)


# --- flush -----------------------------------------------------------------------------

def flush_one(location: where.Location, state: dict[str, Any], by: str) -> tuple[bool, str]:
    """Make one deferred message due now. Returns (flushed, what to tell the user)."""
    queue_id = state[trail.PARTITION_KEY]
    status = state.get("status", "")
    if status in trail.FINAL_STATES:
        return False, f"{queue_id}: finished ({status}): nothing to flush"
    if status == trail.STATE_UNDELIVERABLE:
        return False, (f"{queue_id}: undeliverable, in or on its way to the dead-letter "
                       "queue: `sesrelay redrive` retries it")
    if status != trail.WAITING:
        return False, f"{queue_id}: not deferred ({status}: being delivered now)"
    handle = state.get("receipt_handle")
    if not handle:
        # The worker defers longer retries as a delayed copy (ses_worker/requeue.py).
        return False, (f"{queue_id}: deferred as a delayed copy, which SQS hands out no "
                       f"sooner: it is tried at its next try ({state.get('next_try', '?')})")
    at = trail.stamp()
    try:
        location.client("sqs").change_message_visibility(
            QueueUrl=_queue_url(location, state), ReceiptHandle=handle, VisibilityTimeout=0)
    except ClientError as exc:
        if not handle_gone(exc):
            raise
        return False, (f"{queue_id}: its receipt handle no longer works: the message was "
                       "received again since it was deferred (it is being delivered, or "
                       "is done): nothing to flush")
    trail_writer(location, state).note(queue_id, trail.FLUSHED, at=at, by=by)
    return True, f"{queue_id}: flushed: due now"


def cmd_flush(args: argparse.Namespace) -> int:
    """Deferred messages (all, or one) become due now."""
    location = where.resolve(args)
    reader = trail_reader(location)
    if args.queue_id:
        state = reader.state(args.queue_id)
        if state is None:
            print(f"sesrelay flush: {args.queue_id}: no such message in the trail",
                  file=sys.stderr)
            return 1
        states = [state]
    else:
        states = [s for s in reader.unfinished() if s.get("status") == trail.WAITING]
    by = location.operator()
    flushed = 0
    for state in states:
        done, text = flush_one(location, state, by)
        flushed += done
        print(text)
    if not args.queue_id:
        print(f"sesrelay flush: {flushed} deferred message{'s' if flushed != 1 else ''} "
              "made due now")
    return 0


# --- delete ----------------------------------------------------------------------------

def _wanted_ids(args: argparse.Namespace, reader: trail.TrailReader) -> list[str]:
    if args.queue_ids == [ALL_DEFERRED]:
        return [s[trail.PARTITION_KEY] for s in reader.unfinished()
                if s.get("status") == trail.WAITING]
    ids: list[str] = []
    for value in args.queue_ids:
        # "-": queue IDs from standard input, one a line, as postsuper -d - reads them.
        ids += sys.stdin.read().split() if value == "-" else [value]
    return list(dict.fromkeys(ids))


def _remove_from_queue(location: where.Location, state: dict[str, Any], in_dlq: bool) -> str:
    """Delete the message from the queue with its recorded receipt handle; what happened."""
    handle = state.get("receipt_handle")
    if not handle:
        return ""
    try:
        location.client("sqs").delete_message(QueueUrl=_queue_url(location, state),
                                              ReceiptHandle=handle)
    except ClientError as exc:
        if not handle_gone(exc):
            raise
        if in_dlq:  # the handle was the queue's; SQS moved the message since
            return ""
        return ("the queue holds it under a newer receipt handle (the worker received it "
                "again): the worker drops it at its next receive")
    return "removed from the queue"


def delete_many(location: where.Location, queue_ids: Iterable[str]) -> list[str]:
    """Delete messages: tombstone, queue, DLQ, trail. Returns the lines to print."""
    reader = trail_reader(location)
    dynamodb, sqs = location.client("dynamodb"), location.client("sqs")
    by = location.operator()
    queue_ids = list(queue_ids)
    # One pass over the DLQ for all of them.
    letters = dlq.receive_all(sqs, location.dlq_url) if queue_ids else []
    in_dlq = {letter.queue_id: letter for letter in letters if letter.queue_id in queue_ids}
    dlq.release(sqs, location.dlq_url, [x for x in letters if x.queue_id not in in_dlq])
    lines = []
    deleted = 0
    for queue_id in queue_ids:
        state = reader.state(queue_id)
        if state and state.get("status") in trail.FINAL_STATES:
            lines.append(f"{queue_id}: already finished ({state['status']}): nothing to "
                         "delete")
            continue
        at = trail.stamp()
        refused = commit.delete(dynamodb, location.idempotency_table, queue_id, by)
        done = []
        if refused is not None:
            done.append("the relay had refused it (its client was told to retry): it was "
                        "never going to be sent")
        letter = in_dlq.get(queue_id)
        if state:
            removal = _remove_from_queue(location, state, in_dlq=letter is not None)
            if removal:
                done.append(removal)
        if letter is not None:
            sqs.delete_message(QueueUrl=location.dlq_url, ReceiptHandle=letter.receipt_handle)
            done.append("removed from the dead-letter queue")
        if not state and letter is None:
            done.append("not in the trail or the dead-letter queue: if it is still on its "
                        "way, the worker will not send it")
        under_way = bool(state) and (state.get("status") == trail.ACTIVE
                                     or bool(state.get("in_doubt")))
        caveat = ("a send already under way or in doubt may still complete"
                  if under_way else "")
        writer = trail_writer(location, state)
        writer.note(queue_id, trail.DELETED, at=at, by=by, removed_from=done,
                    reason=caveat or None)
        if state:
            writer.update_state(queue_id, finished=True, status=trail.STATE_DELETED,
                                pending=[])
        deleted += 1
        lines.append(f"{queue_id}: removed ({'; '.join(done) or 'no send starts from now'})")
        if caveat:
            lines.append(f"{queue_id}: warning: {caveat} (see `sesrelay trace {queue_id}`)")
    lines.append(f"sesrelay delete: Deleted: {deleted} message{'s' if deleted != 1 else ''}")
    return lines


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete messages, as postsuper -d does."""
    location = where.resolve(args)
    queue_ids = _wanted_ids(args, trail_reader(location))
    for text in delete_many(location, queue_ids):
        print(text)
    return 0


# --- redrive ---------------------------------------------------------------------------

def _attributes(message: dict[str, Any]) -> dict[str, Any]:
    """A received message's attributes as SendMessage takes them."""
    return {name: {k: v for k, v in value.items()
                   if k in ("DataType", "StringValue", "BinaryValue")}
            for name, value in message.get("MessageAttributes", {}).items()}


def cmd_redrive(args: argparse.Namespace) -> int:
    """Move the DLQ's messages back to the queue (or say what would move)."""
    location = where.resolve(args)
    sqs = location.client("sqs")
    reader = trail_reader(location)
    letters = dlq.receive_all(sqs, location.dlq_url, visibility=REDRIVE_VISIBILITY)
    movable = [letter for letter in letters if letter.envelope is not None]
    for letter in letters:
        if letter.envelope is None:
            print(f"SQS message {letter.message['MessageId']}: left in the dead-letter queue: "
                  f"not a sesrelay envelope ({letter.error})")
    if args.dry_run:
        dlq.release(sqs, location.dlq_url, letters)
        for letter in movable:
            envelope = letter.envelope
            assert envelope is not None
            print(f"{letter.queue_id}: would be redriven (from=<{envelope.mail_from}>, "
                  f"nrcpt={len(envelope.rcpt_to)}, size={envelope.size})")
        print(f"sesrelay redrive: {len(movable)} message{'s' if len(movable) != 1 else ''} "
              "would be moved from the dead-letter queue to the queue (dry run)")
        return 0
    dlq.release(sqs, location.dlq_url, [x for x in letters if x.envelope is None])
    by = location.operator()
    queue_url = location.queue_url
    moved = 0
    for letter in movable:
        state = reader.state(letter.queue_id)
        writer = trail_writer(location, state)
        at = trail.stamp()
        if state and state.get("status") == trail.STATE_UNDELIVERABLE:
            # Before the send, so that the worker's own updates come after this one.
            writer.update_state(letter.queue_id, status=trail.ACTIVE)
        # Send first, delete second: a failure in between leaves two copies, which the
        # worker's idempotency and commit records make harmless; never none.
        sqs.send_message(QueueUrl=queue_url, MessageBody=letter.message["Body"],
                         MessageAttributes=_attributes(letter.message))
        sqs.delete_message(QueueUrl=location.dlq_url, ReceiptHandle=letter.receipt_handle)
        writer.note(letter.queue_id, trail.REDRIVEN, at=at, by=by)
        moved += 1
        print(f"{letter.queue_id}: redriven")
    print(f"sesrelay redrive: {moved} message{'s' if moved != 1 else ''} moved from the "
          "dead-letter queue to the queue")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `flush`, `delete` and `redrive`."""
    flush = commands.add_parser(
        "flush", help="deferred messages become due now (postqueue -f; with QUEUEID, -i)",
        description="Make deferred messages (all, or QUEUEID) due now: their SQS message "
        "becomes visible at once, with the receipt handle the worker recorded in the "
        "trail. A message received again since it was deferred is already being tried.")
    flush.add_argument("queue_id", nargs="?", metavar="QUEUEID")
    where.add_arguments(flush)
    flush.set_defaults(func=cmd_flush)

    delete = commands.add_parser(
        "delete", help="delete messages (postsuper -d): QUEUEID..., - (IDs on stdin) or "
        f"{ALL_DEFERRED}",
        description="Delete messages as postsuper -d does: a tombstone that the worker "
        "checks before every send (so no send starts after it), removal from the queue or "
        "the dead-letter queue, and a DELETED note in the trail saying who and when. A "
        "send already under way, or one whose outcome is in doubt, may still complete.")
    delete.add_argument("queue_ids", nargs="+", metavar="QUEUEID",
                        help=f"queue IDs, - to read them from standard input, or "
                        f"{ALL_DEFERRED} for every deferred message")
    where.add_arguments(delete)
    delete.set_defaults(func=cmd_delete)

    redrive = commands.add_parser(
        "redrive", help="move the dead-letter queue back to the queue (postsuper -H)",
        description="Move every message of the dead-letter queue back to the queue, with "
        "a count and a REDRIVEN note in the trail. Safe to run twice, or after an "
        "interrupted run: the worker's idempotency and commit records make a repeated "
        "envelope harmless (recipients already sent to are not sent again; sends in doubt "
        "follow ses_unknown_outcome).")
    redrive.add_argument("--dry-run", action="store_true",
                         help="only say what would be moved")
    where.add_arguments(redrive)
    redrive.set_defaults(func=cmd_redrive)
