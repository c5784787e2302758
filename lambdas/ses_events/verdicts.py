"""Which SES events become maillog lines, and what those lines say.

The worker logs ``status=sent`` for each recipient when SES accepts a send, as Postfix
logs the hand-off to its relayhost. What SES learns afterwards is logged here, in the
smtp daemon's shape, so that grep and pflogsumm see it next to the worker's lines:

=================  ===============================================================
SES event          maillog line per recipient
=================  ===============================================================
Bounce             ``status=bounced``, dsn from the bounce (Permanent, Transient and
                   Undetermined alike: SES publishes a bounce only once it has stopped
                   trying, so nothing will deliver that copy any more)
Reject             ``status=bounced``, dsn 5.7.1 (SES found a virus and sent nothing)
DeliveryDelay      ``status=deferred``, dsn from the delay (SES is still trying, which
                   is exactly what Postfix's deferred means)
Send, Delivery     none: the worker's ``status=sent`` line already counts the
                   recipient, and a second one would count it twice
Complaint          none: Postfix has no word for it (the trail keeps it)
=================  ===============================================================

An event that carries no sesrelay queue ID (a send made by someone else with the same
configuration set) gets no line either: maillog lines belong to queue IDs.
"""

from __future__ import annotations

from ses_events.parsing import ParsedEvent
from sesrelay import maillog, trail

# RFC 3463 codes for events whose recipients carry no Status field of their own.
REJECT_DSN = "5.7.1"  # delivery not authorized, message refused
BOUNCE_DSN = {"Transient": "4.0.0"}  # Permanent and Undetermined: 5.0.0
DELAY_DSN = "4.0.0"
NO_DELAYS = (0.0, 0.0, 0.0, 0.0)


def _line(event: ParsedEvent, recipient: dict[str, str], *, dsn: str, status: str,
          text: str, region: str) -> str:
    delay = max(0.0, (event.happened_at - event.sent_at).total_seconds())
    return maillog.delivery(event.record.queue_id, recipient["address"],
                            relay=maillog.ses_relay(region), delay=delay, delays=NO_DELAYS,
                            dsn=dsn, status=status, text=text)


def maillog_lines(event: ParsedEvent, default_region: str = "") -> list[str]:
    """The smtp lines an event adds to the maillog (text after ``smtp[pid]: ``).
    The relay is the sending identity's SES region, else default_region."""
    record = event.record
    if not record.queue_id:
        return []
    region = event.region or default_region
    if record.event_type == trail.EVENT_BOUNCE:
        fallback_dsn = BOUNCE_DSN.get(record.bounce_type, "5.0.0")
        return [_line(event, r, dsn=r.get("status") or fallback_dsn, status="bounced",
                      text=r.get("diagnostic") or f"Amazon SES: {record.bounce_type} bounce "
                                                  f"({record.bounce_subtype})",
                      region=region)
                for r in record.recipients]
    if record.event_type == trail.EVENT_REJECT:
        return [_line(event, r, dsn=REJECT_DSN, status="bounced",
                      text=f"Amazon SES rejected the message: {record.detail or 'no reason'}",
                      region=region)
                for r in record.recipients]
    if record.event_type == trail.EVENT_DELIVERY_DELAY:
        return [_line(event, r, dsn=r.get("status") or DELAY_DSN, status="deferred",
                      text=r.get("diagnostic") or record.detail, region=region)
                for r in record.recipients]
    return []
