"""The SES v2 SendEmail call: request parameters, recipient chunks and tags."""

from __future__ import annotations

import re
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ses_worker.errors import classify
from ses_worker.observability import milliseconds
from ses_worker.ratelimit import RecipientRateLimiter
from sesrelay.config import Config
from sesrelay.telemetry import SES_LATENCY

# SES v2 SendEmail accepts at most 50 destination addresses per call.
MAX_RECIPIENTS_PER_CALL = 50
QUEUE_ID_TAG = "sesrelay-queue-id"
# SES message tags: ASCII letters, digits, '_' and '-', at most 256 characters.
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_TAG_MAX = 256


def recipient_chunks(recipients: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The recipients in SendEmail-sized chunks, each address once (a duplicate RCPT TO
    must not become a duplicate delivery)."""
    unique = tuple(dict.fromkeys(recipients))
    return [unique[i:i + MAX_RECIPIENTS_PER_CALL]
            for i in range(0, len(unique), MAX_RECIPIENTS_PER_CALL)]


def tag_value(text: str) -> str:
    """text made acceptable as an SES tag value."""
    return _TAG_UNSAFE.sub("_", text)[:_TAG_MAX] or "_"


def email_tags(config: Config, queue_id: str) -> list[dict[str, str]]:
    """The configured tags plus the queue ID tag (which wins over a configured tag of
    the same name: SES rejects duplicate names)."""
    tags = [{"Name": t.name, "Value": t.value} for t in config.ses_email_tags
            if t.name != QUEUE_ID_TAG]
    tags.append({"Name": QUEUE_ID_TAG, "Value": tag_value(queue_id)})
    return tags


class SesSender:
    """Sends raw messages through SES v2 at no more than the configured rate."""

    def __init__(self, config: Config, ses: Any, limiter: RecipientRateLimiter):
        self.config = config
        self.ses = ses
        self.limiter = limiter

    def send(self, raw: bytes, sender: str, recipients: list[str], queue_id: str) -> str:
        """Send raw to recipients with sender as envelope sender ("" for <>); return the
        SES MessageId. Raises SendFailure."""
        request: dict[str, Any] = {
            "Destination": {"ToAddresses": recipients},
            "Content": {"Raw": {"Data": raw}},
            "EmailTags": email_tags(self.config, queue_id),
        }
        # SES has no null envelope sender: without FromEmailAddress it uses the From:
        # header, and its own bounce address as MAIL FROM.
        if sender:
            request["FromEmailAddress"] = sender
        if self.config.ses_configuration_set:
            request["ConfigurationSetName"] = self.config.ses_configuration_set
        if self.config.ses_identity_arn:
            request["FromEmailAddressIdentityArn"] = self.config.ses_identity_arn
        self.limiter.acquire(len(recipients))
        started = time.monotonic()
        try:
            response = self.ses.send_email(**request)
        except (ClientError, BotoCoreError) as exc:
            raise classify(exc) from exc
        finally:
            milliseconds(SES_LATENCY, (time.monotonic() - started) * 1000)
        return str(response["MessageId"])
