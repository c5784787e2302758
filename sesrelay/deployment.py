"""How a deployed environment is found: its CloudFormation stack and the outputs that name
its resources. The CDK stack writes these outputs; `sesrelay ... --env NAME` reads them
(credentials and region from the usual AWS chain)."""

from __future__ import annotations

# CloudFormation outputs of a sesrelay stack, by what they hold.
OUTPUT_QUEUE_URL = "SpoolQueueUrl"
OUTPUT_DLQ_URL = "DeadLetterQueueUrl"
OUTPUT_BUCKET = "SpoolBucket"
OUTPUT_IDEMPOTENCY_TABLE = "IdempotencyTable"
OUTPUT_TRAIL_TABLE = "TrailTable"
OUTPUT_EVENTS_QUEUE_URL = "EventsQueueUrl"  # only with ses_configuration_set
OUTPUT_EVENTS_DLQ_URL = "EventsDeadLetterQueueUrl"  # only with ses_configuration_set
OUTPUT_CONFIGURATION_SET = "ConfigurationSet"  # only with ses_configuration_set
OUTPUT_RELAY_LOG_GROUP = "RelayLogGroup"
OUTPUT_WORKER_LOG_GROUP = "WorkerLogGroup"
OUTPUT_EVENTS_LOG_GROUP = "EventsLogGroup"  # only with ses_configuration_set
OUTPUT_REGION = "Region"
OUTPUT_RELAY_HOST = "RelayHost"  # the name applications send to (port 25)

# The relay service's size: tasks are added and removed to keep their average CPU near this
# (the stack's target tracking; the bench's sizing figures use it too).
CPU_TARGET_PERCENT = 60
FARGATE_CPU_UNITS_PER_VCPU = 1024


def stack_name(environment: str) -> str:
    """The CloudFormation stack name of an environment in cdk.json."""
    return f"sesrelay-{environment}"
