"""Edits to the raw message: the few header changes made before SES sees it.

The S3 object is exactly what the client sent plus the relay's Received: header. The
worker changes only the header block, as bytes, so the body (signatures, encodings,
8-bit data) goes to SES untouched: Bcc: and Resent-Bcc: are removed, then
smtp_header_checks applies.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sesrelay.config.tables import RegexpTable
from sesrelay.header_checks import HeaderEvent, apply_header_checks

# Blind-copy headers must never reach recipients. Resent-Bcc is the same disclosure
# for resent messages (RFC 5322 3.6.6).
_BLIND_HEADERS = frozenset({b"bcc", b"resent-bcc"})
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# In the header section, a CR not before LF, an LF not after CR, or a NUL: each would
# make some reader (SES, a mail client, the Bcc stripping below) end a line elsewhere.
_LINE_BREAKERS = re.compile(rb"\r(?!\n)|(?<!\r)\n|\x00")


def split_headers(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including its last line end, the rest: blank line and body)."""
    match = _HEADER_END.search(raw)
    if match is None:  # headers only, no body
        return raw, b""
    # The first line end belongs to the last header line; the second is the separator.
    first_eol = raw.index(b"\n", match.start()) + 1
    return raw[:first_eol], raw[first_eol:]


def _header_fields(block: bytes) -> list[bytes]:
    """The header block as fields, each with its continuation lines and line ends."""
    fields: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def remove_fields(raw: bytes, unwanted: Callable[[bytes], bool]) -> tuple[bytes, list[bytes]]:
    """(the message without the header fields for which unwanted(field) is true, those
    fields). Returns raw itself when there is nothing to remove, so the common case
    copies nothing."""
    headers, rest = split_headers(raw)
    fields = _header_fields(headers)
    removed = [f for f in fields if unwanted(f)]
    if not removed:
        return raw, removed
    return b"".join(f for f in fields if not unwanted(f)) + rest, removed


def strip_blind_headers(raw: bytes) -> bytes:
    """The message without Bcc: and Resent-Bcc: fields."""
    return remove_fields(
        raw, lambda f: f.split(b":", 1)[0].strip().lower() in _BLIND_HEADERS)[0]


def smtp_header_checks(table: RegexpTable, raw: bytes) -> tuple[bytes, list[HeaderEvent]]:
    """The message after smtp_header_checks (the primary header section only, as Postfix's
    smtp(8) applies it), with the actions taken, for the log. Returns raw itself when the
    table is empty."""
    if not table:
        return raw, []
    headers, rest = split_headers(raw)
    checked = apply_header_checks(table, headers.splitlines(keepends=True))
    return b"".join(checked.headers) + rest, checked.events


def header_section_problem(raw: bytes) -> str | None:
    """Why the header section (up to the first empty line, CRLF CRLF) cannot be sent as
    it is, or None. A bare CR, a bare LF or a NUL there could change where a header line
    ends: a client string that got into a header must never add a header of its own.
    Other octets (such as the ESC of raw ISO-2022-JP headers) pass. The relay never
    writes such a section; this is the worker's own check, not the only one."""
    end = raw.find(b"\r\n\r\n")
    headers = raw if end < 0 else raw[:end + 2]
    found = _LINE_BREAKERS.search(headers)
    if found is None:
        return None
    what = {b"\r": "bare CR", b"\n": "bare LF", b"\x00": "NUL"}[found.group(0)]
    line = headers.count(b"\n", 0, found.start()) + 1
    return f"{what} in header line {line}: the header section is malformed"
