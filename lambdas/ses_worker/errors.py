"""Error classes in Postfix's terms: what a failed send means for the message.

Postfix sorts every delivery failure into "deferred" (try again later) or "bounced"
(return to sender), and knows a third case: a mail system configuration error (4.3.5),
which is about the system, not the message, so mail stays queued until an operator
fixes it. Here that is SES refusing the account or its configuration: IAM denies the
send, sending is paused or the account suspended, the MAIL FROM domain, a configured
sending identity or ses_bounce_sender is not verified, or the account is in the SES
sandbox and a recipient is not verified. Anything this module does not recognise
defers, as Postfix does with an unexpected problem: retrying is safe, losing mail is not.
"""

from __future__ import annotations

import enum
import re

from botocore.exceptions import BotoCoreError, ClientError

from sesrelay import ses_identities
from sesrelay.aws import certainly_not_done, error_code


class ErrorClass(enum.Enum):
    """What to do about a failed send."""

    THROTTLED = "throttled"  # SES rate or quota: defer with backoff
    TRANSIENT = "transient"  # 5xx, network, unknown: defer with backoff
    CONFIGURATION = "configuration"  # account or configuration: hold, never bounce, alarm
    UNVERIFIED = "unverified"  # identity not (yet) verified: defer a few times, then bounce
    PERMANENT = "permanent"  # SES will never take it: bounce

    @property
    def defers(self) -> bool:
        """True if the message is retried later rather than bounced now."""
        return self is not ErrorClass.PERMANENT


THROTTLING_CODES = frozenset({
    "TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException",
})
CONFIGURATION_CODES = frozenset({
    "AccountSuspendedException", "SendingPausedException",
    # The custom MAIL FROM domain lost its verification: every message fails until an
    # operator fixes DNS, so it is an account-wide stop, not the sender's fault.
    "MailFromDomainNotVerifiedException",
    # IAM: the worker's role may not send (as this identity, or at all).
    "AccessDenied", "AccessDeniedException",
})
# RFC 3463: mail system configuration error (Postfix's wording for the same case).
CONFIGURATION_STATUS = "4.3.5"
# SES names the identities that failed its check: "Email address is not verified. The
# following identities failed the check in region US-EAST-1: a@b.example, c.example".
_FAILED_IDENTITIES = re.compile(r"failed the check in region [^:]*:(.*)$", re.IGNORECASE)
_ADDRESS = re.compile(r"[^\s,:;<>]+@[^\s,:;<>]+")
# Enhanced status codes (RFC 3463) for the DSN of each permanent SES error.
PERMANENT_STATUS = {
    "MessageRejected": "5.7.1",  # delivery not authorized, message refused
    "BadRequestException": "5.5.4",  # invalid command arguments
    "NotFoundException": "5.3.0",  # other mail system status (missing SES resource)
}
# How many receives an unverified identity is retried before it bounces: a new
# identity's verification can lag the first messages sent from it.
UNVERIFIED_MAX_RECEIVES = 3


class SendFailure(Exception):
    """A send that did not succeed, with its class and the SES diagnostic."""

    def __init__(self, kind: ErrorClass, code: str, message: str, status: str = "4.0.0"):
        super().__init__(f"{code}: {message}")
        self.kind = kind
        self.code = code
        self.message = message
        self.status = status

    @property
    def diagnostic(self) -> str:
        """The error as it appears in logs and in a DSN's Diagnostic-Code."""
        return f"{self.code}: {self.message}"


class SendUnknown(Exception):
    """A send whose outcome is unknown: its answer was lost or came too late, or SES
    answered 5xx. SES may have accepted it; it must not be repeated blindly."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def diagnostic(self) -> str:
        """The error as it appears in logs."""
        return f"{self.code}: {self.message}"


def classify_send(exc: ClientError | BotoCoreError) -> SendFailure | SendUnknown:
    """A failed SendEmail: a SendFailure when SES certainly did not accept it (it
    answered 4xx, or the request never left), else SendUnknown."""
    if not certainly_not_done(exc):
        return SendUnknown(error_code(exc) or type(exc).__name__, _text(exc))
    return classify(exc)


def _text(exc: ClientError | BotoCoreError) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
    return str(exc)


def classify(exc: ClientError | BotoCoreError) -> SendFailure:
    """Turn a boto3 error (from SES, or from S3 reading the message) into a SendFailure
    of the right class."""
    if isinstance(exc, BotoCoreError):  # connection refused, timeouts: never SES's verdict
        return SendFailure(ErrorClass.TRANSIENT, type(exc).__name__, str(exc))
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", ""))
    if code in THROTTLING_CODES:
        return SendFailure(ErrorClass.THROTTLED, code, message)
    if code in CONFIGURATION_CODES or "not authorized to perform" in message:
        return SendFailure(ErrorClass.CONFIGURATION, code, message, CONFIGURATION_STATUS)
    if code == "MessageRejected" and "not verified" in message.lower():
        return SendFailure(ErrorClass.UNVERIFIED, code, message, PERMANENT_STATUS[code])
    if code in PERMANENT_STATUS:
        return SendFailure(ErrorClass.PERMANENT, code, message, PERMANENT_STATUS[code])
    return SendFailure(ErrorClass.TRANSIENT, code, message)


def effective_class(failure: SendFailure, receive_count: int) -> ErrorClass:
    """The class that decides this attempt: an unverified identity is permanent once it
    has been retried UNVERIFIED_MAX_RECEIVES times, and deferred before that."""
    if failure.kind is ErrorClass.UNVERIFIED and receive_count >= UNVERIFIED_MAX_RECEIVES:
        return ErrorClass.PERMANENT
    return failure.kind


def failed_identities(message: str) -> list[str]:
    """The identities an SES "not verified" rejection names, lower-cased."""
    listed = _FAILED_IDENTITIES.search(message)
    if listed:
        return [i.strip().lower() for i in listed.group(1).split(",") if i.strip()]
    return [a.lower() for a in _ADDRESS.findall(message)]


def systemic(failure: SendFailure, sender: str, recipients: list[str],
             identities: tuple[str, ...], dsn: bool = False) -> SendFailure:
    """failure, or a configuration error when an identity SES found not verified is
    the system's fault rather than the sender's: a recipient (the account is in the SES
    sandbox), ses_bounce_sender (dsn: a bounce), or a sender that ses_identities says is
    verified. A sender outside ses_identities keeps its own class: its mail bounces."""
    if failure.kind is not ErrorClass.UNVERIFIED:
        return failure
    named = failed_identities(failure.message)
    cause = ""
    if any(r.lower() in named for r in recipients):
        cause = "the SES account is in the sandbox and a recipient is not verified"
    elif dsn:
        cause = f"ses_bounce_sender <{sender}> is not a verified SES identity"
    elif sender and ses_identities.covers(identities, sender):
        cause = (f"<{sender}> is covered by ses_identities but SES has not verified "
                 "its identity")
    if not cause:
        return failure
    return SendFailure(ErrorClass.CONFIGURATION, failure.code, f"{failure.message} ({cause})",
                       CONFIGURATION_STATUS)
