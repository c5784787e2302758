"""The edge: every string a client sends is checked here, once, before the relay uses it.

- Command lines: Postfix's smtpd reads a line up to LF, drops the CRs before it, and
  refuses one that is not UTF-8 (``500 5.5.2 Error: bad UTF-8 syntax``).
- The HELO/EHLO name is made printable and neutered as Postfix's helo_cmd() does:
  ``printable()`` then ``neuter(NEUTER_CHARACTERS)``, every other character becoming "?".
  Postfix keeps UTF-8 when smtputf8_enable = yes; sesrelay keeps printable ASCII only, as
  Postfix does with smtputf8_enable = no: the name goes into the Received: header, which
  SES sends on to receivers that may not speak SMTPUTF8. One longer than a DNS name can
  be (255 octets) is cut there.
- Envelope addresses: ``addresses.parse_path`` (controls refused, IDN domains as
  A-labels; ``local_part_is_utf8`` for the 553 to a UTF-8 local part).
- Anything else from the client that reaches a log line or a reply goes through
  ``printable`` first, so that no client byte can end or forge a line.
- The client's address: from a PROXY header the relay trusts, else the socket's peer
  (``client_address``).
"""

from __future__ import annotations

import re

from aiosmtpd.smtp import Session

from smtp_relay.addresses import Token, local_part_is_utf8, parse_path, tokenize

__all__ = ["Token", "client_address", "command_text", "helo_name", "local_part_is_utf8",
           "parse_path", "printable", "tokenize"]

# smtpd.c: "This filter is applied after printable()".
NEUTER_CHARACTERS = ' <>()\\";@'
MAX_HELO_LENGTH = 255  # RFC 1035: the longest domain name
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_NEUTER = str.maketrans(dict.fromkeys(NEUTER_CHARACTERS, "?"))


def client_address(session: Session) -> str:
    """The SMTP client's address: from a trusted PROXY header, else the socket peer."""
    if session.client_address is None:
        peer = session.peer
        session.client_address = str(peer[0]) if isinstance(peer, tuple) else "unknown"
    return session.client_address


def printable(text: str, replacement: str = "?") -> str:
    """Postfix's printable() without UTF-8: every character that is not printable ASCII
    becomes the replacement."""
    return _NOT_PRINTABLE.sub(replacement, text)


def helo_name(words: list[Token]) -> str:
    """The HELO/EHLO argument words as the relay keeps them: joined by one space
    (Postfix's collapse_args), made printable, neutered, at most 255 octets."""
    name = " ".join(word.text for word in words)
    return printable(name).translate(_NEUTER)[:MAX_HELO_LENGTH]


def command_text(line: bytes) -> str | None:
    """A command line (LF and the CRs before it already removed) as text, or None when
    it is not UTF-8."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None
