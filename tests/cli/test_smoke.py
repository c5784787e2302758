"""`sesrelay smoke` against `sesrelay dev`, run as users run it: it passes when the whole
pipeline works (relay, worker, SES's mailbox simulator and its events), and names the
component when a step fails (the relay refuses the sender; no worker reads the queue)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from sesrelay import dev
from sesrelay.cli.smoke import Checklist, SmokeFailure, check_account
from tests.conftest import SESRELAY, DevRelay, running_dev
from tests.support import free_port, wait_for_port

# dev's verified identities include example.com (ses_identities); the relay refuses any
# other sender (ses_unverified_sender = reject, after running_dev's accept).
VERIFIED = "smoke@example.com"
UNVERIFIED = "smoke@unverified.example"


@pytest.fixture(scope="module")
def with_events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRelay]:
    """`sesrelay dev` with a configuration set: SES's events reach the trail."""
    with running_dev(tmp_path_factory.mktemp("dev"),
                     main_cf="ses_configuration_set = sesrelay-dev\n"
                             "ses_unverified_sender = reject\n") as running:
        yield running


def smoke(*args: str) -> subprocess.CompletedProcess[str]:
    """`sesrelay smoke` as a user runs it, with no AWS settings of this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SESRELAY_"))}
    return subprocess.run([SESRELAY, "smoke", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def checklist(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The checklist lines, without their queue IDs and SES MessageIds."""
    return [line.split()[0] for line in result.stdout.splitlines()
            if line.startswith("  ") and line.split()[0] in ("ok", "skip", "WARN", "FAIL")]


def test_passes_with_delivery_and_bounce(with_events: DevRelay) -> None:
    result = smoke("--server", f"127.0.0.1:{with_events.smtp_port}",
                   "--endpoint", with_events.endpoint, "--from", VERIFIED, "--wait", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    # moto has no GetAccount: the account's state is the one step dev cannot check.
    assert checklist(result) == ["skip"] + ["ok"] * 8
    out = result.stdout
    assert "skip  the SES account's state: GetAccount unavailable" in out
    assert "<success@simulator.amazonses.com> delivered (250 2.6.0" in out
    assert "<bounce@simulator.amazonses.com> bounced (SES Permanent bounce: 5.1.1" in out
    assert "passed (8 checks)" in out
    # The message the smoke sent is what SES got: to the simulator, from the sender.
    sent = with_events.outbox()
    assert {tuple(s["rcpt_to"]) for s in sent} >= {("success@simulator.amazonses.com",),
                                                    ("bounce@simulator.amazonses.com",)}


def test_relay_refusal_names_the_relay(with_events: DevRelay) -> None:
    result = smoke("--server", f"127.0.0.1:{with_events.smtp_port}",
                   "--endpoint", with_events.endpoint, "--from", UNVERIFIED, "--wait", "60")
    assert result.returncode == 1
    assert checklist(result) == ["skip", "FAIL"]
    assert ("the relay refused <success@simulator.amazonses.com>: 553 5.7.1 "
            f"<{UNVERIFIED}>: Sender address rejected") in result.stdout
    assert "look at: the relay's configuration (mynetworks, relay_domains, " \
           "ses_identities and ses_unverified_sender)" in result.stdout


@pytest.fixture
def relay_without_worker(with_events: DevRelay, tmp_path: Path) -> Iterator[int]:
    """`sesrelay serve` spooling into dev's emulation, to a queue no worker reads (as
    when the worker is stopped); its SMTP port."""
    sqs = boto3.client("sqs", endpoint_url=with_events.endpoint, region_name=dev.DEV_REGION,
                       aws_access_key_id="x", aws_secret_access_key="x")
    queue_url = sqs.create_queue(QueueName=f"no-worker-{free_port()}")["QueueUrl"]
    port = free_port()
    env = {"PATH": os.environ["PATH"], "AWS_ENDPOINT_URL": with_events.endpoint,
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_DEFAULT_REGION": dev.DEV_REGION, "SESRELAY_MYNETWORKS": "127.0.0.0/8",
           "SESRELAY_MYHOSTNAME": "relay.example.net",
           "SESRELAY_SPOOL_BUCKET": dev.BUCKET, "SESRELAY_SPOOL_QUEUE_URL": queue_url,
           "SESRELAY_IDEMPOTENCY_TABLE": dev.TABLE}
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen([SESRELAY, "serve", "--listen", f"127.0.0.1:{port}"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_no_worker_names_the_worker(with_events: DevRelay, relay_without_worker: int) -> None:
    result = smoke("--server", f"127.0.0.1:{relay_without_worker}",
                   "--endpoint", with_events.endpoint, "--from", VERIFIED, "--wait", "3")
    assert result.returncode == 1, result.stdout + result.stderr
    assert checklist(result) == ["skip", "ok", "ok", "FAIL"]
    assert "the worker has not received it within 3 s" in result.stdout
    assert "look at: the worker Lambda (its SQS event source on the spool queue" \
           in result.stdout


def account_answer(production: bool, enabled: bool = True) -> dict[str, object]:
    """GetAccount's answer, in the shape SES v2 gives it."""
    return {"ProductionAccessEnabled": production, "SendingEnabled": enabled,
            "SendQuota": {"MaxSendRate": 14.0 if production else 1.0,
                          "Max24HourSend": 50000.0 if production else 200.0,
                          "SentLast24Hours": 0.0}}


@pytest.mark.parametrize(("answer", "line"), [
    (account_answer(production=True), "  ok    SES account production access; max send "
                                      "rate 14/s, 50000 per 24 h"),
    (account_answer(production=False), "  WARN  SES account in the SES sandbox: SES sends "
                                       "only to verified recipients"),
])
def test_the_account_s_state_is_reported(answer: dict[str, object], line: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    ses = boto3.client("sesv2", region_name="us-east-1", aws_access_key_id="x",
                       aws_secret_access_key="x")
    with Stubber(ses) as stub:
        stub.add_response("get_account", answer)
        check_account(ses, Checklist())
    assert capsys.readouterr().out.startswith(line)


def test_an_account_whose_sending_is_disabled_fails_the_run() -> None:
    ses = boto3.client("sesv2", region_name="us-east-1", aws_access_key_id="x",
                       aws_secret_access_key="x")
    with Stubber(ses) as stub:
        stub.add_response("get_account", account_answer(production=True, enabled=False))
        with pytest.raises(SmokeFailure, match="sending is DISABLED for the account"):
            check_account(ses, Checklist())
