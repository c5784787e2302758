"""The worker: the Lambda that takes envelopes off the queue and sends them through SES,
with its idempotency table and a role that can do exactly that."""

from __future__ import annotations

import math

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from sesrelay.config import Config, env_name
from sesrelay.send_rate import CONCURRENCY_ENV
from sesrelay.spool import KEY_PREFIX
from sesrelay.telemetry import NAMESPACE_ENV, SERVICE_ENV, SERVICE_WORKER, metrics_namespace
from sesrelay.timeouts import WorkerTiming, WorkerTimingError, worker_timing
from stacks.environment import EnvironmentSettings, SettingsError
from stacks.nag import acknowledge, logical_id
from stacks.python_function import python_function
from stacks.trail import Trail

HANDLER_PACKAGE = "ses_worker"
# Powertools' DynamoDB persistence layer: partition key "id", TTL attribute "expiration".
IDEMPOTENCY_KEY = "id"
IDEMPOTENCY_TTL_ATTRIBUTE = "expiration"
# One worker sends a batch one message at a time; an SES call takes roughly 100-200 ms,
# so one concurrent worker delivers about this many recipients per second.
RECIPIENTS_PER_SECOND_PER_WORKER = 5
# With ses_max_send_rate = 0 (no limit known) the concurrency is capped here instead.
UNLIMITED_RATE_CONCURRENCY = 10


def max_concurrency(settings: EnvironmentSettings) -> int:
    """MaximumConcurrency of the SQS event source.

    Set explicitly with ``worker.max_concurrency``; otherwise derived from
    ses_max_send_rate so that the workers together cannot outrun SES:
    ceil(rate / RECIPIENTS_PER_SECOND_PER_WORKER), at least 2 (the lowest value SQS
    event sources accept) and at most 1000. More concurrency would only turn into SES
    throttling and retries.
    """
    if settings.worker.max_concurrency is not None:
        return settings.worker.max_concurrency
    rate = settings.config.ses_max_send_rate
    if rate <= 0:
        return UNLIMITED_RATE_CONCURRENCY
    return min(1000, max(2, math.ceil(rate / RECIPIENTS_PER_SECOND_PER_WORKER)))


def timing(settings: EnvironmentSettings) -> WorkerTiming:
    """The worker's timeout, batch size and the queue's visibility timeout
    (sesrelay.timeouts.worker_timing); a combination that cannot work fails synth."""
    try:
        return worker_timing(settings.worker.timeout_seconds,
                             settings.config.message_size_limit,
                             settings.config.ses_max_send_rate, max_concurrency(settings))
    except WorkerTimingError as exc:
        raise SettingsError(f"environments.{settings.name}.worker.timeout_seconds: "
                            f"{exc}") from None


def _identity_arns(config: Config, identities: list[str]) -> list[str]:
    region = config.ses_region or cdk.Aws.REGION
    return [f"arn:{cdk.Aws.PARTITION}:ses:{region}:{cdk.Aws.ACCOUNT_ID}:identity/{identity}"
            for identity in identities]


def _ses_resources(config: Config) -> list[str]:
    """ARNs SES checks when the worker sends: each verified identity (and the identity
    ARN used for sending authorization) and the configuration set."""
    if not config.ses_identities and not config.ses_identity_arn:
        raise SettingsError("ses_identities must list the verified SES identities (domains "
                            "or addresses) the relay sends as: the worker may send only "
                            "as those")
    region = config.ses_region or cdk.Aws.REGION
    prefix = f"arn:{cdk.Aws.PARTITION}:ses:{region}:{cdk.Aws.ACCOUNT_ID}"
    resources = [f"{prefix}:identity/{identity}" for identity in config.ses_identities]
    if config.ses_identity_arn:
        resources.append(config.ses_identity_arn)
    if config.ses_configuration_set:
        resources.append(f"{prefix}:configuration-set/{config.ses_configuration_set}")
    return resources


class Worker(Construct):
    """The SES sender Lambda, its SQS event source and its idempotency table; its role
    also reads and writes the trail."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: EnvironmentSettings,
                 environment: dict[str, str], bucket_arn: str, queue: sqs.IQueue,
                 trail: Trail, timeout: cdk.Duration, log_retention: logs.RetentionDays
                 ) -> None:
        super().__init__(scope, construct_id)
        config = settings.config
        self.timing = timing(settings)

        self.idempotency_table = dynamodb.TableV2(
            self, "IdempotencyTable",
            partition_key=dynamodb.Attribute(name=IDEMPOTENCY_KEY,
                                             type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            time_to_live_attribute=IDEMPOTENCY_TTL_ATTRIBUTE,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            # Records only guard against sending twice while a message is in flight.
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )

        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention,
                                       removal_policy=cdk.RemovalPolicy.DESTROY)
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        description="sesrelay worker: send spooled mail through SES")
        # Written out instead of AWSLambdaBasicExecutionRole: this log group only.
        role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[self.log_group.log_group_arn]))
        spooled_objects = f"{bucket_arn}/{KEY_PREFIX}*"
        role.add_to_policy(iam.PolicyStatement(
            sid="ReadTagDeleteKeepSpool",
            # PutObject: a message that travelled inside its envelope is kept in S3 for
            # sesrelay_spool_retention, as the others are.
            actions=["s3:GetObject", "s3:GetObjectTagging", "s3:PutObjectTagging",
                     "s3:DeleteObject", "s3:PutObject"],
            resources=[spooled_objects]))
        role.add_to_policy(iam.PolicyStatement(
            sid="SendThroughSes",
            actions=["ses:SendEmail", "ses:SendRawEmail"],
            resources=_ses_resources(config)))
        role.add_to_policy(iam.PolicyStatement(
            sid="IdempotencyRecords",
            actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                     "dynamodb:DeleteItem"],
            resources=[self.idempotency_table.table_arn]))
        # Read at a cold start (ses_worker.account): the account's sending limits and
        # sandbox state, and whether ses_bounce_sender's address or domain is verified.
        role.add_to_policy(iam.PolicyStatement(
            sid="ReadSesAccount", actions=["ses:GetAccount"], resources=["*"]))
        bounce_sender = config.ses_bounce_sender
        role.add_to_policy(iam.PolicyStatement(
            sid="CheckBounceSender", actions=["ses:GetEmailIdentity"],
            resources=_identity_arns(config, [bounce_sender,
                                              bounce_sender.rpartition("@")[2]])))
        # A deferral is a delayed copy of the envelope on the same queue
        # (ses_worker/requeue.py), so deferred mail never waits in flight.
        queue.grant_send_messages(role)
        trail.grant_worker(role)
        acknowledge(role, f"AwsSolutions-IAM5[Resource::<{logical_id(self, bucket_arn)}.Arn>/"
                          f"{KEY_PREFIX}*]",
                    "Spooled objects have one key per message under the spool prefix; the "
                    "worker reads, tags and deletes any of them and nothing else.")
        acknowledge(role, "AwsSolutions-IAM5[Resource::*]",
                    "ses:GetAccount has no resource type: IAM allows it only on '*'. It "
                    "reads the account's sending limits and sandbox state, nothing else.")

        self.function = python_function(
            self, "Function", handler_package=HANDLER_PACKAGE, role=role,
            log_group=self.log_group, timeout=timeout, memory_mib=settings.worker.memory_mib,
            environment={
                **environment,
                env_name("sesrelay_idempotency_table"): self.idempotency_table.table_name,
                NAMESPACE_ENV: metrics_namespace(settings.name),
                # Each concurrent worker sends at its share of the account's rate.
                CONCURRENCY_ENV: str(max_concurrency(settings)),
                SERVICE_ENV: SERVICE_WORKER,
            },
            description=f"sesrelay {settings.name}: sends spooled mail through Amazon SES")
        self.max_concurrency = max_concurrency(settings)
        self.function.add_event_source(event_sources.SqsEventSource(
            queue,
            batch_size=self.timing.batch_size,
            report_batch_item_failures=True,
            max_concurrency=self.max_concurrency,
        ))

