"""The AWS side of the fault soak, in a process of its own: moto's server with the dev
resources, and SES's event publishing feeding the events handler (`sesrelay dev`'s
emulation, sesrelay.dev_events). Run by tests/test_fault_soak.py:

    python -m tests.soak_emulation PORT PROXY_URL MAIN_CF LOG_FILE

It prints one JSON line naming the resources, then writes its logs (the events handler's,
moto's) to LOG_FILE and serves until its stdin closes. The
events handler's own AWS calls go through the fault proxy, as the relay's and the
worker's do; SES publishing its events (SNS) and the local poller that stands in for
Lambda's event source mapping go straight to moto.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from botocore.config import Config as BotoConfig

from sesrelay import aws, timeouts

# Read timeouts are capped for the soak, so that an answer held past them costs seconds,
# not minutes; every budget's logic (attempts, retries) is unchanged.
READ_TIMEOUT_CAP = 2.0
# Retries come every second or two in the soak; allow as many receives as SQS does.
MAX_RECEIVES = "1000"
EVENT_POLLERS = 4


def cap_read_timeouts() -> None:
    """Make every AWS client made from now on wait at most READ_TIMEOUT_CAP: botocore's,
    and the relay's lean spool client."""
    from smtp_relay.spool_client import LeanSpoolClient

    original = timeouts.CallBudget.boto_config

    def capped(self: timeouts.CallBudget, pool: int = 10) -> BotoConfig:
        return original(self, pool).merge(BotoConfig(
            read_timeout=min(self.read, READ_TIMEOUT_CAP)))

    timeouts.CallBudget.boto_config = capped  # type: ignore[method-assign]
    lean = LeanSpoolClient.__init__

    def capped_lean(self: LeanSpoolClient, s3_budget: timeouts.CallBudget,
                    sqs_budget: timeouts.CallBudget, bucket: str) -> None:
        lean(self, *(dataclasses.replace(b, read=min(b.read, READ_TIMEOUT_CAP))
                     for b in (s3_budget, sqs_budget)), bucket)

    LeanSpoolClient.__init__ = capped_lean  # type: ignore[method-assign]


def poller_sqs(endpoint: str) -> object:
    """An SQS client for the pollers that stand in for Lambda's event source mapping: its
    calls are AWS's, so no read timeout of sesrelay's (capped above) applies. A long poll
    cut at READ_TIMEOUT_CAP by a busy emulation would hide its batch for the visibility
    timeout and starve the pipeline."""
    import boto3

    from sesrelay.dev import DEV_REGION

    return boto3.client("sqs", endpoint_url=endpoint, region_name=DEV_REGION,
                        config=BotoConfig(read_timeout=30,
                                          retries={"mode": "standard", "max_attempts": 3}))


def _redrive(sqs: object, url: str, dlq_url: str, visibility: int) -> None:
    arn = sqs.get_queue_attributes(  # type: ignore[attr-defined]
        QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={  # type: ignore[attr-defined]
        "VisibilityTimeout": str(visibility),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn,
                                     "maxReceiveCount": MAX_RECEIVES})})


def main(port: int, proxy: str, main_cf: str, log_file: str) -> None:
    """Start the emulation, print its resources, serve until stdin closes."""
    from ses_events.handler import handler as events_handler
    from sesrelay.config import load_config
    from sesrelay.dev import (
        LocalWorker,
        create_resources,
        dev_environment,
        point_at_emulation,
        start_emulation,
    )
    from sesrelay.dev_events import start_events

    cap_read_timeouts()
    emulation = start_emulation(port)
    point_at_emulation(port)
    moto = f"http://127.0.0.1:{port}"
    config = load_config(main_cf)
    resources = create_resources(config)
    os.environ.update(dev_environment(resources, main_cf))
    sqs = aws.client("sqs")
    # Lost answers hide records for the visibility timeout: keep it short.
    _redrive(sqs, resources.queue_url, resources.dlq_url, 8)
    os.environ["AWS_ENDPOINT_URL_SNS"] = moto
    events = start_events(config.ses_configuration_set, events_handler)
    _redrive(sqs, events.pipeline.queue_url, events.pipeline.dlq_url, 5)
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = proxy  # the events handler's writes
    aws.reset_clients()
    # Lambda runs the events function concurrently; its records are handled one by one,
    # and under the soak's faults one poller falls behind.
    pollers = [LocalWorker(events.pipeline.queue_url, events.pipeline.queue_arn,
                           events_handler, name=f"soak-events-{n}",
                           function_name="sesrelay-dev-events", sqs=poller_sqs(moto))
               for n in range(EVENT_POLLERS)]
    for poller in pollers:
        poller.start()
    print(json.dumps({**resources.settings(), "queue_arn": resources.queue_arn,
                      "trail_table": resources.trail_table}), flush=True)
    # Nobody reads the pipe after that line: a full pipe would block every thread that
    # logs (the events handler's logger writes to stdout).
    with open(log_file, "ab") as log:
        os.dup2(log.fileno(), sys.stdout.fileno())
        os.dup2(log.fileno(), sys.stderr.fileno())
    sys.stdin.read()
    for poller in pollers:
        poller.stopping.set()
    events.stop()
    emulation.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
