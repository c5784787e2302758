"""The worker's Logger and Metrics (powertools), shared by its modules.

Records are delivered on several threads at once, so per-message log keys use the
logger's thread-local keys, and metrics are added under a lock (powertools' metric
set is a plain dict).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from sesrelay.telemetry import NAMESPACE_ENV, SERVICE_ENV, SERVICE_WORKER

logger = Logger(service=os.environ.get(SERVICE_ENV) or SERVICE_WORKER)
metrics = Metrics(namespace=os.environ.get(NAMESPACE_ENV) or "sesrelay",
                  service=os.environ.get(SERVICE_ENV) or SERVICE_WORKER)
_metrics_lock = threading.Lock()


def count(name: str, value: int = 1) -> None:
    """Add to a count metric (Sent, Deferred, Bounced, Failed, ConfigurationError)."""
    with _metrics_lock:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def milliseconds(name: str, value: float) -> None:
    """Record a latency metric in milliseconds (SesLatency)."""
    with _metrics_lock:
        metrics.add_metric(name=name, unit=MetricUnit.Milliseconds, value=value)


def seconds(name: str, value: float) -> None:
    """Record a duration metric in seconds (DeferredMessageAge)."""
    with _metrics_lock:
        metrics.add_metric(name=name, unit=MetricUnit.Seconds, value=value)


@contextmanager
def log_keys(**keys: str) -> Iterator[None]:
    """Add keys (the queue ID) to every log line this thread writes inside the block."""
    logger.thread_safe_append_keys(**keys)
    try:
        yield
    finally:
        logger.thread_safe_remove_keys(keys)
