"""Rate control: at most ses_max_send_rate recipients per second within an invocation.

SES counts its maximum send rate in recipients, not calls, so a 50-recipient call uses
50 tokens. Many threads share one bucket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RecipientRateLimiter:
    """A thread-safe token bucket refilled at `rate` tokens per second, holding at most
    one second's worth.

    A caller may take more tokens than the bucket holds: the balance goes negative and
    the caller sleeps until it would be paid back. Later callers see the debt and wait
    behind it, so the long-run rate holds whatever the call sizes.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._capacity = rate
        self._tokens = rate
        self._last = clock()

    def acquire(self, recipients: int) -> float:
        """Wait until `recipients` may be sent; return the seconds waited. A rate of 0
        means no limit."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= recipients
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        # Sleep outside the lock: the debt is already booked, so others queue behind it.
        if wait:
            self._sleep(wait)
        return wait
