"""A time budget per invocation (issue 21): the worker starts no send the rest of its
invocation cannot hold (its turn under the rate limit, then the call's worst case); the
records it did not finish go back to the queue at once, as batch item failures that do
not advance their retry schedule, and nothing is sent twice when they come back."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from ses_worker.handler import deliver_batch
from ses_worker.observability import metrics
from ses_worker.warm import Warm
from sesrelay.dev import LocalLambdaContext
from sesrelay.timeouts import INVOCATION_MARGIN, ses_send_worst_case
from tests.worker.conftest import Spool, emf_metrics, message, sent_messages

Logs = Callable[[], list[dict[str, Any]]]
RATE = 50  # recipients per second
# Seconds an invocation has for waiting on the rate limit: a 50-recipient call (1 s at
# 50/s from an empty bucket) fits, a second one after it (1 s more) does not.
RATE_BUDGET = 1.8


pytestmark = pytest.mark.usefixtures("no_metrics_left")


class FakeTime:
    """The invocation's time: it passes only when the worker waits for the rate limit
    (each wait adds up, as if the threads waited one after another), so the machine's
    own speed cannot change what fits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def invoke(spool: Spool, event: dict[str, Any], environment: Warm, fake: FakeTime) -> set[str]:
    """Run the handler with RATE_BUDGET seconds to spare past the slowest send, deleting
    the records it does not report as failures; return those it does."""
    size = max(len(r["body"]) for r in event["Records"])
    deadline = fake.now + ses_send_worst_case(size) + INVOCATION_MARGIN + RATE_BUDGET
    context = LocalLambdaContext()
    context.get_remaining_time_in_millis = (  # type: ignore[method-assign]
        lambda: max(0, int((deadline - fake.now) * 1000)))
    result = deliver_batch(event, context, environment)
    metrics.flush_metrics()  # as the handler's decorator does
    return spool.settle(event, result)


def test_sends_that_do_not_fit_come_back_unsent_and_go_out_once_on_redelivery(
        spool: Spool, monkeypatch: pytest.MonkeyPatch, worker_logs: Logs,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SESRELAY_SES_MAX_SEND_RATE", str(RATE))
    fake = FakeTime()
    environment = Warm(clock=fake.clock, sleep=fake.sleep)
    many = [f"user{i:03}@example.org" for i in range(100)]  # two calls of 50
    spool.put(message(), many)
    for i in range(3):
        spool.put(message(), [f"single{i}@example.org"])
    event = spool.receive()
    [big] = [r["messageId"] for r in event["Records"] if "user000@" in r["body"]]

    assert invoke(spool, event, environment, fake) == {big}

    sent = [d for m in sent_messages() for d in m.destinations]
    assert sorted(sent) == sorted(many[:50] + [f"single{i}@example.org" for i in range(3)])
    # Back in the queue at once, not after a backoff delay, and not counted as a deferral.
    assert spool.waiting() == 1 and spool.hidden() == 0
    counted = emf_metrics(capsys.readouterr().out)
    assert sum(counted["Sent"]) == 3 and "Deferred" not in counted
    [line] = [line for line in worker_logs() if line["message"].startswith("not started")]
    assert "too little time left" in line["message"]

    fake.now += 1.0  # the event source's next poll
    event = spool.receive()
    assert event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"
    assert invoke(spool, event, environment, fake) == set()

    sent = [d for m in sent_messages() for d in m.destinations]
    assert sorted(sent) == sorted(many + [f"single{i}@example.org" for i in range(3)])
    assert spool.waiting() == spool.hidden() == 0
