"""ses_unverified_sender = rewrite, the header half (the envelope half is in cleanup.py):
the From: header becomes ses_default_sender, and the original From: address goes to a
new Reply-To: header unless the message has one, so that replies still reach the author.

Both headers are built only from checked values: ses_default_sender (validated with the
configuration) and the address of the original From:, parsed with the email package and
taken only when the header is one mailbox whose address is a plain ASCII local@domain.
The display name is not carried over: it is free text from the client, and replies need
only the address. Any other From: (none, several, a group, several mailboxes, a quoted
or non-ASCII local part, anything the parser flags as a defect) is refused at DATA: SES
refuses a From: no verified identity covers, so it could only bounce later.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.headerregistry import Address, HeaderRegistry

from sesrelay import maillog
from sesrelay.ses_headers import field_name

log = logging.getLogger("sesrelay.relay")

NOT_ONE_MAILBOX = ("550 5.6.0 Error: the From: header must be one valid mailbox: "
                   "ses_unverified_sender = rewrite replaces it with a verified sender")
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
                            r"@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_UNFOLD = re.compile(rb"\r?\n(?=[ \t])")
_REGISTRY = HeaderRegistry()


class FromHeaderError(Exception):
    """The From: header cannot be rewritten (str(): why, for the log)."""


@dataclass(frozen=True)
class FromRewrite:
    """The header fields after the rewrite, and what it did (for the log)."""

    headers: list[bytes]
    original: str
    reply_to_added: bool


def original_address(headers: list[bytes]) -> str:
    """The address of the message's one From: header, or FromHeaderError."""
    fields = [field for field in headers if field_name(field) == "from"]
    if len(fields) != 1:
        raise FromHeaderError(f"{len(fields)} From: headers")
    raw = _UNFOLD.sub(b"", fields[0].partition(b":")[2]).strip()
    try:
        value = raw.decode("ascii")
        header = _REGISTRY("From", value)
    except (UnicodeDecodeError, HeaderParseError, ValueError, IndexError):
        raise FromHeaderError("a From: header the parser cannot read") from None
    groups = header.groups  # type: ignore[attr-defined]
    if header.defects or len(groups) != 1 or groups[0].display_name is not None \
            or len(groups[0].addresses) != 1:
        raise FromHeaderError("a From: header that is not one mailbox")
    address: Address = groups[0].addresses[0]
    if not _PLAIN_ADDRESS.fullmatch(address.addr_spec):
        raise FromHeaderError("a From: address that is not a plain local@domain")
    return address.addr_spec


def rewrite(headers: list[bytes], default_sender: str) -> FromRewrite:
    """The header fields (each whole, with its line ending) with From: replaced by
    default_sender and, unless there is a Reply-To:, the original address in a new
    Reply-To: after it. Raises FromHeaderError."""
    original = original_address(headers)
    has_reply_to = any(field_name(field) == "reply-to" for field in headers)
    out: list[bytes] = []
    for field in headers:
        if field_name(field) != "from":
            out.append(field)
            continue
        ending = b"\r\n" if field.endswith(b"\r\n") else b"\n"
        out.append(f"From: {default_sender}".encode("ascii") + ending)
        if not has_reply_to:
            out.append(f"Reply-To: {original}".encode("ascii") + ending)
    return FromRewrite(out, original, not has_reply_to)


def log_rewrite(queue_id: str, done: FromRewrite, default_sender: str) -> None:
    """cleanup's line for the header rewrite, with the original From: address."""
    log.info("%s: ses_unverified_sender: header From: <%s> replaced by <%s>; %s", queue_id,
             done.original, default_sender,
             f"Reply-To: <{done.original}> added" if done.reply_to_added
             else "Reply-To: kept", extra={"maillog_program": maillog.CLEANUP})
