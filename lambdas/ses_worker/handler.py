"""The Lambda handler: an SQS batch of spooled messages in, partial batch response out.

Records are delivered concurrently on a bounded thread pool: a batch takes about as
long as its slowest send, not the sum. Each record's work starts before powertools'
BatchProcessor walks the batch; the record handler only collects its result, so a
failing record is reported on its own and never fails its neighbours.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from ses_worker import warm
from ses_worker.delivery import Deliverer
from ses_worker.observability import logger, metrics
from sesrelay.config import load_config

# Records delivered at once. SQS hands the function at most 10 records per batch unless
# a batching window is configured; ses_max_send_rate, not this, bounds the SES rate.
MAX_CONCURRENT_RECORDS = 10


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Deliver an SQS batch; return {"batchItemFailures": [...]} for records to retry."""
    # warm.WARM outlives the invocation: the execution environment's share of the send
    # rate and what SES said about the account.
    return deliver_batch(event, context, warm.WARM)


def deliver_batch(event: dict[str, Any], context: LambdaContext,
                  environment: warm.Warm) -> dict[str, Any]:
    """Deliver an SQS batch in an execution environment whose state is environment."""
    deliverer = Deliverer(load_config(), context, environment)
    records = event.get("Records", [])
    # A batch in which every record fails is answered like any other (each record has
    # its own retry delay), not turned into a failed invocation.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_CONCURRENT_RECORDS, len(records))),
                            thread_name_prefix="deliver") as pool:
        pending: dict[str, Future[None]] = {
            r["messageId"]: pool.submit(deliverer.deliver, SQSRecord(r)) for r in records}
        return process_partial_response(
            event=event, processor=processor, context=context,
            record_handler=lambda record: pending[record.message_id].result())
