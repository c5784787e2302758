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

import json
import os
import smtplib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from sesrelay import aws, trail
from sesrelay.config import env_name, load_config
from sesrelay.dev import DEV_REGION, LocalWorker
from sesrelay.outbox import read_outbox
from tests.faults import LOSE_ANSWER, SLOW_ANSWER, FaultProxy
from tests.relay.conftest import RunningRelay
from tests.soak_emulation import READ_TIMEOUT_CAP, cap_read_timeouts, poller_sqs
from tests.support import free_port

MESSAGES = 500
CLIENTS = 10
LOSS, SLOWNESS = 0.05, 0.05
SETTLE_TIME = 240  # after the last 250, for every message to finish
HELD_FOR = READ_TIMEOUT_CAP + 0.3
# Every operation the relay, worker and events handler call, each faulted alike. Not
# faulted: SNS Publish (SES publishing its events, the emulation's own) and the local
# pollers' ReceiveMessage and DeleteMessageBatch, which stand in for Lambda's event source
# mapping: in AWS those are AWS's calls, not sesrelay's.
FAULTED = ["sqs.SendMessage", "sqs.SendMessageBatch", "sqs.ChangeMessageVisibility",
           "sqs.GetQueueUrl",
           "dynamodb.PutItem", "dynamodb.UpdateItem", "dynamodb.GetItem", "dynamodb.Query",
           "dynamodb.BatchWriteItem", "dynamodb.DeleteItem", "sesv2.SendEmail",
           "s3.PutObject", "s3.GetObject"]
MAIN_CF = """\
myhostname = relay.example.net
mynetworks = 127.0.0.0/8
ses_identities = example.com
ses_max_send_rate = 0
ses_configuration_set = sesrelay
minimal_backoff_time = 2s
maximal_backoff_time = 10s
ses_unknown_outcome_wait = 10m
"""


@pytest.fixture
def soak_pipeline(tmp_path: Path) -> Iterator[tuple[RunningRelay, FaultProxy, str]]:
    """The relay and two workers in this process, the AWS emulation (with SES's events
    and the events handler) in another, every call through the fault proxy."""
    saved = dict(os.environ)  # the relay and worker read their settings from it
    main_cf = tmp_path / "main.cf"
    main_cf.write_text(MAIN_CF)
    port = free_port()
    moto = f"http://127.0.0.1:{port}"
    proxy = FaultProxy(moto, seed=16)
    endpoint = proxy.start()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SESRELAY_", "AWS_", "POWERTOOLS_"))}
    emulation = subprocess.Popen(
        [sys.executable, "-m", "tests.soak_emulation", str(port), endpoint, str(main_cf),
         str(tmp_path / "emulation.log")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
        cwd=Path(__file__).resolve().parents[1])
    try:
        assert emulation.stdout is not None and emulation.stdin is not None
        resources = json.loads(emulation.stdout.readline())
        for name in list(os.environ):
            if name.startswith(("SESRELAY_", "AWS_", "POWERTOOLS_")):
                del os.environ[name]
        os.environ.update({
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "soak",
            "AWS_SECRET_ACCESS_KEY": "soak", "AWS_DEFAULT_REGION": DEV_REGION,
            "POWERTOOLS_METRICS_DISABLED": "true", "SESRELAY_CONFIG": str(main_cf),
            **{env_name(k): v for k, v in resources.items()
               if k.startswith("sesrelay_")}})
        cap_read_timeouts()
        aws.reset_clients()
        from ses_worker.handler import handler as worker_handler

        relay = RunningRelay(load_config(main_cf))
        workers = [LocalWorker(resources["sesrelay_spool_queue_url"], resources["queue_arn"],
                               worker_handler, name=f"soak-worker-{n}", sqs=poller_sqs(moto))
                   for n in range(2)]
        for worker in workers:
            worker.start()
        try:
            yield relay, proxy, moto
        finally:
            relay.stop()
            for worker in workers:
                worker.stopping.set()
            for worker in workers:
                worker.join(timeout=10)
    finally:
        if emulation.stdin:
            emulation.stdin.close()
        try:
            emulation.wait(timeout=30)
        except subprocess.TimeoutExpired:
            emulation.kill()
        proxy.stop()
        os.environ.clear()
        os.environ.update(saved)
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


def accepted_by_ses(moto: str) -> Counter[str]:
    """How many times the emulated SES accepted each subject."""
    return Counter(m["raw"].split("Subject: ", 1)[1].split("\r\n", 1)[0]
                   for m in read_outbox(moto, timeout=120) if "Subject: soak-" in m["raw"])


def spool_is_empty(moto: str) -> bool:
    """No record in the spool queue, visible or being worked on."""
    sqs = boto3.client("sqs", endpoint_url=moto, region_name=DEV_REGION)
    attributes = sqs.get_queue_attributes(
        QueueUrl=os.environ["SESRELAY_SPOOL_QUEUE_URL"],
        AttributeNames=["ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return all(value == "0" for value in attributes.values())


@pytest.mark.soak
@pytest.mark.timeout(600)
def test_500_messages_through_lost_and_slow_answers_are_each_sent_once(
        soak_pipeline: tuple[RunningRelay, FaultProxy, str]) -> None:
    relay, proxy, moto = soak_pipeline
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
    ingest_seconds = time.monotonic() - started

    deadline = time.monotonic() + SETTLE_TIME
    while time.monotonic() < deadline:
        # Cheap questions only: moto's whole state (the outbox) is costly to dump.
        if spool_is_empty(moto) and not unfinished(moto):
            break
        time.sleep(2)
    time.sleep(3)  # anything sent late would show now
    counts = accepted_by_ses(moto)
    doubts = in_doubt_outcomes(moto)
    left = unfinished(moto)
    faults: Counter[str] = Counter()
    for (_, action), count in proxy.applied.items():
        faults[action] += count
    print(f"\nfault soak: {MESSAGES} messages acknowledged in {ingest_seconds:.0f} s, all "
          f"finished in {time.monotonic() - started:.0f} s; SMTP attempts {dict(tally)}; "
          f"acknowledged {len(acknowledged)}; AWS requests {sum(proxy.seen.values())}, "
          f"faults {dict(faults)} (upstream errors {proxy.upstream_errors}); send attempts "
          f"other than sent at once {dict(doubts)}; SES copies per message "
          f"{dict(Counter(counts[s] for s in subjects))}; unfinished at the end {len(left)} "
          f"{left[:5]}")
    lost = sorted(s for s in acknowledged if counts[s] == 0)
    duplicated = sorted(s for s in subjects if counts[s] > 1)
    never_acknowledged_but_sent = sorted(s for s in subjects
                                         if counts[s] and s not in acknowledged)
    assert lost == [] and duplicated == [] and never_acknowledged_but_sent == []
    assert len(acknowledged) == MESSAGES
    assert left == []  # every message finished: settled, not left waiting
    assert sum(proxy.applied.values()) > 0.05 * sum(proxy.seen.values())  # it was a soak


def unfinished(moto: str) -> list[str]:
    """Messages the trail still shows unfinished (deferred, in doubt or being sent), with
    their state and last reason."""
    dynamodb = boto3.client("dynamodb", endpoint_url=moto, region_name=DEV_REGION)
    reader = trail.TrailReader(dynamodb, os.environ["SESRELAY_TRAIL_TABLE"])
    return [f"{s['qid']} {s['status']} {s.get('attempts', 0)} {s.get('last_reason', '')}"
            for s in reader.unfinished()]


def in_doubt_outcomes(moto: str) -> Counter[str]:
    """The trail's attempt items other than a plain sent: in doubt when the call ended,
    and how later receives settled them (a trail write lost to a fault is not counted)."""
    dynamodb = boto3.client("dynamodb", endpoint_url=moto, region_name=DEV_REGION)
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

