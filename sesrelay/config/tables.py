"""Postfix lookup tables and match lists: the values behind mynetworks, relay_domains,
relay_recipient_maps, header_checks and the address maps (canonical_maps,
virtual_alias_maps, ...).

Supported table types: ``texthash:`` (and ``hash:``/``btree:``/``lmdb:``/``cdb:``/``dbm:``,
read from the postmap(1) source file at the same path, since sesrelay has no Berkeley DB),
``inline:{ ... }``, ``cidr:`` for network lists and ``regexp:``/``pcre:`` for header_checks
and address maps.
Anything else (ldap:, mysql:, proxy:, ...) is a configuration error, never a silent miss.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sesrelay.config.maincf import ConfigError, split_list

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
INDEXED_TYPES = ("hash", "btree", "lmdb", "cdb", "dbm", "sdbm")
KEY_VALUE_TYPES = ("texthash", "inline", *INDEXED_TYPES)


def _table_lines(path: Path, where: str) -> Iterator[tuple[int, str]]:
    """Logical lines of a table file: comments and blank lines dropped, continuations joined."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read table {path}: {exc.strerror}", where) from None
    current: tuple[int, str] | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0].isspace() and current is not None:
            current = (current[0], current[1] + " " + raw.strip())
            continue
        if current is not None:
            yield current
        current = (lineno, raw.strip())
    if current is not None:
        yield current


def _split_type(spec: str) -> tuple[str, str] | None:
    """'texthash:/etc/x' -> ('texthash', '/etc/x'); None when spec is not type:name."""
    match = re.fullmatch(r"([a-z0-9_]+):(.+)", spec, re.DOTALL)
    if not match or spec.startswith("/"):
        return None
    return match.group(1), match.group(2)


def _inline_items(name: str, where: str) -> list[tuple[str, str]]:
    """inline:{ key = value, { key = text, with comma }, key } -> [(key, value), ...]."""
    if not (name.startswith("{") and name.endswith("}")):
        raise ConfigError(f"inline table must be written inline:{{ key = value, ... }}: "
                          f"{name!r}", where)
    items: list[tuple[str, str]] = []
    depth, current = 0, []
    for ch in name[1:-1] + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            item = "".join(current).strip()
            current = []
            if item.startswith("{") and item.endswith("}"):
                item = item[1:-1].strip()
            if item:
                key, _, value = item.partition("=")
                items.append((key.strip(), value.strip() or "OK"))
            continue
        current.append(ch)
    return items


def read_key_values(spec: str, where: str) -> dict[str, str]:
    """Read a key/value table (texthash:, hash:-family source files, inline:) into a dict.

    Keys are lowercased, as Postfix folds lookup keys of these tables.
    """
    parsed = _split_type(spec)
    if parsed is None or parsed[0] not in KEY_VALUE_TYPES:
        raise ConfigError(f"unsupported table {spec!r}: use texthash:, hash: (the postmap "
                          "source file is read), or inline:{...}", where)
    kind, name = parsed
    if kind == "inline":
        return {key.lower(): value for key, value in _inline_items(name, where)}
    table: dict[str, str] = {}
    for _, line in _table_lines(Path(name), where):
        key, _, value = line.replace("\t", " ").partition(" ")
        table[key.lower()] = value.strip() or "OK"
    return table


# --- network lists (mynetworks, sesrelay_proxy_networks) -------------------------------


def parse_network(text: str, where: str) -> IPNetwork:
    """Parse one network pattern in Postfix syntax: 10.0.0.0/8, 10.1.2.3, [2001:db8::]/32."""
    candidate = text
    if candidate.startswith("["):
        host, sep, rest = candidate[1:].partition("]")
        if not sep:
            raise ConfigError(f"bad network {text!r}: unbalanced '['", where)
        candidate = host + rest
    try:
        return ipaddress.ip_network(candidate, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            raise ConfigError(f"bad network {text!r}: host bits set after the mask "
                              f"(did you mean {ipaddress.ip_network(candidate, strict=False)}?)",
                              where) from None
        raise ConfigError(f"bad network {text!r}: not an IP address or CIDR", where) from None


@dataclass(frozen=True)
class NetworkList:
    """An ordered match list of networks; ``!pattern`` excludes, the first match decides."""

    patterns: tuple[tuple[bool, IPNetwork], ...] = ()
    text: str = ""

    def __contains__(self, address: object) -> bool:
        ip = _client_ip(str(address))
        if ip is None:
            return False
        for negated, network in self.patterns:
            if ip.version == network.version and ip in network:
                return not negated
        return False

    @property
    def networks(self) -> list[str]:
        """The networks admitted (not excluded), as CIDR strings, for security groups."""
        return [str(net) for negated, net in self.patterns if not negated]


def parse_network_list(value: str, where: str) -> NetworkList:
    """Parse a mynetworks-style list: networks, /file/name, cidr:/texthash:/inline: tables."""
    patterns: list[tuple[bool, IPNetwork]] = []
    for item in split_list(value):
        negated = item.startswith("!")
        body = item[1:] if negated else item
        for pattern in _expand_network_item(body, where):
            patterns.append((negated, parse_network(pattern, where)))
    return NetworkList(tuple(patterns), value)


def _expand_network_item(item: str, where: str) -> list[str]:
    if item.startswith("/"):
        return [tok for _, line in _table_lines(Path(item), where) for tok in split_list(line)]
    parsed = _split_type(item)
    if parsed is None:
        return [item]
    kind, name = parsed
    if kind == "cidr":
        return [line.split()[0] for _, line in _table_lines(Path(name), where)]
    if kind in KEY_VALUE_TYPES:
        return list(read_key_values(item, where))
    raise ConfigError(f"unsupported table type {kind!r} in a network list "
                      "(use cidr:, texthash: or inline:)", where)


# --- domain lists (relay_domains, mydestination) ---------------------------------------


@dataclass(frozen=True)
class DomainList:
    """A match list of domains. With subdomains=True (Postfix's parent_domain_matches_
    subdomains, on for relay_domains) 'example.com' also matches 'a.example.com'; a
    '.example.com' pattern matches subdomains only. '!pattern' excludes."""

    patterns: tuple[tuple[bool, str], ...] = ()
    subdomains: bool = True
    text: str = ""
    rules: tuple[RegexpRule, ...] = ()  # regexp:/pcre: tables, matched against the domain

    def matches(self, domain: str) -> bool:
        """True when domain (case-insensitive, trailing dot ignored) is in the list."""
        domain = domain.lower().rstrip(".")
        if not domain:
            return False
        for negated, pattern in self.patterns:
            if self._match_one(pattern, domain):
                return not negated
        return any(rule.apply(domain) is not None for rule in self.rules)

    def _match_one(self, pattern: str, domain: str) -> bool:
        if pattern.startswith("."):
            return domain.endswith(pattern)
        if domain == pattern:
            return True
        return self.subdomains and domain.endswith("." + pattern)

    def __bool__(self) -> bool:
        return bool(self.patterns or self.rules)

    @property
    def domains(self) -> list[str]:
        """The domains admitted (not excluded)."""
        return [p for negated, p in self.patterns if not negated]


_LABEL = r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_DOMAIN_RE = re.compile(rf"\.?{_LABEL}(\.{_LABEL})*")


def parse_domain_list(value: str, where: str, *, subdomains: bool) -> DomainList:
    """Parse a relay_domains-style list: names, /file/name and key/value tables."""
    patterns: list[tuple[bool, str]] = []
    for item in split_list(value):
        negated = item.startswith("!")
        body = item[1:] if negated else item
        if body.startswith("/"):
            names = [tok for _, line in _table_lines(Path(body), where)
                     for tok in split_list(line)]
        elif _split_type(body) is not None:
            names = list(read_key_values(body, where))
        else:
            names = [body]
        for name in names:
            name = name.lower().rstrip(".")
            if not _DOMAIN_RE.fullmatch(name):
                raise ConfigError(f"bad domain name {name!r}", where)
            patterns.append((negated, name))
    return DomainList(tuple(patterns), subdomains, value)


def parse_alias_domains(value: str, where: str) -> DomainList:
    """virtual_alias_domains: like mydestination, but its default is $virtual_alias_maps,
    whose tables name a domain when the domain itself is a key (virtual(5)'s "Postfix-style
    virtual alias domain"): address keys (user@domain, @domain) are not domain names and
    are skipped, and a regexp:/pcre: table is matched against the domain."""
    patterns: list[tuple[bool, str]] = []
    rules: list[RegexpRule] = []
    for item in split_list(value):
        parsed = _split_type(item)
        if parsed is not None and parsed[0] in ("regexp", "pcre"):
            rules.extend(RegexpRule(pattern, negated, "", result, at, conditions)
                         for at, pattern, negated, result, conditions
                         in _regexp_rules(parsed[0], Path(parsed[1]), where))
        elif parsed is not None:
            patterns.extend((False, key.rstrip(".")) for key in read_key_values(item, where)
                            if "@" not in key)
        else:
            patterns.extend(parse_domain_list(item, where, subdomains=False).patterns)
    return DomainList(tuple(patterns), False, value, tuple(rules))


# --- recipient tables (relay_recipient_maps) -------------------------------------------


@dataclass(frozen=True)
class RecipientTable:
    """relay_recipient_maps: known recipient addresses and @domain wildcards."""

    entries: frozenset[str] = frozenset()
    text: str = ""

    def __bool__(self) -> bool:
        return bool(self.text)

    def knows(self, address: str, delimiter: str = "") -> bool:
        """Postfix's lookup order: user+ext@domain, user@domain, then @domain."""
        local, _, domain = address.lower().rpartition("@")
        candidates = [f"{local}@{domain}"]
        if delimiter:
            base = _strip_extension(local, delimiter)
            if base != local:
                candidates.append(f"{base}@{domain}")
        candidates.append(f"@{domain}")
        return any(c in self.entries for c in candidates)


def _strip_extension(local: str, delimiters: str) -> str:
    positions = [local.find(d) for d in delimiters if local.find(d) > 0]
    return local[: min(positions)] if positions else local


def parse_recipient_tables(value: str, where: str) -> RecipientTable:
    """Parse relay_recipient_maps: one or more key/value tables whose keys are addresses."""
    entries: set[str] = set()
    for item in split_list(value):
        entries.update(read_key_values(item, where))
    return RecipientTable(frozenset(entries), value)


# --- regexp tables (header_checks) -----------------------------------------------------

HEADER_ACTIONS = ("REJECT", "IGNORE", "STRIP", "WARN", "PREPEND", "REPLACE", "DUNNO", "OK",
                  "INFO", "DISCARD")
# The actions Postfix's smtp(8) client supports in smtp_header_checks; header_checks(5)
# marks the others "not supported with smtp header/body checks".
SMTP_HEADER_ACTIONS = ("DUNNO", "OK", "IGNORE", "INFO", "PREPEND", "REPLACE", "STRIP",
                       "WARN")


@dataclass(frozen=True)
class RegexpRule:
    """One regexp table line: a pattern (or negated pattern) and its result."""

    pattern: re.Pattern[str]
    negated: bool
    action: str
    text: str
    where: str
    conditions: tuple[tuple[re.Pattern[str], bool], ...] = ()

    def apply(self, subject: str) -> str | None:
        """The result text with $N substituted, or None when this rule does not match."""
        for cond, negated in self.conditions:
            if bool(cond.search(subject)) == negated:
                return None
        match = self.pattern.search(subject)
        if bool(match) == self.negated:
            return None
        text = self.text
        if match and not self.negated:
            text = re.sub(r"\$(?:\{(\d+)\}|(\d))",
                          lambda m: match.group(int(m.group(1) or m.group(2))) or "", text)
        return text


@dataclass(frozen=True)
class RegexpTable:
    """An ordered regexp table; the first matching rule gives the result."""

    rules: tuple[RegexpRule, ...] = ()
    text: str = ""

    def __bool__(self) -> bool:
        return bool(self.rules)

    def lookup(self, subject: str) -> tuple[RegexpRule, str] | None:
        """The first rule that matches subject, with its expanded result text."""
        for rule in self.rules:
            result = rule.apply(subject)
            if result is not None:
                return rule, result
        return None


# Each table type's default flags and what its pattern flags toggle, in Python's terms
# (regexp_table(5), pcre_table(5)). regexp: tables are POSIX extended expressions compiled
# without REG_NEWLINE: "." matches a newline (a folded header holds one) and ^ and $ match
# only at the ends, until "m" (REG_NEWLINE) turns both around. Their "x" (basic syntax)
# has no equivalent here and is refused. pcre: tables: "." matches no newline unless "s".
_DEFAULT_FLAGS = {"regexp": re.IGNORECASE | re.DOTALL, "pcre": re.IGNORECASE}
_PATTERN_FLAGS = {
    "regexp": {"i": re.IGNORECASE, "m": re.MULTILINE | re.DOTALL},
    "pcre": {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE},
}


def _parse_pattern(kind: str, text: str, where: str) -> tuple[re.Pattern[str], bool, str]:
    """Parse '[!]/regex/flags rest' -> (compiled, negated, rest)."""
    negated = text.startswith("!")
    if negated:
        text = text[1:]
    if not text or text[0].isalnum() or text[0].isspace():
        raise ConfigError(f"expected /pattern/ at {text[:30]!r}", where)
    delim = text[0]
    end = 1
    while True:
        end = text.find(delim, end)
        if end < 0:
            raise ConfigError(f"missing closing {delim!r} in pattern {text[:60]!r}", where)
        if text[end - 1] != "\\":
            break
        end += 1
    regex = text[1:end]
    flags_match = re.match(r"[A-Za-z]*", text[end + 1:])
    flag_text = flags_match.group(0) if flags_match else ""
    flags = _DEFAULT_FLAGS[kind]  # case-insensitive by default, as in Postfix
    for flag in flag_text:
        if flag not in _PATTERN_FLAGS[kind]:
            raise ConfigError(f"{kind}: pattern flag {flag!r} is not supported (supported: "
                              f"{', '.join(_PATTERN_FLAGS[kind])})", where)
        flags ^= _PATTERN_FLAGS[kind][flag]
    try:
        compiled = re.compile(regex, flags)
    except re.error as exc:
        raise ConfigError(f"bad regular expression {regex!r}: {exc}", where) from None
    return compiled, negated, text[end + 1 + len(flag_text):].strip()


_Conditions = tuple[tuple[re.Pattern[str], bool], ...]


def _regexp_rules(kind: str, path: Path, where: str
                  ) -> Iterator[tuple[str, re.Pattern[str], bool, str, _Conditions]]:
    """The rules of one regexp:/pcre: table file, IF/ENDIF resolved: (file:line, pattern,
    negated, result text, enclosing IF conditions)."""
    stack: list[tuple[re.Pattern[str], bool]] = []
    for lineno, line in _table_lines(path, where):
        at = f"{path}:{lineno}"
        keyword = line.split(None, 1)[0].lower()
        if keyword == "endif":
            if not stack:
                raise ConfigError("ENDIF without IF", at)
            stack.pop()
            continue
        if keyword == "if":
            pattern, negated, rest = _parse_pattern(kind, line.split(None, 1)[1], at)
            if rest:
                raise ConfigError("text after IF pattern", at)
            stack.append((pattern, negated))
            continue
        pattern, negated, result = _parse_pattern(kind, line, at)
        yield at, pattern, negated, result, tuple(stack)
    if stack:
        raise ConfigError("IF without ENDIF", str(path))


def _regexp_path(item: str, parameter: str, where: str) -> tuple[str, Path]:
    parsed = _split_type(item)
    if parsed is None or parsed[0] not in ("regexp", "pcre"):
        raise ConfigError(f"{parameter} needs regexp: or pcre: tables, not {item!r}", where)
    return parsed[0], Path(parsed[1])


def header_checks_parser(parameter: str, actions: tuple[str, ...] = HEADER_ACTIONS):
    """A parser for a header_checks-style parameter (header_checks, smtp_header_checks):
    regexp:/pcre: tables whose results are one of actions (header_checks(5))."""

    def parse(value: str, where: str) -> RegexpTable:
        rules: list[RegexpRule] = []
        for item in split_list(value):
            for at, pattern, negated, result, conditions in _regexp_rules(
                    *_regexp_path(item, parameter, where), where):
                action, _, text = result.partition(" ")
                action = action.upper()
                if action not in actions:
                    raise ConfigError(f"{parameter} action {action or '(none)'!r} is not "
                                      f"supported (use one of {', '.join(actions)})", at)
                if action in ("PREPEND", "REPLACE") and ":" not in text and "$" not in text:
                    raise ConfigError(f"{action} needs a header 'Name: value'", at)
                rules.append(RegexpRule(pattern, negated, action, text.strip(), at,
                                        conditions))
        return RegexpTable(tuple(rules), value)

    return parse


parse_regexp_tables = header_checks_parser("header_checks")


# --- address maps (canonical_maps, virtual_alias_maps, ...) ----------------------------


@dataclass(frozen=True)
class AddressTable:
    """One table of an address map: key/value entries (keys lowercased), or the rules of
    a regexp:/pcre: table, which only ever see the whole address (canonical(5))."""

    spec: str
    pattern: bool  # a regexp:/pcre: table
    entries: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    rules: tuple[RegexpRule, ...] = ()


@dataclass(frozen=True)
class AddressMaps:
    """A list of address tables, searched as Postfix's mail_addr_find() searches them:
    each query key is tried in every table before the next key."""

    tables: tuple[AddressTable, ...] = ()
    text: str = ""

    def __bool__(self) -> bool:
        return bool(self.tables)

    def find(self, key: str, *, whole: bool) -> str | None:
        """The result for key, or None. whole is True when key is the whole address as
        received; pattern tables are asked only then (they match the whole address once)."""
        for table in self.tables:
            if table.pattern:
                if not whole:
                    continue
                for rule in table.rules:
                    result = rule.apply(key)
                    if result is not None:
                        return result
            else:
                result = table.entries.get(key.lower())
                if result is not None:
                    return result
        return None

    def entries(self) -> list[tuple[str, str, str]]:
        """Every entry, for `config show`: (table, key or pattern, result)."""
        rows = []
        for table in self.tables:
            rows.extend((table.spec, key, value) for key, value in table.entries.items())
            rows.extend((table.spec, ("!" if r.negated else "") + f"/{r.pattern.pattern}/",
                         r.text) for r in table.rules)
        return rows


def parse_address_maps(value: str, where: str) -> AddressMaps:
    """Parse canonical_maps-style tables: texthash:/hash:-family/inline: key/value tables
    and regexp:/pcre: tables, in the order given."""
    tables = []
    for item in split_list(value):
        parsed = _split_type(item)
        if parsed is not None and parsed[0] in ("regexp", "pcre"):
            rules = tuple(RegexpRule(pattern, negated, "", result, at, conditions)
                          for at, pattern, negated, result, conditions
                          in _regexp_rules(parsed[0], Path(parsed[1]), where))
            tables.append(AddressTable(item, True, rules=rules))
        else:
            tables.append(AddressTable(item, False, entries=read_key_values(item, where)))
    return AddressMaps(tuple(tables), value)


# --- smtpd_sender_login_maps -------------------------------------------------------------


@dataclass(frozen=True)
class SenderLoginTable:
    """smtpd_sender_login_maps: envelope senders and the SASL login names that own them."""

    owners: dict[str, frozenset[str]] = field(default_factory=dict)
    text: str = ""

    def __bool__(self) -> bool:
        return bool(self.text)

    def owners_of(self, sender: str) -> frozenset[str] | None:
        """The logins that own sender, or None when the table does not know it. As in
        Postfix: the whole address, then @domain (the first table that knows it wins)."""
        local, _, domain = sender.lower().rpartition("@")
        for key in (f"{local}@{domain}", f"@{domain}"):
            if key in self.owners:
                return self.owners[key]
        return None


def parse_sender_login_tables(value: str, where: str) -> SenderLoginTable:
    """Key/value tables: sender (or @domain) -> login names, separated by commas or spaces."""
    owners: dict[str, frozenset[str]] = {}
    for item in split_list(value):
        for key, logins in read_key_values(item, where).items():
            owners.setdefault(key, frozenset(split_list(logins)))
    return SenderLoginTable(owners, value)


@functools.lru_cache(maxsize=4096)
def _client_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """text as an address (an IPv4-mapped IPv6 address as its IPv4 one), None if it is not
    one. Cached: every connection asks for its client's, and a relay's clients are few."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip
