"""The call budgets add up: a drain plus the slowest store fits in ECS's stop timeout, and
the worker can start a send of the largest message in a fresh invocation."""

from __future__ import annotations

from sesrelay.config import SES_MAX_MESSAGE_SIZE
from sesrelay.timeouts import (
    DRAIN_SECONDS,
    STOP_TIMEOUT,
    WORKER_TIMEOUT,
    relay_store_worst_case,
    worker_timeout_needed,
)


def test_a_drain_and_the_slowest_store_fit_in_the_stop_timeout() -> None:
    assert DRAIN_SECONDS + relay_store_worst_case(SES_MAX_MESSAGE_SIZE) < STOP_TIMEOUT


def test_the_largest_message_can_be_sent_in_a_fresh_invocation() -> None:
    assert worker_timeout_needed(SES_MAX_MESSAGE_SIZE) < WORKER_TIMEOUT

