"""The spool: the S3 bucket that holds accepted messages and the SQS queue (with its DLQ)
that carries their envelopes to the worker."""

from __future__ import annotations

import math
import random

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from ses_worker.backoff import retry_delay
from sesrelay.config import Config
from sesrelay.spool import KEY_PREFIX
from sesrelay.timeouts import VISIBILITY_PER_TIMEOUT
from stacks.environment import EnvironmentSettings, SettingsError
from stacks.nag import acknowledge

DAY = 86400
# SQS keeps a message at most 14 days, counted from when it was first sent; a message
# moved to the DLQ keeps its original age.
QUEUE_RETENTION_SECONDS = 14 * DAY
# SQS's ceiling for maxReceiveCount.
SQS_MAX_RECEIVE_COUNT = 1000
# Receives that end without the worker choosing a backoff (a crash, a timeout): the
# record comes back after the queue's visibility timeout instead.
CRASH_ALLOWANCE = 3


class _ShortestJitter(random.Random):
    """A random source that always picks the low end, giving the worker's schedule at
    its fastest (every delay 10 % short)."""

    def uniform(self, a: float, b: float) -> float:
        return a


def max_receive_count(config: Config) -> int:
    """How many receives SQS allows before it moves a record to the DLQ.

    The worker defers a record it cannot send yet by setting its visibility timeout to
    ``retry_delay(n)`` on the n-th receive: minimal_backoff_time doubling up to
    maximal_backoff_time, with jitter (the function in ``ses_worker.backoff`` is the one
    definition). It stops retrying and bounces once maximal_queue_lifetime has passed,
    so SQS must not give up before that. The count is the smallest n for which

        retry_delay(1) + ... + retry_delay(n - 1) >= maximal_queue_lifetime

    with every delay at its shortest (jitter at -10 %): the n-th receive is then the one
    that finds the lifetime over and bounces. CRASH_ALLOWANCE receives are added for
    attempts that die without choosing a delay. With the defaults (300s, 4000s, 5d) the
    delays are 300, 600, 1200, 2400, then 3600 (4000 less 10 %) each time.

    The DLQ therefore collects what the worker could not handle at all (poison records,
    repeated crashes), never mail still inside its queue lifetime.
    """
    elapsed, receives = 0, 1
    rng = _ShortestJitter()
    while elapsed < config.maximal_queue_lifetime:
        elapsed += retry_delay(receives, config.minimal_backoff_time,
                               config.maximal_backoff_time, rng)
        receives += 1
        if receives > SQS_MAX_RECEIVE_COUNT:
            break
    count = receives + CRASH_ALLOWANCE
    if count > SQS_MAX_RECEIVE_COUNT:
        raise SettingsError(
            f"maximal_queue_lifetime ({config.maximal_queue_lifetime}s) needs more than "
            f"{SQS_MAX_RECEIVE_COUNT} receives (SQS's maximum) with maximal_backoff_time "
            f"{config.maximal_backoff_time}s: raise maximal_backoff_time or shorten the "
            "lifetime")
    return count


def spool_expiration_days(config: Config) -> int:
    """Days after which the lifecycle rule deletes a spooled object.

    An object must outlive every reference to it: its envelope can sit in the queue and
    then the DLQ for up to QUEUE_RETENTION_SECONDS (14 days from the first send, so a
    DLQ redrive still finds the message), and a sent message is kept for
    sesrelay_spool_retention after a send that can happen as late as
    maximal_queue_lifetime after receipt. The rule also removes objects orphaned when
    the relay answered 451 after writing S3 but before SQS took the envelope.
    """
    keep = max(QUEUE_RETENTION_SECONDS,
               config.maximal_queue_lifetime + config.sesrelay_spool_retention)
    return math.ceil(keep / DAY) + 1


class Spool(Construct):
    """The spool bucket (with its access-log bucket), the queue and the DLQ."""

    def __init__(self, scope: Construct, construct_id: str, settings: EnvironmentSettings,
                 worker_timeout: cdk.Duration) -> None:
        super().__init__(scope, construct_id)
        config = settings.config
        if config.maximal_queue_lifetime + config.maximal_backoff_time > QUEUE_RETENTION_SECONDS:
            raise SettingsError(
                f"{settings.source} maximal_queue_lifetime: SQS keeps a message at most 14 "
                "days, so maximal_queue_lifetime plus maximal_backoff_time must fit in 14 "
                "days")

        self.access_logs = s3.Bucket(
            self, "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            # S3 server access logging can only deliver to SSE-S3 buckets.
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(365))],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        acknowledge(self.access_logs, "AwsSolutions-S1",
                    "This is the access-log bucket of the spool bucket; logging its own "
                    "access would log the log deliveries themselves.")

        self.bucket = s3.Bucket(
            self, "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="spool-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-spooled-messages",
                    prefix=KEY_PREFIX,
                    expiration=cdk.Duration.days(spool_expiration_days(config)),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                ),
            ],
            # Accepted mail may still be in the bucket: never delete it with the stack.
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

        self.dead_letter_queue = sqs.Queue(
            self, "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=cdk.Duration.seconds(QUEUE_RETENTION_SECONDS),
        )
        self.max_receive_count = max_receive_count(config)
        self.queue = sqs.Queue(
            self, "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=cdk.Duration.seconds(QUEUE_RETENTION_SECONDS),
            # AWS's advice for Lambda event sources: six times the function timeout, so
            # a batch that is retried inside the function is not handed out twice.
            visibility_timeout=cdk.Duration.seconds(
                VISIBILITY_PER_TIMEOUT * worker_timeout.to_seconds()),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue,
                                                  max_receive_count=self.max_receive_count),
        )
