"""SES event-publishing records (the JSON SES publishes through SNS) as trail events.

The shapes are AWS's ("Contents of event data that Amazon SES publishes to Amazon SNS"
in the SES developer guide): a top-level ``eventType``, the ``mail`` object of the send
(its SES ``messageId``, ``timestamp``, ``destination`` and ``tags``, which map a tag
name to a list of values) and one object named after the type (``bounce``,
``delivery``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sesrelay import trail

# eventType as SES publishes it -> the configuration set's name for the type. Open,
# Click, Rendering Failure and Subscription are left out: sesrelay's event destination
# does not ask for them.
EVENT_TYPES = {
    "Send": trail.EVENT_SEND,
    "Delivery": trail.EVENT_DELIVERY,
    "Bounce": trail.EVENT_BOUNCE,
    "Complaint": trail.EVENT_COMPLAINT,
    "Reject": trail.EVENT_REJECT,
    "DeliveryDelay": trail.EVENT_DELIVERY_DELAY,
}


class NotAnSesEvent(ValueError):
    """A payload that is not an SES event record (no mail object, no message ID, a bad
    timestamp). It is never dropped: the record fails and ends in the events DLQ."""


@dataclass(frozen=True)
class ParsedEvent:
    """One SES event: the trail's record of it, and what its maillog lines need."""

    record: trail.SesEventRecord
    sent_at: datetime  # mail.timestamp: when SES accepted the send
    happened_at: datetime  # the event's own time
    region: str  # the SES region of the sending identity ("" if SES did not say)


def one_line(text: object) -> str:
    """A remote server's text on one line (diagnostics may span several)."""
    return " ".join(str(text or "").split())


def parse_time(value: object) -> datetime:
    """An ISO 8601 time from an SES event (``2017-08-05T00:41:02.669Z``)."""
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise NotAnSesEvent(f"not an ISO 8601 time: {value!r}") from None
    # SES writes UTC with a Z; a time without a zone is taken as UTC too.
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _tag(tags: Mapping[str, Any], name: str) -> str:
    values = tags.get(name) or [""]
    return str(values[0] if isinstance(values, list) else values)


def _recipient(address: object, **fields: object) -> dict[str, str]:
    entry = {"address": str(address)}
    entry.update({k: one_line(v) for k, v in fields.items() if v})
    return entry


def _region(source_arn: object) -> str:
    # arn:aws:ses:us-east-1:123456789012:identity/sender@example.com
    parts = str(source_arn or "").split(":")
    return parts[3] if len(parts) > 4 and parts[2] == "ses" else ""


def parse_event(payload: Mapping[str, Any]) -> ParsedEvent | None:
    """The event in payload, or None when its type is one sesrelay does not ask for.
    Raises NotAnSesEvent for a payload that is not an SES event record."""
    mail = payload.get("mail")
    if not isinstance(mail, Mapping) or not mail.get("messageId"):
        raise NotAnSesEvent("no mail object with a messageId")
    name = payload.get("eventType")
    if name not in EVENT_TYPES:
        return None
    event_type = EVENT_TYPES[name]
    sent_at = parse_time(mail.get("timestamp"))
    happened_at, recipients, detail = sent_at, (), ""
    bounce_type = bounce_subtype = ""
    destination = tuple(_recipient(r) for r in mail.get("destination") or ())

    if event_type in (trail.EVENT_SEND, trail.EVENT_REJECT):
        # Neither object has a time of its own: both happen when SES takes the request.
        recipients = destination
        detail = one_line((payload.get("reject") or {}).get("reason"))
    elif event_type == trail.EVENT_DELIVERY:
        delivery = payload.get("delivery") or {}
        happened_at = parse_time(delivery.get("timestamp"))
        recipients = tuple(_recipient(r) for r in delivery.get("recipients") or ())
        detail = one_line(delivery.get("smtpResponse"))
    elif event_type == trail.EVENT_BOUNCE:
        bounce = payload.get("bounce") or {}
        happened_at = parse_time(bounce.get("timestamp"))
        bounce_type = str(bounce.get("bounceType") or "")
        bounce_subtype = str(bounce.get("bounceSubType") or "")
        recipients = tuple(
            _recipient(r.get("emailAddress"), action=r.get("action"), status=r.get("status"),
                       diagnostic=r.get("diagnosticCode"))
            for r in bounce.get("bouncedRecipients") or ())
        detail = next((r["diagnostic"] for r in recipients if r.get("diagnostic")),
                      f"{bounce_type} bounce ({bounce_subtype})")
    elif event_type == trail.EVENT_COMPLAINT:
        complaint = payload.get("complaint") or {}
        happened_at = parse_time(complaint.get("timestamp"))
        recipients = tuple(_recipient(r.get("emailAddress"))
                           for r in complaint.get("complainedRecipients") or ())
        detail = one_line(complaint.get("complaintFeedbackType")
                          or complaint.get("complaintSubType") or "complaint")
    else:  # DELIVERY_DELAY
        delay = payload.get("deliveryDelay") or {}
        happened_at = parse_time(delay.get("timestamp"))
        recipients = tuple(
            _recipient(r.get("emailAddress"), status=r.get("status"),
                       diagnostic=r.get("diagnosticCode"))
            for r in delay.get("delayedRecipients") or ())
        detail = one_line(f"{delay.get('delayType') or 'delayed'}; SES retries until "
                          f"{delay.get('expirationTime') or 'it gives up'}")

    tags = mail.get("tags") or {}
    record = trail.SesEventRecord(
        event_type=event_type, ses_message_id=str(mail["messageId"]),
        timestamp=trail.stamp(happened_at),
        queue_id=_tag(tags, trail.QUEUE_ID_TAG), attempt_id=_tag(tags, trail.ATTEMPT_TAG),
        recipients=recipients, bounce_type=bounce_type, bounce_subtype=bounce_subtype,
        detail=detail, source=str(mail.get("source") or ""))
    return ParsedEvent(record, sent_at, happened_at, _region(mail.get("sourceArn")))
