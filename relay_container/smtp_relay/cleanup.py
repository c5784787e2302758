"""Address rewriting as Postfix's cleanup(8) does it: once, between SMTP and the spool.

Each envelope address goes through Postfix's steps, in Postfix's order (cleanup_addr.c,
cleanup_map11.c, cleanup_map1n.c, cleanup_masq.c; ADDRESS_REWRITING_README):

1. trivial-rewrite's "local" context, which Postfix applies to every envelope address:
   in an address without @, ``site!user`` to ``user@site`` (swap_bangpath) or
   ``user%domain`` to ``user@domain`` (allow_percent_hack); ``@$myorigin`` after a bare
   user name (append_at_myorigin), ``.$mydomain`` after a domain without a dot
   (append_dot_mydomain).
2. The sender: sender_canonical_maps, canonical_maps, masquerade_domains; a recipient:
   recipient_canonical_maps, canonical_maps, masquerade_domains, each only for the
   address classes its ``*_classes`` parameter names. A canonical lookup is repeated on
   its result, at most 10 times (Postfix's MAX_RECURSION; then a warning and the last
   result, as Postfix does).
3. Each recipient is expanded through virtual_alias_maps, recursively, with Postfix's
   limits: virtual_alias_expansion_limit addresses per original recipient and
   virtual_alias_recursion_limit levels; past either, the message is refused with
   Postfix's ``451 4.6.0 Alias expansion error``. An address may expand to itself once;
   one left in virtual_alias_domains that way is not sent (Postfix bounces it, "User
   unknown in virtual alias table"): it is logged as bounced, and when no recipient is
   left the message is refused at DATA instead (sesrelay sends no DSN for it).

Table lookups follow mail_addr_find(): for key/value tables ``user+ext@domain``,
``user@domain``, then ``user+ext`` and ``user`` when the domain is local ($myorigin,
$mydestination, an interface address), then ``@domain``; a regexp:/pcre: table sees
only the whole address. An extension that a lookup did not match is carried over to the
result (propagate_unmatched_extensions); a result ``@otherdomain`` keeps the user.

Last, ses_unverified_sender = rewrite makes an envelope sender that no verified SES
identity covers ses_default_sender (its From: header half is in from_header.py).

Header addresses are not rewritten otherwise: Postfix rewrites them only for clients matching
local_header_rewrite_clients or when remote_header_rewrite_domain is set, and every
sesrelay client is remote (the configuration refuses settings that would ask for more).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass

from sesrelay import ses_identities
from sesrelay.config import Config
from sesrelay.config.tables import AddressMaps

log = logging.getLogger("sesrelay.relay")

# cleanup_map11.c: canonical lookups repeated on their own result at most this often.
CANONICAL_NESTING_LIMIT = 10
# Postfix's reply when virtual alias expansion passes a limit (cleanup_map1n.c: the
# message is not accepted, the client tries again later).
ALIAS_EXPANSION_ERROR = "451 4.6.0 Alias expansion error"
UNKNOWN_ALIAS = "User unknown in virtual alias table"
_LIST_SEPARATORS = re.compile(r"[\s,]+")


class ExpansionError(Exception):
    """Virtual alias expansion passed a limit; str() is the warning Postfix logs."""


@dataclass(frozen=True)
class Rewritten:
    """An envelope after rewriting, with what the client sent."""

    mail_from: str
    original_mail_from: str
    recipients: tuple[tuple[str, str], ...]  # (as received, rewritten), duplicates removed
    # Recipients left in virtual_alias_domains after expansion (one that expands to itself
    # there): Postfix's trivial-rewrite bounces them, "User unknown in virtual alias table".
    unknown: tuple[tuple[str, str], ...] = ()

    @property
    def rcpt_to(self) -> tuple[str, ...]:
        """The rewritten recipients, in order."""
        return tuple(new for _, new in self.recipients)

    @property
    def changed(self) -> bool:
        """True when rewriting changed any address."""
        return (self.mail_from != self.original_mail_from
                or any(old != new for old, new in self.recipients))


def split_extension(local: str, delimiters: str) -> tuple[str, str]:
    """Postfix's split_addr(): (user, extension with its delimiter) at the first
    delimiter; no split for postmaster, MAILER-DAEMON, owner-* and *-request (with '-'),
    or when the user or the extension would be empty."""
    if not delimiters or local.lower() in ("postmaster", "mailer-daemon"):
        return local, ""
    if "-" in delimiters and (local.lower().startswith("owner-")
                              or (len(local) > 8 and local.lower().endswith("-request"))):
        return local, ""
    cut = next((i for i, ch in enumerate(local) if ch in delimiters), len(local))
    if cut == 0 or cut == len(local):
        return local, ""
    return local[:cut], local[cut:]


def unroute(config: Config, address: str) -> str:
    """trivial-rewrite's first steps (rewrite.c), for an address without @: site!user
    becomes user@site (swap_bangpath), else user%domain becomes user@domain at the last %
    (allow_percent_hack). Any other address is returned as it is."""
    if "@" in address:
        return address
    site, bang, user = address.partition("!")
    if bang and site and user and config.swap_bangpath:
        return f"{user}@{site}"
    user, percent, domain = address.rpartition("%")
    if percent and user and domain and config.allow_percent_hack:
        return f"{user}@{domain}"
    return address


class Cleanup:
    """The rewriting configured in one Config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._propagate = frozenset(config.propagate_unmatched_extensions)

    # --- trivial-rewrite ---------------------------------------------------------------

    def qualify(self, address: str) -> str:
        """trivial-rewrite's local context (rewrite.c): in an address without @, site!user
        becomes user@site (swap_bangpath), else user%domain becomes user@domain at the
        last % (allow_percent_hack); then @$myorigin, and .$mydomain if configured."""
        config = self.config
        if not address:
            return address
        address = unroute(config, address)
        if "@" not in address and config.append_at_myorigin and config.myorigin:
            address = f"{address}@{config.myorigin}"
        local, at, domain = address.rpartition("@")
        if (at and domain and config.append_dot_mydomain and config.mydomain
                and "." not in domain and not domain.startswith("[")):
            address = f"{local}@{domain}.{config.mydomain}"
        return address

    def is_local(self, domain: str) -> bool:
        """Postfix's resolve_local() plus $myorigin: where the bare-user lookup forms
        apply."""
        config = self.config
        domain = domain.lower().rstrip(".")
        if domain == config.myorigin.lower() or config.mydestination.matches(domain):
            return True
        if not (domain.startswith("[") and domain.endswith("]")):
            return False
        literal = domain[1:-1].removeprefix("ipv6:")
        try:
            ip = ipaddress.ip_address(literal)
        except ValueError:
            return False
        interfaces = {*config.inet_interfaces, *config.proxy_interfaces}
        if ip.is_loopback and interfaces & {"all", "loopback-only", "localhost"}:
            return True
        return any(_same_ip(ip, item) for item in interfaces)

    # --- table lookups -----------------------------------------------------------------

    def find(self, maps: AddressMaps, address: str) -> tuple[str, str] | None:
        """mail_addr_find(): (result text, extension the match left out) or None."""
        result = maps.find(address, whole=True)
        if result is not None:
            return result, ""
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = address, ""
        user, extension = split_extension(local, self.config.recipient_delimiter)
        if extension and at:
            result = maps.find(f"{user}@{domain}", whole=False)
            if result is not None:
                return result, extension
        if at and self.is_local(domain):
            result = maps.find(local, whole=False)
            if result is not None:
                return result, ""
            if extension:
                result = maps.find(user, whole=False)
                if result is not None:
                    return result, extension
        if at:
            result = maps.find(f"@{domain}", whole=False)
            if result is not None:
                return result, ""
        return None

    def map(self, maps: AddressMaps, address: str, kind: str) -> list[str] | None:
        """mail_addr_map(): the addresses a lookup of address gives, rewritten as Postfix
        rewrites results, or None when the tables have no entry. kind is "canonical" or
        "virtual", for propagate_unmatched_extensions."""
        found = self.find(maps, address)
        if found is None:
            return None
        text, extension = found
        results = [r for r in _LIST_SEPARATORS.split(text) if r]
        if not results:
            return None
        if results[0].startswith("@"):  # @otherdomain: the same user there
            user = address.rpartition("@")[0] if "@" in address else address
            results[0] = (user[:-len(extension)] if extension else user) + results[0]
        propagate = extension and kind in self._propagate
        out = []
        for result in results:
            result = self.qualify(result)
            if propagate:
                local, at, domain = result.rpartition("@")
                result = f"{local}{extension}@{domain}" if at else result + extension
            out.append(result)
        return out

    def canonical(self, maps: AddressMaps, address: str, title: str) -> str:
        """cleanup_map11(): one address to one, the lookup repeated on its result until
        it maps to itself or to nothing, at most CANONICAL_NESTING_LIMIT times."""
        for _ in range(CANONICAL_NESTING_LIMIT):
            results = self.map(maps, address, "canonical")
            if results is None:
                return address
            if len(results) > 1:
                log.warning("multi-valued %s entry for %s", title, address)
            before, address = address, results[0]
            if before.lower() == address.lower():
                return address
        log.warning("unreasonable %s map nesting for %s", title, address)
        return address

    def masquerade(self, address: str) -> str:
        """cleanup_masquerade(): user@host.example.com to user@example.com for the first
        masquerade_domains entry that is a parent domain; an exact match or a !domain
        entry stops; masquerade_exceptions names local parts left alone."""
        config = self.config
        local, at, domain = address.rpartition("@")
        if not at or not config.masquerade_domains:
            return address
        if local.lower() in (name.lower() for name in config.masquerade_exceptions):
            return address
        domain = domain.lower()
        for entry in config.masquerade_domains:
            excluded = entry.startswith("!")
            parent = entry.removeprefix("!").lower()
            if not parent:
                continue
            if parent == domain:
                break
            if domain.endswith("." + parent):
                if excluded:
                    break
                return f"{local}@{parent}"
        return address

    def virtual(self, address: str) -> list[str]:
        """cleanup_map1n(): one recipient to its virtual aliases, recursively (the address
        vector rewritten in place, as Postfix does). Raises ExpansionError past
        virtual_alias_expansion_limit or virtual_alias_recursion_limit."""
        config = self.config
        maps = config.virtual_alias_maps
        addresses = [address]
        expanded_to_self: set[str] = set()
        arg = 0
        while arg < len(addresses):
            if len(addresses) > config.virtual_alias_expansion_limit:
                raise ExpansionError(f"unreasonable virtual_alias_maps map expansion size "
                                     f"for {address}")
            count = 0
            while addresses[arg].lower() not in expanded_to_self:
                if count >= config.virtual_alias_recursion_limit:
                    raise ExpansionError(f"unreasonable virtual_alias_maps map nesting for "
                                         f"{address}")
                current = addresses[arg]
                results = self.map(maps, current, "virtual")
                if results is None:
                    break
                addresses[arg] = results[0]
                addresses.extend(results[1:])
                for result in results:
                    if result.lower() == current.lower():
                        expanded_to_self.add(current.lower())
                count += 1
            arg += 1
        return addresses

    # --- whole addresses ---------------------------------------------------------------

    def _canonical_steps(self, address: str, own: tuple[AddressMaps, str, tuple[str, ...]],
                         address_class: str) -> str:
        config = self.config
        maps, title, classes = own
        if maps and address_class in classes:
            address = self.canonical(maps, address, title)
        if config.canonical_maps and address_class in config.canonical_classes:
            address = self.canonical(config.canonical_maps, address, "canonical_maps")
        if address_class in config.masquerade_classes:
            address = self.masquerade(address)
        return address

    def sender(self, address: str) -> str:
        """The envelope sender after rewriting; the null sender "" stays as it is. Last,
        ses_unverified_sender = rewrite: ses_default_sender for a sender that no verified
        identity covers (see replaces_sender)."""
        address = self._canonical_sender(address)
        return self.config.ses_default_sender if self._unverified(address) else address

    def replaces_sender(self, address: str) -> bool:
        """True when ses_unverified_sender = rewrite makes the envelope sender address
        ses_default_sender, and so the From: header too (from_header.py)."""
        return self._unverified(self._canonical_sender(address))

    def _canonical_sender(self, address: str) -> str:
        if not address:
            return address
        config = self.config
        return self._canonical_steps(
            self.qualify(address),
            (config.sender_canonical_maps, "sender_canonical_maps",
             config.sender_canonical_classes), "envelope_sender")

    def _unverified(self, rewritten: str) -> bool:
        """ses_unverified_sender = rewrite applies to this (canonical) sender: an address
        no verified identity covers. Nothing applies while ses_identities is empty."""
        config = self.config
        return (config.ses_unverified_sender == "rewrite" and bool(config.ses_identities)
                and bool(rewritten)
                and not ses_identities.covers(config.ses_identities, rewritten))

    def recipient(self, address: str) -> list[str]:
        """The addresses one envelope recipient becomes. Raises ExpansionError."""
        config = self.config
        address = self._canonical_steps(
            self.qualify(address),
            (config.recipient_canonical_maps, "recipient_canonical_maps",
             config.recipient_canonical_classes), "envelope_recipient")
        if not config.virtual_alias_maps:
            return [address]
        return self.virtual(address)

    def envelope(self, mail_from: str, rcpt_to: list[str] | tuple[str, ...]) -> Rewritten:
        """Rewrite a whole envelope; each (original, rewritten) recipient pair once, as
        cleanup's duplicate filter keeps it. Raises ExpansionError."""
        pairs: dict[tuple[str, str], tuple[str, str]] = {}
        for original in rcpt_to:
            for new in self.recipient(original):
                pairs.setdefault((original.lower(), new.lower()), (original, new))
        alias_domains = self.config.virtual_alias_domains
        unknown = tuple(p for p in pairs.values()
                        if alias_domains.matches(p[1].rpartition("@")[2]))
        return Rewritten(self.sender(mail_from), mail_from,
                         tuple(p for p in pairs.values() if p not in unknown), unknown)

    def knows(self, address: str) -> bool:
        """True when a recipient table would rewrite address: canonical_maps,
        recipient_canonical_maps or virtual_alias_maps has an entry for it. Postfix's
        smtpd counts such a recipient as known (smtpd_check.c check_rcpt_maps())."""
        config = self.config
        return any(maps and self.find(maps, address) is not None
                   for maps in (config.recipient_canonical_maps, config.canonical_maps,
                                config.virtual_alias_maps))


def _same_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, text: str) -> bool:
    try:
        return ipaddress.ip_address(text.strip("[]")) == ip
    except ValueError:
        return False
