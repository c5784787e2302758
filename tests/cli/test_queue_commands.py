"""`sesrelay flush`, `delete` and `redrive` against SQS's own semantics (moto): visibility,
receipt handles, the DLQ; and what each leaves in the trail and the commit records."""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

from sesrelay import commit, dev, trail
from sesrelay.cli import main
from sesrelay.cli.queue import handle_gone
from sesrelay.spool import Envelope
from tests.cli.conftest import Account, WorkerLike, envelope


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def kinds(account: Account, queue_id: str) -> list[str]:
    return [item["kind"] for item in account.reader.history(queue_id)]


# --- flush -----------------------------------------------------------------------------

def test_flush_makes_a_deferred_message_due_now(account: Account, worker: WorkerLike,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    worker.arrive("QFLUSH1")
    worker.defer("QFLUSH1", "454 4.7.0 Throttling", delay=900)
    assert account.visible() == []  # hidden until its next try, 15 minutes away

    code, out, _ = run(capsys, "flush", "QFLUSH1")
    assert (code, out) == (0, "QFLUSH1: flushed: due now\n")
    [again] = account.visible()
    assert Envelope.from_json(again["Body"]).queue_id == "QFLUSH1"
    [note] = [i for i in account.reader.history("QFLUSH1") if i["kind"] == trail.FLUSHED]
    assert re.fullmatch(r"\S+@\S+", note["by"])


def test_flush_without_a_queue_id_flushes_every_deferred_message(
        account: Account, worker: WorkerLike, capsys: pytest.CaptureFixture[str]) -> None:
    for queue_id in ("QALL1", "QALL2"):
        worker.arrive(queue_id)
        worker.defer(queue_id, "454 4.7.0 Throttling", delay=900)
    worker.arrive("QBUSY")  # being delivered: not deferred, left alone
    code, out, _ = run(capsys, "flush")
    assert code == 0
    assert out.splitlines() == ["QALL1: flushed: due now", "QALL2: flushed: due now",
                                "sesrelay flush: 2 deferred messages made due now"]
    assert sorted(Envelope.from_json(m["Body"]).queue_id for m in account.visible()) == [
        "QALL1", "QALL2"]


def test_flush_with_a_handle_that_no_longer_works_says_so_plainly(
        account: Account, worker: WorkerLike, capsys: pytest.CaptureFixture[str]) -> None:
    worker.arrive("QGONE")
    worker.defer("QGONE", "454 4.7.0 Throttling", delay=900)
    # Meanwhile the message was received and finished: its recorded handle is dead.
    account.sqs.delete_message(QueueUrl=account.queue_url,
                               ReceiptHandle=worker.handles["QGONE"])
    code, out, err = run(capsys, "flush", "QGONE")
    assert code == 0 and err == ""
    assert out == ("QGONE: its receipt handle no longer works: the message was received "
                   "again since it was deferred (it is being delivered, or is done): nothing "
                   "to flush\n")
    assert trail.FLUSHED not in kinds(account, "QGONE")


def test_flush_of_messages_that_are_not_deferred(account: Account, worker: WorkerLike,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    worker.arrive("QSENT")
    worker.finish("QSENT")
    assert run(capsys, "flush", "QSENT")[1] == "QSENT: finished (sent): nothing to flush\n"
    code, _out, err = run(capsys, "flush", "QNONE")
    assert code == 1 and err == "sesrelay flush: QNONE: no such message in the trail\n"


def test_aws_handle_errors_count_as_gone() -> None:
    def error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "x"}}, "ChangeMessageVisibility")

    # AWS answers an outdated handle with InvalidParameterValue ("Message does not exist
    # or is not available for visibility timeout change"), moto with ReceiptHandleIsInvalid.
    for code in ("InvalidParameterValue", "ReceiptHandleIsInvalid",
                 "AWS.SimpleQueueService.MessageNotInflight"):
        assert handle_gone(error(code))
    assert not handle_gone(error("AccessDenied"))


# --- delete ----------------------------------------------------------------------------

def test_delete_stops_every_future_send(account: Account, worker: WorkerLike,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    worker.arrive("QDEL1")
    worker.defer("QDEL1", "454 4.7.0 Throttling", delay=1)
    code, out, _ = run(capsys, "delete", "QDEL1")
    assert code == 0
    assert out.splitlines() == ["QDEL1: removed (removed from the queue)",
                                "sesrelay delete: Deleted: 1 message"]
    # The tombstone: the worker's claim before any send is refused.
    record = commit.claim(account.dynamodb, dev.TABLE, "QDEL1")
    assert record is not None and record.state is commit.CommitState.DELETED
    assert re.fullmatch(r"\S+@\S+", record.by)
    # Gone from the queue (its next try would have been in a second).
    assert account.count(account.queue_url) == {"visible": 0, "in_flight": 0}
    # The trail: who and when; finished as deleted; no longer in mailq.
    [note] = [i for i in account.reader.history("QDEL1") if i["kind"] == trail.DELETED]
    assert note["by"] == record.by and note["removed_from"] == ["removed from the queue"]
    assert account.reader.state("QDEL1")["status"] == trail.STATE_DELETED
    assert account.reader.unfinished() == []


def test_delete_from_the_dlq_and_of_what_the_trail_does_not_know(
        account: Account, worker: WorkerLike, capsys: pytest.CaptureFixture[str]) -> None:
    account.sqs.send_message(QueueUrl=account.dlq_url, MessageBody=envelope("QDEAD").to_json())
    account.sqs.send_message(QueueUrl=account.dlq_url, MessageBody=envelope("QKEEP").to_json())
    code, out, _ = run(capsys, "delete", "QDEAD", "QLATER")
    assert code == 0
    assert out.splitlines() == [
        "QDEAD: removed (removed from the dead-letter queue)",
        "QLATER: removed (not in the trail or the dead-letter queue: if it is still on its "
        "way, the worker will not send it)",
        "sesrelay delete: Deleted: 2 messages"]
    [kept] = account.visible(account.dlq_url)  # the other one, visible again at once
    assert Envelope.from_json(kept["Body"]).queue_id == "QKEEP"
    for queue_id in ("QDEAD", "QLATER"):
        assert commit.read(account.dynamodb, dev.TABLE, queue_id).state is (
            commit.CommitState.DELETED)


def test_delete_all_deferred_spares_the_rest_and_warns_about_sends_under_way(
        account: Account, worker: WorkerLike, capsys: pytest.CaptureFixture[str]) -> None:
    for queue_id in ("QD1", "QD2"):
        worker.arrive(queue_id)
        worker.defer(queue_id, "454 4.7.0 Throttling")
    worker.arrive("QACTIVE")
    worker.arrive("QDONE")
    worker.finish("QDONE")
    code, out, _ = run(capsys, "delete", "ALL-DEFERRED")
    assert out.splitlines()[-1] == "sesrelay delete: Deleted: 2 messages"
    assert [s["qid"] for s in account.reader.unfinished()] == ["QACTIVE"]

    code, out, _ = run(capsys, "delete", "QACTIVE", "QDONE")
    assert code == 0
    assert out.splitlines() == [
        "QACTIVE: removed (removed from the queue)",
        "QACTIVE: warning: a send already under way or in doubt may still complete (see "
        "`sesrelay trace QACTIVE`)",
        "QDONE: already finished (sent): nothing to delete",
        "sesrelay delete: Deleted: 1 message"]
    [note] = [i for i in account.reader.history("QACTIVE") if i["kind"] == trail.DELETED]
    assert note["reason"] == "a send already under way or in doubt may still complete"
    assert commit.read(account.dynamodb, dev.TABLE, "QDONE") is None


def test_delete_reads_queue_ids_from_stdin(account: Account, worker: WorkerLike,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("QIN1\nQIN2\n"))
    code, out, _ = run(capsys, "delete", "-")
    assert code == 0
    assert out.splitlines()[-1] == "sesrelay delete: Deleted: 2 messages"


# --- redrive ---------------------------------------------------------------------------

def test_redrive_moves_the_dlq_back_and_is_safe_to_repeat(
        account: Account, worker: WorkerLike, capsys: pytest.CaptureFixture[str]) -> None:
    worker.arrive("QRED1")
    account.writer.update_state("QRED1", status=trail.STATE_UNDELIVERABLE)
    account.sqs.delete_message(QueueUrl=account.queue_url, ReceiptHandle=worker.handles["QRED1"])
    bodies = {envelope("QRED1").to_json(), envelope("QRED2").to_json()}
    for body in bodies:
        account.sqs.send_message(QueueUrl=account.dlq_url, MessageBody=body)
    account.sqs.send_message(QueueUrl=account.dlq_url, MessageBody="{}")

    code, out, _ = run(capsys, "redrive", "--dry-run")
    assert out.splitlines()[-1] == ("sesrelay redrive: 2 messages would be moved from the "
                                    "dead-letter queue to the queue (dry run)")
    assert account.count(account.dlq_url) == {"visible": 3, "in_flight": 0}
    assert account.count(account.queue_url)["visible"] == 0

    code, out, _ = run(capsys, "redrive")
    assert code == 0
    assert out.splitlines()[0].startswith("SQS message ")
    assert "left in the dead-letter queue: not a sesrelay envelope" in out
    assert out.splitlines()[-1] == ("sesrelay redrive: 2 messages moved from the dead-letter "
                                    "queue to the queue")
    moved = account.visible()
    assert {m["Body"] for m in moved} == bodies  # the envelopes, unchanged
    [left] = account.visible(account.dlq_url)
    assert left["Body"] == "{}"
    assert trail.REDRIVEN in kinds(account, "QRED1") and trail.REDRIVEN in kinds(account,
                                                                                "QRED2")
    assert account.reader.state("QRED1")["status"] == trail.ACTIVE

    code, out, _ = run(capsys, "redrive")
    assert out.splitlines()[-1] == ("sesrelay redrive: 0 messages moved from the dead-letter "
                                    "queue to the queue")
