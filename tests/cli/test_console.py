"""The commands as users run them: the `sesrelay` console script in a child process,
against moto's server standing in for `sesrelay dev`'s emulation (--endpoint) or for a
deployed environment (--env, with the usual AWS variables)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from sesrelay import deployment, dev, maillog, trail
from sesrelay.cli import where
from tests.cli.conftest import Account, WorkerLike, create_dev_resources, envelope
from tests.conftest import SESRELAY
from tests.support import free_port, wait_for_port


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    running = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    running.start()
    yield f"http://127.0.0.1:{port}"
    running.stop()


def client(endpoint: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=dev.DEV_REGION,
                        aws_access_key_id="sesrelay-dev", aws_secret_access_key="sesrelay-dev")


@pytest.fixture
def emulation(server: str) -> Account:
    """The server, emptied, with dev's resources (as `sesrelay dev` creates them)."""
    urllib.request.urlopen(urllib.request.Request(f"{server}/moto-api/reset", method="POST"),
                           timeout=10).close()
    sqs, dynamodb = client(server, "sqs"), client(server, "dynamodb")
    queue_url, dlq_url = create_dev_resources(sqs, dynamodb)
    return Account(sqs, dynamodb, queue_url, dlq_url, where.dev_location(server))


def sesrelay(*args: str, env: dict[str, str] | None = None,
             home: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/sbin:/usr/bin:/bin", "HOME": str(home or "/nonexistent")}
    return subprocess.run([SESRELAY, *args], capture_output=True, text=True, timeout=120,
                          env={**base, **(env or {})})


def test_each_command_against_dev(emulation: Account, server: str, tmp_path: Path) -> None:
    worker = WorkerLike(emulation)
    worker.arrive("QCONSOLEDEFER01")
    worker.defer("QCONSOLEDEFER01", "454 4.7.0 Throttling: Maximum sending rate exceeded",
                 delay=900)
    worker.arrive("QCONSOLESENT001", recipients=("ann@example.org",))
    worker.attempt("QCONSOLESENT001", ("ann@example.org",), ses_message_id="0100-abc-000000")
    worker.finish("QCONSOLESENT001")
    emulation.sqs.send_message(QueueUrl=emulation.dlq_url,
                               MessageBody=envelope("QCONSOLEDEAD001").to_json())
    at = ("--endpoint", server)

    mailq = sesrelay("mailq", *at)
    assert mailq.returncode == 0, mailq.stderr
    assert re.search(r"^QCONSOLEDEFER01 +2300 .*  app@example.com$", mailq.stdout, re.M)
    assert re.search(r"^QCONSOLEDEAD001! +2300 ", mailq.stdout, re.M)
    assert mailq.stdout.endswith("-- 4 Kbytes in 2 Requests.\n")

    traced = sesrelay("trace", "ann@example.org", *at)
    assert traced.returncode == 0, traced.stderr
    assert re.search(r"final:  <ann@example.org>  sent \(SES MessageId 0100-abc-000000\)",
                     traced.stdout)

    flushed = sesrelay("flush", "QCONSOLEDEFER01", *at)
    assert flushed.stdout == "QCONSOLEDEFER01: flushed: due now\n", flushed.stderr
    assert emulation.count(emulation.queue_url)["visible"] == 1

    deleted = sesrelay("delete", "QCONSOLEDEFER01", *at)
    assert deleted.stdout.splitlines()[-1] == "sesrelay delete: Deleted: 1 message", deleted.stderr

    redriven = sesrelay("redrive", *at)
    assert redriven.stdout.splitlines() == [
        "QCONSOLEDEAD001: redriven",
        "sesrelay redrive: 1 message moved from the dead-letter queue to the queue"]

    mailq = sesrelay("mailq", *at)
    assert mailq.stdout == "Mail queue is empty\n"
    assert mailq.stderr == ("sesrelay mailq: 1 message(s) in the queue are due and wait for "
                            "the worker (those it has not seen yet are not in the trail)\n")

    state = tmp_path / "state"
    path = state / "sesrelay" / f"dev-{where.endpoint_port(server)}.maillog"
    path.parent.mkdir(parents=True)
    path.write_text(maillog.line("smtpd", maillog.client("QCONSOLESENT001", "10.1.2.3"),
                                 datetime.now(UTC), "h", 9) + "\n")
    logged = sesrelay("maillog", *at, env={"XDG_STATE_HOME": str(state)})
    assert logged.stdout.endswith(" h sesrelay/smtpd[9]: QCONSOLESENT001: client=unknown"
                                  "[10.1.2.3]\n"), logged.stderr


def test_a_dev_that_is_not_running_is_named(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = sesrelay("mailq", "--endpoint", url)
    assert result.returncode == 1
    assert result.stderr == (f"sesrelay mailq: cannot reach the AWS emulation at {url}: is "
                             "`sesrelay dev` running?\n")


def test_env_resolves_from_the_stack_with_the_usual_aws_chain(server: str,
                                                              emulation: Account) -> None:
    aws = {"AWS_ENDPOINT_URL": server, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    cloudformation, logs, dynamodb = (boto3.client(s, endpoint_url=server, region_name="us-east-1",
                                                   aws_access_key_id="testing",
                                                   aws_secret_access_key="testing")
                                      for s in ("cloudformation", "logs", "dynamodb"))
    dynamodb.create_table(TableName="sesrelay-ci-trail", **trail.table_definition())
    logs.create_log_group(logGroupName="/sesrelay/ci/relay")
    logs.create_log_group(logGroupName="/aws/lambda/sesrelay-ci-worker")
    logs.create_log_stream(logGroupName="/sesrelay/ci/relay", logStreamName="relay/1")
    now = datetime.now(UTC)
    logs.put_log_events(logGroupName="/sesrelay/ci/relay", logStreamName="relay/1", logEvents=[
        {"timestamp": int(now.timestamp() * 1000),
         "message": maillog.line("smtpd", maillog.client("QCI", "10.1.2.3"), now, "t", 3)}])
    template = {
        "Resources": {"Spool": {"Type": "AWS::SQS::Queue"}, "Dead": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {name: {"Value": value} for name, value in {
            deployment.OUTPUT_QUEUE_URL: {"Ref": "Spool"},
            deployment.OUTPUT_DLQ_URL: {"Ref": "Dead"},
            deployment.OUTPUT_TRAIL_TABLE: "sesrelay-ci-trail",
            deployment.OUTPUT_IDEMPOTENCY_TABLE: "sesrelay-ci-idempotency",
            deployment.OUTPUT_RELAY_LOG_GROUP: "/sesrelay/ci/relay",
            deployment.OUTPUT_WORKER_LOG_GROUP: "/aws/lambda/sesrelay-ci-worker",
            deployment.OUTPUT_REGION: "us-east-1"}.items()}}
    cloudformation.create_stack(StackName="sesrelay-ci", TemplateBody=json.dumps(template))

    mailq = sesrelay("mailq", "--env", "ci", env=aws)
    assert (mailq.returncode, mailq.stdout) == (0, "Mail queue is empty\n"), mailq.stderr
    logged = sesrelay("maillog", "--env", "ci", env=aws)
    assert logged.stdout.endswith(" t sesrelay/smtpd[3]: QCI: client=unknown[10.1.2.3]\n")


def test_serve_writes_maillog_lines_that_pflogsumm_reads(server: str, emulation: Account,
                                                         tmp_path: Path) -> None:
    client(server, "s3").create_bucket(Bucket="sesrelay-console-spool")
    port = free_port()
    env = {"PATH": f"{Path(SESRELAY).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "AWS_ENDPOINT_URL": server, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "POWERTOOLS_METRICS_DISABLED": "true", "SESRELAY_LISTEN_PORT": str(port),
           "SESRELAY_INET_INTERFACES": "loopback-only", "SESRELAY_INET_PROTOCOLS": "ipv4",
           "SESRELAY_MYHOSTNAME": "relay.example.net",
           "SESRELAY_SPOOL_BUCKET": "sesrelay-console-spool",
           "SESRELAY_SPOOL_QUEUE_URL": emulation.queue_url,
           "SESRELAY_IDEMPOTENCY_TABLE": dev.TABLE}
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen([SESRELAY, "serve", "--drain-seconds", "2"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for_port(port, process, timeout=30)
        sent = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--from",
                               "app@example.com", "--to", "bob@example.org"],
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    lines = log.read_text().splitlines()
    host = os.uname().nodename
    assert lines and all(re.match(
        rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{6}}\+00:00 {re.escape(host)} "
        rf"sesrelay/(smtpd|qmgr)\[{process.pid}\]: \S", line) for line in lines), lines
    summary = subprocess.run(["pflogsumm", "--syslog-name=sesrelay"], input="\n".join(lines),
                             capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/sbin:/usr/bin:/bin"}).stdout
    assert re.search(r"^\s+1\s+received$", summary, re.M), summary
