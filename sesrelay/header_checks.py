r"""The header_checks(5) engine, shared by the relay (header_checks, at receipt) and the
worker (smtp_header_checks, just before SES).

One logical header at a time is matched against a regexp table, as Postfix matches it: a
folded header with a newline where each line break was (so /^X: a b/ does not match
"X: a" folded before " b", and /^X: a\s+b/ does), and no newline at its end;
the first matching rule acts, and what a rule adds (PREPEND) or puts in its place
(REPLACE) is not inspected again. The engine only decides: its callers log and reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sesrelay.config.tables import RegexpTable
from sesrelay.maillog import printable

# The actions that end the inspection of the message (cleanup(8) only).
STOPPING = frozenset({"REJECT", "DISCARD"})
# A header in a log line is cut here, as Postfix cuts it.
LOGGED_HEADER = 120


def logical_headers(lines: list[bytes]) -> list[bytes]:
    """Join physical header lines (each ending in its line end) into logical headers."""
    headers: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] += line
        else:
            headers.append(line)
    return headers


@dataclass(frozen=True)
class HeaderEvent:
    """One action taken on one header: the rule's action, the header as matched
    (shortened and made printable for logs) and the rule's text after $N substitution
    (which may hold the header's own octets: make it printable before logging it)."""

    action: str
    header: str
    text: str


@dataclass
class HeaderCheckResult:
    """What a header_checks table decided for one header section."""

    headers: list[bytes] = field(default_factory=list)
    events: list[HeaderEvent] = field(default_factory=list)  # each non-DUNNO action
    stopped: HeaderEvent | None = None  # REJECT or DISCARD: inspection ended there


def apply_header_checks(table: RegexpTable, lines: list[bytes]) -> HeaderCheckResult:
    """Apply a header_checks table to header lines (each with its line end), as Postfix's
    cleanup(8) and smtp(8) do: REJECT and DISCARD stop, IGNORE and STRIP drop the header,
    PREPEND adds a line before it, REPLACE puts a line in its place, WARN and INFO only
    log, DUNNO and OK keep it. The header is matched as UTF-8 (other octets kept as they
    are), so the text a rule copies with $N is written back byte for byte."""
    result = HeaderCheckResult()
    for header in logical_headers(lines):
        found = None
        if table:
            subject = header.decode("utf-8", "surrogateescape").replace("\r\n", "\n")
            subject = subject.rstrip("\n")
            found = table.lookup(subject)
        if found is None:
            result.headers.append(header)
            continue
        rule, text = found
        if rule.action in ("DUNNO", "OK"):
            result.headers.append(header)
            continue
        event = HeaderEvent(rule.action, printable(subject[:LOGGED_HEADER]), text)
        result.events.append(event)
        if rule.action in STOPPING:
            result.stopped = event
            return result
        # Text copied from a folded header ($N) keeps its folds, as lines of the message.
        added = text.replace("\n", "\r\n").encode("utf-8", "surrogateescape") + b"\r\n"
        if rule.action == "PREPEND":
            result.headers += [added, header]
        elif rule.action == "REPLACE":
            result.headers.append(added)
        elif rule.action in ("WARN", "INFO"):
            result.headers.append(header)
        # IGNORE and STRIP: the header is left out.
    return result
