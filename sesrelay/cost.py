"""The cost model: a deployment's monthly fixed cost and its cost per million messages,
from what its synthesized template creates (sesrelay.billable), the requests each message
makes (measured, below) and list prices (prices.json, us-east-1).

Requests per message are what the code does, counted by the tests that pin them
(tests/worker/test_requests_per_message.py, tests/events/test_requests_per_event.py):
a change to the message path fails those tests until the numbers here follow it.
Everything else a price is multiplied by is a stated assumption (ASSUMPTIONS).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sesrelay.billable import Billable, billable
from sesrelay.spool import INLINE_LIMIT

PRICES = Path(__file__).with_name("prices.json")
HOURS_PER_MONTH = 730
DAYS_PER_MONTH = 365 / 12
MILLION = 1_000_000
GB = 1024 ** 3
# SQS and SNS bill each 64 KB chunk of a request's payload as one request.
CHUNK = 64 * 1024

# The targets (issue 20): a highly available production deployment.
FIXED_TARGET = 40.0  # USD per month
VARIABLE_TARGET = 6.0  # USD per million messages, besides SES's own charge


@dataclass(frozen=True)
class MessageRequests:
    """The billed requests one message to one recipient makes, relay and worker."""

    s3_puts: int
    s3_gets: int
    s3_deletes: int
    sqs_sends: int
    idempotency_writes: int  # DynamoDB write units (items < 1 KB, index writes included)
    trail_writes: int  # the same, trail table
    ses_sends: int


# Measured by tests/worker/test_requests_per_message.py (one recipient, sequential
# sessions: group commit batches SQS sends only between concurrent sessions).
INLINE = MessageRequests(s3_puts=0, s3_gets=0, s3_deletes=0, sqs_sends=1,
                         idempotency_writes=3, trail_writes=10, ses_sends=1)
SPOOLED = MessageRequests(s3_puts=1, s3_gets=1, s3_deletes=1, sqs_sends=1,
                          idempotency_writes=3, trail_writes=10, ses_sends=1)
# Measured by tests/events/test_requests_per_event.py: trail write units per SES event
# (the item and its copy in the by-message-id index).
TRAIL_WRITES_PER_EVENT = 2
# The SES events of a delivered message the configuration set publishes: Send, Delivery.
EVENTS_PER_MESSAGE = 2

# Assumptions: not measurable offline, each stated where the docs show the model.
ASSUMPTIONS = {
    # An envelope without its message (JSON of addresses, IDs, times); the measuring
    # test checks a one-recipient envelope is below it.
    "envelope_bytes": 1024,
    # SMTP dialogue and PROXY header around the message on the NLB.
    "smtp_overhead_bytes": 2048,
    # Log lines per message: the relay's (connect, client=, from=, queued, disconnect)
    # and the worker's (status=sent, Lambda's START/END/REPORT when not batched).
    "log_bytes_per_message": 1500,
    # Billed Lambda time per message: SendEmail's round trip plus the DynamoDB writes.
    "worker_seconds_per_message": 0.25,
    "events_seconds_per_event": 0.05,
    # At low rates the event source receives, invokes and deletes per message (batch 1);
    # busier queues fill batches and pay less.
    "messages_per_batch": 1,
    # Lambda's SQS event source keeps polling an idle queue: five long polls (20 s).
    "idle_pollers": 5,
    "idle_polls_per_minute": 3,
}


@dataclass(frozen=True)
class Price:
    """One list price: USD per unit, the unit, where it comes from and when."""

    usd: float
    per: str
    source: str
    as_of: str


def load_prices(path: Path = PRICES) -> dict[str, Price]:
    """The list prices of prices.json."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {name: Price(**value) for name, value in data["prices"].items()}


def prices_region(path: Path = PRICES) -> str:
    """The region prices.json's prices are for."""
    return str(json.loads(path.read_text(encoding="utf-8"))["region"])


@dataclass(frozen=True)
class Line:
    """One priced item: what, how much of it, USD (per month, or per million messages)."""

    item: str
    quantity: str
    usd: float


@dataclass(frozen=True)
class Estimate:
    """A deployment's cost: fixed per month, variable per million messages."""

    fixed: tuple[Line, ...]
    variable: tuple[Line, ...]  # besides SES
    ses_per_million: float
    messages_per_day: int
    message_bytes: int
    inline: bool

    @property
    def fixed_total(self) -> float:
        """USD per month before the first message."""
        return sum(line.usd for line in self.fixed)

    @property
    def variable_total(self) -> float:
        """USD per million messages, besides SES."""
        return sum(line.usd for line in self.variable)

    @property
    def monthly_total(self) -> float:
        """USD per month at messages_per_day, SES included."""
        millions = self.messages_per_day * DAYS_PER_MONTH / MILLION
        return self.fixed_total + millions * (self.variable_total + self.ses_per_million)


def _hours(price: Price, count: float) -> float:
    return price.usd * count * HOURS_PER_MONTH


def fixed_lines(found: Billable, prices: Mapping[str, Price]) -> list[Line]:
    """What a deployment costs per month with no traffic."""
    lines = [Line("Network Load Balancer (hours; LCUs are per message)",
                  f"{found.load_balancers}", _hours(prices["nlb_hour"], found.load_balancers))]
    for tasks in found.tasks:
        arch = tasks.architecture
        hourly = (tasks.vcpu * prices[f"fargate_{arch}_vcpu_hour"].usd
                  + tasks.memory_gb * prices[f"fargate_{arch}_gb_hour"].usd)
        lines.append(Line(f"Fargate tasks ({tasks.vcpu:g} vCPU, {tasks.memory_gb:g} GB, "
                          f"{arch})", f"{tasks.count}", hourly * tasks.count * HOURS_PER_MONTH))
    polls = (ASSUMPTIONS["idle_pollers"] * ASSUMPTIONS["idle_polls_per_minute"] * 60
             * HOURS_PER_MONTH * found.queue_pollers)
    lines += [
        Line("NAT gateways", f"{found.nat_gateways}",
             _hours(prices["nat_gateway_hour"], found.nat_gateways)),
        Line("public IPv4 addresses (NAT Elastic IPs, tasks)", f"{found.public_ips}",
             _hours(prices["public_ipv4_hour"], found.public_ips)),
        Line("interface endpoints (per AZ)",
             " + ".join(f"{s} x{azs}" for s, azs in sorted(found.interface_endpoints.items()))
             or "0", _hours(prices["interface_endpoint_az_hour"],
                            sum(found.interface_endpoints.values()))),
        Line("gateway endpoints (S3, DynamoDB)", f"{found.gateway_endpoints}",
             found.gateway_endpoints * prices["gateway_endpoint_month"].usd),
        Line("KMS keys", f"{found.kms_keys}", found.kms_keys * prices["kms_key_month"].usd),
        Line("Secrets Manager secrets", f"{found.secrets}",
             found.secrets * prices["secret_month"].usd),
        Line("Route 53 hosted zones", f"{found.hosted_zones}",
             found.hosted_zones * prices["hosted_zone_month"].usd),
        Line("CloudWatch alarms (metrics read)", f"{found.alarm_metrics}",
             found.alarm_metrics * prices["alarm_metric_month"].usd),
        Line("CloudWatch dashboards", f"{found.dashboards}",
             found.dashboards * prices["dashboard_month"].usd),
        Line("custom metrics (EMF)", f"{found.emf_metrics}",
             found.emf_metrics * prices["custom_metric_month"].usd),
        Line("SQS polls of idle queues by Lambda", f"{polls:,.0f}",
             polls * prices["sqs_request"].usd),
    ]
    return lines


def is_inline(message_bytes: int) -> bool:
    """Whether a message of this size travels inside its SQS envelope (sesrelay.spool)."""
    return message_bytes * 4 // 3 + ASSUMPTIONS["envelope_bytes"] <= INLINE_LIMIT


def variable_lines(found: Billable, prices: Mapping[str, Price],
                   message_bytes: int) -> list[Line]:
    """What a million messages of message_bytes, one recipient each, cost besides SES."""
    inline = is_inline(message_bytes)
    path = INLINE if inline else SPOOLED
    envelope = ASSUMPTIONS["envelope_bytes"] + (message_bytes * 4 // 3 if inline else 0)
    chunks = math.ceil(envelope / CHUNK)
    batch = ASSUMPTIONS["messages_per_batch"]
    sqs_requests = path.sqs_sends * chunks + (chunks + 1) / batch  # send; receive, delete

    def per_million(price: str, per_message: float) -> float:
        return prices[price].usd * per_message * MILLION

    log_gb = ASSUMPTIONS["log_bytes_per_message"] / GB
    lines = [
        Line("S3 PUT (messages too large to travel in SQS)", f"{path.s3_puts}",
             per_million("s3_put_request", path.s3_puts)),
        Line("S3 GET", f"{path.s3_gets}", per_million("s3_get_request", path.s3_gets)),
        Line("S3 DELETE", f"{path.s3_deletes}",
             per_million("s3_delete_request", path.s3_deletes)),
        Line(f"SQS spool (send, receive, delete; {chunks} x 64 KB)", f"{sqs_requests:g}",
             per_million("sqs_request", sqs_requests)),
        Line("DynamoDB idempotency writes", f"{path.idempotency_writes}",
             per_million("dynamodb_write_unit", path.idempotency_writes)),
        Line("DynamoDB trail writes", f"{path.trail_writes}",
             per_million("dynamodb_write_unit", path.trail_writes)),
        Line("NLB LCUs (GB processed)", f"{message_bytes + ASSUMPTIONS['smtp_overhead_bytes']}"
             " B", per_million("nlb_lcu_hour",
                               (message_bytes + ASSUMPTIONS["smtp_overhead_bytes"]) / GB)),
        Line("CloudWatch Logs ingestion", f"{ASSUMPTIONS['log_bytes_per_message']} B",
             per_million("logs_ingested_gb", log_gb)),
        Line(f"CloudWatch Logs storage ({found.log_retention_days} days)",
             f"{ASSUMPTIONS['log_bytes_per_message']} B",
             per_million("logs_stored_gb_month",
                         log_gb * found.log_retention_days / DAYS_PER_MONTH)),
    ]
    lines += _lambda_lines(found, prices)
    # The relay's own calls to SQS and CloudWatch Logs cross the NAT gateways or the
    # interface endpoints (S3 and DynamoDB take the gateway endpoints).
    relay_gb = (envelope + ASSUMPTIONS["log_bytes_per_message"]) / GB
    if found.nat_gateways:
        lines.append(Line("NAT gateway data processing", f"{relay_gb * GB:,.0f} B",
                          per_million("nat_gateway_gb", relay_gb)))
    if found.interface_endpoints:
        lines.append(Line("interface endpoint data processing", f"{relay_gb * GB:,.0f} B",
                          per_million("interface_endpoint_gb", relay_gb)))
    return lines


def _lambda_lines(found: Billable, prices: Mapping[str, Price]) -> list[Line]:
    """The worker's invocations, and with a configuration set the SES events' path."""
    lines = []
    batch = ASSUMPTIONS["messages_per_batch"]
    worker = found.functions.get("worker")
    if worker:
        seconds = worker.memory_gb * ASSUMPTIONS["worker_seconds_per_message"]
        lines += [
            Line("Lambda worker invocations", f"{1 / batch:g}",
                 prices["lambda_request"].usd * MILLION / batch),
            Line(f"Lambda worker GB-seconds ({worker.memory_gb:g} GB)", f"{seconds:g}",
                 prices[f"lambda_{worker.architecture}_gb_second"].usd * seconds * MILLION),
        ]
    events = found.functions.get("events")
    if events:
        seconds = events.memory_gb * ASSUMPTIONS["events_seconds_per_event"] * EVENTS_PER_MESSAGE
        writes = TRAIL_WRITES_PER_EVENT * EVENTS_PER_MESSAGE
        # SNS sends each event; the event source receives and deletes them by batch.
        event_requests = EVENTS_PER_MESSAGE * (1 + 2 / batch)
        lines += [
            Line("SES events: SNS publishes", f"{EVENTS_PER_MESSAGE}",
                 prices["sns_publish"].usd * EVENTS_PER_MESSAGE * MILLION),
            Line("SES events: SQS (send, receive, delete)", f"{event_requests:g}",
                 prices["sqs_request"].usd * event_requests * MILLION),
            Line("SES events: Lambda invocations and GB-seconds",
                 f"{EVENTS_PER_MESSAGE / batch:g}",
                 (prices["lambda_request"].usd * EVENTS_PER_MESSAGE / batch
                  + prices[f"lambda_{events.architecture}_gb_second"].usd * seconds)
                 * MILLION),
            Line("SES events: DynamoDB trail writes", f"{writes}",
                 prices["dynamodb_write_unit"].usd * writes * MILLION),
        ]
    return lines


def estimate(template: Mapping[str, Any], prices: Mapping[str, Price] | None = None,
             messages_per_day: int = 0, message_bytes: int = 20 * 1024) -> Estimate:
    """The cost of the deployment template describes (a synthesized template as JSON),
    at list prices, for messages_per_day messages of message_bytes (one recipient)."""
    prices = prices if prices is not None else load_prices()
    found = billable(template)
    return Estimate(
        fixed=tuple(fixed_lines(found, prices)),
        variable=tuple(variable_lines(found, prices, message_bytes)),
        ses_per_million=prices["ses_message"].usd * MILLION,
        messages_per_day=messages_per_day,
        message_bytes=message_bytes,
        inline=is_inline(message_bytes),
    )
