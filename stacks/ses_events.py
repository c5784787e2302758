"""SES's own events, captured: the configuration set and its event destination, the
encrypted SNS topic it publishes to, the events queue (with its DLQ) subscribed to the
topic, and the events Lambda that writes each event to the trail.

Why SNS and SQS rather than EventBridge or Firehose: the queue gives per-record retries
and a DLQ (an event whose trail write fails is retried, never lost), batches of ten for
one Lambda invocation, and the same partial-batch handler shape as the worker; SNS is
SES's simplest destination that reaches a queue. EventBridge's default bus would add
rules and a second retry model; Firehose is built for bulk delivery to storage, not for
a per-event write within seconds.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_ses as ses
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from sesrelay import trail
from sesrelay.telemetry import SERVICE_ENV, SERVICE_EVENTS
from stacks.environment import EnvironmentSettings
from stacks.python_function import python_function
from stacks.spool import QUEUE_RETENTION_SECONDS
from stacks.trail import Trail

HANDLER_PACKAGE = "ses_events"
TIMEOUT = cdk.Duration.seconds(30)
MEMORY_MIB = 256
BATCH_SIZE = 10
# An event whose record failed this often (a malformed payload, a trail that keeps
# refusing writes) waits in the DLQ for an operator.
MAX_RECEIVE_COUNT = 5


def event_types() -> list[ses.EmailSendingEvent]:
    """The event types the destination asks for: those the trail knows (trail.EVENT_TYPES
    names them as configuration sets do)."""
    return [getattr(ses.EmailSendingEvent, name) for name in trail.EVENT_TYPES]


class SesEvents(Construct):
    """Configuration set (unless it exists), event destination, topic, queues, Lambda."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: EnvironmentSettings,
                 environment: dict[str, str], trail_store: Trail, max_concurrency: int,
                 log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        name = settings.config.ses_configuration_set
        stack = cdk.Stack.of(self)
        if settings.events.configuration_set_exists:
            configuration_set = ses.ConfigurationSet.from_configuration_set_name(
                self, "ConfigurationSet", name)
        else:
            configuration_set = ses.ConfigurationSet(
                self, "ConfigurationSet", configuration_set_name=name,
                reputation_metrics=True)
        self.configuration_set_name = name

        # Event records hold recipient addresses and subjects: the topic is encrypted
        # with a key of our own, because SES may use only a customer managed key (the
        # AWS managed alias/aws/sns key's policy cannot admit ses.amazonaws.com).
        self.topic_name = f"sesrelay-{settings.name}-ses-events"
        topic_arn = stack.format_arn(service="sns", resource=self.topic_name)
        self.key = kms.Key(self, "TopicKey", enable_key_rotation=True,
                           description=f"sesrelay {settings.name}: SES events topic encryption",
                           removal_policy=cdk.RemovalPolicy.DESTROY)
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="SesPublishesEvents",
            principals=[iam.ServicePrincipal("ses.amazonaws.com")],
            actions=["kms:GenerateDataKey*", "kms:Decrypt"], resources=["*"],
            # SNS names the topic in the encryption context of every data key it asks
            # for: SES may use this key for this topic and nothing else. (The topic's
            # ARN is spelled out: the topic itself depends on the key.)
            conditions={"StringEquals": {"kms:EncryptionContext:aws:sns:topicArn": topic_arn}}))
        self.topic = sns.Topic(self, "Topic", topic_name=self.topic_name, master_key=self.key,
                               enforce_ssl=True,
                               display_name=f"sesrelay {settings.name} SES events")
        # The destination also gives SES sns:Publish on the topic, for this
        # configuration set and account only.
        ses.ConfigurationSetEventDestination(
            self, "EventDestination", configuration_set=configuration_set,
            configuration_set_event_destination_name="sesrelay-trail",
            destination=ses.EventDestination.sns_topic(self.topic),
            events=event_types(), enabled=True)

        retention = cdk.Duration.seconds(QUEUE_RETENTION_SECONDS)
        self.dead_letter_queue = sqs.Queue(
            self, "DeadLetterQueue", encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True, retention_period=retention)
        self.queue = sqs.Queue(
            self, "Queue", encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            retention_period=retention,
            # AWS's advice for Lambda event sources: six times the function timeout.
            visibility_timeout=cdk.Duration.seconds(6 * TIMEOUT.to_seconds()),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue,
                                                  max_receive_count=MAX_RECEIVE_COUNT))
        # No raw message delivery: each record's body is the SNS notification, whose
        # Message is SES's event record.
        self.topic.add_subscription(subscriptions.SqsSubscription(self.queue))

        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention,
                                       removal_policy=cdk.RemovalPolicy.DESTROY)
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        description="sesrelay SES events: record SES's events in the trail")
        role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[self.log_group.log_group_arn]))
        trail_store.grant_events(role)
        self.function = python_function(
            self, "Function", handler_package=HANDLER_PACKAGE, role=role,
            log_group=self.log_group, timeout=TIMEOUT, memory_mib=MEMORY_MIB,
            environment={**environment, SERVICE_ENV: SERVICE_EVENTS},
            description=f"sesrelay {settings.name}: records SES's events in the trail")
        # The event source mapping adds the queue's receive and delete permissions.
        self.function.add_event_source(event_sources.SqsEventSource(
            self.queue, batch_size=BATCH_SIZE, report_batch_item_failures=True,
            max_concurrency=max_concurrency))
