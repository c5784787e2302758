"""Where an environment's resources are, for every command that reads or changes them.

- Without ``--env``: `sesrelay dev`'s AWS emulation (``--endpoint``, by default
  http://127.0.0.1:4566) and the resource names sesrelay.dev gives them.
- With ``--env NAME``: the deployed stack ``sesrelay-NAME`` (sesrelay.deployment), found
  with DescribeStacks; its outputs name the queue, the DLQ, the tables and the log
  groups. Credentials and region come from the usual AWS chain (AWS_PROFILE,
  AWS_REGION, ..., AWS_ENDPOINT_URL too).
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from sesrelay import deployment, dev
from sesrelay.aws import error_code
from sesrelay.timeouts import DEFAULT


class WhereError(Exception):
    """The environment or one of its resources cannot be found; the text says which."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--env and --endpoint, for a command that works on an environment's resources."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--env", metavar="NAME",
                       help="a deployed environment (stack sesrelay-NAME; credentials and "
                       "region from the usual AWS chain); default: sesrelay dev")
    group.add_argument("--endpoint", default=dev.emulation_endpoint(dev.DEV_AWS_PORT),
                       help="URL of sesrelay dev's AWS emulation (default %(default)s)")


def endpoint_port(endpoint: str) -> int:
    """The port of an emulation endpoint URL."""
    parts = urlsplit(endpoint)
    return parts.port or (443 if parts.scheme == "https" else 80)


@dataclass
class Location:
    """One environment's resources and clients for them."""

    label: str  # for messages: "sesrelay dev at <url>" or "environment NAME (stack ...)"
    deployed: bool
    session: Any  # boto3 Session
    region: str
    endpoint: str | None = None  # the emulation's URL; None for AWS itself
    outputs: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    _queue_urls: dict[str, str] = field(default_factory=dict, repr=False)

    def client(self, service: str) -> Any:
        """A boto3 client for this environment (one per service)."""
        if service not in self._clients:
            self._clients[service] = self.session.client(
                service, region_name=self.region, endpoint_url=self.endpoint,
                config=DEFAULT.boto_config())
        return self._clients[service]

    def output(self, name: str) -> str:
        """A stack output; WhereError naming the stack and output when it is missing."""
        value = self.outputs.get(name)
        if not value:
            raise WhereError(f"{self.label} has no output {name}: the stack was deployed "
                             "by an older sesrelay, or without what this needs; deploy it "
                             "again")
        return value

    def _dev_queue_url(self, name: str) -> str:
        if name not in self._queue_urls:
            try:
                self._queue_urls[name] = self.client("sqs").get_queue_url(
                    QueueName=name)["QueueUrl"]
            except ClientError as exc:
                if "NonExistentQueue" in error_code(exc) or "QueueDoesNotExist" in str(exc):
                    raise WhereError(f"{self.label} has no queue {name}") from None
                raise
        return self._queue_urls[name]

    @property
    def queue_url(self) -> str:
        """The spool queue's URL."""
        if self.deployed:
            return self.output(deployment.OUTPUT_QUEUE_URL)
        return self._dev_queue_url(dev.QUEUE)

    @property
    def dlq_url(self) -> str:
        """The dead-letter queue's URL."""
        if self.deployed:
            return self.output(deployment.OUTPUT_DLQ_URL)
        return self._dev_queue_url(dev.DLQ)

    @property
    def trail_table(self) -> str:
        """The trail table's name."""
        return self.output(deployment.OUTPUT_TRAIL_TABLE) if self.deployed else dev.TRAIL_TABLE

    @property
    def idempotency_table(self) -> str:
        """The idempotency (and commit record) table's name."""
        if self.deployed:
            return self.output(deployment.OUTPUT_IDEMPOTENCY_TABLE)
        return dev.TABLE

    def operator(self) -> str:
        """Who is running this command, for the trail: the AWS caller identity of a
        deployed environment, else the local user."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # a container user with no name
            user = str(os.getuid())
        local = f"{user}@{socket.gethostname()}"
        if not self.deployed:
            return local
        try:
            return str(self.client("sts").get_caller_identity()["Arn"])
        except (BotoCoreError, ClientError):
            return local


def dev_location(endpoint: str) -> Location:
    """`sesrelay dev`'s emulation at endpoint (its fixed dummy credentials)."""
    session = boto3.session.Session(aws_access_key_id="sesrelay-dev",
                                    aws_secret_access_key="sesrelay-dev",
                                    region_name=dev.DEV_REGION)
    return Location(label=f"sesrelay dev at {endpoint}", deployed=False, session=session,
                    region=dev.DEV_REGION, endpoint=endpoint)


def deployed_location(environment: str, session: Any = None) -> Location:
    """The deployed environment's stack and its outputs (DescribeStacks)."""
    session = session or boto3.session.Session()
    stack = deployment.stack_name(environment)
    region = session.region_name
    if not region:
        raise WhereError("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or a "
                         "region in your AWS profile")
    cloudformation = session.client("cloudformation", region_name=region,
                                    config=DEFAULT.boto_config())
    try:
        [found] = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except NoCredentialsError:
        raise WhereError("no AWS credentials: the usual chain (AWS_PROFILE, "
                         "AWS_ACCESS_KEY_ID, SSO, an instance role, ...) found none") from None
    except NoRegionError:
        raise WhereError("no AWS region: set AWS_REGION") from None
    except ClientError as exc:
        if error_code(exc) == "ValidationError" and "does not exist" in str(exc):
            raise WhereError(
                f"environment {environment}: no stack {stack} in {region}; deploy it with "
                f"`npx aws-cdk@2 deploy -c env={environment}`, or pick the account and "
                "region where it is (AWS_PROFILE, AWS_REGION)") from None
        raise
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}
    label = f"environment {environment} (stack {stack} in {region}, {found['StackStatus']})"
    return Location(label=label, deployed=True, session=session,
                    region=outputs.get(deployment.OUTPUT_REGION) or region, outputs=outputs)


def resolve(args: argparse.Namespace) -> Location:
    """The Location a command's --env / --endpoint name."""
    if getattr(args, "env", None):
        return deployed_location(args.env)
    return dev_location(args.endpoint)
