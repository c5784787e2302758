"""The fault soak (issue 16): 500 messages through the dev pipeline (relay, SQS spool,
worker, SES emulation publishing its events through SNS to the events handler and the
trail) with 5 % of AWS answers lost after the request was delivered and 5 % held past
the caller's read timeout, on every call the relay, the worker and the events handler
make. Clients retry what they were not told 250, as MTAs do.

The oracle is what the emulated SES accepted: each message a client was told 250 is
accepted exactly once (events settle every send whose answer was lost), and nothing else.
The figures are printed (run with -s to see them) and docs/COMMIT.md quotes them.
"""

from __future__ import annotations

import os
import smtplib
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from sesrelay import aws, timeouts, trail
from sesrelay.config import load_config
from sesrelay.dev import (
    DEV_REGION,
    LocalWorker,
    create_resources,
    dev_environment,
    point_at_emulation,
    start_emulation,
)
from tests.faults import LOSE_ANSWER, SLOW_ANSWER, FaultProxy
from tests.relay.conftest import RunningRelay
from tests.support import free_port

MESSAGES = 500
CLIENTS = 10
LOSS, SLOWNESS = 0.05, 0.05
# Read timeouts are capped here for the soak, so that an answer held past them costs
# seconds, not minutes; every budget's logic (attempts, retries) is unchanged.
READ_TIMEOUT_CAP = 2.0
HELD_FOR = READ_TIMEOUT_CAP + 0.5
# Every operation the relay, worker and events handler call, each faulted alike. SNS
# Publish is SES's own (the emulation's) and goes straight to moto.
FAULTED = ["sqs.SendMessage", "sqs.SendMessageBatch", "sqs.ReceiveMessage",
           "sqs.DeleteMessageBatch", "sqs.ChangeMessageVisibility", "sqs.GetQueueUrl",
           "dynamodb.PutItem", "dynamodb.UpdateItem", "dynamodb.GetItem", "dynamodb.Query",
           "dynamodb.BatchWriteItem", "dynamodb.DeleteItem", "sesv2.SendEmail",
           "s3.PutObject", "s3.GetObject"]
MAIN_CF = """\
myhostname = relay.example.net
mynetworks = 127.0.0.0/8
ses_identities = example.com
ses_max_send_rate = 0
ses_configuration_set = sesrelay
minimal_backoff_time = 1s
maximal_backoff_time = 2s
ses_unknown_outcome_wait = 10m
"""


@pytest.fixture
def soak_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[tuple[RunningRelay, FaultProxy]]:
    """The dev pipeline in this process, its AWS calls through a fault proxy."""
    for name in list(os.environ):
        if name.startswith(("SESRELAY_", "AWS_", "POWERTOOLS_")):
            monkeypatch.delenv(name)
    original = timeouts.CallBudget.boto_config

    def capped(self: timeouts.CallBudget, pool: int = 10) -> BotoConfig:
        return original(self, pool).merge(BotoConfig(read_timeout=min(self.read,
                                                                      READ_TIMEOUT_CAP)))

    monkeypatch.setattr(timeouts.CallBudget, "boto_config", capped)
    main_cf = tmp_path / "main.cf"
    main_cf.write_text(MAIN_CF)
    aws_port = free_port()
    emulation = start_emulation(aws_port)
    point_at_emulation(aws_port)
    moto = f"http://127.0.0.1:{aws_port}"
    config = load_config(main_cf)
    resources = create_resources(config)
    os.environ.update(dev_environment(resources, str(main_cf)))
    sqs = boto3.client("sqs", endpoint_url=moto, region_name=DEV_REGION)
    # Lost receives hide records for the visibility timeout: keep it short.
    sqs.set_queue_attributes(QueueUrl=resources.queue_url,
                             Attributes={"VisibilityTimeout": "8"})
    from ses_events.handler import handler as events_handler
    from ses_worker.handler import handler as worker_handler
    from sesrelay.dev_events import start_events

    os.environ["AWS_ENDPOINT_URL_SNS"] = moto  # SES publishing its events: not ours
    events = start_events(config.ses_configuration_set, events_handler)
    sqs.set_queue_attributes(QueueUrl=events.pipeline.queue_url,
                             Attributes={"VisibilityTimeout": "5"})
    proxy = FaultProxy(moto, seed=16)
    os.environ["AWS_ENDPOINT_URL"] = proxy.start()
    aws.reset_clients()
    relay = RunningRelay(load_config(main_cf))
    workers = [LocalWorker(resources.queue_url, resources.queue_arn, worker_handler,
                           name=f"soak-worker-{n}") for n in range(2)]
    for worker in workers:
        worker.start()
    try:
        yield relay, proxy
    finally:
        relay.stop()
        for worker in workers:
            worker.stopping.set()
        events.stop()
        for worker in workers:
            worker.join(timeout=10)
        proxy.stop()
        emulation.stop()
        aws.reset_clients()


def send_until_queued(port: int, subject: str, tally: Counter[str]) -> bool:
    """Send one message until a 250, as an MTA retries a 4xx; True once queued."""
    body = f"From: app@example.com\r\nSubject: {subject}\r\n\r\nsoak\r\n".encode()
    for _ in range(20):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                client.ehlo("soak.example.com")
                client.sendmail("app@example.com", ["someone@example.org"], body)
            tally["250"] += 1
            return True
        except smtplib.SMTPResponseException as exc:
            tally[str(exc.smtp_code)] += 1
        except (smtplib.SMTPException, OSError) as exc:
            tally[type(exc).__name__] += 1
        time.sleep(0.2)
    return False


def accepted_by_ses() -> Counter[str]:
    """How many times the emulated SES accepted each subject."""
    sent = ses_backends[DEFAULT_ACCOUNT_ID][DEV_REGION].sent_messages
    return Counter(m.raw_data.split("Subject: ", 1)[1].split("\r\n", 1)[0]
                   for m in sent if "Subject: soak-" in m.raw_data)


def test_500_messages_through_lost_and_slow_answers_are_each_sent_once(
        soak_pipeline: tuple[RunningRelay, FaultProxy]) -> None:
    relay, proxy = soak_pipeline
    for name in FAULTED:
        proxy.add(name, LOSE_ANSWER, probability=LOSS)
        proxy.add(name, SLOW_ANSWER, probability=SLOWNESS / (1 - LOSS), seconds=HELD_FOR)
    tally: Counter[str] = Counter()
    subjects = [f"soak-{n:03}" for n in range(MESSAGES)]
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        queued = dict(zip(subjects, pool.map(
            lambda s: send_until_queued(relay.port, s, tally), subjects), strict=True))
    acknowledged = {s for s, ok in queued.items() if ok}

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        counts = accepted_by_ses()
        if set(counts) >= acknowledged and not unfinished():
            break
        time.sleep(2)
    time.sleep(3)  # anything sent late would show now
    counts = accepted_by_ses()
    doubts = in_doubt_outcomes()
    faults: Counter[str] = Counter()
    for (_, action), count in proxy.applied.items():
        faults[action] += count
    print(f"\nfault soak: {MESSAGES} messages in {time.monotonic() - started:.0f} s; SMTP "
          f"attempts {dict(tally)}; acknowledged {len(acknowledged)}; AWS requests "
          f"{sum(proxy.seen.values())}, faults {dict(faults)}; sends not sent at once "
          f"{dict(doubts)}; SES copies per message {dict(Counter(counts[s] for s in subjects))}")
    lost = sorted(s for s in acknowledged if counts[s] == 0)
    duplicated = sorted(s for s in subjects if counts[s] > 1)
    never_acknowledged_but_sent = sorted(s for s in subjects
                                         if counts[s] and s not in acknowledged)
    assert lost == [] and duplicated == [] and never_acknowledged_but_sent == []
    assert len(acknowledged) == MESSAGES
    assert sum(proxy.applied.values()) > 0.05 * sum(proxy.seen.values())  # it was a soak


def unfinished() -> int:
    """Envelopes still in the spool queue (visible or in flight)."""
    sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL_SNS"],
                       region_name=DEV_REGION)
    url = sqs.get_queue_url(QueueName="sesrelay-dev-spool")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(v) for v in attributes.values())


def in_doubt_outcomes() -> Counter[str]:
    """How each send that was ever in doubt ended, from the trail's attempt items."""
    dynamodb = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL_SNS"],
                            region_name=DEV_REGION)
    table = os.environ["SESRELAY_TRAIL_TABLE"]
    outcomes: Counter[str] = Counter()
    paginator = dynamodb.get_paginator("scan")
    for page in paginator.paginate(TableName=table, FilterExpression="kind = :a",
                                   ExpressionAttributeValues={":a": {"S": trail.ATTEMPT}}):
        for item in page["Items"]:
            outcome = item["outcome"]["S"]
            if outcome != trail.SENT:
                outcomes[outcome] += 1
    return outcomes

