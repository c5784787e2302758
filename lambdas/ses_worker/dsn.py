"""Delivery status notifications (RFC 3464): the bounce sent back to the envelope sender.

The layout follows Postfix's bounces: a human-readable part, the machine-readable
message/delivery-status part, and the original message's headers as
text/rfc822-headers, or with RET=FULL the message itself (RFC 6522 multipart/report).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, make_msgid

from ses_worker.message import split_headers
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


# Postfix's bounce_size_limit default: a larger message is returned as its headers.
RETURN_SIZE_LIMIT = 50000
FAILED, RELAYED = "failed", "relayed"  # RFC 3464 actions of the DSNs the worker sends
_SUBJECTS = {FAILED: "Undelivered Mail Returned to Sender",
             RELAYED: "Successful Mail Delivery Report"}
_INTRODUCTIONS = {
    FAILED: ["I'm sorry to have to inform you that your message could not",
             "be delivered to one or more recipients. It's attached below."],
    RELAYED: ["Your message was successfully delivered to the destination(s)",
              "listed below. If the message was delivered to mailbox you will",
              "receive no further notifications. Otherwise you may still receive",
              "notifications of mail delivery errors from other systems."],
}


def build_dsn(envelope: Envelope, original: bytes, failed: list[FailedRecipient],
              bounce_sender: str, reporting_mta: str, now: datetime,
              action: str = FAILED) -> bytes:
    """The DSN about `failed` recipients of `envelope` (action failed: a bounce; relayed:
    SES accepted the message for recipients that asked NOTIFY=SUCCESS), as raw bytes with
    CRLF line ends, addressed to the envelope sender from bounce_sender.

    The envelope's DSN requests shape it as Postfix's: ENVID in Original-Envelope-Id,
    each ORCPT in Original-Recipient; with RET=FULL the whole message (up to
    RETURN_SIZE_LIMIT octets) is returned as message/rfc822, else its headers."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = formataddr(("Mail Delivery System", bounce_sender))
    report["To"] = envelope.mail_from
    report["Subject"] = _SUBJECTS[action]
    report["Date"] = format_datetime(now)
    report["Message-ID"] = make_msgid(domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: no auto-reply loops

    full = envelope.ret == "FULL" and len(original) <= RETURN_SIZE_LIMIT
    introduction = _INTRODUCTIONS[action]
    if action == FAILED and not full:
        introduction = [*introduction[:1], "be delivered to one or more recipients. Its "
                        "headers are attached below."]
    lines = [f"This is the mail system at host {reporting_mta}.", "", *introduction, "",
             f"The message has queue ID {envelope.queue_id}.", ""]
    lines += [f"<{f.recipient}>: {_one_line(f.full_diagnostic)}" for f in failed]
    report.attach(MIMEText("\n".join(lines) + "\n", "plain"))

    status = MIMEBase("message", "delivery-status")
    per_message = _fields([
        ("Reporting-MTA", f"dns; {reporting_mta}"),
        *([("Original-Envelope-Id", envelope.envid)] if envelope.envid else []),
        ("X-Postfix-Queue-ID", envelope.queue_id),
        ("X-Postfix-Sender", f"rfc822; {envelope.mail_from}"),
        ("Arrival-Date", format_datetime(envelope.received)),
    ])
    per_recipient = [_fields([
        ("Final-Recipient", f"rfc822; {f.recipient}"),
        *([("Original-Recipient", orcpt)] if (orcpt := _orcpt(envelope, f.recipient)) else []),
        ("Action", action),
        ("Status", f.status),
        ("Diagnostic-Code", f"{DIAGNOSTIC_TYPE}; {f.full_diagnostic}"),
    ]) for f in failed]
    status.set_payload([per_message, *per_recipient])
    report.attach(status)

    if full:
        return _with_original(report, original)
    headers, _ = split_headers(original)
    # MIMEText picks us-ascii when it can and utf-8 otherwise (RFC 6532 headers). A bare
    # CR, bare LF or NUL (a malformed message's) must not move a line end in the DSN.
    headers_text = _BROKEN_LINE_ENDS.sub(" ", headers.decode("utf-8", errors="replace"))
    report.attach(MIMEText(headers_text, "rfc822-headers"))
    return report.as_bytes(policy=policy.SMTP)


def _orcpt(envelope: Envelope, recipient: str) -> str:
    return envelope.orcpt_of(envelope.rcpt_to.index(recipient)) if (
        recipient in envelope.rcpt_to) else ""


def _with_original(report: MIMEMultipart, original: bytes) -> bytes:
    """The report's bytes with the original message as its last part, octet for octet
    (the email package would re-encode it): message/rfc822, 8bit when it has 8-bit
    octets (RFC 2046 5.2.1 allows no other encoding there)."""
    text = report.as_bytes(policy=policy.SMTP)
    boundary = report.get_boundary()
    assert boundary is not None
    while boundary.encode() in original:  # the delimiter must not occur in the part
        report.set_boundary(boundary := f"=_{secrets.token_hex(16)}")
        text = report.as_bytes(policy=policy.SMTP)
    closing = f"--{boundary}--".encode()
    end = text.rindex(closing)
    part = (b"Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n"
            + (b"Content-Transfer-Encoding: 8bit\r\n" if max(original, default=0) > 127
               else b"")
            + b"\r\n" + original + (b"" if original.endswith(b"\r\n") else b"\r\n"))
    return text[:end] + f"--{boundary}\r\n".encode() + part + text[end:]
