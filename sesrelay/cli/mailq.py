"""`sesrelay mailq`: the messages not finished yet, in Postfix's `postqueue -p` layout.

Two sources: the trail's unfinished messages (TrailReader.unfinished: being delivered,
or deferred until their next try) and what sits in the dead-letter queue (read with
sesrelay.cli.dlq.peek, which leaves it there). As in Postfix, ``*`` after the queue ID
marks a message being delivered now and ``!`` one on hold (here: in the DLQ, released
with `sesrelay redrive`); deferred messages have no mark and show their reason in
parentheses. Times are local, as Postfix's mailq shows them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sesrelay import trail
from sesrelay.cli import dlq, where
from sesrelay.cli.common import parse_stamp, trail_reader

HEADER = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
ACTIVE_MARK, HOLD_MARK, DEFERRED_MARK = "*", "!", " "


@dataclass
class Entry:
    """One message as mailq lists it."""

    queue_id: str
    mark: str
    size: int
    arrival: datetime | None
    sender: str
    recipients: list[str]
    reasons: list[str] = field(default_factory=list)

    @property
    def queue_name(self) -> str:
        """Postfix's name of the queue it would be in (postqueue -j)."""
        return {ACTIVE_MARK: "active", HOLD_MARK: "hold"}.get(self.mark, "deferred")


def _asctime(when: datetime | None) -> str:
    """Postfix's arrival time: asctime() of the local time, without the year."""
    if when is None:
        return "?"
    return time.asctime(time.localtime(when.timestamp()))[:19]


def _count(value: Any) -> int:
    if isinstance(value, list | tuple | set | dict):
        return len(value)
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, int) else 0


def from_state(state: dict[str, Any]) -> Entry:
    """A trail state item as a mailq entry."""
    status = state.get("status", "")
    mark = {trail.ACTIVE: ACTIVE_MARK, trail.STATE_UNDELIVERABLE: HOLD_MARK}.get(
        status, DEFERRED_MARK)
    reasons = []
    if state.get("last_reason") and status != trail.ACTIVE:
        reasons.append(str(state["last_reason"]))
    attempts = _count(state.get("attempts"))
    if status == trail.WAITING:
        if attempts:
            reasons.append(f"{attempts} attempt{'s' if attempts != 1 else ''}")
        next_try = parse_stamp(state.get("next_try"))
        if next_try:
            reasons.append(f"next try {_asctime(next_try)}")
    elif status == trail.STATE_UNDELIVERABLE:
        reasons.append("undeliverable: left for the dead-letter queue")
    elif status not in (trail.ACTIVE, trail.WAITING):
        reasons.append(f"status {status or 'unknown'}")
    doubtful = _count(state.get("in_doubt"))
    if doubtful:
        reasons.append(f"{doubtful} send{'s' if doubtful != 1 else ''} in doubt: SES may "
                       "have accepted it")
    recipients = state.get("pending")
    if recipients is None:
        recipients = state.get("recipients", [])
    return Entry(state[trail.PARTITION_KEY], mark, _count(state.get("size")),
                 parse_stamp(state.get("received_at")), str(state.get("sender", "")),
                 list(recipients), reasons)


def from_dead_letter(letter: dlq.DeadLetter) -> Entry:
    """A DLQ message that the trail does not list as unfinished."""
    attributes = letter.message.get("Attributes", {})
    if letter.envelope is None:
        sent = attributes.get("SentTimestamp")
        arrival = datetime.fromtimestamp(int(sent) / 1000).astimezone() if sent else None
        return Entry("?", HOLD_MARK, len(letter.message.get("Body", "")), arrival, "?", [],
                     [f"in the dead-letter queue, not a sesrelay envelope: {letter.error}; "
                      f"SQS MessageId {letter.message['MessageId']}"])
    envelope = letter.envelope
    return Entry(envelope.queue_id, HOLD_MARK, envelope.size, parse_stamp(envelope.received_at),
                 envelope.mail_from, list(envelope.rcpt_to),
                 ["in the dead-letter queue, not in the trail: `sesrelay redrive` retries "
                  "it"])


def entries(states: list[dict[str, Any]], letters: list[dlq.DeadLetter]) -> list[Entry]:
    """Unfinished messages and the DLQ's, each once, oldest first."""
    by_id = {state[trail.PARTITION_KEY]: from_state(state) for state in states}
    extra = []
    for letter in letters:
        entry = by_id.get(letter.queue_id) if letter.queue_id else None
        if entry is None:
            extra.append(from_dead_letter(letter))
            continue
        entry.mark = HOLD_MARK
        entry.reasons = [r for r in entry.reasons if not r.startswith("undeliverable")]
        entry.reasons.append("in the dead-letter queue: `sesrelay redrive` retries it")
    found = [*by_id.values(), *extra]
    return sorted(found, key=lambda e: e.arrival.timestamp() if e.arrival else 0.0)


def render(found: list[Entry]) -> str:
    """postqueue -p's output."""
    if not found:
        return "Mail queue is empty"
    lines = [HEADER]
    for entry in found:
        head = f"{entry.queue_id:<10}{entry.mark} {entry.size:>8} {_asctime(entry.arrival):<20} "
        lines.append(f"{head}{entry.sender or 'MAILER-DAEMON'}")
        if entry.reasons:
            lines.append(f"({'; '.join(entry.reasons)})")
        lines += [" " * len(head) + recipient for recipient in entry.recipients]
        lines.append("")
    requests = len(found)
    kbytes = sum(entry.size for entry in found) // 1024
    lines.append(f"-- {kbytes} Kbytes in {requests} Request{'s' if requests != 1 else ''}.")
    return "\n".join(lines)


def render_json(found: list[Entry]) -> str:
    """postqueue -j's output: one JSON object per message and line."""
    reason = "; ".join
    return "\n".join(json.dumps({
        "queue_name": entry.queue_name, "queue_id": entry.queue_id,
        "arrival_time": int(entry.arrival.timestamp()) if entry.arrival else 0,
        "message_size": entry.size, "sender": entry.sender,
        "recipients": [{"address": r, **({"delay_reason": reason(entry.reasons)}
                                         if entry.reasons else {})}
                       for r in entry.recipients],
    }) for entry in found)


def cmd_mailq(args: argparse.Namespace) -> int:
    """List unfinished messages and the dead-letter queue."""
    location = where.resolve(args)
    sqs = location.client("sqs")
    states = trail_reader(location).unfinished()
    dlq_url = location.dlq_url
    letters = dlq.peek(sqs, dlq_url)
    found = entries(states, letters)
    output = render_json(found) if args.json else render(found)
    if output:
        print(output)
    waiting = dlq.visible(sqs, location.queue_url)
    if waiting:
        # Not received from the queue: a receive would count toward its DLQ threshold and
        # hide it from the worker.
        print(f"sesrelay mailq: {waiting} message(s) in the queue are due and wait for the "
              "worker (those it has not seen yet are not in the trail)", file=sys.stderr)
    hidden = dlq.not_visible(sqs, dlq_url)
    if hidden:
        print(f"sesrelay mailq: {hidden} more message(s) in the dead-letter queue are being "
              "read by another command right now", file=sys.stderr)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `mailq`."""
    mailq = commands.add_parser(
        "mailq", help="messages not finished yet and the dead-letter queue (postqueue -p)",
        description="Messages not finished yet (from the trail) and what sits in the "
        "dead-letter queue, in Postfix's mailq layout. The DLQ is read by receiving its "
        f"messages for {dlq.PEEK_VISIBILITY} s and making them visible again at once.")
    where.add_arguments(mailq)
    mailq.add_argument("--json", action="store_true",
                       help="one JSON object per message, as postqueue -j writes them")
    mailq.set_defaults(func=cmd_mailq)
