"""What one Lambda execution environment keeps between invocations: its share of the
account's send rate (one token bucket), what SES said about the account, and when it
last said that mail is held by a configuration error.

Lambda runs one invocation at a time in an execution environment and keeps the module
loaded between them, so this state is per environment: the worker runs in at most
sesrelay.send_rate.CONCURRENCY_ENV of them at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ses_worker.account import Account, check_bounce_sender, describe, read_account
from ses_worker.observability import count, logger
from ses_worker.ratelimit import RecipientRateLimiter
from sesrelay.config import Config
from sesrelay.send_rate import CONCURRENCY_ENV, worker_share
from sesrelay.telemetry import CONFIGURATION_ERROR

# How often the account's limits are read again (a raised quota, production access
# granted, a sending pause lifted): GetAccount is free, once per 5 minutes per
# environment is nothing.
ACCOUNT_REFRESH = 300.0
# At most one log line per this many seconds says mail is held by a configuration error.
ALERT_INTERVAL = 60.0


def concurrency() -> int:
    """How many execution environments may run the worker at once (1 when not set)."""
    try:
        return max(1, int(os.environ.get(CONCURRENCY_ENV) or 1))
    except ValueError:
        return 1


class ConfigurationAlert:
    """Counts messages held by a configuration error and says when to log about them:
    once per ALERT_INTERVAL, not once per message. Thread-safe."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._held = 0

    def held(self) -> int | None:
        """Count one held message; the number held since the last line when a line is
        due now, else None."""
        with self._lock:
            self._held += 1
            now = self._clock()
            if self._last is not None and now - self._last < ALERT_INTERVAL:
                return None
            self._last, held, self._held = now, self._held, 0
            return held


class Warm:
    """The state of one execution environment. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self._clock = clock
        self._lock = threading.Lock()
        self.limiter = RecipientRateLimiter(0, clock=clock, sleep=sleep)
        self.alert = ConfigurationAlert(clock)
        self.account: Account | None = None
        self._account_read: float | None = None
        self._bounce_sender_checked = False

    def prepare(self, config: Config, ses: Any) -> None:
        """At the start of each invocation: read the account at a cold start and every
        ACCOUNT_REFRESH seconds, check ses_bounce_sender once, and set the bucket's rate
        to this environment's share."""
        with self._lock:
            now = self._clock()
            if self._account_read is None or now - self._account_read >= ACCOUNT_REFRESH:
                self._read_account(ses, cold=self._account_read is None)
                self._account_read = now
            if not self._bounce_sender_checked:
                self._bounce_sender_checked = True
                self._check_bounce_sender(ses, config.ses_bounce_sender)
            rate = self.account.max_send_rate if self.account else None
            self.limiter.set_rate(worker_share(config.ses_max_send_rate, rate, concurrency()))

    def _read_account(self, ses: Any, cold: bool) -> None:
        answer = read_account(ses)
        if isinstance(answer, str):
            if cold:
                logger.warning(f"SES GetAccount failed ({answer}): the send rate is "
                               "ses_max_send_rate alone, sandbox not detected")
            return
        if cold or answer != self.account:
            log = logger.info if answer.production_access else logger.warning
            log(describe(answer), extra={"ses_production_access": answer.production_access,
                                         "ses_max_send_rate": answer.max_send_rate})
        self.account = answer

    @staticmethod
    def _check_bounce_sender(ses: Any, address: str) -> None:
        verified, problem = check_bounce_sender(ses, address)
        if verified is None:
            logger.warning(problem)
        elif not verified:
            logger.error(f"mail system configuration error: {problem}",
                         extra={"dsn": "4.3.5"})
            count(CONFIGURATION_ERROR)


WARM = Warm()

