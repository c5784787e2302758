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
    """A list of words or names, as written (masquerade_domains, masquerade_exceptions)."""
    del where
    return tuple(split_list(value))


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
