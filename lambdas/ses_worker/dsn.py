"""Delivery status notifications (RFC 3464): the bounce sent back to the envelope sender.

The layout follows Postfix's bounces: a human-readable part, the machine-readable
message/delivery-status part, and the original message's headers as
text/rfc822-headers (RFC 6522 multipart/report).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, make_msgid

from sesrelay.spool import Envelope

# Diagnostics come from SES error messages: never let one break a header line.
_WHITESPACE = re.compile(r"\s+")
_BROKEN_LINE_ENDS = re.compile(r"\r(?!\n)|(?<!\r)\n|\x00")
# RFC 3464 diagnostic-type: the SES API is not SMTP, so an extension type names it.
DIAGNOSTIC_TYPE = "X-SES"


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient the message could not be delivered to, and why."""

    recipient: str
    status: str  # RFC 3463 enhanced status code, 5.x.x
    diagnostic: str
    # An earlier send to this recipient lost its answer: SES may have accepted it.
    maybe_delivered: bool = False

    @property
    def full_diagnostic(self) -> str:
        """The diagnostic, with the warning when the message may have been delivered."""
        if not self.maybe_delivered:
            return self.diagnostic
        return (f"{MAYBE_DELIVERED} Later attempts failed: {self.diagnostic}")


# RFC 3464 has no action for "unknown": the DSN says failed, and says this plainly.
MAYBE_DELIVERED = ("delivery status unknown: SES may have accepted this message from an "
                   "earlier attempt whose answer was lost, so it may have been delivered.")


def _one_line(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def _fields(pairs: list[tuple[str, str]]) -> Message:
    block = Message()
    for name, value in pairs:
        block[name] = _one_line(value)
    return block


def build_dsn(envelope: Envelope, original_headers: bytes, failed: list[FailedRecipient],
              bounce_sender: str, reporting_mta: str, now: datetime) -> bytes:
    """The bounce for `failed` recipients of `envelope`, as raw bytes with CRLF line ends,
    addressed to the envelope sender from bounce_sender."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = formataddr(("Mail Delivery System", bounce_sender))
    report["To"] = envelope.mail_from
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = format_datetime(now)
    report["Message-ID"] = make_msgid(domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: no auto-reply loops

    lines = [
        f"This is the mail system at host {reporting_mta}.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. Its headers are attached below.",
        "",
        f"The message has queue ID {envelope.queue_id}.",
        "",
    ]
    lines += [f"<{f.recipient}>: {_one_line(f.full_diagnostic)}" for f in failed]
    report.attach(MIMEText("\n".join(lines) + "\n", "plain"))

    status = MIMEBase("message", "delivery-status")
    per_message = _fields([
        ("Reporting-MTA", f"dns; {reporting_mta}"),
        ("X-Postfix-Queue-ID", envelope.queue_id),
        ("X-Postfix-Sender", f"rfc822; {envelope.mail_from}"),
        ("Arrival-Date", format_datetime(envelope.received)),
    ])
    per_recipient = [
        _fields([
            ("Final-Recipient", f"rfc822; {f.recipient}"),
            ("Action", "failed"),
            ("Status", f.status),
            ("Diagnostic-Code", f"{DIAGNOSTIC_TYPE}; {f.full_diagnostic}"),
        ])
        for f in failed
    ]
    status.set_payload([per_message, *per_recipient])
    report.attach(status)

    # MIMEText picks us-ascii when it can and utf-8 otherwise (RFC 6532 headers). A bare
    # CR, bare LF or NUL (a malformed message's) must not move a line end in the DSN.
    headers_text = _BROKEN_LINE_ENDS.sub(" ", original_headers.decode("utf-8", errors="replace"))
    report.attach(MIMEText(headers_text, "rfc822-headers"))
    return report.as_bytes(policy=policy.SMTP)
