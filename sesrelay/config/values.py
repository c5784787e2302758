"""Parsers for the kinds of value a parameter can hold (numbers, times, booleans, ...).

Each parser takes the expanded text and the place it came from, and raises ConfigError
with that place on a malformed value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sesrelay.config.maincf import ConfigError, split_list

_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

RESTRICTIONS = (
    "permit_mynetworks",
    "permit_auth_destination",
    "reject_unauth_destination",
    "defer_unauth_destination",
    "reject_unlisted_recipient",
    "permit_sasl_authenticated",
    "reject_sender_login_mismatch",
    "reject_authenticated_sender_login_mismatch",
    "reject_known_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch",
    "permit",
    "reject",
    "defer",
    "dunno",
)


def parse_text(value: str, where: str) -> str:
    """Any text, as written (after expansion)."""
    del where
    return value


def parse_bool(value: str, where: str) -> bool:
    """Postfix booleans: yes or no (true/false accepted too), case-insensitive."""
    lowered = value.lower()
    if lowered in ("yes", "true"):
        return True
    if lowered in ("no", "false"):
        return False
    raise ConfigError(f"expected yes or no, got {value!r}", where)


def parse_int(value: str, where: str) -> int:
    """A non-negative whole number."""
    if not re.fullmatch(r"\d+", value):
        raise ConfigError(f"expected a whole number, got {value!r}", where)
    return int(value)


def parse_float(value: str, where: str) -> float:
    """A non-negative number, such as a rate."""
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"expected a number, got {value!r}", where) from None
    if number < 0:
        raise ConfigError(f"expected a number >= 0, got {value!r}", where)
    return number


def time_parser(default_unit: str):
    """A parser for Postfix time values ('300s', '5d', '4000'), in seconds.

    A bare number is in default_unit, as in Postfix (seconds for most, days for
    maximal_queue_lifetime).
    """

    def parse_time(value: str, where: str) -> int:
        match = re.fullmatch(r"(\d+)([smhdw]?)", value.strip().lower())
        if not match:
            raise ConfigError(f"expected a time such as 300s, 30m, 5h or 5d, got {value!r}",
                              where)
        return int(match.group(1)) * _TIME_UNITS[match.group(2) or default_unit]

    parse_time.default_unit = default_unit  # type: ignore[attr-defined]
    return parse_time


def parse_reply_code(value: str, where: str) -> int:
    """An SMTP reply code for a rejection: 4xx or 5xx."""
    if not re.fullmatch(r"[45]\d\d", value):
        raise ConfigError(f"expected an SMTP reply code 4xx or 5xx, got {value!r}", where)
    return int(value)


def parse_restrictions(value: str, where: str) -> tuple[str, ...]:
    """A restriction list such as 'permit_mynetworks, reject_unauth_destination'."""
    items = tuple(item.lower() for item in split_list(value))
    for item in items:
        if item not in RESTRICTIONS:
            raise ConfigError(
                f"restriction {item!r} is not supported by sesrelay "
                f"(supported: {', '.join(RESTRICTIONS)})", where)
    return items


def parse_proxy_protocol(value: str, where: str) -> str:
    """smtpd_upstream_proxy_protocol: empty (off) or haproxy."""
    if value not in ("", "haproxy"):
        raise ConfigError(f"expected haproxy or nothing, got {value!r}", where)
    return value


def choice_parser(*choices: str):  # type: ignore[no-untyped-def]
    """A parser for a parameter that takes one of a few words."""

    def parse(value: str, where: str) -> str:
        if value not in choices:
            raise ConfigError(f"expected {' or '.join(choices)}, got {value!r}", where)
        return value

    return parse


def parse_interfaces(value: str, where: str) -> tuple[str, ...]:
    """inet_interfaces: all, loopback-only, localhost, or addresses and host names."""
    items = tuple(split_list(value))
    if not items:
        raise ConfigError("inet_interfaces must not be empty", where)
    return items


def parse_protocols(value: str, where: str) -> tuple[str, ...]:
    """inet_protocols: all, ipv4, ipv6 or 'ipv4, ipv6'."""
    items = tuple(item.lower() for item in split_list(value))
    if items == ("all",):
        return ("ipv4", "ipv6")
    if not items or any(item not in ("ipv4", "ipv6") for item in items):
        raise ConfigError(f"expected all, ipv4, ipv6 or 'ipv4, ipv6', got {value!r}", where)
    return items


def parse_retention(value: str, where: str) -> int:
    """How long a sent message stays in the spool bucket, in seconds (0: delete once sent)."""
    return time_parser("d")(value, where)


@dataclass(frozen=True)
class EmailTag:
    """An SES message tag (name=value)."""

    name: str
    value: str


_TAG_RE = re.compile(r"[A-Za-z0-9_-]{1,255}")


def parse_email_tags(value: str, where: str) -> tuple[EmailTag, ...]:
    """ses_email_tags: 'name=value, name2=value2' (SES allows letters, digits, _ and -)."""
    tags = []
    for item in split_list(value):
        name, sep, tag_value = item.partition("=")
        if not sep or not _TAG_RE.fullmatch(name) or not _TAG_RE.fullmatch(tag_value):
            raise ConfigError(f"bad SES tag {item!r}: expected name=value using letters, "
                              "digits, '_' and '-'", where)
        tags.append(EmailTag(name, tag_value))
    return tuple(tags)


def parse_address_list(value: str, where: str) -> tuple[str, ...]:
    """A list of e-mail addresses or domains (ses_identities)."""
    items = tuple(split_list(value))
    for item in items:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+|[A-Za-z0-9.-]+", item):
            raise ConfigError(f"expected an e-mail address or domain, got {item!r}", where)
    return items


_ADDRESS_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
                         r"@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def parse_address(value: str, where: str) -> str:
    """One plain e-mail address, local@domain in ASCII without quotes, or empty
    (ses_default_sender: it is written into envelopes and From: headers as it is)."""
    if value and not _ADDRESS_RE.fullmatch(value):
        raise ConfigError(f"expected an e-mail address (local@domain), got {value!r}", where)
    return value


def words_parser(*choices: str):  # type: ignore[no-untyped-def]
    """A parser for a list of words, each one of choices (canonical_classes, ...)."""

    def parse(value: str, where: str) -> tuple[str, ...]:
        items = tuple(item.lower() for item in split_list(value))
        for item in items:
            if item not in choices:
                raise ConfigError(f"{item!r} is not one of {', '.join(choices)}", where)
        return items

    return parse


def parse_words(value: str, where: str) -> tuple[str, ...]:
    """A list of words or names, as written, separated by commas or whitespace."""
    del where
    return tuple(split_list(value))


def parse_header_names(value: str, where: str) -> tuple[str, ...]:
    """A list of header names, lowercased: Postfix matches them case-insensitively."""
    names = tuple(name.lower() for name in split_list(value))
    for name in names:
        if not name.isprintable() or ":" in name or " " in name:
            raise ConfigError(f"{name!r} is not a header name", where)
    return names


def parse_local_header_rewrite_clients(value: str, where: str) -> tuple[str, ...]:
    """local_header_rewrite_clients: only permit_inet_interfaces (Postfix's default) or
    nothing. Every sesrelay client reaches it from another host (through the NLB), so
    that default never matches and, as in Postfix for a remote client, only the envelope
    is rewritten. Anything that would match a client asks for header address rewriting,
    which sesrelay does not implement: refused, never silently ignored."""
    items = tuple(item.lower() for item in split_list(value))
    for item in items:
        if item != "permit_inet_interfaces":
            raise ConfigError(
                f"local_header_rewrite_clients {item!r} is not supported: sesrelay does not "
                "rewrite header addresses (only the envelope, as Postfix does for remote "
                "clients); remove it", where)
    return items


def parse_remote_header_rewrite_domain(value: str, where: str) -> str:
    """remote_header_rewrite_domain: must be empty (see parse_local_header_rewrite_clients)."""
    if value:
        raise ConfigError("remote_header_rewrite_domain is not supported: sesrelay does not "
                          "rewrite header addresses (only the envelope, as Postfix does for "
                          "remote clients with this parameter empty)", where)
    return value
# Postfix's TLS protocol names, oldest first (SSLv2 and SSLv3 may only be excluded).
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_OBSOLETE_PROTOCOLS = ("SSLv2", "SSLv3")


@dataclass(frozen=True)
class TlsProtocols:
    """The TLS versions a listener accepts: a contiguous range of TLS_VERSIONS."""

    minimum: str
    maximum: str


def parse_tls_protocols(value: str, where: str) -> TlsProtocols:
    """smtpd_tls_protocols syntax (Postfix 3.6): >=TLSv1.2, <=TLSv1.3, !TLSv1.1, or a
    list of versions to include; they combine. The result must be a range without gaps,
    since OpenSSL takes a lowest and a highest version."""
    allowed = set(TLS_VERSIONS)
    included: set[str] = set()
    for item in split_list(value):
        bound, name = "", item
        for prefix in (">=", "<=", "!"):
            if item.startswith(prefix):
                bound, name = prefix, item[len(prefix):]
                break
        if name in _OBSOLETE_PROTOCOLS and bound == "!":
            continue
        if name not in TLS_VERSIONS:
            raise ConfigError(f"unknown TLS protocol {item!r} (expected {', '.join(TLS_VERSIONS)}, "
                              "with >=, <= or !)", where)
        rank = TLS_VERSIONS.index(name)
        if bound == ">=":
            allowed &= set(TLS_VERSIONS[rank:])
        elif bound == "<=":
            allowed &= set(TLS_VERSIONS[:rank + 1])
        elif bound == "!":
            allowed.discard(name)
        else:
            included.add(name)
    if included:
        allowed &= included
    ranks = sorted(TLS_VERSIONS.index(v) for v in allowed)
    if not ranks:
        raise ConfigError(f"{value!r} leaves no TLS protocol", where)
    if ranks[-1] - ranks[0] + 1 != len(ranks):
        raise ConfigError(f"{value!r} leaves a gap between TLS protocols; OpenSSL takes a "
                          "lowest and a highest version only", where)
    return TlsProtocols(TLS_VERSIONS[ranks[0]], TLS_VERSIONS[ranks[-1]])


# Postfix's SASL security options. Any but noanonymous rules out PLAIN and LOGIN, the only
# mechanisms sesrelay offers (Cyrus SASL flags neither as resisting those attacks).
SASL_OPTIONS = ("noanonymous", "noplaintext", "noactive", "nodictionary", "mutual_auth",
                "forward_secrecy")


def parse_sasl_options(value: str, where: str) -> tuple[str, ...]:
    """smtpd_sasl_security_options: a list of SASL_OPTIONS."""
    items = tuple(item.lower() for item in split_list(value))
    for item in items:
        if item not in SASL_OPTIONS:
            raise ConfigError(f"unknown SASL security option {item!r} (expected "
                              f"{', '.join(SASL_OPTIONS)})", where)
    return items
