"""The worker under ambiguous answers: a send whose outcome is unknown is never repeated
blindly, SES's events settle it, nothing the relay refused or an operator deleted is
sent, and no DSN claims failure for a message SES may have accepted.

The oracle is what moto's SES accepted (sent_messages()): SES acted whether or not the
worker heard its answer."""

from __future__ import annotations

import email
import time
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

from ses_worker import ledger
from sesrelay import commit, trail
from sesrelay.dev import LocalLambdaContext
from sesrelay.spool import utc_now
from sesrelay.trail import SesEventRecord, TrailReader, TrailWriter
from tests.worker.conftest import (
    REGION,
    TABLE,
    TRAIL_TABLE,
    Spool,
    fail_sends,
    make_visible,
    message,
    sent_messages,
    sesv2,
)


def lose_answers(times: int | None = None, error: type[Exception] = ReadTimeoutError
                 ) -> list[dict[str, Any]]:
    """SES accepts the send, and its answer is lost on the way back (the first `times`
    sends, or all)."""
    lost: list[dict[str, Any]] = []

    def after(**kwargs: Any) -> None:
        if times is None or len(lost) < times:
            lost.append(kwargs)
            raise error(endpoint_url="https://email.us-east-1.amazonaws.com")

    sesv2().meta.events.register("after-call.sesv2.SendEmail", after)
    return lost


def dynamodb() -> Any:
    return boto3.client("dynamodb", region_name=REGION)


def attempts(queue_id: str) -> list[dict[str, Any]]:
    """The send attempts in the trail, oldest first."""
    return [i for i in TrailReader(dynamodb(), TRAIL_TABLE).history(queue_id)
            if i["kind"] == trail.ATTEMPT]


def publish(event_type: str, queue_id: str, attempt: str, ses_message_id: str,
            **fields: Any) -> None:
    """What the events handler stores when SES publishes an event about a send."""
    TrailWriter(dynamodb(), TRAIL_TABLE, 3600).event(SesEventRecord(
        event_type, ses_message_id, trail.stamp(), queue_id=queue_id, attempt_id=attempt,
        recipients=({"address": "alice@example.org"},), **fields))


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> None:
    """A configuration set whose events reach the trail."""
    monkeypatch.setenv("SESRELAY_SES_CONFIGURATION_SET", "sesrelay")


def test_an_answer_lost_is_settled_by_the_send_event_and_never_resent(
        spool: Spool, events: None) -> None:
    lose_answers(times=1)
    envelope = spool.put(message(), ["alice@example.org"])
    event = spool.receive()
    assert spool.invoke(event) == {event["Records"][0]["messageId"]}  # deferred, in doubt
    [accepted] = sent_messages()
    [doubt] = attempts(envelope.queue_id)
    assert doubt["outcome"] == trail.IN_DOUBT

    make_visible(spool, event)
    event = spool.receive()
    spool.invoke(event)
    assert spool.hidden() == 1  # no event yet: deferred again, nothing sent
    assert len(sent_messages()) == 1

    publish(trail.EVENT_SEND, envelope.queue_id, doubt["attempt_id"], accepted.id)
    make_visible(spool, event)
    assert spool.invoke(spool.receive()) == set()
    assert len(sent_messages()) == 1  # exactly once
    settled = attempts(envelope.queue_id)[-1]
    assert (settled["outcome"], settled["ses_message_id"]) == (trail.SETTLED_SENT, accepted.id)
    state = TrailReader(dynamodb(), TRAIL_TABLE).state(envelope.queue_id)
    assert state["status"] == trail.STATE_SENT and "open" not in state


def test_an_event_for_another_send_settles_nothing(spool: Spool, events: None) -> None:
    lose_answers(times=1)
    envelope = spool.put(message(), ["alice@example.org"])
    event = spool.receive()
    spool.invoke(event)
    # An event about the same queue ID but a different send (its DSN, say).
    publish(trail.EVENT_DELIVERY, envelope.queue_id, "someotherattempt", "other-id")
    make_visible(spool, event)
    spool.invoke(spool.receive())
    assert spool.hidden() == 1  # deferred again
    assert attempts(envelope.queue_id)[-1]["outcome"] == trail.IN_DOUBT


def test_without_events_the_default_resends_once_and_says_so(
        spool: Spool, worker_logs: Any) -> None:
    lose_answers(times=1)
    envelope = spool.put(message(), ["alice@example.org"])
    event = spool.receive()
    spool.invoke(event)
    lines = [line["maillog"] for line in worker_logs() if "maillog" in line]
    assert any("status=deferred (delivery status unknown" in m and "will resend" in m
               for m in lines)
    make_visible(spool, event)
    assert spool.invoke(spool.receive()) == set()
    assert len(sent_messages()) == 2  # at least once, as Postfix: one more copy, logged
    assert [a["outcome"] for a in attempts(envelope.queue_id)] == [trail.IN_DOUBT, trail.SENT]


def test_assume_sent_never_sends_a_second_copy(spool: Spool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESRELAY_SES_UNKNOWN_OUTCOME", "assume_sent")
    lose_answers(times=1)
    envelope = spool.put(message(), ["alice@example.org"])
    event = spool.receive()
    spool.invoke(event)
    make_visible(spool, event)
    assert spool.invoke(spool.receive()) == set()
    assert len(sent_messages()) == 1
    assert attempts(envelope.queue_id)[-1]["outcome"] == trail.ASSUMED_SENT


@pytest.mark.parametrize("error", [ReadTimeoutError, ConnectionClosedError])
def test_botocore_never_repeats_a_send_itself(spool: Spool, error: type[Exception]) -> None:
    lose_answers(times=1, error=error)
    spool.put(message(), ["alice@example.org"])
    spool.invoke(spool.receive())
    assert len(sent_messages()) == 1  # one call: no retry inside the SDK


def test_a_reject_event_bounces_the_message(spool: Spool, events: None) -> None:
    lose_answers(times=1)
    envelope = spool.put(message(), ["alice@example.org"])
    event = spool.receive()
    spool.invoke(event)
    [doubt] = attempts(envelope.queue_id)
    publish(trail.EVENT_REJECT, envelope.queue_id, doubt["attempt_id"], "rejected-id",
            detail="Bad content")
    make_visible(spool, event)
    assert spool.invoke(spool.receive()) == set()
    [_original, dsn] = sent_messages()
    report = email.message_from_string(dsn.raw_data)
    assert report["To"] == "sender@example.com"
    assert "Bad content" in dsn.raw_data
    assert "may have been delivered" not in dsn.raw_data  # SES refused that one send


def test_answers_lost_until_the_lifetime_ends_bounce_with_a_plain_warning(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    lose_answers()  # SES accepts every send; the worker never hears
    envelope = spool.put(message(), ["alice@example.org"],
                         received=utc_now() - timedelta(seconds=10))
    event = spool.receive()
    spool.invoke(event)
    monkeypatch.setenv("SESRELAY_MAXIMAL_QUEUE_LIFETIME", "5s")  # the lifetime is over
    make_visible(spool, event)
    event = spool.receive()
    # The DSN's own send lost its answer too: it is in doubt, and the message stays.
    spool.invoke(event)
    assert spool.hidden() == 1
    dsns = [m for m in sent_messages() if m.source.startswith("MAILER-DAEMON")]
    assert len(dsns) == 1, "a DSN went out"
    text = email.message_from_string(dsns[0].raw_data).as_string()
    assert "may have been delivered" in text  # never "it failed", plainly
    assert envelope.queue_id in text


def test_no_dsn_when_the_admin_says_none(spool: Spool, monkeypatch: pytest.MonkeyPatch,
                                         worker_logs: Any) -> None:
    monkeypatch.setenv("SESRELAY_SES_UNKNOWN_OUTCOME_DSN", "none")
    lose_answers(times=1)  # SES accepts the first send; its answer is lost
    spool.put(message(), ["alice@example.org"], received=utc_now() - timedelta(seconds=10))
    event = spool.receive()
    spool.invoke(event)
    fail_sends("MessageRejected", "Illegal address")  # the resend is refused for good
    make_visible(spool, event)
    assert spool.invoke(spool.receive()) == set()
    assert len(sent_messages()) == 1  # the original, once; no DSN claiming it failed
    assert any("no DSN" in line["message"] for line in worker_logs())


def test_a_send_cut_off_mid_call_is_in_doubt_not_resent_blindly(spool: Spool,
                                                                events: None) -> None:
    """The invocation that owned the send died mid-call (Lambda's timeout): its lease
    ran out. The next receive does not send until SES's events or the wait decide."""
    envelope = spool.put(message(), ["alice@example.org"])
    key = ledger.send_key(ledger.SEND_PREFIX, envelope.queue_id, ["alice@example.org"])
    ledger.SendLedger(dynamodb(), TABLE).begin(key, "deadattempt0000", lease_seconds=-1)
    event = spool.receive()
    assert spool.invoke(event) != set()
    assert sent_messages() == []
    publish(trail.EVENT_DELIVERY, envelope.queue_id, "deadattempt0000", "ses-from-before")
    make_visible(spool, event)
    assert spool.invoke(spool.receive()) == set()
    assert sent_messages() == []  # SES had it: nothing more to send
    assert attempts(envelope.queue_id)[-1]["ses_message_id"] == "ses-from-before"


def test_a_message_the_relay_refused_is_dropped_unsent(spool: Spool) -> None:
    envelope = spool.put(message(), ["alice@example.org"])
    assert commit.refuse(dynamodb(), TABLE, envelope.queue_id)
    assert spool.invoke(spool.receive()) == set()
    assert sent_messages() == []
    [dropped] = [i for i in TrailReader(dynamodb(), TRAIL_TABLE).history(envelope.queue_id)
                 if i["kind"] == trail.DROPPED]
    assert "never committed" in dropped["reason"]


def test_a_deleted_message_is_dropped_unsent(spool: Spool) -> None:
    envelope = spool.put(message(), ["alice@example.org"])
    commit.delete(dynamodb(), TABLE, envelope.queue_id, by="admin@ops")
    assert spool.invoke(spool.receive()) == set()
    assert sent_messages() == []
    state = TrailReader(dynamodb(), TRAIL_TABLE).state(envelope.queue_id)
    assert state is None or state["status"] == trail.STATE_DELETED


def test_a_send_already_made_by_the_previous_worker_is_not_repeated(spool: Spool) -> None:
    """The item powertools' idempotency layer wrote for a chunk SES accepted."""
    envelope = spool.put(message(), ["alice@example.org"])
    key = ledger.send_key(ledger.SEND_PREFIX, envelope.queue_id, ["alice@example.org"])
    dynamodb().put_item(TableName=TABLE, Item={
        "id": {"S": key}, "status": {"S": "COMPLETED"},
        "expiration": {"N": str(int(time.time()) + 3600)},
        "data": {"S": '{"message_id": "sent-by-the-old-worker"}'}})
    assert spool.invoke(spool.receive()) == set()
    assert sent_messages() == []


def test_the_ledger_unreachable_means_no_send(spool: Spool) -> None:
    def unreachable(**kwargs: Any) -> None:
        from botocore.exceptions import EndpointConnectionError
        raise EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")

    from sesrelay import aws
    from sesrelay.timeouts import WORKER_AWS
    aws.client("dynamodb", budget=WORKER_AWS).meta.events.register(
        "before-call.dynamodb.UpdateItem", unreachable)
    spool.put(message(), ["alice@example.org"])
    event = spool.receive()
    assert spool.invoke(event) == {event["Records"][0]["messageId"]}
    assert sent_messages() == []


def test_no_send_starts_without_time_to_finish_it(spool: Spool) -> None:
    spool.put(message(), ["alice@example.org"])
    event = spool.receive()
    from ses_worker.handler import handler
    result = handler(event, LocalLambdaContext(timeout_ms=5000))
    assert result["batchItemFailures"] != []
    assert sent_messages() == []


def lose_ledger_answer(marker: bytes) -> list[bytes]:
    """The first ledger UpdateItem whose request contains marker lands, and its answer
    is lost (after-call: past every botocore retry)."""
    lost: list[bytes] = []

    def mark(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["lose"] = marker in params["body"] and not lost

    def lose(context: dict[str, Any], **_: Any) -> None:
        if context.get("lose"):
            lost.append(marker)
            raise ConnectionClosedError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")

    from sesrelay import aws
    from sesrelay.timeouts import WORKER_AWS
    events = aws.client("dynamodb", budget=WORKER_AWS).meta.events
    events.register("before-call.dynamodb.UpdateItem", mark)
    events.register("after-call.dynamodb.UpdateItem", lose)
    return lost


def test_a_claim_whose_answer_was_lost_is_given_back_before_the_next_try(
        spool: Spool) -> None:
    """The ledger's begin write lands but no answer comes back: the worker never called
    SES, so the next try sends at once instead of waiting for the claim's lease and then
    for SES's events about a send that never happened."""
    lost = lose_ledger_answer(b'"SET #s = :sending, #a = :attempt')
    spool.put(message(), ["alice@example.org"])
    event = spool.receive()
    assert spool.invoke(event) == {event["Records"][0]["messageId"]}
    assert lost and sent_messages() == []
    make_visible(spool, event)
    assert spool.invoke(spool.receive()) == set()
    assert len(sent_messages()) == 1


def test_a_resend_whose_hand_over_was_lost_goes_out_on_the_next_try(spool: Spool) -> None:
    """Without events an unknown outcome is resent (the default); when the ledger's
    hand-over to the new attempt lands unanswered, the next try resends at once."""
    lose_answers(times=1)
    spool.put(message(), ["alice@example.org"])
    event = spool.receive()
    spool.invoke(event)
    assert len(sent_messages()) == 1  # accepted, answer lost: in doubt
    lost = lose_ledger_answer(b'"SET #s = :sending, #a = :new')
    make_visible(spool, event)
    event = spool.receive()
    spool.invoke(event)
    assert spool.hidden() == 1  # deferred again
    assert lost and len(sent_messages()) == 1
    make_visible(spool, event)
    assert spool.invoke(spool.receive()) == set()
    assert len(sent_messages()) == 2  # the resend ses_unknown_outcome = resend asks for


def test_a_deferral_written_late_never_reopens_a_message_another_receive_finished(
        spool: Spool, events: None) -> None:
    """A stall between a deferral's requeue and its trail write: meanwhile the message is
    received again, settled by SES's event and finished. The late write must not put the
    message back in the queue listing (mailq) as waiting for events."""
    from sesrelay import aws
    from sesrelay.timeouts import WORKER_AWS, WORKER_REQUEUE

    lose_answers(times=1)
    envelope = spool.put(message(), ["alice@example.org"])
    event = spool.receive()
    spool.invoke(event)  # in doubt: deferred
    [accepted] = sent_messages()
    [doubt] = attempts(envelope.queue_id)
    # The deferral makes the message receivable again: its record's visibility, or a
    # delayed copy (the second deferral's delay is long enough for one).
    hooks = [(aws.client("sqs", budget=WORKER_AWS), "ChangeMessageVisibility"),
             (aws.client("sqs", budget=WORKER_REQUEUE), "SendMessage")]
    finished: list[set[str]] = []

    def finish_meanwhile(**kwargs: Any) -> None:
        for client, operation in hooks:
            client.meta.events.unregister(f"after-call.sqs.{operation}", finish_meanwhile)
        publish(trail.EVENT_SEND, envelope.queue_id, doubt["attempt_id"], accepted.id)
        spool.pass_time()
        finished.append(spool.invoke(spool.receive()))

    make_visible(spool, event)
    event = spool.receive()
    for client, operation in hooks:
        client.meta.events.register(f"after-call.sqs.{operation}", finish_meanwhile)
    spool.invoke(event)  # no event yet when it looked: deferred, its trail written last

    assert finished == [set()]  # the receive in between settled it from the event
    assert len(sent_messages()) == 1
    reader = TrailReader(dynamodb(), TRAIL_TABLE)
    state = reader.state(envelope.queue_id)
    assert state["status"] == trail.STATE_SENT and "open" not in state
    assert reader.unfinished() == []
