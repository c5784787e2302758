"""The SES events handler: the Lambda that records SES's own verdicts in the trail.

SES publishes each event of a send made with the configuration set (Send, Delivery,
Bounce, Complaint, Reject, DeliveryDelay) to an SNS topic; an SQS queue subscribed to
the topic feeds this function. Entry point: ``ses_events.handler.handler`` (an SQS event
source with ReportBatchItemFailures). The local ``sesrelay dev`` loop calls the same
handler with the events its emulated SES publishes.
"""
