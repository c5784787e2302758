"""The operator commands on the trail and the maillog lines that the real worker writes
(its handler, in process, against moto): trace, mailq, flush and delete agree with what
the worker did, and its maillog records reach the dev maillog file and pflogsumm."""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from ses_worker.sending import QUICK_RETRIES
from sesrelay import deployment, maillogfile, trail
from sesrelay.cli import dlq, main, where
from sesrelay.trail import TrailReader
from tests.worker.conftest import (  # noqa: F401  (fixtures)
    REGION,
    TABLE,
    TRAIL_TABLE,
    Spool,
    fail_sends,
    message,
    sent_messages,
    spool,
    to,
    worker_env,
)


@pytest.fixture
def operator(spool: Spool, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
             tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Path]:
    """The commands pointed at the worker's account; the dev maillog file on; the path."""
    dead = spool.sqs.create_queue(QueueName="sesrelay-dlq")["QueueUrl"]
    location = where.Location(
        label="the worker's account", deployed=True,
        session=boto3.session.Session(region_name=REGION), region=REGION, outputs={
            deployment.OUTPUT_QUEUE_URL: spool.queue_url, deployment.OUTPUT_DLQ_URL: dead,
            deployment.OUTPUT_TRAIL_TABLE: TRAIL_TABLE,
            deployment.OUTPUT_IDEMPOTENCY_TABLE: TABLE})
    monkeypatch.setattr(where, "resolve", lambda args: location)
    monkeypatch.setattr(dlq, "LAST_WAIT_SECONDS", 0)
    caplog.set_level(logging.INFO)
    path = tmp_path / "maillog"
    handler = maillogfile.install(path)
    yield path
    logging.getLogger().removeHandler(handler)
    handler.close()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()  # the worker's JSON records (powertools writes them to stdout)
    assert main(list(args)) == 0
    return capsys.readouterr().out


def final(output: str) -> dict[str, str]:
    block = output.split("  final:  ", 1)[1]
    return {m.group(1): m.group(2) for m in re.finditer(r"<([^>]+)>\s+(.+)$", block, re.M)}


def kinds(queue_id: str) -> list[str]:
    reader = TrailReader(boto3.client("dynamodb", region_name=REGION), TRAIL_TABLE)
    return [i["kind"] for i in reader.history(queue_id)]


def test_sent_deferred_flushed_bounced_and_deleted(
        spool: Spool, operator: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    # Throttled on the first try and the worker's quick retries: deferred; then it goes.
    throttled = fail_sends("TooManyRequestsException", "Maximum sending rate exceeded.",
                           when=to("dave@example.org"), status=429, times=1 + QUICK_RETRIES)
    refused = fail_sends("MessageRejected", "Address blacklisted.", when=to("bob@example.org"))
    sent = spool.put(message(), ["ann@example.org"])
    deferred = spool.put(message(), ["dave@example.org"])
    bounced = spool.put(message(), ["bob@example.org"])
    spool.invoke(spool.receive())
    assert len(throttled) == 1 + QUICK_RETRIES and len(refused) == 1

    out = run(capsys, "trace", sent.queue_id)
    assert final(out) == {"ann@example.org": StartsWith("sent (SES MessageId ")}
    assert kinds(sent.queue_id) == [trail.RECEIVED, trail.ATTEMPT, trail.FINISHED]

    out = run(capsys, "trace", bounced.queue_id)
    assert final(out) == {"bob@example.org": StartsWith("bounced (MessageRejected: Address "
                                                       "blacklisted.")}
    assert (f"DSN to <{bounced.mail_from}> about <bob@example.org>: sent" in out)

    listing = run(capsys, "mailq")
    assert re.findall(r"^([0-9A-Z]{16})[*! ]", listing, re.M) == [deferred.queue_id]
    assert "Maximum sending rate exceeded." in listing and "1 attempt" in listing

    assert run(capsys, "flush", deferred.queue_id) == f"{deferred.queue_id}: flushed: due now\n"
    assert spool.waiting() == 1  # due now, not in five minutes
    spool.invoke(spool.receive())
    out = run(capsys, "trace", deferred.queue_id)
    assert [line.split()[2] for line in out.splitlines()[1:7]] == [
        "received", "attempt", "deferred", "flushed", "attempt", "finished"]
    assert final(out) == {"dave@example.org": StartsWith("sent (SES MessageId ")}
    assert run(capsys, "mailq") == "Mail queue is empty\n"

    # Deleted while deferred: the worker's claim is refused and nothing is sent.
    fail_sends("TooManyRequestsException", "Maximum sending rate exceeded.",
               when=to("erin@example.org"), status=429, times=1 + QUICK_RETRIES)
    doomed = spool.put(message(), ["erin@example.org"])
    spool.invoke(spool.receive())
    before = len(sent_messages())
    assert run(capsys, "delete", doomed.queue_id).splitlines()[-1] == (
        "sesrelay delete: Deleted: 1 message")
    spool.sqs.send_message(QueueUrl=spool.queue_url, MessageBody=doomed.to_json())  # as if
    spool.invoke(spool.receive())  # SQS had delivered it again anyway
    assert len(sent_messages()) == before
    out = run(capsys, "trace", doomed.queue_id)
    assert final(out) == {"erin@example.org": StartsWith("deleted (by ")}

    # The worker's maillog lines, through the dev maillog file, as pflogsumm counts them.
    summary = subprocess.run(["pflogsumm", "--syslog-name=sesrelay"],
                             input=operator.read_text(), capture_output=True, text=True,
                             timeout=60, env={"PATH": "/usr/sbin:/usr/bin:/bin"}).stdout
    counts = {m.group(2): int(m.group(1)) for m in re.finditer(
        r"^\s+(\d+)\s+(delivered|bounced)$", summary, re.M)}
    # ann and dave (the worker logs no delivery line for the DSN itself); bob bounced.
    assert counts == {"delivered": 2, "bounced": 1}, summary
    assert re.search(r"^\s+2\s+deferred\s+\(2\s+deferrals\)$", summary, re.M), summary


def test_a_message_deferred_as_a_delayed_copy_is_listed_flushed_plainly_and_deleted(
        spool: Spool, operator: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESRELAY_MINIMAL_BACKOFF_TIME", "600s")  # every retry as a copy
    fail_sends("TooManyRequestsException", "Maximum sending rate exceeded.",
               when=to("dave@example.org"), status=429, times=1 + QUICK_RETRIES)
    waiting = spool.put(message(), ["dave@example.org"])
    spool.invoke(spool.receive())
    assert (spool.delayed(), spool.in_flight()) == (1, 0)

    listing = run(capsys, "mailq")
    assert re.findall(r"^([0-9A-Z]{16})[*! ]", listing, re.M) == [waiting.queue_id]
    out = run(capsys, "flush", waiting.queue_id)
    assert out.startswith(f"{waiting.queue_id}: deferred as a delayed copy, which SQS hands "
                          "out no sooner: it is tried at its next try (20")
    assert run(capsys, "delete", waiting.queue_id).splitlines()[-1] == (
        "sesrelay delete: Deleted: 1 message")

    spool.pass_time()  # its next try: the claim is refused, nothing is sent
    spool.invoke(spool.receive())
    assert sent_messages() == []
    assert spool.hidden() == spool.waiting() == 0
    out = run(capsys, "trace", waiting.queue_id)
    assert final(out) == {"dave@example.org": StartsWith("deleted (by ")}


class StartsWith(str):
    """Equal to any string that starts with this one."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith(str(self))

    __hash__ = str.__hash__
