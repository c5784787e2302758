"""The SES worker: the Lambda that sends spooled mail through Amazon SES v2.

Entry point: ``ses_worker.handler.handler`` (an SQS event source with
ReportBatchItemFailures). The local ``sesrelay dev`` loop calls the same handler.
"""
