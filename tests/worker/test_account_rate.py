"""One send rate for the whole account (issue 21): concurrent execution environments of
the worker together stay at or below the account's MaxSendRate, read from GetAccount.

The issue asks for 30 s at 14/s; the suite measures 4.5 s (63 recipients) at 14/s, which
shows the same bound in a seventh of the time: every environment starts with an empty
bucket, so the bound holds from the first send, not only on average over a long window.
Messages have seven recipients each (SES counts recipients), so the emulation's own
work per message stays small beside the rate limit on a loaded machine.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ses_worker.handler import deliver_batch
from ses_worker.warm import Warm
from sesrelay.dev import LocalLambdaContext
from sesrelay.send_rate import CONCURRENCY_ENV, MAX_RECIPIENTS_PER_CALL
from tests.worker.conftest import QUEUE, Spool, emulate_get_account, message, sent_messages, sesv2

ACCOUNT_RATE = 14.0
ENVIRONMENTS = 3
PER_MESSAGE = 7
# One batch of three messages for each environment: an uneven split (one environment
# busy while the others idle) would show the cost of a fixed share, not the bound.
BATCH = 3
RECIPIENTS = ENVIRONMENTS * BATCH * PER_MESSAGE


pytestmark = pytest.mark.usefixtures("no_metrics_left")


class AccountRateLimit:
    """SES's MaxSendRate, modelled as a bucket refilled at the rate that holds one
    second's worth of recipients or one full SendEmail (50), whichever is more: SES must
    take a 50-recipient call at 14/s. A send beyond it is refused with SES's throttling
    error. (Calls of separate environments can coincide: three 7-recipient calls at
    once exceed one second's worth at 14/s, though not the rate.)"""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate, MAX_RECIPIENTS_PER_CALL)
        self.tokens = self.capacity
        self.last = time.monotonic()
        self.lock = threading.Lock()
        self.sends: list[tuple[float, int]] = []
        self.throttled = 0

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        recipients = len(params["Destination"]["ToAddresses"])
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens < recipients:
                self.throttled += 1
                raise ClientError({"Error": {"Code": "TooManyRequestsException",
                                             "Message": "Maximum sending rate exceeded."},
                                   "ResponseMetadata": {"HTTPStatusCode": 429}}, "SendEmail")
            self.tokens -= recipients
            self.sends.append((now, recipients))


def run_environment(spool: Spool, environment: Warm, errors: list[BaseException]) -> None:
    """One execution environment: invocations one after another while mail waits, each
    record not reported as failed deleted, as the event source mapping does."""
    try:
        while True:
            event = spool.receive(BATCH)
            if not event["Records"]:
                return
            spool.settle(event, deliver_batch(event, LocalLambdaContext(), environment))
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def test_concurrent_workers_together_keep_to_the_accounts_rate(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    # The configured rate is only an upper bound: the account's 14/s is lower.
    monkeypatch.setenv("SESRELAY_SES_MAX_SEND_RATE", "100")
    monkeypatch.setenv(CONCURRENCY_ENV, str(ENVIRONMENTS))
    emulate_get_account(max_send_rate=ACCOUNT_RATE)
    ses = AccountRateLimit(ACCOUNT_RATE)
    sesv2().meta.events.register("before-parameter-build.sesv2.SendEmail", ses)
    # A record one environment holds is not handed to another meanwhile.
    spool.sqs.set_queue_attributes(QueueUrl=spool.queue_url,
                                   Attributes={"VisibilityTimeout": "120"})
    assert spool.queue_url.endswith(QUEUE)
    for i in range(0, RECIPIENTS, PER_MESSAGE):
        spool.put(message(), [f"user{n:02}@example.org" for n in range(i, i + PER_MESSAGE)])

    errors: list[BaseException] = []
    environments = [Warm() for _ in range(ENVIRONMENTS)]
    threads = [threading.Thread(target=run_environment, args=(spool, e, errors))
               for e in environments]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors

    assert ses.throttled == 0
    assert sorted(d for m in sent_messages() for d in m.destinations) == [
        f"user{i:02}@example.org" for i in range(RECIPIENTS)]  # each once
    assert all(e.limiter.rate == pytest.approx(ACCOUNT_RATE / ENVIRONMENTS)
               for e in environments)
    # At or below the account's rate, from the start (the emulation's own work makes it
    # lower on a loaded machine: 7.7-8.9/s measured on two shared cores, so no lower
    # bound is asserted; each environment's share is, above).
    elapsed = ses.sends[-1][0] - start
    assert sum(n for _, n in ses.sends) / elapsed <= ACCOUNT_RATE
