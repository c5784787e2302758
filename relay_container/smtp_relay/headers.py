"""Message header work done at DATA time: header_checks (the engine is
sesrelay.header_checks; here its log lines and replies), and the Received: trace header."""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache

from sesrelay import header_checks, maillog
from sesrelay.config.tables import RegexpTable
from sesrelay.maillog import printable
from smtp_relay import replies

log = logging.getLogger("sesrelay.relay")
# The actions that only log, with the word of their log line.
_LOGGED = {"WARN": "warning", "INFO": "info", "STRIP": "strip"}
_FIELD_NAME = re.compile(rb"[!-9;-~]+:")  # octets 33-126 but ':', then ':'


def is_header_start(line: bytes) -> bool:
    """True for 'Name: value' lines: a field name of printable ASCII but ':' then ':'."""
    return _FIELD_NAME.match(line) is not None


def received_count(header_lines: list[bytes]) -> int:
    """How many Received: headers the lines (continuation lines included) hold."""
    return sum(1 for line in header_lines if line[:9].lower() == b"received:")


@dataclass(frozen=True)
class Context:
    """What Postfix's cleanup(8) writes about the message in a header_checks line: the
    client (name[address]), the envelope sender and first recipient, the protocol and the
    HELO name."""

    client: str
    sender: str
    recipient: str
    proto: str
    helo: str

    def line(self, queue_id: str, action: str, header: str, text: str = "") -> str:
        """The line for one action on one header (maillog.header_action)."""
        return maillog.header_action(queue_id, action, header, self.client,
                                     sender=self.sender, recipient=self.recipient,
                                     proto=self.proto, helo=self.helo, text=text)


@dataclass
class HeaderCheckResult:
    """What header_checks decided for one message: the headers to store, or the reply
    of a REJECT, or the reason of a DISCARD."""

    headers: list[bytes] = field(default_factory=list)
    reject: str | None = None
    discard: str | None = None


def apply_header_checks(table: RegexpTable, lines: list[bytes], soft_bounce: bool,
                        queue_id: str, context: Context) -> HeaderCheckResult:
    """Apply header_checks at receipt (sesrelay.header_checks decides), log what its
    rules did as Postfix's cleanup(8) logs it (the lines pflogsumm counts), and turn a
    REJECT into the reply."""
    checked = header_checks.apply_header_checks(table, lines)
    result = HeaderCheckResult(checked.headers)
    cleanup = {"maillog_program": maillog.CLEANUP}
    for event in checked.events:
        if event.action in _LOGGED:
            level = logging.WARNING if event.action == "WARN" else logging.INFO
            log.log(level, "%s", context.line(queue_id, _LOGGED[event.action], event.header,
                                              printable(event.text)), extra=cleanup)
    stopped = checked.stopped
    if stopped is not None and stopped.action == "REJECT":
        text = printable(stopped.text) or replies.CONTENT_REJECTED
        log.info("%s", context.line(queue_id, "reject", stopped.header, f"5.7.1 {text}"),
                 extra=cleanup)
        result.reject = replies.soften(f"550 5.7.1 {text}", soft_bounce)
    elif stopped is not None:
        text = printable(stopped.text)
        result.discard = text or "header_checks DISCARD"
        log.info("%s", context.line(queue_id, "discard", stopped.header, text), extra=cleanup)
    return result


def drop_headers(headers: list[bytes], names: tuple[str, ...]) -> list[bytes]:
    """The logical headers without those named in message_drop_headers (lowercase names),
    removed as Postfix's cleanup removes them: after header_checks, whatever their case."""
    if not names:
        return headers
    return [h for h in headers
            if h.split(b":", 1)[0].strip().decode("latin-1").lower() not in names]


def _address_literal(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return f"IPv6:{ip}" if ip.version == 6 else str(ip)


def protocol_name(esmtp: bool, tls: bool, authenticated: bool, smtputf8: bool = False
                  ) -> str:
    """The 'with' of Received: SMTP, or ESMTP (UTF8SMTP for a transaction that asked for
    SMTPUTF8, RFC 6531 3.7.3) with RFC 3848's S (TLS) and A (AUTH)."""
    if not esmtp:
        return "SMTP"
    return (("UTF8SMTP" if smtputf8 else "ESMTP") + ("S" if tls else "")
            + ("A" if authenticated else ""))


@lru_cache(maxsize=4)
def _date(when: datetime) -> str:
    """The RFC 5322 date of a second, formatted once for all its messages."""
    return format_datetime(when)


def received_header(*, helo: str, client_address: str, protocol: str, hostname: str,
                    mail_name: str, queue_id: str, recipients: list[str],
                    when: datetime, tls_clause: str = "", auth_clause: str = "") -> bytes:
    """A Postfix-style Received: header; 'for <rcpt>' only when there is one recipient.
    tls_clause (smtpd_tls_received_header) and auth_clause (smtpd_sasl_authenticated_
    header) are comments in Postfix's places, between the client and 'by'."""
    lines = [f"Received: from {helo or 'unknown'} (unknown [{_address_literal(client_address)}])"]
    if tls_clause:
        lines += [f"\t{tls_clause}", "\t(No client certificate requested)"]
    if auth_clause:
        lines.append(f"\t{auth_clause}")
    lines.append(f"\tby {hostname} ({mail_name}) with {protocol} id {queue_id}")
    stamp = _date(when.replace(microsecond=0))
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>; {stamp}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{stamp}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
