"""`sesrelay serve` whose AWS calls go through the fault proxy (tests/faults.py) to moto's
server: what the fault tests and the relay soak start."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from sesrelay import commit
from sesrelay.commit import CommitState
from sesrelay.spool import Envelope
from tests.faults import FaultProxy
from tests.relay.conftest import create_idempotency_table
from tests.support import free_port, wait_for_port

REGION = "us-east-1"
SESRELAY = str(Path(sys.executable).parent / "sesrelay")
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass
class FaultyRelay:
    """`sesrelay serve` whose AWS calls go through a fault proxy to moto's server."""

    moto: str
    proxy: FaultProxy
    tmp_path: Path
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = f"faults-{free_port()}"
        self.sqs = boto3.client("sqs", endpoint_url=self.moto, region_name=REGION,
                                **CREDENTIALS)
        self.dynamodb = boto3.client("dynamodb", endpoint_url=self.moto, region_name=REGION,
                                     **CREDENTIALS)
        self.s3 = boto3.client("s3", endpoint_url=self.moto, region_name=REGION,
                               **CREDENTIALS)
        self.s3.create_bucket(Bucket=name)
        self.queue_url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        self.table = name
        create_idempotency_table(self.dynamodb, name)
        self.port = free_port()
        endpoint = self.proxy.start()
        env = {"PATH": "/usr/bin:/bin", "AWS_ENDPOINT_URL": endpoint,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": REGION, "POWERTOOLS_METRICS_DISABLED": "true",
               "SESRELAY_MYHOSTNAME": "relay.example.net", "SESRELAY_SPOOL_BUCKET": name,
               "SESRELAY_SPOOL_QUEUE_URL": self.queue_url,
               "SESRELAY_IDEMPOTENCY_TABLE": name, **self.settings}
        self.log = self.tmp_path / "serve.log"
        self.process = subprocess.Popen(
            [SESRELAY, "serve", "--listen", f"127.0.0.1:{self.port}", "--drain-seconds", "1"],
            env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process, timeout=30)

    def queued(self) -> dict[str, list[Envelope]]:
        """Each envelope the worker would send, by its message's subject, read straight
        from moto (not through the proxy): envelopes that a commit record refuses are left
        out, and a message kept in S3 is read from its object, which must exist."""
        found: dict[str, list[Envelope]] = {}
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                             VisibilityTimeout=600).get("Messages", [])
            if not batch:
                return found
            for message in batch:
                envelope = Envelope.from_json(message["Body"])
                record = commit.read(self.dynamodb, self.table, envelope.queue_id)
                if record is not None and record.state is CommitState.REFUSED:
                    continue
                raw = (envelope.message() if envelope.inline else self.s3.get_object(
                    Bucket=envelope.bucket, Key=envelope.key)["Body"].read())
                subject = raw.split(b"Subject: ")[1].split(b"\r\n")[0].decode()
                found.setdefault(subject, []).append(envelope)

    def sendable(self) -> dict[str, set[str]]:
        """Subject of each message the worker would send (queued), with the queue IDs it
        is queued under: repeated envelopes of one queue ID are sent once."""
        return {subject: {envelope.queue_id for envelope in envelopes}
                for subject, envelopes in self.queued().items()}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.proxy.stop()
