"""`sesrelay mailq`: exactly the unfinished messages and the DLQ's, in Postfix's layout;
the DLQ is left as it was."""

from __future__ import annotations

import json

import pytest

from sesrelay import trail
from sesrelay.cli import main
from tests.cli.conftest import Account, WorkerLike, envelope

ACTIVE, DEFERRED, SENT, HELD, DEAD = ("2WZDKV5Q3N7B1XR4", "2WZDKV5Q3P8C2YS5",
                                      "2WZDKV5Q3Q9D3ZT6", "2WZDKV5Q3R0F4BV7",
                                      "2WZDKV5Q3S1G5CW8")


def at(clock: str) -> str:
    return f"2026-11-28T{clock}.000000+00:00"


def mailq(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["mailq", *args]) == 0
    return capsys.readouterr().out


@pytest.fixture
def queue(account: Account, worker: WorkerLike) -> Account:
    """One message of each kind: being delivered, deferred, sent, held in the DLQ with a
    trail, in the DLQ without one, and a DLQ message that is no envelope at all."""
    worker.arrive(ACTIVE, received_at=at("10:02:03"))
    worker.arrive(DEFERRED, sender="", size=5120, received_at=at("10:05:00"),
                  recipients=("dave@example.org", "carol@example.net"))
    worker.attempt(DEFERRED, ("dave@example.org",), ses_message_id="m-1")
    worker.defer(DEFERRED, "454 4.7.0 Throttling: Maximum sending rate exceeded", attempts=2)
    account.writer.update_state(DEFERRED, pending=["carol@example.net"],
                                next_try=at("10:15:00"))
    worker.arrive(SENT, received_at=at("10:06:00"))
    worker.finish(SENT)
    worker.arrive(HELD, received_at=at("09:00:00"), size=700)
    account.writer.update_state(HELD, status=trail.STATE_UNDELIVERABLE,
                                last_reason="Internal failure")
    account.sqs.send_message(QueueUrl=account.dlq_url,
                             MessageBody=envelope(HELD, size=700,
                                                  received_at=at("09:00:00")).to_json())
    account.sqs.send_message(QueueUrl=account.dlq_url, MessageBody=envelope(
        DEAD, sender="cron@example.com", recipients=("ops@example.org",), size=1200,
        received_at=at("08:30:00")).to_json())
    return account


def test_postfix_layout(queue: Account, utc_local_time: None,
                        capsys: pytest.CaptureFixture[str]) -> None:
    assert mailq(capsys) == """\
-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
2WZDKV5Q3S1G5CW8!     1200 Sat Nov 28 08:30:00  cron@example.com
(in the dead-letter queue, not in the trail: `sesrelay redrive` retries it)
                                                ops@example.org

2WZDKV5Q3R0F4BV7!      700 Sat Nov 28 09:00:00  app@example.com
(Internal failure; in the dead-letter queue: `sesrelay redrive` retries it)
                                                bob@example.org

2WZDKV5Q3N7B1XR4*     2300 Sat Nov 28 10:02:03  app@example.com
                                                bob@example.org

2WZDKV5Q3P8C2YS5      5120 Sat Nov 28 10:05:00  MAILER-DAEMON
(454 4.7.0 Throttling: Maximum sending rate exceeded; 2 attempts; next try Sat Nov 28 10:15:00)
                                                carol@example.net

-- 9 Kbytes in 4 Requests.
"""


def test_the_dlq_is_left_as_it_was(queue: Account, capsys: pytest.CaptureFixture[str]) -> None:
    queue.sqs.send_message(QueueUrl=queue.dlq_url, MessageBody="not an envelope")
    out = mailq(capsys)
    assert "(in the dead-letter queue, not a sesrelay envelope: envelope is not JSON" in out
    assert "-- 9 Kbytes in 5 Requests." in out
    # Visible again at once, all three: nothing consumed, nothing hidden.
    assert queue.count(queue.dlq_url) == {"visible": 3, "in_flight": 0}
    assert len(queue.visible(queue.dlq_url)) == 3


def test_postqueue_j_json(queue: Account, capsys: pytest.CaptureFixture[str]) -> None:
    records = [json.loads(line) for line in mailq(capsys, "--json").splitlines()]
    assert [(r["queue_id"], r["queue_name"]) for r in records] == [
        (DEAD, "hold"), (HELD, "hold"), (ACTIVE, "active"), (DEFERRED, "deferred")]
    deferred = records[3]
    assert deferred["sender"] == "" and deferred["message_size"] == 5120
    assert [r["address"] for r in deferred["recipients"]] == ["carol@example.net"]
    assert deferred["recipients"][0]["delay_reason"].startswith("454 4.7.0 Throttling")


def test_an_empty_queue(account: Account, worker: WorkerLike,
                        capsys: pytest.CaptureFixture[str]) -> None:
    assert mailq(capsys) == "Mail queue is empty\n"
    worker.arrive(SENT)
    worker.finish(SENT)
    assert mailq(capsys) == "Mail queue is empty\n"
