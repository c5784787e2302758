"""The trail contract: what the worker and the events handler write, what readers find."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sesrelay import trail
from sesrelay.trail import Attempt, SesEventRecord, TrailReader, TrailWriter
from tests.core.conftest import TRAIL_TABLE as TABLE


def writer(dynamodb: Any) -> TrailWriter:
    return TrailWriter(dynamodb, TABLE, retention=86400)


def receive(w: TrailWriter, queue_id: str, recipients: tuple[str, ...]) -> bool:
    return w.received(queue_id=queue_id, sender="app@example.com", recipients=recipients,
                      size=100, received_at=trail.stamp(), client_address="10.0.0.1",
                      client_helo="app", sqs_message_id="m-1")


def test_received_is_recorded_once_and_found_by_recipient(dynamodb: Any) -> None:
    w, r = writer(dynamodb), TrailReader(dynamodb, TABLE)
    assert receive(w, "Q1", ("Bob@Example.org", "carol@example.net"))
    assert not receive(w, "Q1", ("Bob@Example.org", "carol@example.net"))
    since = datetime.now(UTC) - timedelta(hours=1)
    assert r.queue_ids_by_recipient("bob@example.org", since) == ["Q1"]
    assert r.queue_ids_by_recipient("bob@example.org", since - timedelta(days=1),
                                    since - timedelta(hours=1)) == []
    [received] = r.history("Q1")
    assert received["kind"] == trail.RECEIVED and received["size"] == 100
    assert r.state("Q1")["pending"] == ["Bob@Example.org", "carol@example.net"]


def test_unfinished_lists_open_messages_until_finished(dynamodb: Any) -> None:
    w, r = writer(dynamodb), TrailReader(dynamodb, TABLE)
    for queue_id in ("Q1", "Q2", "Q3"):
        receive(w, queue_id, ("a@example.org",))
    w.update_state("Q2", status=trail.WAITING, last_reason="throttled", attempts=1)
    w.update_state("Q3", status=trail.STATE_SENT, pending=[], finished=True)
    unfinished = {s["qid"]: s for s in r.unfinished()}
    assert set(unfinished) == {"Q1", "Q2"}
    assert unfinished["Q2"]["last_reason"] == "throttled"


def test_attempts_and_events_are_found_by_message_id_and_attempt(dynamodb: Any) -> None:
    w, r = writer(dynamodb), TrailReader(dynamodb, TABLE)
    receive(w, "Q1", ("a@example.org",))
    w.attempt("Q1", Attempt("att1", trail.PURPOSE_MESSAGE, ("a@example.org",), trail.SENT,
                            ses_message_id="ses-1", dsn="2.0.0", seconds=0.25))
    event = SesEventRecord(trail.EVENT_DELIVERY, "ses-1", trail.stamp(), queue_id="Q1",
                           attempt_id="att1", recipients=({"address": "a@example.org"},))
    w.event(event)
    w.event(event)  # delivered twice by SQS: kept once
    assert r.queue_ids_by_message_id("ses-1") == ["Q1"]
    assert r.events_for_attempt("Q1", "att1") == [event]
    assert r.events_for_attempt("Q1", "other") == []
    kinds = [i["kind"] for i in r.history("Q1")]
    assert kinds == [trail.RECEIVED, trail.ATTEMPT, trail.EVENT]


def test_events_of_unknown_sends_are_kept(dynamodb: Any) -> None:
    w, r = writer(dynamodb), TrailReader(dynamodb, TABLE)
    event = SesEventRecord(trail.EVENT_BOUNCE, "ses-x", "2026-11-28T10:00:00.000000+00:00",
                           bounce_type="Permanent")
    w.event(event)
    assert r.queue_ids_by_message_id("ses-x") == ["unmatched#2026-11-28"]
    assert r.history("unmatched#2026-11-28")[0]["bounce_type"] == "Permanent"


def test_reject_settles_as_refused_and_the_rest_as_accepted() -> None:
    kinds = {t: SesEventRecord(t, "m", "t").settles_as_accepted for t in trail.EVENT_TYPES}
    assert kinds.pop(trail.EVENT_REJECT) is False
    assert all(kinds.values())
    # A type SES may add later proves nothing either way: the send stays in doubt.
    assert SesEventRecord("Subscription", "m", "t").settles_as_accepted is None


def test_a_late_unfinished_state_never_reopens_a_finished_message(dynamodb: Any) -> None:
    """A deferral's trail written after another receive finished the message (a stall
    between the requeue and the write): its step stays in the history, the state stays
    finished and out of mailq's listing."""
    w, r = writer(dynamodb), TrailReader(dynamodb, TABLE)
    receive(w, "Q1", ("a@example.org",))
    w.write([w.state_item("Q1", unfinished=False, status=trail.STATE_SENT, pending=[])])
    w.write([w.history_item("Q1", trail.DEFERRED, reason="waiting for SES's events"),
             w.state_item("Q1", unfinished=True, status=trail.WAITING,
                          pending=["a@example.org"])])
    assert r.state("Q1")["status"] == trail.STATE_SENT
    assert r.unfinished() == []
    assert [i["kind"] for i in r.history("Q1")] == [trail.RECEIVED, trail.DEFERRED]
    w.write([w.state_item("Q2", unfinished=True, status=trail.WAITING, pending=["b"],
                          received_at=trail.stamp())])
    assert [s["qid"] for s in r.unfinished()] == ["Q2"]  # a new message still opens


def test_a_write_names_each_item_once(dynamodb: Any) -> None:
    """Two receives of one message can share a flush; DynamoDB refuses a BatchWriteItem
    that names an item twice ("Provided list of item keys contains duplicates"), which
    would lose the whole step. The last item of each key is written."""
    w, r = writer(dynamodb), TrailReader(dynamodb, TABLE)
    receive(w, "Q1", ("a@example.org",))
    keys: list[list[tuple[str, str]]] = []
    dynamodb.meta.events.register("provide-client-params.dynamodb.BatchWriteItem",
                                  lambda params, **kw: keys.append([
                                      (i["PutRequest"]["Item"][trail.PARTITION_KEY]["S"],
                                       i["PutRequest"]["Item"][trail.SORT_KEY]["S"])
                                      for i in params["RequestItems"][TABLE]]))
    note = w.history_item("Q1", trail.DEFERRED, reason="throttled")
    w.write([note, w.state_item("Q1", unfinished=False, status=trail.STATE_BOUNCED,
                                pending=[]),
             note, w.state_item("Q1", unfinished=False, status=trail.STATE_SENT,
                                pending=[])])
    [written] = keys
    assert len(written) == len(set(written)) == 2
    assert r.state("Q1")["status"] == trail.STATE_SENT
