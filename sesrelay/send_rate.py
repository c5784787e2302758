"""One send rate for the whole account: how the SES maximum send rate is shared by the
worker's concurrent execution environments.

SES counts its maximum send rate (GetAccount's SendQuota.MaxSendRate) in recipients per
second, for the whole account and region. The worker runs in at most
`concurrency` execution environments at once (the SQS event source's
MaximumConcurrency), each with its own token bucket, so each may use a
1/concurrency share: together they cannot exceed the account's rate, whatever the load.
docs/WORKER.md says why this was chosen over a token bucket shared in DynamoDB.
"""

from __future__ import annotations

# SES v2 SendEmail accepts at most 50 destination addresses per call.
MAX_RECIPIENTS_PER_CALL = 50
# The worker function's environment variable that carries its event source's
# MaximumConcurrency (set by the CDK stack; unset, as under `sesrelay dev`: 1). Not
# SESRELAY_*: that prefix is for the parameters of the configuration model.
CONCURRENCY_ENV = "WORKER_MAX_CONCURRENCY"


def account_rate(configured: float, account: float | None) -> float:
    """Recipients per second all workers together may send: the account's MaxSendRate,
    bounded by the configured ses_max_send_rate when that is set (> 0). 0: no limit
    known (neither is set)."""
    limits = [rate for rate in (configured, account or 0.0) if rate > 0]
    return min(limits) if limits else 0.0


def worker_share(configured: float, account: float | None, concurrency: int) -> float:
    """Recipients per second one execution environment may send (0: no limit)."""
    return account_rate(configured, account) / max(1, concurrency)
