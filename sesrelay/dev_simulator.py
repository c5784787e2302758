"""What the emulated SES of `sesrelay dev` publishes for a send it accepted: the event
records a configuration set's SNS event destination gets, in the shapes AWS documents
("Examples of event data that Amazon SES publishes to Amazon SNS"), with the outcomes of
SES's mailbox simulator (https://docs.aws.amazon.com/ses/latest/dg/send-an-email-from-console.html):

- every accepted send: one Send event;
- an ordinary address, or ``success@simulator.amazonses.com``: a Delivery event;
- ``bounce@simulator.amazonses.com``: a Permanent/General Bounce (5.1.1 user unknown),
  and no Delivery;
- ``complaint@simulator.amazonses.com``: a Delivery, then a Complaint (abuse);
- ``suppressionlist@simulator.amazonses.com``: a Permanent/OnAccountSuppressionList
  Bounce, and no Delivery.

The simulator's ``+label`` form (``bounce+test1@...``) behaves as the bare address. Dev
only: nothing here runs in a deployment.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from typing import Any

SIMULATOR_DOMAIN = "simulator.amazonses.com"
# What a receiving server answers, and what SES says about itself, in the records.
SMTP_ACCEPTED = "250 2.6.0 Message received"
SES_MTA = "a8-70.smtp-out.amazonses.com"
SOURCE_IP = "127.0.0.1"
CALLER_IDENTITY = "sesrelay-dev"
# Events of one send are apart by at least this much, so that the trail (which sorts
# by time) keeps them in the order SES would publish them.
STEP = timedelta(milliseconds=1)


class Outcome(enum.Enum):
    """What happens to one recipient after SES accepted the send."""

    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"  # delivered, then the recipient complained
    SUPPRESSED = "suppressed"  # on the account's suppression list: bounced


def outcome(address: str) -> Outcome:
    """The mailbox simulator's outcome for address; DELIVERED for any other address."""
    local, _, domain = address.rpartition("@")
    if domain.lower() != SIMULATOR_DOMAIN:
        return Outcome.DELIVERED
    return {"bounce": Outcome.BOUNCED, "complaint": Outcome.COMPLAINED,
            "suppressionlist": Outcome.SUPPRESSED}.get(
        local.split("+", 1)[0].lower(), Outcome.DELIVERED)


@dataclass(frozen=True)
class AcceptedSend:
    """One SendEmail call the emulated SES accepted, as far as its events need it."""

    message_id: str
    configuration_set: str
    from_address: str  # FromEmailAddress ("" when the request had none)
    destination: tuple[str, ...]  # the request's To, Cc and Bcc addresses
    tags: tuple[tuple[str, str], ...]  # the request's EmailTags
    raw: bytes
    account: str
    region: str
    accepted_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def ses_time(when: datetime) -> str:
    """A time as SES writes it in events: ISO 8601, UTC, milliseconds, ``Z``."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _feedback_id() -> str:
    return (f"0100{secrets.token_hex(6)}-{secrets.token_hex(4)}-{secrets.token_hex(2)}-"
            f"{secrets.token_hex(2)}-{secrets.token_hex(2)}-{secrets.token_hex(6)}-000000")


def mail_object(send: AcceptedSend, delivered: bool = False) -> dict[str, Any]:
    """The ``mail`` object of every event about send. delivered adds the tag SES adds
    once the message has left it (``ses:outgoing-ip``)."""
    headers = BytesHeaderParser().parsebytes(send.raw)
    source = send.from_address or parseaddr(headers.get("From", ""))[1]
    domain = source.rpartition("@")[2]
    tags: dict[str, list[str]] = {
        "ses:configuration-set": [send.configuration_set],
        "ses:source-ip": [SOURCE_IP],
        "ses:from-domain": [domain],
        "ses:caller-identity": [CALLER_IDENTITY],
    }
    if delivered:
        tags["ses:outgoing-ip"] = [SOURCE_IP]
    tags.update({name: [value] for name, value in send.tags})
    common: dict[str, Any] = {
        name: [a for _, a in getaddresses(headers.get_all(name.capitalize(), []))]
        for name in ("from", "to") if name.capitalize() in headers}
    for name, header in (("messageId", "Message-ID"), ("subject", "Subject"),
                         ("date", "Date")):
        if header in headers:
            common[name] = str(headers[header])
    return {
        "timestamp": ses_time(send.accepted_at),
        "source": source,
        "sourceArn": f"arn:aws:ses:{send.region}:{send.account}:identity/{domain}",
        "sendingAccountId": send.account,
        "messageId": send.message_id,
        "destination": list(send.destination),
        "headersTruncated": False,
        "headers": [{"name": name, "value": str(value)} for name, value in headers.items()],
        "commonHeaders": common,
        "tags": tags,
    }


def _delivery(send: AcceptedSend, recipient: str, when: datetime) -> dict[str, Any]:
    return {"eventType": "Delivery", "mail": mail_object(send, delivered=True),
            "delivery": {
                "timestamp": ses_time(when),
                "processingTimeMillis": int((when - send.accepted_at).total_seconds() * 1000),
                "recipients": [recipient], "smtpResponse": SMTP_ACCEPTED,
                "reportingMTA": SES_MTA}}


def _bounce(send: AcceptedSend, recipient: str, when: datetime,
            suppressed: bool) -> dict[str, Any]:
    if suppressed:  # SES never tried: no DSN, so no action, status or diagnostic
        bounced = {"emailAddress": recipient}
        subtype = "OnAccountSuppressionList"
    else:
        bounced = {"emailAddress": recipient, "action": "failed", "status": "5.1.1",
                   "diagnosticCode": "smtp; 550 5.1.1 user unknown"}
        subtype = "General"
    bounce: dict[str, Any] = {"bounceType": "Permanent", "bounceSubType": subtype,
                              "bouncedRecipients": [bounced], "timestamp": ses_time(when),
                              "feedbackId": _feedback_id()}
    if not suppressed:
        bounce["reportingMTA"] = f"dsn; {SES_MTA}"
    return {"eventType": "Bounce", "mail": mail_object(send, delivered=not suppressed),
            "bounce": bounce}


def _complaint(send: AcceptedSend, recipient: str, when: datetime) -> dict[str, Any]:
    return {"eventType": "Complaint", "mail": mail_object(send, delivered=True),
            "complaint": {
                "complainedRecipients": [{"emailAddress": recipient}],
                "timestamp": ses_time(when), "feedbackId": _feedback_id(),
                "complaintSubType": None, "userAgent": "Amazon SES Mailbox Simulator",
                "complaintFeedbackType": "abuse", "arrivalDate": ses_time(when)}}


def events_for(send: AcceptedSend, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every event record SES publishes about send, in the order it publishes them:
    Send, then per recipient Delivery or Bounce, then any Complaint. now is when the
    recipients' mail servers answered (events never predate the send)."""
    at = max(now or datetime.now(UTC), send.accepted_at + STEP)
    records: list[dict[str, Any]] = [
        {"eventType": "Send", "mail": mail_object(send), "send": {}}]
    complaints = []
    for recipient in send.destination:
        fate = outcome(recipient)
        if fate in (Outcome.BOUNCED, Outcome.SUPPRESSED):
            records.append(_bounce(send, recipient, at, fate is Outcome.SUPPRESSED))
        else:
            records.append(_delivery(send, recipient, at))
            if fate is Outcome.COMPLAINED:
                complaints.append(recipient)
        at += STEP
    records += [_complaint(send, recipient, at + STEP * i)
                for i, recipient in enumerate(complaints)]
    return records
