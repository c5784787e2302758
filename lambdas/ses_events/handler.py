"""The Lambda handler: an SQS batch of SNS notifications carrying SES events in, partial
batch response out.

Each event is stored in the trail first (TrailWriter.event, idempotent per event); a
failed write fails its record, which SQS delivers again (and after the queue's
maxReceiveCount, keeps in the events DLQ). Only an event stored for the first time gets
its maillog lines, so a redelivered bounce is not counted twice by pflogsumm.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from ses_events.parsing import parse_event
from ses_events.verdicts import maillog_lines
from sesrelay import aws, maillog
from sesrelay.config import Config, load_config
from sesrelay.telemetry import EVENT_METRICS, NAMESPACE_ENV, SERVICE_ENV, SERVICE_EVENTS
from sesrelay.timeouts import WORKER_AWS
from sesrelay.trail import TrailWriter

logger = Logger(service=os.environ.get(SERVICE_ENV) or SERVICE_EVENTS)
metrics = Metrics(namespace=os.environ.get(NAMESPACE_ENV) or "sesrelay",
                  service=os.environ.get(SERVICE_ENV) or SERVICE_EVENTS)


@dataclass
class EventRecorder:
    """Stores the SES event of one SQS record and logs its maillog lines."""

    writer: TrailWriter
    region: str

    @classmethod
    def from_config(cls, config: Config) -> EventRecorder:
        """A recorder writing to the configured trail table."""
        if not config.sesrelay_trail_table:
            raise RuntimeError("sesrelay_trail_table is not set: SES events have nowhere to "
                               "go (the batch stays in the queue)")
        # The trail is in the function's own region (ses_region names SES's). PutItem is
        # idempotent here (one item per event), so botocore may retry it.
        dynamodb = aws.client("dynamodb", None, WORKER_AWS)
        return cls(TrailWriter(dynamodb, config.sesrelay_trail_table,
                               config.sesrelay_trail_retention),
                   config.ses_region or os.environ.get("AWS_REGION", ""))

    def handle(self, record: SQSRecord) -> None:
        """Handle one SQS record; raises (failing the record) when the event could not
        be stored. (BatchProcessor passes the record by this parameter's name.)"""
        notification = record.decoded_nested_sns_event
        if notification.get_type != "Notification":
            # Subscription confirmations reach the queue only for a topic in another
            # account; CloudFormation confirms its own subscription.
            logger.warning("SNS message ignored: not a notification",
                           extra={"sns_type": notification.get_type,
                                  "sns_message_id": notification.message_id})
            return
        payload = json.loads(notification.message)
        parsed = parse_event(payload)
        if parsed is None:
            logger.info("SES event ignored: sesrelay does not ask for this type",
                        extra={"event_type": payload.get("eventType"),
                               "sns_message_id": notification.message_id})
            return
        event = parsed.record
        first = self.writer.event(event)
        logger.info("SES event", extra={
            "queue_id": event.queue_id, "event_type": event.event_type,
            "ses_message_id": event.ses_message_id, "attempt_id": event.attempt_id,
            "recipients": [r["address"] for r in event.recipients],
            "bounce_type": event.bounce_type, "detail": event.detail,
            "trail_partition": event.partition, "redelivered": not first})
        if not first:
            return
        if event.queue_id and event.event_type in EVENT_METRICS:
            # Records run one after another (BatchProcessor), so no lock is needed.
            metrics.add_metric(name=EVENT_METRICS[event.event_type], unit=MetricUnit.Count,
                               value=len(event.recipients) or 1)
        for text in maillog_lines(parsed, self.region):
            logger.info(text, extra={"maillog": text, "maillog_program": maillog.SMTP,
                                     "queue_id": event.queue_id})


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Store an SQS batch of SES events; return {"batchItemFailures": [...]} for records
    to retry."""
    recorder = EventRecorder.from_config(load_config())
    # A batch whose every record fails is answered like any other (each record is
    # retried on its own), not turned into a failed invocation.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(event=event, record_handler=recorder.handle,
                                    processor=processor, context=context)
