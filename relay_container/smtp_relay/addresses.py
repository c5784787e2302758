"""SMTP command arguments and envelope addresses, parsed as Postfix's smtpd does, never
raising on any input.

``tokenize`` is Postfix's smtpd_token(): words split at whitespace, except inside <...>
and "..."; an unterminated <...> or "..." is a malformed token (smtpd_token.c). The
command handlers answer a malformed address token with Postfix's 501 replies.

``parse_path`` takes one address token (``<user@domain>``, ``user@domain``, ``<>``) and
returns the address in the relay's internal form, or None when it is malformed. It accepts
what Postfix accepts where the address stays the same string the client wrote (no angle
brackets, a bare user name, source routes, quoted local parts, an address literal whose
"]" is missing, a trailing dot after the domain, which Postfix's trivial-rewrite strips as
this does). It refuses, with the same 501, the forms Postfix's RFC 822 parser rewrites
before use (comments, spaces, nested brackets, several "@" outside quotes, empty local
parts), and, stricter than Postfix, any address with a control character (C0, DEL or
C1): such an address would be misread by SES or end a header line.

UTF-8 (RFC 6531, accepted with or without the SMTPUTF8 parameter, as Postfix's default
strict_smtputf8 = no does): a domain is converted to A-labels (punycode) with the idna
library's UTS #46 non-transitional processing, the IDNA processing Postfix's
midna_domain_to_ascii() asks of ICU, since SES takes IDN domains only as A-labels; one
that UTS #46 would change beyond case and NFC (fullwidth letters, ignored characters)
is malformed here. A
local part with UTF-8 is well formed, but SES takes none (SES v2 has no SMTPUTF8): such
an address is no address for the relay (parse_path gives None), and
``local_part_is_utf8`` tells the session to answer 553 5.6.7 rather than 501.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

import idna


class Token(NamedTuple):
    """One word of a command line; ``ok`` is False for an unterminated <...> or "..."."""

    text: str
    ok: bool


def _quoted(line: str, start: int, opening: str, closing: str) -> tuple[str, int, bool]:
    """smtp_quoted(): from the opening character at start to its closing one; quotes nest
    inside <...>, and a backslash escapes the next character. Returns the text, where the
    scan stopped, and whether the closing character was found."""
    stack = [closing]
    out = [opening]
    i, end = start + 1, len(line)
    while i < end:
        ch = line[i]
        i += 1
        out.append(ch)
        if ch == "\\":
            if i < end:
                out.append(line[i])
                i += 1
            continue
        if ch == stack[-1]:
            stack.pop()
            if not stack:
                return "".join(out), i, True
        elif ch == '"':
            stack.append('"')
        elif ch == "<" and stack[-1] == ">":
            stack.append(">")
    return "".join(out), i, False


_SPACE = " \t\n\v\f\r"  # C's isspace(); str.isspace() would also split at \x1c-\x1f


def tokenize(line: str) -> list[Token]:
    """Postfix's smtpd_token(): the words of a command line. "FROM:" and "TO:" end a
    word (so ``MAIL FROM:<a@b>`` is MAIL, FROM:, <a@b>); <...> and "..." keep their
    spaces. Never raises."""
    tokens: list[Token] = []
    i, end = 0, len(line)
    while i < end:
        word: list[str] = []
        ok = True
        while i < end:
            ch = line[i]
            if ch in _SPACE:
                while i < end and line[i] in _SPACE:
                    i += 1
                if word:
                    break
                continue
            if ch in '<"':
                text, i, closed = _quoted(line, i, ch, ">" if ch == "<" else '"')
                word.append(text)
                ok = ok and closed
                continue
            i += 1
            word.append(ch)
            if ch == ":" and "".join(word).lower() in ("to:", "from:"):
                break
            if ch == "\\" and i < end:
                word.append(line[i])
                i += 1
        if word:
            tokens.append(Token("".join(word), ok))
    return tokens


# The usual <local@domain>, checked by one regular expression (the relay's hot path).
# In the general form, UTF8-non-ascii (RFC 6531 3.3) is atext and qtext too.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_SIMPLE = re.compile(rf"<({_ATOM}+(?:\.{_ATOM}+)*@{_DOMAIN})>\Z")
# The general form, checked piece by piece.
_LOCAL_ATOMS = re.compile(rf"(?:{_ATOM}|\.|[^\x00-\x7f])+\Z")  # Postfix accepts a..b, .a
_QUOTED = re.compile(r'"(?:[ !#-\[\]-~\x80-\U0010ffff]|\\[ -~])*"\Z')  # no bare " or \
_DOMAIN_NAME = re.compile(rf"{_DOMAIN}\.?\Z")
_LITERAL = re.compile(r"\[([A-Za-z0-9.:-]+)\]?\Z")
_ROUTE = re.compile(rf"@{_DOMAIN}(?:,@{_DOMAIN})*:")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: refused anywhere


def parse_path(token: str) -> str | None:
    """The address in a MAIL FROM or RCPT TO token: "" for <>, the address otherwise
    (printable ASCII: a source route kept in front as "@a,@b:", so the relay policy can
    see it; an IDN domain as A-labels), or None when it is malformed or its local part
    is UTF-8. Never raises."""
    simple = _SIMPLE.match(token)
    if simple:
        return simple.group(1)
    address = _path(token)
    return address if address is None or address.isascii() else None


def local_part_is_utf8(token: str) -> bool:
    """True when the token is a well-formed address whose local part has UTF-8, which
    parse_path refuses: SES takes no such address."""
    address = _path(token)
    return address is not None and not address.isascii()


def _path(token: str) -> str | None:
    """parse_path, but a UTF-8 local part kept."""
    if _UNSAFE.search(token):
        return None
    if token.startswith("<"):
        if not token.endswith(">") or len(token) < 2:
            return None
        token = token[1:-1]
    if not token:
        return ""
    route = _ROUTE.match(token)
    prefix = ""
    if route:
        prefix, token = route.group(0), token[route.end():]
        if not token:
            return None
    address = _mailbox(token)
    return None if address is None else prefix + address


def _mailbox(text: str) -> str | None:
    """local@domain, or a bare local part (the relay adds @$myorigin)."""
    if text.startswith('"'):
        end = _closing_quote(text)
        if end < 0:
            return None
        local, rest = text[:end + 1], text[end + 1:]
        if not _QUOTED.match(local) or local == '""':
            return None
        if not rest:
            return local
        if not rest.startswith("@"):
            return None
        domain = rest[1:]
    else:
        local, at, domain = text.partition("@")
        if not _LOCAL_ATOMS.match(local):
            return None
        if not at:
            return local
    domain = _domain(domain)
    return None if domain is None else f"{local}@{domain}"


def _closing_quote(text: str) -> int:
    """Index of the quote that closes the quoted string at the start of text, or -1."""
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    return -1


def _domain(domain: str) -> str | None:
    """A domain name (one trailing dot dropped, as Postfix's trivial-rewrite does) or an
    address literal (its closing "]" added when missing, as Postfix's parser does)."""
    if domain.startswith("["):
        literal = _LITERAL.match(domain)
        return f"[{literal.group(1)}]" if literal else None
    if not domain.isascii():
        name = unicodedata.normalize("NFC", domain.removesuffix("."))
        try:
            domain = idna.encode(name, uts46=True).decode("ascii")
            # UTS #46 also maps (fullwidth letters to ASCII, drops zero-width spaces):
            # a domain that is not the one written, but for case, is refused, as other
            # forms that would need rewriting are.
            if idna.decode(domain) != name.lower():
                return None
        except (idna.IDNAError, UnicodeError, ValueError):
            return None
    if not _DOMAIN_NAME.match(domain):
        return None
    return domain.removesuffix(".")
