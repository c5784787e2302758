"""The relay's answers about one address, as functions of the configuration: the sender
verdict (MAIL FROM, or RCPT TO with smtpd_delay_reject) and the recipient verdict (RCPT TO).

The relay answers its clients with these, and `sesrelay config check --address` prints
them, so the command cannot disagree with the relay.
"""

from __future__ import annotations

from sesrelay.config import Config
from sesrelay.spool import MAX_ADDRESS_LENGTH
from smtp_relay import replies
from smtp_relay.cleanup import Cleanup, unroute
from smtp_relay.policy import Recipient, check_recipient, check_sender, parse_recipient


def mail_from_address(config: Config, address: str) -> str:
    """The sender as the relay keeps it: site!user and user%domain without @ become
    user@domain (cleanup.unroute), a bare name gets @myorigin; "<>" (the null sender)
    stays as it is."""
    if address != "<>" and "@" not in address:
        address = unroute(config, address)
        if "@" not in address:
            return f"{address}@{config.myorigin}"
    return address


def recipient_address(config: Config, written: str) -> Recipient:
    """The recipient as the relay keeps it. One written site!user or user%domain (no @)
    goes to user@domain (cleanup.unroute), as in Postfix, and counts as sender-routed
    for the relay rule: never an authorized destination for an untrusted client."""
    unrouted = unroute(config, written)
    if unrouted == written:
        return parse_recipient(written, config.myorigin)
    return Recipient(written, unrouted, source_routed=True)


def sender_reply(config: Config, cleanup: Cleanup, mail_from: str) -> str | None:
    """The SES sender verdict for a MAIL FROM address ("<>": the null sender): None to
    accept, or the reply that rejects."""
    sender = "" if mail_from == "<>" else mail_from
    return check_sender(config, sender, cleanup.sender(sender) if sender else "")


def recipient_reply(config: Config, cleanup: Cleanup, client_address: str, address: str,
                    login: str | None, mail_from: str) -> tuple[Recipient, str | None]:
    """The RCPT TO verdict for address (already through the address parser) from a
    client, after MAIL FROM mail_from: the recipient, and None or the reply that rejects.
    With smtpd_delay_reject = yes the sender's verdict comes first, as in Postfix."""
    recipient = recipient_address(config, address)
    if (not recipient.domain or not recipient.local_part
            or len(recipient.address) > MAX_ADDRESS_LENGTH):
        return recipient, replies.BAD_ADDRESS
    reply = sender_reply(config, cleanup, mail_from) if config.smtpd_delay_reject else None
    reply = reply or check_recipient(config, client_address, recipient, cleanup.knows, login,
                                     "" if mail_from == "<>" else mail_from)
    return recipient, reply
