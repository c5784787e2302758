"""The SES v2 SendEmail call: request parameters (the environment's, and what the
message's X-SES-* headers asked: sesrelay.ses_headers), recipient chunks, tags, and which
failures may be retried at once.

botocore never retries a SendEmail here (sesrelay.timeouts.WORKER_SES): SES has no
idempotency token, and a retry after a lost answer would be a second copy. The sender
retries, within the same call to send(), only what certainly did not reach SES:
throttling answers and requests that never left (no connection). Anything else that
fails without SES's verdict is SendUnknown, for the ledger to settle.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ses_worker.errors import ErrorClass, SendFailure, SendUnknown, classify_send
from ses_worker.observability import milliseconds
from ses_worker.ratelimit import RecipientRateLimiter
from sesrelay.config import Config
from sesrelay.send_rate import MAX_RECIPIENTS_PER_CALL
from sesrelay.ses_headers import NO_REQUEST, RESERVED_TAGS, SesRequest
from sesrelay.telemetry import SES_LATENCY
from sesrelay.trail import ATTEMPT_TAG, QUEUE_ID_TAG

# SES message tags: ASCII letters, digits, '_' and '-', at most 256 characters.
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_TAG_MAX = 256
# Immediate retries of a send that certainly did not reach SES (throttled, or no
# connection), with jittered pauses, as botocore's standard mode would have made.
QUICK_RETRIES = 2
QUICK_RETRY_PAUSE = 0.5


def recipient_chunks(recipients: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The recipients in SendEmail-sized chunks, each address once (a duplicate RCPT TO
    must not become a duplicate delivery)."""
    unique = tuple(dict.fromkeys(recipients))
    return [unique[i:i + MAX_RECIPIENTS_PER_CALL]
            for i in range(0, len(unique), MAX_RECIPIENTS_PER_CALL)]


def tag_value(text: str) -> str:
    """text made acceptable as an SES tag value."""
    return _TAG_UNSAFE.sub("_", text)[:_TAG_MAX] or "_"


@dataclass(frozen=True)
class Outgoing:
    """What one SendEmail sends: the raw message, and what its X-SES-* headers (removed
    from raw) asked of SES."""

    raw: bytes
    request: SesRequest = NO_REQUEST


def email_tags(config: Config, queue_id: str, attempt: str,
               request: SesRequest = NO_REQUEST) -> list[dict[str, str]]:
    """One EmailTags list: the configured tags, the message's X-SES-MESSAGE-TAGS (whose
    names never repeat those: sesrelay.ses_headers), then the queue ID and attempt tags
    (which win over configured tags of the same names: SES rejects duplicate names).
    SES returns them in every event about the message, which is how an event finds its
    send."""
    tags = [{"Name": t.name, "Value": t.value} for t in config.ses_email_tags
            if t.name not in RESERVED_TAGS]
    tags += [{"Name": t.name, "Value": t.value} for t in request.tags]
    tags.append({"Name": QUEUE_ID_TAG, "Value": tag_value(queue_id)})
    tags.append({"Name": ATTEMPT_TAG, "Value": tag_value(attempt)})
    return tags


class NotStarted(Exception):
    """The send was not started: its turn under the rate limit would come too late for
    this invocation. SES was not called."""


class SesSender:
    """Sends raw messages through SES v2 at no more than the configured rate."""

    def __init__(self, config: Config, ses: Any, limiter: RecipientRateLimiter,
                 sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.ses = ses
        self.limiter = limiter
        self._sleep = sleep

    def send(self, outgoing: Outgoing, sender: str, recipients: list[str], queue_id: str,
             attempt: str, time_left: Callable[[], float]) -> str:
        """Send outgoing to recipients with sender as envelope sender ("" for <>); return
        the SES MessageId. Raises SendFailure when SES certainly did not accept it, and
        SendUnknown when it may have, and NotStarted when its turn under the rate limit
        would come after time_left(), the seconds this invocation can still wait before
        a send (or a retry) must have started."""
        request: dict[str, Any] = {
            "Destination": {"ToAddresses": recipients},
            "Content": {"Raw": {"Data": outgoing.raw}},
            "EmailTags": email_tags(self.config, queue_id, attempt, outgoing.request),
        }
        # SES has no null envelope sender: without FromEmailAddress it uses the From:
        # header, and its own bounce address as MAIL FROM.
        if sender:
            request["FromEmailAddress"] = sender
        if self.config.ses_configuration_set:
            request["ConfigurationSetName"] = self.config.ses_configuration_set
        if self.config.ses_identity_arn:
            request["FromEmailAddressIdentityArn"] = self.config.ses_identity_arn
        last: SendFailure | None = None
        for retry in range(QUICK_RETRIES + 1):
            if self.limiter.acquire(len(recipients), budget=time_left()) is None:
                if last is not None:  # a quick retry that no longer fits: it stands
                    raise last
                raise NotStarted(f"too little time left in this invocation to wait for "
                                 f"{len(recipients)} recipient(s) at {self.limiter.rate:g}/s")
            started = time.monotonic()
            try:
                response = self.ses.send_email(**request)
            except (ClientError, BotoCoreError) as exc:
                outcome = classify_send(exc)
                if isinstance(outcome, SendUnknown) or not self._quick_retry(
                        outcome, retry, time_left):
                    raise outcome from exc
                last = outcome
                continue
            finally:
                milliseconds(SES_LATENCY, (time.monotonic() - started) * 1000)
            return str(response["MessageId"])
        raise AssertionError("unreachable")  # the last retry raises or returns

    def _quick_retry(self, failure: SendFailure, retry: int,
                     time_left: Callable[[], float]) -> bool:
        """Pause and return True if a throttled or unsent request may be tried again now."""
        retryable = failure.kind is ErrorClass.THROTTLED or failure.code in (
            "EndpointConnectionError", "ConnectTimeoutError")
        pause = QUICK_RETRY_PAUSE * (2 ** retry) * random.uniform(0.5, 1.5)
        if not retryable or retry >= QUICK_RETRIES or time_left() < pause:
            return False
        self._sleep(pause)
        return True
