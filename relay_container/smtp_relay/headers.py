"""Message header work done at DATA time: header_checks, and the Received: trace header."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime

from sesrelay.config.tables import RegexpTable
from smtp_relay import replies

log = logging.getLogger("sesrelay.relay")


def is_header_start(line: bytes) -> bool:
    """True for 'Name: value' lines: a field name of printable ASCII but ':' then ':'."""
    colon = line.find(b":")
    if colon <= 0:
        return False
    name = line[:colon]
    return all(33 <= b <= 126 for b in name)


def logical_headers(lines: list[bytes]) -> list[bytes]:
    """Join physical header lines (each ending in CRLF) into logical headers."""
    headers: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] += line
        else:
            headers.append(line)
    return headers


@dataclass
class HeaderCheckResult:
    """What header_checks decided for one message."""

    headers: list[bytes] = field(default_factory=list)
    reject: str | None = None
    discard: str | None = None


def apply_header_checks(table: RegexpTable, lines: list[bytes], soft_bounce: bool,
                        queue_id: str) -> HeaderCheckResult:
    """Apply header_checks to the header lines, as Postfix's cleanup(8) does.

    Each logical header is matched with its line breaks removed; the first matching rule
    acts: REJECT (with optional text), DISCARD, IGNORE (drop the header), PREPEND and
    REPLACE (with 'Name: value'), WARN and INFO (log), DUNNO and OK (keep as is).
    """
    result = HeaderCheckResult()
    for header in logical_headers(lines):
        if not table:
            result.headers.append(header)
            continue
        subject = header.decode("latin-1").replace("\r\n", "").rstrip("\n")
        found = table.lookup(subject)
        if found is None:
            result.headers.append(header)
            continue
        rule, text = found
        shown = subject[:120]
        if rule.action == "REJECT":
            log.info("%s: reject: header %s: %s", queue_id, shown,
                     text or replies.CONTENT_REJECTED)
            result.reject = replies.soften(f"550 5.7.1 {text or replies.CONTENT_REJECTED}",
                                           soft_bounce)
            return result
        if rule.action == "DISCARD":
            log.info("%s: discard: header %s: %s", queue_id, shown, text)
            result.discard = text or "header_checks DISCARD"
            return result
        if rule.action in ("WARN", "INFO"):
            level = logging.WARNING if rule.action == "WARN" else logging.INFO
            log.log(level, "%s: %s: header %s: %s", queue_id,
                    "warning" if rule.action == "WARN" else "info", shown, text)
            result.headers.append(header)
        elif rule.action == "PREPEND":
            result.headers.append(text.encode("utf-8") + b"\r\n")
            result.headers.append(header)
        elif rule.action == "REPLACE":
            result.headers.append(text.encode("utf-8") + b"\r\n")
        elif rule.action == "IGNORE":
            continue
        else:
            result.headers.append(header)
    return result


def _address_literal(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return f"IPv6:{ip}" if ip.version == 6 else str(ip)


def protocol_name(esmtp: bool, tls: bool, authenticated: bool) -> str:
    """The 'with' of Received: SMTP, or ESMTP with RFC 3848's S (TLS) and A (AUTH)."""
    if not esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


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
    stamp = format_datetime(when)
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>; {stamp}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{stamp}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
