"""`sesrelay trace QUEUEID|MESSAGE-ID|ADDRESS`: what happened to a message, step by step.

The answer to a mail admin's first question, read from the trail: received, each send
attempt and its outcome, deferrals, bounces and the DSN, SES's own events per recipient,
what operators did (deleted, flushed, redriven), and the end; then the final state of
each recipient. An address finds the messages to it received within ``--since``; an SES
MessageId (or SES's ``<MessageId@...amazonses.com>`` Message-ID) finds the messages whose
sends or events carry it; anything else is a queue ID.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sesrelay import trail
from sesrelay.cli import where
from sesrelay.cli.common import duration, now, parse_stamp, show_utc, trail_reader

QUEUE_ID, MESSAGE_ID, ADDRESS = "queue ID", "SES MessageId", "address"
LABELS = {trail.RECEIVED: "received", trail.ATTEMPT: "attempt", trail.DEFERRED: "deferred",
          trail.BOUNCED: "bounced", trail.EVENT: "SES event", trail.FINISHED: "finished",
          trail.DROPPED: "dropped", trail.DELETED: "deleted", trail.FLUSHED: "flushed",
          trail.REDRIVEN: "redriven"}
OUTCOMES = {
    trail.SENT: "sent",
    trail.FAILED: "failed",
    trail.IN_DOUBT: "in doubt: the answer was lost or late, SES may or may not have "
                    "accepted it",
    trail.SETTLED_SENT: "was in doubt; SES's events show it accepted it",
    trail.SETTLED_REJECTED: "was in doubt; SES's events show it refused it",
    trail.ASSUMED_SENT: "in doubt, no SES event settled it: assumed sent "
                        "(ses_unknown_outcome = assume_sent)",
}
# Item fields that say nothing to a reader of the story.
_STRUCTURAL = {trail.PARTITION_KEY, trail.SORT_KEY, "kind", "at", trail.TTL_ATTRIBUTE,
               "receipt_handle", "queue_url", "queue_arn"}


def classify(query: str) -> tuple[str, str]:
    """What a trace argument is: (QUEUE_ID | MESSAGE_ID | ADDRESS, the value to look up)."""
    value = query.strip().removeprefix("<").removesuffix(">")
    if "@" in value:
        local, _, domain = value.rpartition("@")
        if domain.lower().endswith("amazonses.com"):  # SES's Message-ID header
            return MESSAGE_ID, local
        return ADDRESS, value
    # SES MessageIds have dashes; queue IDs (and Postfix's) never do.
    return (MESSAGE_ID, value) if "-" in value else (QUEUE_ID, value)


@dataclass
class Story:
    """One queue ID's trail (or, for SES events no queue ID claims, those events)."""

    queue_id: str
    state: dict[str, Any] | None
    history: list[dict[str, Any]]
    recipients: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    @property
    def unmatched(self) -> bool:
        """True for SES events that no sesrelay queue ID claims."""
        return self.queue_id.startswith(trail.UNMATCHED_PREFIX)


def _when(item: dict[str, Any]) -> datetime:
    return parse_stamp(item.get("at")) or datetime.min.replace(tzinfo=UTC)


def load(reader: trail.TrailReader, queue_id: str, message_id: str = "") -> Story:
    """A queue ID's story, in time order (the sort key's order, made exact by time)."""
    history = sorted(reader.history(queue_id), key=_when)
    if queue_id.startswith(trail.UNMATCHED_PREFIX):
        history = [i for i in history if i.get("ses_message_id") == message_id]
        story = Story(queue_id, None, history)
    else:
        story = Story(queue_id, reader.state(queue_id), history)
    story.recipients = verdicts(story)
    return story


def find(reader: trail.TrailReader, query: str, since: datetime) -> tuple[str, str, list[Story]]:
    """The stories a trace argument names: (what it was taken for, the value, stories).
    A queue ID that finds nothing is tried as a MessageId, and the other way round."""
    kind, value = classify(query)
    if kind == ADDRESS:
        ids = reader.queue_ids_by_recipient(value, since)
        return kind, value, [load(reader, queue_id) for queue_id in ids]
    for attempt in ((QUEUE_ID, MESSAGE_ID) if kind == QUEUE_ID else (MESSAGE_ID, QUEUE_ID)):
        if attempt == QUEUE_ID:
            story = load(reader, value)
            stories = [story] if story.state or story.history else []
        else:
            stories = [load(reader, queue_id, value)
                       for queue_id in reader.queue_ids_by_message_id(value)]
        if stories:
            return attempt, value, stories
    return kind, value, []


# --- recipients' final states ----------------------------------------------------------

def _dsn_sends(history: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """Attempt IDs and SES MessageIds of the DSN sends: their events are not about the
    message's own recipients."""
    attempts = [i for i in history if i.get("kind") == trail.ATTEMPT
                and i.get("purpose") == trail.PURPOSE_DSN]
    return ({str(i["attempt_id"]) for i in attempts if i.get("attempt_id")},
            {str(i["ses_message_id"]) for i in attempts if i.get("ses_message_id")})


def _about_dsn(item: dict[str, Any], dsn: tuple[set[str], set[str]]) -> bool:
    return (item.get("attempt_id") in dsn[0]) or (item.get("ses_message_id") in dsn[1])


@dataclass(frozen=True)
class Context:
    """What a line needs to know about the rest of its story."""

    dsn: tuple[set[str], set[str]]  # the DSN sends' attempt IDs and SES MessageIds
    known: frozenset[str]  # SES MessageIds that attempt lines show
    sender: str  # the envelope sender (a DSN goes back to it)

    @classmethod
    def of(cls, story: Story) -> Context:
        """The context of a story's lines."""
        sender = (story.state or {}).get("sender") or next(
            (i.get("sender", "") for i in story.history if i.get("kind") == trail.RECEIVED),
            "")
        known = frozenset(str(i["ses_message_id"]) for i in story.history
                          if i.get("kind") == trail.ATTEMPT and i.get("ses_message_id"))
        return cls(_dsn_sends(story.history), known, str(sender))


def _event_recipients(item: dict[str, Any], history: list[dict[str, Any]]) -> list[str]:
    """The addresses an event is about: its own list, else its send's recipients (SEND
    and REJECT events name none)."""
    named = [str(r["address"]) for r in item.get("recipients", []) if r.get("address")]
    if named:
        return named
    for attempt in history:
        if attempt.get("kind") == trail.ATTEMPT and (
                (item.get("attempt_id") and attempt.get("attempt_id") == item["attempt_id"])
                or (item.get("ses_message_id")
                    and attempt.get("ses_message_id") == item["ses_message_id"])):
            return [str(r) for r in attempt.get("recipients", [])]
    return []


def _diagnostic(item: dict[str, Any], address: str) -> str:
    for entry in item.get("recipients", []):
        if str(entry.get("address", "")).lower() == address.lower():
            text = " ".join(str(entry[k]) for k in ("status", "diagnostic") if entry.get(k))
            if text:
                return text
    return str(item.get("detail", ""))


def verdicts(story: Story) -> dict[str, tuple[str, str, str]]:
    """Each recipient's final state: lower-cased address -> (address, state, detail)."""
    result: dict[str, tuple[str, str, str]] = {}
    listed = (story.state or {}).get("recipients") or next(
        (i.get("recipients", []) for i in story.history if i.get("kind") == trail.RECEIVED),
        [])
    for address in listed:
        result[str(address).lower()] = (str(address), "queued", "")

    def put(addresses: list[str], state: str, detail: str,
            only_from: set[str] | None = None) -> None:
        for address in addresses:
            key = address.lower()
            shown, current, _ = result.get(key, (address, "queued", ""))
            if only_from is None or current in only_from:
                result[key] = (shown, state, detail)

    dsn = _dsn_sends(story.history)
    unsettled = {"queued", "failed", "deferred", "in doubt"}
    for item in story.history:
        kind = item.get("kind")
        addresses = [str(r) for r in item.get("recipients", []) if isinstance(r, str)]
        if kind == trail.ATTEMPT and item.get("purpose") != trail.PURPOSE_DSN:
            outcome = item.get("outcome")
            reason = str(item.get("reason", ""))
            if outcome == trail.SENT:
                put(addresses, "sent", f"SES MessageId {item.get('ses_message_id', '?')}")
            elif outcome == trail.SETTLED_SENT:
                put(addresses, "sent", "in doubt, then settled by SES's events")
            elif outcome == trail.ASSUMED_SENT:
                put(addresses, "sent", "assumed: no SES event settled a send in doubt")
            elif outcome == trail.IN_DOUBT:
                put(addresses, "in doubt", reason)
            elif outcome == trail.SETTLED_REJECTED:
                put(addresses, "failed", "SES refused it (settled by its events)")
            elif outcome == trail.FAILED:
                put(addresses, "failed", reason)
        elif kind == trail.DEFERRED:
            detail = str(item.get("reason", ""))
            if item.get("next_try"):
                detail += f"; next try {show_utc(item['next_try'])}"
            put(addresses or list(result), "deferred", detail,
                None if addresses else unsettled)
        elif kind == trail.BOUNCED:
            # No DSN could go (a null sender, soft_bounce): the worker leaves the message
            # for the dead-letter queue.
            state = "undeliverable" if item.get("dsn_sent") is False else "bounced"
            for address in addresses or [a for a, (_s, current, _d) in result.items()
                                         if current in ("failed", "deferred", "in doubt")]:
                previous = result.get(address.lower(), (address, "", ""))[2]
                put([address], state, str(item.get("reason") or previous))
        elif kind == trail.EVENT and not _about_dsn(item, dsn):
            event = item.get("event_type")
            for address in _event_recipients(item, story.history):
                detail = _diagnostic(item, address)
                if event == trail.EVENT_DELIVERY:
                    put([address], "delivered", detail)
                elif event == trail.EVENT_BOUNCE:
                    put([address], "bounced",
                        f"SES {item.get('bounce_type', '')} bounce: {detail}".strip(": "))
                elif event == trail.EVENT_COMPLAINT:
                    put([address], "complaint", detail or "the recipient complained")
                elif event == trail.EVENT_REJECT:
                    put([address], "rejected by SES", detail)
                elif event == trail.EVENT_DELIVERY_DELAY:
                    put([address], "delayed", detail, {"sent", "in doubt", "delayed"})
                elif event == trail.EVENT_SEND:
                    put([address], "sent", "SES SEND event", {"in doubt", "queued"})
        elif kind in (trail.DELETED, trail.DROPPED):
            state = "deleted" if kind == trail.DELETED else "dropped"
            detail = (f"by {item['by']}" if item.get("by") else str(item.get("reason", "")))
            put(list(result), state, detail, unsettled | {"queued"})
    status = (story.state or {}).get("status")
    if status in trail.FINAL_STATES:
        put(list(result), status, "", {"queued"})
    return result


# --- the story's lines -----------------------------------------------------------------

def _addresses(values: Any) -> str:
    if not isinstance(values, list | tuple):
        return str(values)
    return ", ".join(f"<{v}>" for v in values)


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "; ".join(str(v) for v in value)
    return str(value)


def describe(item: dict[str, Any], context: Context) -> str:
    """One history item as the text of its line. An event names its SES MessageId unless
    an attempt's line shows it already."""
    dsn, known = context.dsn, context.known
    kind = item.get("kind")
    if kind == trail.RECEIVED:
        client = item.get("client_address", "")
        login = f", sasl_username={item['sasl_username']}" if item.get("sasl_username") else ""
        return (f"from=<{item.get('sender', '')}>, size={item.get('size', '?')}, "
                f"nrcpt={len(item.get('recipients', []))}, client=[{client}]{login}, "
                f"helo=<{item.get('client_helo', '')}>: {_addresses(item.get('recipients', []))}")
    if kind == trail.ATTEMPT:
        # A DSN's send is recorded under the recipients it reports on.
        who = (f"DSN to <{context.sender}> about "
               if item.get("purpose") == trail.PURPOSE_DSN else "")
        details = [f"{k}={item[k]}" for k in ("dsn",) if item.get(k)]
        if item.get("ses_message_id"):
            details.append(f"SES MessageId {item['ses_message_id']}")
        details += [str(item[k]) for k in ("reason",) if item.get(k)]
        if item.get("error_class"):
            details.append(f"class {item['error_class']}")
        if isinstance(item.get("seconds"), int | float) and item["seconds"]:
            details.append(f"{item['seconds']:.2f} s")
        outcome = OUTCOMES.get(str(item.get("outcome")), str(item.get("outcome", "?")))
        text = f"{who}{_addresses(item.get('recipients', []))}: {outcome}"
        return text + (f" ({', '.join(details)})" if details else "")
    if kind == trail.EVENT:
        name = str(item.get("event_type", "?"))
        if item.get("bounce_type"):
            name += f" {item['bounce_type']}/{item.get('bounce_subtype', '')}".rstrip("/")
        parts = []
        for entry in item.get("recipients", []):
            bits = " ".join(str(entry[k]) for k in ("action", "status", "diagnostic")
                            if entry.get(k))
            parts.append(f"<{entry.get('address', '?')}>" + (f": {bits}" if bits else ""))
        text = f"{name} {', '.join(parts)}".rstrip()
        if item.get("detail"):
            text += f" ({item['detail']})"
        if item.get("ses_message_id") not in known:
            text += f" [SES MessageId {item.get('ses_message_id', '?')}]"
        return text + (" (about the DSN)" if _about_dsn(item, dsn) else "")
    rest = {k: v for k, v in item.items() if k not in _STRUCTURAL and v not in ("", None, [])}
    head = []
    if "recipients" in rest:
        head.append(_addresses(rest.pop("recipients")))
    head += [f"{k}={rest.pop(k)}" for k in ("status", "dsn") if k in rest]
    if "reason" in rest:
        head.append(f"({rest.pop('reason')})")
    tail = []
    if "dsn_sent" in rest:
        if rest.pop("dsn_sent"):
            tail.append(f"DSN sent to <{context.sender}>"
                        + (f" (SES MessageId {rest.pop('ses_message_id')})"
                           if "ses_message_id" in rest else ""))
        else:
            tail.append("no DSN: left for the dead-letter queue")
    if "next_try" in rest:
        tail.append(f"next try {show_utc(rest.pop('next_try'))}")
    if "by" in rest:
        tail.append(f"by {rest.pop('by')}")
    if "removed_from" in rest:
        tail.append(_value(rest.pop("removed_from")))
    tail += [f"{k}={_value(v)}" for k, v in sorted(rest.items())]
    return ", ".join(filter(None, [" ".join(head), ", ".join(tail)]))


def render(story: Story) -> list[str]:
    """A story's lines: a heading, one line per step, then each recipient's state."""
    if story.unmatched:
        heading = (f"SES events with no sesrelay queue ID ({story.queue_id}): not sent by "
                   "sesrelay, or their tags were lost")
    else:
        heading = f"{story.queue_id} (times UTC)"
    lines = [heading]
    context = Context.of(story)
    for item in story.history:
        label = LABELS.get(str(item.get("kind")), str(item.get("kind")))
        lines.append(f"  {show_utc(item.get('at'))}  {label:<9}  {describe(item, context)}")
    if story.unmatched:
        return lines
    if not story.history:
        lines.append("  (no history: only the state item is left)")
    width = max((len(a) for a, _s, _d in story.recipients.values()), default=0) + 2
    for number, (address, state, detail) in enumerate(story.recipients.values()):
        lead = "  final:  " if number == 0 else "          "
        lines.append(f"{lead}{f'<{address}>':<{width}}  {state}"
                     + (f" ({detail})" if detail else ""))
    status = (story.state or {}).get("status", "unknown (no state item)")
    lines.append(f"  {'message:':<8}  {status}" if story.recipients
                 else f"  final:  message {status}")
    return lines


def as_json(story: Story) -> dict[str, Any]:
    """A story for machines."""
    return {"queue_id": None if story.unmatched else story.queue_id,
            "status": (story.state or {}).get("status"),
            "recipients": [{"address": a, "state": s, "detail": d}
                           for a, s, d in story.recipients.values()],
            "history": story.history, "state": story.state}


def cmd_trace(args: argparse.Namespace) -> int:
    """Print the stories of the messages a queue ID, MessageId or address names."""
    location = where.resolve(args)
    since = now() - args.since
    kind, value, stories = find(trail_reader(location), args.query, since)
    if args.json:
        print(json.dumps([as_json(s) for s in stories], indent=2, default=str))
    else:
        print("\n\n".join("\n".join(render(s)) for s in stories) if stories else "",
              end="\n" if stories else "")
    if not stories:
        window = (f" received since {since:%Y-%m-%d %H:%M} UTC (--since)"
                  if kind == ADDRESS else "")
        print(f"sesrelay trace: no message found for {kind} {value}{window} in "
              f"{location.label}", file=sys.stderr)
        return 1
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `trace`."""
    trace = commands.add_parser(
        "trace", help="what happened to a message: every step, then each recipient's state",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    trace.add_argument("query", metavar="QUEUEID|MESSAGE-ID|ADDRESS")
    trace.add_argument("--since", type=duration, default=timedelta(hours=24),
                       help="for an address: messages received this long ago or later "
                       "(90s, 30m, 24h, 7d; default 24h)")
    trace.add_argument("--json", action="store_true", help="the stories as JSON")
    where.add_arguments(trace)
    trace.set_defaults(func=cmd_trace)
