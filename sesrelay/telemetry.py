"""Names of the CloudWatch metrics the relay and the worker emit (as EMF log lines) and
the dashboard and alarms read. One definition, shared by the code and the CDK stacks.

Both emit through aws-lambda-powertools' Metrics, whose namespace comes from
POWERTOOLS_METRICS_NAMESPACE and whose ``service`` dimension from POWERTOOLS_SERVICE_NAME.
"""

from __future__ import annotations

NAMESPACE_ENV = "POWERTOOLS_METRICS_NAMESPACE"
SERVICE_ENV = "POWERTOOLS_SERVICE_NAME"

SERVICE_RELAY = "relay"
SERVICE_WORKER = "worker"
SERVICE_EVENTS = "events"  # the SES events handler

# Relay (service=relay): one count per message, by the reply it got.
ACCEPTED = "Accepted"  # 250 queued
REJECTED = "Rejected"  # 5xx (policy, size, header_checks)
DEFERRED = "Deferred"  # 4xx (soft_bounce, spool failure); also the worker's deferrals
SPOOL_LATENCY = "SpoolLatency"  # ms from end of DATA to durable (S3 + SQS)

# Worker (service=worker).
SENT = "Sent"
BOUNCED = "Bounced"
FAILED = "Failed"  # ended without delivery or bounce (to the DLQ)
SES_LATENCY = "SesLatency"  # ms per SendEmail call
# Messages held by a configuration error (IAM, sending paused, an identity not verified,
# the SES sandbox), one per message and receive; also 1 at a cold start whose checks
# found one (ses_bounce_sender not verified).
CONFIGURATION_ERROR = "ConfigurationError"
SENDS_IN_DOUBT = "SendsInDoubt"  # SendEmail calls whose outcome was unknown
# Seconds since receipt of each message deferred (Maximum: the oldest unfinished message,
# which SQS's ApproximateAgeOfOldestMessage stops counting after its third receive).
DEFERRED_AGE = "DeferredMessageAge"

# SES events handler (service=events): recipients per SES verdict, for this environment
# (SES's own metrics are account-wide).
EVENT_METRICS = {
    "DELIVERY": "Delivered",
    "BOUNCE": "SesBounced",
    "COMPLAINT": "Complained",
    "REJECT": "SesRejected",
    "DELIVERY_DELAY": "DeliveryDelayed",
}


def metrics_namespace(environment: str) -> str:
    """The CloudWatch namespace of one deployment: sesrelay/<environment>."""
    return f"sesrelay/{environment}"
