"""Maillog lines: what Postfix's daemons write to syslog, written by sesrelay's parts.

A Postfix admin follows a message with grep (queue ID, then recipient) and summarises a
day with pflogsumm. sesrelay's relay, worker and events handler write the same lines, in
the same words, each under the name of the Postfix daemon that would have written it:

- ``smtpd``: ``<ID>: client=host[addr]``, ``NOQUEUE: reject: RCPT from ...``;
- ``qmgr``: ``<ID>: from=<s>, size=N, nrcpt=M (queue active)`` and ``<ID>: removed``;
- ``smtp``: ``<ID>: to=<r>, relay=..., delay=D, delays=a/b/c/d, dsn=X.Y.Z, status=...``;
- ``bounce``: ``<ID>: sender non-delivery notification: <DSN ID>``.

A full line is ``<RFC 3339 time> <host> sesrelay/<daemon>[<pid>]: <text>``, which
pflogsumm reads with ``--syslog-name=sesrelay``. Client strings in these lines are made
printable first, so that no client can end a line or forge one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

SYSLOG_NAME = "sesrelay"
SMTPD, CLEANUP, QMGR, SMTP, BOUNCE, POSTSUPER = (
    "smtpd", "cleanup", "qmgr", "smtp", "bounce", "postsuper")

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def printable(text: str) -> str:
    """text with every character outside printable ASCII replaced by '?', as Postfix's
    printable() does before it logs a client's string."""
    return _UNPRINTABLE.sub("?", text)


def timestamp(when: datetime) -> str:
    """RFC 3339 with microseconds, as rsyslog writes it and pflogsumm reads it."""
    return epoch_timestamp(when.timestamp())


# The date and time of day of the last second formatted, as one tuple so that a thread
# never pairs a second's text with another second.
_second: tuple[int, str] = (-1, "")


def epoch_timestamp(seconds: float) -> str:
    """timestamp() of a time.time() value. The date and time of day are formatted once a
    second: the relay writes several lines per message, and datetime's formatting was a
    third of a line's cost."""
    global _second
    whole, micros = divmod(round(seconds * 1_000_000), 1_000_000)
    cached, text = _second
    if whole != cached:
        text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (whole, text)
    return f"{text}.{micros:06d}+00:00"


def line(program: str, text: str, when: datetime | str, host: str, pid: int) -> str:
    """A full maillog line; when is the time, or its timestamp() text."""
    stamp = when if isinstance(when, str) else timestamp(when)
    return f"{stamp} {host} {SYSLOG_NAME}/{program}[{pid}]: {text}"


def seconds(value: float) -> str:
    """A delay as Postfix writes it: two significant decimals below 10 s, fewer above."""
    if value < 0.1:
        return f"{value:.2g}" if value >= 0.01 else "0"
    return f"{value:.2f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"


def delivery(queue_id: str, recipient: str, *, relay: str, delay: float,
             delays: tuple[float, float, float, float], dsn: str, status: str,
             text: str, original: str = "") -> str:
    """The smtp line for one recipient: status is sent, deferred or bounced; original is
    the recipient as received, named (orig_to=) when rewriting changed it."""
    orig_to = (f"orig_to=<{printable(original)}>, "
               if original and original != recipient else "")
    return (f"{queue_id}: to=<{printable(recipient)}>, {orig_to}relay={relay}, "
            f"delay={seconds(delay)}, delays={'/'.join(seconds(d) for d in delays)}, "
            f"dsn={dsn}, status={status} ({printable(text)})")


def removed(queue_id: str) -> str:
    """The qmgr line when a message leaves the queue."""
    return f"{queue_id}: removed"


def client(queue_id: str, address: str, sasl_method: str = "", sasl_username: str = "") -> str:
    """The smtpd line that starts a message (pflogsumm counts it as received), with the
    SMTP AUTH mechanism and user name when the client authenticated."""
    line = f"{queue_id}: client={client_name(address)}"
    if sasl_username:
        line += f", sasl_method={printable(sasl_method)}, sasl_username={printable(sasl_username)}"
    return line


def queued(queue_id: str, sender: str, size: int, nrcpt: int) -> str:
    """The qmgr line with the envelope sender, size and recipient count."""
    return f"{queue_id}: from=<{printable(sender)}>, size={size}, nrcpt={nrcpt} (queue active)"


def rewritten(queue_id: str, field: str, original: str, new: tuple[str, ...]) -> str:
    """The cleanup line when address rewriting changed the sender (field "from") or a
    recipient ("to"): what was received and what the message goes to."""
    targets = ", ".join(f"<{printable(address)}>" for address in new)
    return f"{queue_id}: {field}=<{printable(original)}> rewritten to {targets}"


def bounce_notice(queue_id: str, dsn_id: str) -> str:
    """The bounce line for a DSN sent to the envelope sender."""
    return f"{queue_id}: sender non-delivery notification: {dsn_id}"


def success_notice(queue_id: str, dsn_id: str) -> str:
    """The line for a "relayed" DSN (NOTIFY=SUCCESS) sent to the envelope sender."""
    return f"{queue_id}: sender delivery status notification: {dsn_id}"


def ses_relay(region: str) -> str:
    """The relay= value of the worker's lines: SES's API endpoint, the next hop."""
    return f"email.{region or 'us-east-1'}.amazonaws.com"


def reject(stage: str, client_text: str, reply: str, *, sender: str | None = None,
           recipient: str = "", proto: str = "ESMTP", helo: str = "",
           queue_id: str = "NOQUEUE") -> str:
    """The smtpd line for a refused command, as Postfix writes it:
    ``NOQUEUE: reject: RCPT from unknown[10.1.2.3]: 554 5.7.1 <x@y>: Relay access denied;
    from=<a@b> to=<x@y> proto=ESMTP helo=<h>``. stage is CONNECT, HELO, MAIL, RCPT, DATA or
    END-OF-MESSAGE; client_text is ``client_name()``'s value; sender None leaves out from=
    (rejected before MAIL FROM)."""
    fields = []
    if sender is not None:
        fields.append(f"from=<{printable(sender)}>")
    if recipient:
        fields.append(f"to=<{printable(recipient)}>")
    fields.append(f"proto={proto}")
    fields.append(f"helo=<{printable(helo)}>")
    return (f"{queue_id}: reject: {stage} from {client_text}: {printable(reply)}; "
            f"{' '.join(fields)}")


def header_action(queue_id: str, action: str, header: str, client_text: str, *,
                  sender: str, recipient: str = "", proto: str = "ESMTP", helo: str = "",
                  text: str = "") -> str:
    """The cleanup line of a header_checks action (reject, warning, hold, discard, info,
    ...), as Postfix writes it: ``<ID>: reject: header Subject: spam from
    unknown[10.1.2.3]; from=<a@b> to=<x@y> proto=ESMTP helo=<h>: 5.7.1 message content
    rejected``. pflogsumm counts the reject, warning, hold and discard lines."""
    to = f" to=<{printable(recipient)}>" if recipient else ""
    line = (f"{queue_id}: {action}: header {printable(header)} from {client_text}; "
            f"from=<{printable(sender)}>{to} proto={proto} helo=<{printable(helo)}>")
    return f"{line}: {printable(text)}" if text else line


# The word of each logged header_checks action; IGNORE and DUNNO are not logged.
_HEADER_ACTION_WORDS = {"WARN": "warning", "INFO": "info", "STRIP": "strip",
                        "REPLACE": "replace", "PREPEND": "prepend"}


def header_check(queue_id: str, action: str, header: str, text: str) -> str:
    """The smtp line of an smtp_header_checks action, as Postfix's smtp(8) writes it:
    ``<ID>: replace: header From: a@b: From: noreply@example.com``; empty for the
    actions smtp(8) does not log (IGNORE, DUNNO)."""
    word = _HEADER_ACTION_WORDS.get(action)
    if word is None:
        return ""
    line = f"{queue_id}: {word}: header {printable(header)}"
    return f"{line}: {printable(text)}" if text else line


def client_name(address: str, name: str = "unknown") -> str:
    """A client as Postfix names it in log lines: ``name[address]``; ``unknown`` when
    its address has no verified reverse name (sesrelay looks none up)."""
    return f"{printable(name)}[{printable(address)}]"


_LINE_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})) ")


def line_time(text: str) -> datetime | None:
    """The time at the start of a full maillog line (None if it has none)."""
    match = _LINE_TIME.match(text)
    if not match:
        return None
    return datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
