"""What SES says about the account at a cold start: sandbox or production, the maximum
send rate, and whether ses_bounce_sender can send.

GetAccount and GetEmailIdentity are read-only and cheap; their failure (no permission,
an emulation without GetAccount) only means the worker knows less: it logs so and goes
on with the configured rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sesrelay.aws import error_code

# Errors that mean "the answer is not available", not "the account is broken". moto's
# in-process emulation raises NotImplementedError for GetAccount (its server answers 500).
UNAVAILABLE = (ClientError, BotoCoreError, NotImplementedError)


@dataclass(frozen=True)
class Account:
    """GetAccount's answer, as far as the worker needs it."""

    production_access: bool
    max_send_rate: float  # recipients per second
    max_24_hour_send: float
    sending_enabled: bool


def read_account(ses: Any) -> Account | str:
    """The account's sending limits, or why they could not be read."""
    try:
        answer = ses.get_account()
    except UNAVAILABLE as exc:
        return f"{error_code(exc) or type(exc).__name__}: {exc}"
    quota = answer.get("SendQuota", {})
    return Account(production_access=bool(answer.get("ProductionAccessEnabled")),
                   max_send_rate=float(quota.get("MaxSendRate", 0.0)),
                   max_24_hour_send=float(quota.get("Max24HourSend", 0.0)),
                   sending_enabled=bool(answer.get("SendingEnabled", True)))


def describe(account: Account) -> str:
    """One sentence about the account for the cold-start log line."""
    mode = ("production access" if account.production_access else
            "in the SES sandbox: SES sends only to verified recipients, and refuses others "
            "(held as a configuration error, never bounced)")
    return (f"SES account {mode}; max send rate {account.max_send_rate:g}/s, "
            f"{account.max_24_hour_send:g} per 24 h"
            + ("" if account.sending_enabled else "; sending is DISABLED for the account"))


def identity_verified(ses: Any, identity: str) -> bool | str:
    """True or False as SES says, or why it could not be asked."""
    try:
        answer = ses.get_email_identity(EmailIdentity=identity)
    except UNAVAILABLE as exc:
        if error_code(exc) == "NotFoundException":
            return False
        return f"{error_code(exc) or type(exc).__name__}: {exc}"
    # VerificationStatus SUCCESS is what verified means; VerifiedForSendingStatus says
    # the same for sending (an emulation may set only the first).
    return bool(answer.get("VerifiedForSendingStatus")
                or answer.get("VerificationStatus") == "SUCCESS")


def check_bounce_sender(ses: Any, address: str) -> tuple[bool | None, str]:
    """(True, "") when ses_bounce_sender can send; (False, the problem) when SES says
    neither its address nor its domain is a verified identity; (None, why) when SES could
    not be asked. SES accepts a sender whose address or domain is verified."""
    domain = address.rpartition("@")[2]
    answers = [identity_verified(ses, identity) for identity in (address, domain)]
    if any(answer is True for answer in answers):
        return True, ""
    unknown = [answer for answer in answers if isinstance(answer, str)]
    if unknown:
        return None, f"could not check ses_bounce_sender <{address}>: {unknown[0]}"
    return False, (f"ses_bounce_sender <{address}> is not a verified SES identity (neither "
                   f"the address nor {domain}): bounces cannot be sent until {domain} or "
                   "the address is verified in SES")
