"""Retry delays: Postfix's exponential backoff, applied as SQS visibility timeouts.

Postfix doubles the wait between delivery attempts from minimal_backoff_time up to
maximal_backoff_time. The worker does the same with the SQS record's visibility
timeout, keyed on ApproximateReceiveCount (1 on the first receive), with jitter so
that messages deferred together (a throttled batch) do not all return together.
"""

from __future__ import annotations

import random

# SQS refuses a visibility timeout beyond 12 hours, counted from the receive. The
# Lambda may already have held the record for up to its 15-minute maximum run time.
SQS_MAX_VISIBILITY = 12 * 3600
LAMBDA_MAX_RUNTIME = 15 * 60
MAX_DELAY = SQS_MAX_VISIBILITY - LAMBDA_MAX_RUNTIME
JITTER = 0.1  # +-10 %


def _jittered(base: float, low: int, high: int, rng: random.Random) -> int:
    delay = base * rng.uniform(1 - JITTER, 1 + JITTER)
    return int(min(max(delay, low), high, MAX_DELAY))


def retry_delay(receive_count: int, minimal: int, maximal: int,
                rng: random.Random | None = None) -> int:
    """Seconds until a record deferred on its receive_count-th receive is tried again:
    minimal * 2**(receive_count-1), capped at maximal, +-10 % jitter kept within
    [minimal, maximal] and under SQS's 12-hour limit."""
    rng = rng or random.Random()
    exponent = min(max(receive_count, 1) - 1, 32)  # 2**32 * anything is past any cap
    return _jittered(min(minimal * 2 ** exponent, maximal), minimal, maximal, rng)


def paused_delay(minimal: int, maximal: int, rng: random.Random | None = None) -> int:
    """Seconds until a record held by a mail system configuration error (sending
    paused, access denied, an identity not verified) is tried again: always the longest
    backoff, since nothing will get through until an operator acts."""
    return _jittered(maximal, minimal, maximal, rng or random.Random())
