"""Error classes in Postfix's terms: what a failed send means for the message.

Postfix sorts every delivery failure into "deferred" (try again later) or "bounced"
(return to sender). SES adds a third situation an operator must act on: sending paused
for the whole account. Anything this module does not recognise defers, as Postfix
does with an unexpected problem: retrying is safe, losing mail is not.
"""

from __future__ import annotations

import enum

from botocore.exceptions import BotoCoreError, ClientError

from sesrelay.aws import certainly_not_done, error_code


class ErrorClass(enum.Enum):
    """What to do about a failed send."""

    THROTTLED = "throttled"  # SES rate or quota: defer with backoff
    TRANSIENT = "transient"  # 5xx, network, unknown: defer with backoff
    PAUSED = "paused"  # account-wide stop: defer slowly and alarm
    UNVERIFIED = "unverified"  # identity not (yet) verified: defer a few times, then bounce
    PERMANENT = "permanent"  # SES will never take it: bounce

    @property
    def defers(self) -> bool:
        """True if the message is retried later rather than bounced now."""
        return self is not ErrorClass.PERMANENT


THROTTLING_CODES = frozenset({
    "TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException",
})
PAUSED_CODES = frozenset({
    "AccountSuspendedException", "SendingPausedException",
    # The custom MAIL FROM domain lost its verification: every message fails until an
    # operator fixes DNS, so it is an account-wide stop, not the sender's fault.
    "MailFromDomainNotVerifiedException",
})
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
    if code in PAUSED_CODES:
        return SendFailure(ErrorClass.PAUSED, code, message)
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
