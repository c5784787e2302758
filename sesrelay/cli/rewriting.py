"""What a configuration does to addresses, for `sesrelay config show --tables` and
`sesrelay config check FILE --address ADDRESS`.

The answers come from the relay's own code (smtp_relay's address parser, cleanup and
verdicts), so the commands cannot disagree with what the relay does over SMTP.
"""

from __future__ import annotations

from collections.abc import Iterator

from sesrelay.config import Config
from sesrelay.config.tables import AddressMaps, DomainList, NetworkList
from smtp_relay import replies
from smtp_relay.addresses import parse_path
from smtp_relay.cleanup import ALIAS_EXPANSION_ERROR, UNKNOWN_ALIAS, Cleanup, ExpansionError
from smtp_relay.verdicts import (
    mail_from_address,
    recipient_address,
    recipient_reply,
    sender_reply,
)

# The rewriting parameters, in the order cleanup applies them (cleanup.py).
TABLE_PARAMETERS = (
    "sender_canonical_maps", "sender_canonical_classes",
    "recipient_canonical_maps", "recipient_canonical_classes",
    "canonical_maps", "canonical_classes",
    "masquerade_domains", "masquerade_exceptions", "masquerade_classes",
    "virtual_alias_maps", "virtual_alias_domains",
)
# Documentation addresses (RFC 5737, RFC 3849): an untrusted client unless mynetworks
# holds them all.
_UNTRUSTED_CANDIDATES = ("192.0.2.1", "198.51.100.1", "203.0.113.1", "2001:db8::1")


def table_lines(config: Config, headings: dict[str, str]) -> Iterator[str]:
    """Each rewriting parameter as `name = value` (headings: the values to show), and
    under each table parameter its entries as `postmap -s` lists them (key, a tab, the
    result), each table after a `# TYPE:NAME` line; regexp:/pcre: rules as /pattern/."""
    for name in TABLE_PARAMETERS:
        yield f"{name} = {headings[name]}".rstrip()
        value = getattr(config, name)
        if isinstance(value, AddressMaps):
            current = None
            for table, key, result in value.entries():
                if table != current:
                    current = table
                    yield f"# {table}"
                yield f"{key}\t{result}"
        elif isinstance(value, DomainList):
            yield from (f"{'!' if negated else ''}{domain}"
                        for negated, domain in value.patterns)
            yield from (f"{'!' if rule.negated else ''}/{rule.pattern.pattern}/"
                        for rule in value.rules)


def _trusted_client(networks: NetworkList) -> str | None:
    """An address in mynetworks: the first host (or the only address) of an admitted
    network, when the list as a whole admits it (an earlier !pattern may exclude it)."""
    for negated, network in networks.patterns:
        if negated:
            continue
        for address in (network.network_address + 1, network.network_address):
            if address in network and str(address) in networks:
                return str(address)
    return None


def _untrusted_client(networks: NetworkList) -> str | None:
    return next((a for a in _UNTRUSTED_CANDIDATES if a not in networks), None)


def _becomes(address: str, results: list[str] | tuple[str, ...]) -> str:
    if list(results) == [address]:
        return "unchanged"
    return "rewritten to " + ", ".join(f"<{result}>" for result in results)


def address_lines(config: Config, written: str) -> list[str]:
    """What the relay does with an address: its rewriting as a sender and as a recipient
    (canonical maps, masquerading, virtual alias expansion), and its verdicts: as a
    recipient (after MAIL FROM:<>) from a trusted and from an untrusted client, and as a
    sender (ses_unverified_sender)."""
    cleanup = Cleanup(config)
    address = parse_path(f"<{written}>")
    if not address:
        return [f"address <{written}>: {replies.BAD_ADDRESS} (and, as a sender, "
                f"{replies.BAD_SENDER})"]
    sender = mail_from_address(config, address)
    lines = [f"address <{written}>",
             f"as a sender: <{sender}> {_becomes(sender, [cleanup.sender(sender)])}"]
    recipient = recipient_address(config, address)
    try:
        rewritten = cleanup.envelope("", [recipient.address])
    except ExpansionError as exc:
        lines.append(f"as a recipient: <{recipient.address}>: {ALIAS_EXPANSION_ERROR} at "
                     f"DATA ({exc})")
    else:
        if rewritten.recipients:
            lines.append(f"as a recipient: <{recipient.address}> "
                         + _becomes(recipient.address, rewritten.rcpt_to))
        lines.extend(f"as a recipient: <{new}>: bounced ({UNKNOWN_ALIAS})"
                     for _, new in rewritten.unknown)
        if not rewritten.recipients:
            lines.append("as a recipient: the message is refused at DATA: "
                         + replies.soften(f"550 5.1.1 Error: {UNKNOWN_ALIAS}",
                                          config.soft_bounce))
    for kind, client in (("trusted", _trusted_client(config.mynetworks)),
                         ("untrusted", _untrusted_client(config.mynetworks))):
        who = f"recipient from {'a' if kind == 'trusted' else 'an'} {kind} client"
        if client is None:
            lines.append(f"{who}: none (mynetworks holds "
                         f"{'no address' if kind == 'trusted' else 'every address tried'})")
            continue
        _, reply = recipient_reply(config, cleanup, client, address, None, "<>")
        lines.append(f"{who} [{client}]: {reply or 'accepted'}")
    stage = "RCPT TO" if config.smtpd_delay_reject else "MAIL FROM"
    reply = sender_reply(config, cleanup, sender)
    lines.append(f"sender (ses_unverified_sender = {config.ses_unverified_sender}): "
                 + (f"{reply} (at {stage})" if reply else "accepted"))
    return lines
