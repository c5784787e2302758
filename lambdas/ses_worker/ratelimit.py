"""Rate control: at most one execution environment's share of the account's send rate
(sesrelay.send_rate), in recipients per second.

SES counts its maximum send rate in recipients, not calls, so a 50-recipient call uses
50 tokens. The bucket belongs to the execution environment, not the invocation: it
lives across invocations (ses_worker.warm), so a stream of short invocations cannot
restart it full each time, and all threads of an invocation share it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RecipientRateLimiter:
    """A thread-safe token bucket refilled at `rate` tokens per second, holding at most
    one second's worth, and empty when created.

    Starting empty matters: concurrent environments that start together (a cold start,
    a burst of mail) then add up to the account's rate from their first send, where
    full buckets would add a second's worth of burst on top.

    A caller may take more tokens than the bucket holds: the balance goes negative and
    the caller sleeps until it would be paid back. Later callers see the debt and wait
    behind it, so the long-run rate holds whatever the call sizes.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.rate = rate
        self._tokens = 0.0
        self._last = clock()

    def set_rate(self, rate: float) -> None:
        """Change the rate (the account's rate was read again); the balance is kept."""
        with self._lock:
            self._refill()
            self.rate = rate

    def _refill(self) -> None:
        now = self._clock()
        if self.rate > 0:
            self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def acquire(self, recipients: int, budget: float = math.inf) -> float | None:
        """Wait until `recipients` may be sent; return the seconds waited. None, with
        nothing taken, when the wait would be longer than budget seconds. A rate of 0
        means no limit."""
        with self._lock:
            if self.rate <= 0:
                return 0.0
            self._refill()
            after = self._tokens - recipients
            wait = -after / self.rate if after < 0 else 0.0
            if wait > budget:
                return None
            self._tokens = after
        # Sleep outside the lock: the debt is already booked, so others queue behind it.
        if wait:
            self._sleep(wait)
        return wait
