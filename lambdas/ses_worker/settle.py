"""Settling a send whose outcome is unknown, from SES's own events.

Every SendEmail carries an attempt ID tag, and SES repeats a message's tags in each event
it publishes about it (the configuration set's event destination, stored in the trail by
the events handler). An event for exactly that attempt proves what SES did: any SEND,
DELIVERY, BOUNCE, COMPLAINT or DELIVERY_DELAY event means SES accepted the message, a
REJECT event that it refused it. SES documents no delivery guarantee or latency for
events, so their absence proves nothing: the worker waits ses_unknown_outcome_wait for
one, then does what ses_unknown_outcome says.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from ses_worker.observability import logger
from sesrelay.config import Config
from sesrelay.trail import TrailReader


class Verdict(enum.Enum):
    """What to do about a send in doubt."""

    ACCEPTED = "accepted"  # an event shows SES accepted it: it is sent
    REJECTED = "rejected"  # a REJECT event: SES refused it
    WAIT = "wait"  # no deciding event yet: look again later
    RESEND = "resend"  # ses_unknown_outcome = resend
    ASSUME_SENT = "assume_sent"  # ses_unknown_outcome = assume_sent


@dataclass(frozen=True)
class Settlement:
    """The verdict, with the SES MessageId (ACCEPTED) or SES's reason (REJECTED)."""

    verdict: Verdict
    message_id: str = ""
    reason: str = ""


class Settler:
    """Settles sends in doubt for one invocation."""

    def __init__(self, config: Config, reader: TrailReader | None) -> None:
        self.config = config
        self.reader = reader

    @property
    def events_expected(self) -> bool:
        """True when SES's events reach the trail (a configuration set and a trail)."""
        return bool(self.config.ses_configuration_set and self.reader)

    def settle(self, queue_id: str, attempt: str, attempt_at: float,
               now: float | None = None) -> Settlement:
        """The verdict on the send `attempt` of queue_id, begun at attempt_at."""
        now = time.time() if now is None else now
        if attempt and self.reader is not None:
            try:
                events = self.reader.events_for_attempt(queue_id, attempt)
            except (BotoCoreError, ClientError) as exc:
                logger.warning(f"could not read SES's events for attempt {attempt}: {exc}")
                return Settlement(Verdict.WAIT, reason=f"the trail could not be read: {exc}")
            accepted = [e for e in events if e.settles_as_accepted]
            if accepted:
                return Settlement(Verdict.ACCEPTED, message_id=accepted[0].ses_message_id,
                                  reason=f"SES's {accepted[0].event_type} event")
            rejected = [e for e in events if e.settles_as_accepted is False]
            if rejected:
                return Settlement(Verdict.REJECTED, message_id=rejected[0].ses_message_id,
                                  reason=rejected[0].detail or "rejected by SES")
        if (self.events_expected and attempt
                and now - attempt_at < self.config.ses_unknown_outcome_wait):
            return Settlement(Verdict.WAIT, reason="waiting for SES's events")
        if self.config.ses_unknown_outcome == "assume_sent":
            return Settlement(Verdict.ASSUME_SENT, reason="no event settled it")
        return Settlement(Verdict.RESEND, reason="no event settled it")
