"""Postfix's recipient policy: smtpd_relay_restrictions, smtpd_recipient_restrictions,
reject_unauth_destination with relay_domains, relay_recipient_maps, SMTP AUTH
(permit_sasl_authenticated, the reject_*_sender_login_mismatch family with
smtpd_sender_login_maps), the SES sender check (ses_unverified_sender) and soft_bounce.

Pure functions of the configuration, the client (address and SASL login), the sender and
the recipient, so every rule is testable without a socket.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sesrelay import ses_identities
from sesrelay.config import Config
from smtp_relay import replies


@dataclass(frozen=True)
class Recipient:
    """A recipient as the client wrote it, and the address mail will go to."""

    written: str
    address: str
    source_routed: bool = False

    @property
    def local_part(self) -> str:
        """Everything before the last '@'."""
        return self.address.rpartition("@")[0]

    @property
    def domain(self) -> str:
        """Everything after the last '@', lowercased."""
        return self.address.rpartition("@")[2].lower()


def parse_recipient(written: str, myorigin: str) -> Recipient:
    """Strip a source route (@a,@b:user@domain) and qualify a bare name with myorigin."""
    address = written
    routed = False
    if address.startswith("@") and ":" in address:
        routed = True
        address = address.split(":", 1)[1]
    if "@" not in address:
        address = f"{address}@{myorigin}"
    return Recipient(written, address, routed)


def has_sender_routing(recipient: Recipient) -> bool:
    """Sender-specified routing: user%host@, user!host@, "user@host"@, @route:user@."""
    local = recipient.local_part
    return recipient.source_routed or any(ch in local for ch in "@!%")


def is_authorized_destination(config: Config, recipient: Recipient) -> bool:
    """Postfix's 'authorized destination': relay_domains or mydestination, no routing."""
    if has_sender_routing(recipient):
        return False
    return any(domains.matches(recipient.domain) for domains in config.authorized_destinations)


def _relay_denied(config: Config, recipient: Recipient) -> str:
    return f"{config.relay_domains_reject_code} 5.7.1 <{recipient.written}>: Relay access denied"


# Whether a recipient table (canonical, recipient_canonical, virtual alias maps) has an
# entry for an address: such a recipient counts as known (cleanup.Cleanup.knows).
Rewrites = Callable[[str], bool]


def _unknown_user(config: Config, recipient: Recipient, rewrites: Rewrites) -> str | None:
    """smtpd_check.c check_rcpt_maps(): a recipient in virtual_alias_domains must be in a
    recipient table; one in relay_domains must be in relay_recipient_maps or one of them."""
    if config.virtual_alias_domains.matches(recipient.domain):
        if rewrites(recipient.address):
            return None
        return (f"{config.unknown_virtual_alias_reject_code} 5.1.1 <{recipient.written}>: "
                "Recipient address rejected: User unknown in virtual alias table")
    if not config.relay_recipient_maps or not config.relay_domains.matches(recipient.domain):
        return None
    if (config.relay_recipient_maps.knows(recipient.address, config.recipient_delimiter)
            or rewrites(recipient.address)):
        return None
    return (f"{config.unknown_relay_recipient_reject_code} 5.1.1 <{recipient.written}>: "
            "Recipient address rejected: User unknown in relay recipient table")


def sender_login_mismatch(config: Config, restriction: str, login: str | None,
                          sender: str) -> str | None:
    """reject_sender_login_mismatch and its variants (postconf(5)): the reply, or None.

    A sender that smtpd_sender_login_maps lists must come from a client logged in as one
    of its owners (the "unauthenticated" half); a logged-in client may only use senders
    it owns (the "authenticated" half). reject_known_... applies the authenticated half
    to listed senders only. The null sender is never checked."""
    if not sender:
        return None
    owners = config.smtpd_sender_login_maps.owners_of(sender)
    if login is None:
        if owners is not None and restriction in ("reject_sender_login_mismatch",
                                                  "reject_known_sender_login_mismatch",
                                                  "reject_unauthenticated_sender_login_mismatch"):
            return f"553 5.7.1 <{sender}>: Sender address rejected: not logged in"
        return None
    if restriction == "reject_unauthenticated_sender_login_mismatch":
        return None
    if owners is None and restriction == "reject_known_sender_login_mismatch":
        return None
    if owners is None or login not in owners:
        return f"553 5.7.1 <{sender}>: Sender address rejected: not owned by user {login}"
    return None


def _evaluate(config: Config, restrictions: tuple[str, ...], client_address: str,
              recipient: Recipient, rewrites: Rewrites, login: str | None,
              sender: str) -> str | None:
    """Run one restriction list. None means permitted (or no decision); else a reply."""
    for restriction in restrictions:
        if restriction == "permit_mynetworks":
            if client_address in config.mynetworks:
                return None
        elif restriction == "permit_sasl_authenticated":
            if login is not None:
                return None
        elif restriction.endswith("sender_login_mismatch"):
            reply = sender_login_mismatch(config, restriction, login, sender)
            if reply:
                return reply
        elif restriction == "permit_auth_destination":
            if is_authorized_destination(config, recipient):
                return None
        elif restriction == "reject_unauth_destination":
            if not is_authorized_destination(config, recipient):
                return _relay_denied(config, recipient)
        elif restriction == "defer_unauth_destination":
            if not is_authorized_destination(config, recipient):
                return f"450 4.7.1 <{recipient.written}>: Relay access denied"
        elif restriction == "reject_unlisted_recipient":
            reply = _unknown_user(config, recipient, rewrites)
            if reply:
                return reply
        elif restriction == "permit":
            return None
        elif restriction == "reject":
            return (f"554 5.7.1 <{recipient.written}>: Recipient address rejected: "
                    "Access denied")
        elif restriction == "defer":
            return (f"450 4.7.1 <{recipient.written}>: Recipient address rejected: "
                    "Access denied")
        # dunno decides nothing.
    return None


def check_sender(config: Config, written: str, rewritten: str) -> str | None:
    """ses_unverified_sender = reject: the reply for an envelope sender that no verified
    SES identity covers (checked as SES will see it, after address rewriting), or None.
    Nothing is checked for the null sender, or while ses_identities is empty."""
    if (config.ses_unverified_sender != "reject" or not config.ses_identities
            or not rewritten or ses_identities.covers(config.ses_identities, rewritten)):
        return None
    return replies.soften(f"553 5.7.1 <{written}>: Sender address rejected: not a verified "
                          "SES identity", config.soft_bounce)


def check_recipient(config: Config, client_address: str, recipient: Recipient,
                    rewrites: Rewrites, login: str | None = None,
                    sender: str = "") -> str | None:
    """The RCPT TO decision: None to accept, or the reply that rejects (soft_bounce applied).
    login is the client's SASL user name (None: not authenticated).

    As in Postfix: smtpd_relay_restrictions, then smtpd_recipient_restrictions, then the
    implicit reject_unlisted_recipient for virtual_alias_domains and relay_recipient_maps
    (smtpd_reject_unlisted_recipient = yes), which applies to trusted clients too.
    """
    for restrictions in (config.smtpd_relay_restrictions, config.smtpd_recipient_restrictions):
        reply = _evaluate(config, restrictions, client_address, recipient, rewrites, login,
                          sender)
        if reply:
            return replies.soften(reply, config.soft_bounce)
    reply = _unknown_user(config, recipient, rewrites)
    return replies.soften(reply, config.soft_bounce) if reply else None
