"""`sesrelay trace`: each message's story from the trail, in order, ending in each
recipient's final state; found by queue ID, SES MessageId or recipient address."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from sesrelay import trail
from sesrelay.cli import main
from sesrelay.cli.trace import ADDRESS, MESSAGE_ID, QUEUE_ID, classify
from tests.cli.conftest import Account, WorkerLike

MID = "0100018c2b7a1f3e-6a4b2c1d-8e9f-4a5b-b6c7-d8e9f0a1b2c3-000000"
DSN_MID = "0100018c2b7a2222-11112222-3333-4444-5555-666677778888-000000"


def trace(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["trace", *args])
    out, err = capsys.readouterr()
    return code, out, err


def steps(output: str) -> list[str]:
    """The label of each step line (after the time)."""
    return [m.group(1) for m in re.finditer(
        r"^  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  (\S+(?: event)?)", output, re.M)]


def final(output: str) -> dict[str, str]:
    """Recipient -> the rest of its final-state line."""
    block = output.split("  final:  ", 1)[1]
    return {m.group(1): m.group(2) for m in re.finditer(r"<([^>]+)>\s+(.+)$", block, re.M)}


def test_a_delivered_message(account: Account, worker: WorkerLike,
                             capsys: pytest.CaptureFixture[str]) -> None:
    worker.arrive("Q1SENT", recipients=("bob@example.org",))
    made = worker.attempt("Q1SENT", ("bob@example.org",), ses_message_id=MID, dsn="2.0.0")
    worker.event("Q1SENT", made, trail.EVENT_SEND)
    worker.event("Q1SENT", made, trail.EVENT_DELIVERY, recipients=(
        {"address": "bob@example.org", "status": "250 2.6.0 Message received"},))
    worker.finish("Q1SENT")

    code, out, _ = trace(capsys, "Q1SENT")
    assert code == 0
    assert out.startswith("Q1SENT (times UTC)\n")
    assert steps(out) == ["received", "attempt", "SES event", "SES event", "finished"]
    assert "from=<app@example.com>, size=2300, nrcpt=1, client=[10.1.2.3]" in out
    assert f"<bob@example.org>: sent (dsn=2.0.0, SES MessageId {MID}, 0.21 s)" in out
    assert "DELIVERY <bob@example.org>: 250 2.6.0 Message received" in out
    assert final(out) == {"bob@example.org": "delivered (250 2.6.0 Message received)"}
    assert out.rstrip().endswith("message:  sent")


def test_a_bounce_and_its_dsn_are_told_apart(account: Account, worker: WorkerLike,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rcpts = ("ann@example.org", "bob@example.net", "cy@example.net")
    worker.arrive("Q2BOUNCE", recipients=rcpts)
    made = worker.attempt("Q2BOUNCE", rcpts, ses_message_id=MID, dsn="2.0.0")
    worker.event("Q2BOUNCE", made, trail.EVENT_DELIVERY,
                 recipients=({"address": "ann@example.org", "status": "250 ok"},))
    worker.event("Q2BOUNCE", made, trail.EVENT_BOUNCE, bounce_type="Permanent",
                 bounce_subtype="General", recipients=(
                     {"address": "bob@example.net", "action": "failed", "status": "5.1.1",
                      "diagnostic": "smtp; 550 5.1.1 user unknown"},))
    # As the worker does: the DSN's send is recorded under the recipients it reports on.
    dsn = worker.attempt("Q2BOUNCE", ("bob@example.net",), purpose=trail.PURPOSE_DSN,
                         ses_message_id=DSN_MID, dsn="2.0.0")
    account.writer.note("Q2BOUNCE", trail.BOUNCED, recipients=["bob@example.net"],
                        dsn_sent=True, ses_message_id=DSN_MID)
    # SES's events about the DSN: the sender's mailbox got it. Not about cy@example.net.
    worker.event("Q2BOUNCE", dsn, trail.EVENT_DELIVERY,
                 recipients=({"address": "app@example.com", "status": "250 ok"},))
    worker.event("Q2BOUNCE", dsn, trail.EVENT_BOUNCE, bounce_type="Transient",
                 recipients=({"address": "app@example.com", "status": "4.2.2"},))

    code, out, _ = trace(capsys, "Q2BOUNCE")
    assert code == 0
    assert steps(out) == ["received", "attempt", "SES event", "SES event", "attempt",
                          "bounced", "SES event", "SES event"]
    assert "BOUNCE Permanent/General <bob@example.net>: failed 5.1.1 smtp; 550" in out
    assert "DSN to <app@example.com> about <bob@example.net>: sent" in out
    assert f"<bob@example.net>, DSN sent to <app@example.com> (SES MessageId {DSN_MID})" in out
    assert out.count("(about the DSN)") == 2
    assert final(out) == {
        "ann@example.org": "delivered (250 ok)",
        "bob@example.net": "bounced (SES Permanent bounce: 5.1.1 smtp; 550 5.1.1 user unknown)",
        "cy@example.net": f"sent (SES MessageId {MID})",
    }


def test_a_deferral_a_flush_and_a_later_send(account: Account, worker: WorkerLike,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    worker.arrive("Q3DEFER")
    worker.attempt("Q3DEFER", ("bob@example.org",), outcome=trail.FAILED, dsn="4.3.0",
                   reason="Throttling: Maximum sending rate exceeded",
                   error_class="throttled")
    worker.defer("Q3DEFER", "454 4.7.0 Throttling: Maximum sending rate exceeded")

    code, out, _ = trace(capsys, "Q3DEFER")
    assert final(out) == {"bob@example.org": StartsWith(
        "deferred (454 4.7.0 Throttling: Maximum sending rate exceeded; next try ")}
    assert out.rstrip().endswith("message:  deferred")

    assert main(["flush", "Q3DEFER"]) == 0
    worker.receive("Q3DEFER", visibility=60)
    worker.attempt("Q3DEFER", ("bob@example.org",), ses_message_id=MID, dsn="2.0.0")
    worker.finish("Q3DEFER")
    capsys.readouterr()

    code, out, _ = trace(capsys, "Q3DEFER")
    assert code == 0
    assert steps(out) == ["received", "attempt", "deferred", "flushed", "attempt", "finished"]
    assert "failed (dsn=4.3.0, Throttling: Maximum sending rate exceeded, class throttled" in out
    assert re.search(r"  flushed +by \S+@\S+$", out, re.M)
    assert final(out) == {"bob@example.org": f"sent (SES MessageId {MID})"}


def test_a_send_in_doubt_says_so(account: Account, worker: WorkerLike,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    worker.arrive("Q4DOUBT")
    worker.attempt("Q4DOUBT", ("bob@example.org",), outcome=trail.IN_DOUBT,
                   reason="read timeout after 30 s")
    code, out, _ = trace(capsys, "Q4DOUBT")
    assert code == 0
    assert "in doubt: the answer was lost or late, SES may or may not have accepted it" in out
    assert final(out) == {"bob@example.org": "in doubt (read timeout after 30 s)"}


def test_no_dsn_possible_leaves_it_undeliverable(account: Account, worker: WorkerLike,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    worker.arrive("Q4NULL", sender="")
    worker.attempt("Q4NULL", ("bob@example.org",), outcome=trail.FAILED, dsn="5.1.1",
                   reason="MessageRejected: Address blacklisted", error_class="permanent")
    account.writer.note("Q4NULL", trail.BOUNCED, recipients=["bob@example.org"],
                        reason="the sender is <>: no bounce can be sent", dsn_sent=False)
    account.writer.update_state("Q4NULL", status=trail.STATE_UNDELIVERABLE,
                                last_reason="the sender is <>: no bounce can be sent")
    code, out, _ = trace(capsys, "Q4NULL")
    assert code == 0
    assert ("bounced    <bob@example.org> (the sender is <>: no bounce can be sent), no DSN: "
            "left for the dead-letter queue") in out
    assert final(out) == {
        "bob@example.org": "undeliverable (the sender is <>: no bounce can be sent)"}
    assert out.rstrip().endswith("message:  undeliverable")


def test_found_by_address_within_since(account: Account, worker: WorkerLike,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    old = trail.stamp(datetime.now(UTC) - timedelta(days=3))
    worker.arrive("Q5OLD", recipients=("Bob@Example.org",), received_at=old)
    worker.arrive("Q6NEW", recipients=("carol@example.net", "bob@example.org"))
    worker.arrive("Q7OTHER", recipients=("dave@example.org",))

    code, out, _ = trace(capsys, "bob@EXAMPLE.org")
    assert code == 0
    assert re.findall(r"^(\S+) \(times UTC\)$", out, re.M) == ["Q6NEW"]
    code, out, _ = trace(capsys, "bob@example.org", "--since", "4d")
    assert re.findall(r"^(\S+) \(times UTC\)$", out, re.M) == ["Q5OLD", "Q6NEW"]

    code, out, err = trace(capsys, "nobody@example.org")
    assert code == 1 and out == ""
    assert "no message found for address nobody@example.org received since" in err


def test_found_by_ses_message_id_or_message_id_header(
        account: Account, worker: WorkerLike, capsys: pytest.CaptureFixture[str]) -> None:
    worker.arrive("Q8MID")
    worker.attempt("Q8MID", ("bob@example.org",), ses_message_id=MID)
    for query in (MID, f"<{MID}@email.amazonses.com>"):
        code, out, _ = trace(capsys, query)
        assert code == 0 and out.startswith("Q8MID (times UTC)"), query


def test_events_no_queue_id_claims_are_shown(account: Account,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    account.writer.event(trail.SesEventRecord(
        trail.EVENT_BOUNCE, "0100-not-ours-000000", trail.stamp(), bounce_type="Permanent",
        recipients=({"address": "x@example.org", "status": "5.1.1"},)))
    code, out, _ = trace(capsys, "0100-not-ours-000000")
    assert code == 0
    assert out.startswith("SES events with no sesrelay queue ID (unmatched#")
    assert "BOUNCE Permanent <x@example.org>: 5.1.1" in out


def test_unknown_queue_id(account: Account, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = trace(capsys, "QNOSUCH")
    assert code == 1 and out == ""
    assert "sesrelay trace: no message found for queue ID QNOSUCH in the test account" in err


def test_json_for_machines(account: Account, worker: WorkerLike,
                           capsys: pytest.CaptureFixture[str]) -> None:
    worker.arrive("Q9JSON", recipients=("a@example.org", "b@example.org"))
    worker.attempt("Q9JSON", ("a@example.org", "b@example.org"), ses_message_id=MID)
    worker.finish("Q9JSON")
    code, out, _ = trace(capsys, "Q9JSON", "--json")
    assert code == 0
    [story] = json.loads(out)
    assert story["queue_id"] == "Q9JSON" and story["status"] == "sent"
    assert [i["kind"] for i in story["history"]] == ["received", "attempt", "finished"]
    assert story["recipients"] == [
        {"address": "a@example.org", "state": "sent", "detail": f"SES MessageId {MID}"},
        {"address": "b@example.org", "state": "sent", "detail": f"SES MessageId {MID}"}]


def test_what_an_argument_is_taken_for() -> None:
    assert classify("3F2E5C0A1BQRST12") == (QUEUE_ID, "3F2E5C0A1BQRST12")
    assert classify(MID) == (MESSAGE_ID, MID)
    assert classify(f"<{MID}@eu-west-1.amazonses.com>") == (MESSAGE_ID, MID)
    assert classify("<bob@example.org>") == (ADDRESS, "bob@example.org")


class StartsWith(str):
    """Equal to any string that starts with this one."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith(str(self))

    __hash__ = str.__hash__

