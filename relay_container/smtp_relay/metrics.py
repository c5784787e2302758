"""The relay's CloudWatch metrics: counted in memory, published as one EMF line a minute.

Per-message EMF lines would cost a log write per message; a counter per interval gives
CloudWatch the same sums.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from sesrelay import telemetry


class RelayMetrics:
    """Counts of accepted, rejected and deferred messages, and the spool latency."""

    def __init__(self, interval: float = 60.0) -> None:
        # Ephemeral: powertools' Metrics shares its buffer across instances in a process.
        self._metrics = EphemeralMetrics(
            namespace=os.environ.get(telemetry.NAMESPACE_ENV, "sesrelay"),
            service=os.environ.get(telemetry.SERVICE_ENV, telemetry.SERVICE_RELAY),
        )
        self._counts: Counter[str] = Counter()
        self._latency_ms: list[float] = []
        self._interval = interval

    def count(self, name: str) -> None:
        """Add one to a count metric (ACCEPTED, REJECTED, DEFERRED)."""
        self._counts[name] += 1

    def spool_latency(self, milliseconds: float) -> None:
        """Record how long one handoff to S3 and SQS took."""
        self._latency_ms.append(milliseconds)

    def flush(self) -> None:
        """Publish what was counted since the last flush (nothing when nothing happened)."""
        if not self._counts and not self._latency_ms:
            return
        for name, value in self._counts.items():
            self._metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        # EMF carries at most 100 values per metric and line: publish an evenly spaced
        # sample of the sorted latencies, which keeps CloudWatch's percentiles close.
        latencies = sorted(self._latency_ms)
        step = max(1, len(latencies) // 100)
        for value in latencies[::step][:100]:
            self._metrics.add_metric(name=telemetry.SPOOL_LATENCY,
                                     unit=MetricUnit.Milliseconds, value=value)
        self._counts.clear()
        self._latency_ms.clear()
        self._metrics.flush_metrics()

    async def publish_forever(self) -> None:
        """Flush every interval until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(self._interval)
                self.flush()
        finally:
            self.flush()
