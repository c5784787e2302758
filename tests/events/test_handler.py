"""The SES events handler with the event records AWS documents: each type lands in the
trail under the queue ID and attempt of the send it belongs to, bounces and delays
become maillog lines, nothing is dropped and nothing is stored or counted twice."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from sesrelay import aws, trail
from sesrelay.timeouts import WORKER_AWS
from tests.events.conftest import REGION, EventsTransport, Logs, documented, maillog_lines

SES_MESSAGE_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
RELAY = f"relay=email.{REGION}.amazonaws.com"


def _only_event(transport: EventsTransport, queue_id: str) -> dict[str, Any]:
    [event] = transport.events(queue_id)
    return event


def test_each_documented_type_is_stored_under_its_send(transport: EventsTransport) -> None:
    expected = {  # fixture: (event type, recipient fields, detail)
        "send": (trail.EVENT_SEND, {"address": "recipient@example.com"}, None),
        "delivery": (trail.EVENT_DELIVERY, {"address": "recipient@example.com"},
                     "250 2.6.0 Message received"),
        "bounce_permanent": (trail.EVENT_BOUNCE, {
            "address": "recipient@example.com", "action": "failed", "status": "5.1.1",
            "diagnostic": "smtp; 550 5.1.1 user unknown"}, "smtp; 550 5.1.1 user unknown"),
        "complaint": (trail.EVENT_COMPLAINT, {"address": "recipient@example.com"}, "abuse"),
        "reject": (trail.EVENT_REJECT, {"address": "sender@example.com"}, "Bad content"),
        "delivery_delay": (trail.EVENT_DELIVERY_DELAY, {
            "address": "recipient@example.com", "status": "4.4.1",
            "diagnostic": "smtp; 421 4.4.1 Unable to connect to remote host"},
            "TransientCommunicationFailure; SES retries until 2020-06-16T00:25:40.914Z"),
    }
    records = [documented(name, queue_id=f"Q{name.upper()}", attempt_id=f"A-{name}")
               for name in expected]
    assert transport.deliver(*records) == set()

    reader = transport.reader()
    for name, (event_type, recipient, detail) in expected.items():
        event = _only_event(transport, f"Q{name.upper()}")
        assert event["event_type"] == event_type, name
        assert event["ses_message_id"] == SES_MESSAGE_ID
        assert event["recipients"] == [recipient], name
        assert event.get("detail") == detail, name
        # The worker settles a send in doubt by its attempt ID.
        [settling] = reader.events_for_attempt(f"Q{name.upper()}", f"A-{name}")
        assert settling.event_type == event_type
        assert settling.settles_as_accepted is (event_type != trail.EVENT_REJECT)
    # The event's own time, in the trail's timestamp format (sorts with the history).
    assert _only_event(transport, "QBOUNCE_PERMANENT")["at"] == \
        "2017-08-05T00:41:02.669000+00:00"
    assert _only_event(transport, "QSEND")["at"] == "2016-10-14T05:02:16.645000+00:00"


def test_permanent_and_transient_bounces_keep_their_type(transport: EventsTransport) -> None:
    assert transport.deliver(documented("bounce_permanent", queue_id="QPERM"),
                             documented("bounce_transient", queue_id="QTRANS")) == set()
    permanent = _only_event(transport, "QPERM")
    transient = _only_event(transport, "QTRANS")
    assert (permanent["bounce_type"], permanent["bounce_subtype"]) == ("Permanent", "General")
    assert (transient["bounce_type"], transient["bounce_subtype"]) == ("Transient",
                                                                       "MailboxFull")
    assert transient["recipients"][0]["status"] == "4.2.2"


def test_bounces_rejects_and_delays_become_maillog_lines(transport: EventsTransport,
                                                          events_logs: Logs) -> None:
    assert transport.deliver(
        documented("send", queue_id="QSEND"), documented("delivery", queue_id="QDELIV"),
        documented("complaint", queue_id="QCOMPL"),
        documented("bounce_permanent", queue_id="QPERM"),
        documented("bounce_transient", queue_id="QTRANS"),
        documented("reject", queue_id="QREJ"),
        documented("delivery_delay", queue_id="QDELAY")) == set()
    lines = sorted(maillog_lines(events_logs))
    # delay: the bounce came 60.657 s after SES accepted the send; the delay 599.454 s.
    assert lines == sorted([
        f"QPERM: to=<recipient@example.com>, {RELAY}, delay=61, delays=0/0/0/0, "
        "dsn=5.1.1, status=bounced (smtp; 550 5.1.1 user unknown)",
        f"QTRANS: to=<recipient@example.com>, {RELAY}, delay=61, delays=0/0/0/0, "
        "dsn=4.2.2, status=bounced (smtp; 452 4.2.2 The email account that you tried to "
        "reach is over quota)",
        f"QREJ: to=<sender@example.com>, {RELAY}, delay=0, delays=0/0/0/0, dsn=5.7.1, "
        "status=bounced (Amazon SES rejected the message: Bad content)",
        f"QDELAY: to=<recipient@example.com>, {RELAY}, delay=599, delays=0/0/0/0, "
        "dsn=4.4.1, status=deferred (smtp; 421 4.4.1 Unable to connect to remote host)",
    ])
    # Each maillog line is logged under the smtp program, as the CLI's maillog expects.
    assert {line["maillog_program"] for line in events_logs() if "maillog" in line} == \
        {"smtp"}


def test_event_of_an_unknown_message_is_kept_unmatched(transport: EventsTransport,
                                                       events_logs: Logs) -> None:
    assert transport.deliver(documented("bounce_permanent")) == set()  # no sesrelay tags
    [event] = transport.events("unmatched#2017-08-05")
    assert event["event_type"] == trail.EVENT_BOUNCE
    assert transport.reader().queue_ids_by_message_id(SES_MESSAGE_ID) == [
        "unmatched#2017-08-05"]
    # A maillog line needs a queue ID: none for a send sesrelay did not make.
    assert maillog_lines(events_logs) == []


def test_redelivered_event_is_stored_and_counted_once(transport: EventsTransport,
                                                      events_logs: Logs) -> None:
    bounce = documented("bounce_permanent", queue_id="QTWICE")
    assert transport.deliver(bounce) == set()
    # SNS and SQS both deliver at least once: the same event again, in a new message.
    assert transport.deliver(bounce) == set()
    assert len(transport.events("QTWICE")) == 1
    assert len(maillog_lines(events_logs)) == 1
    assert [line["redelivered"] for line in events_logs() if line.get("event_type")] == [
        False, True]


def test_failed_trail_write_fails_only_that_record(transport: EventsTransport,
                                                   events_logs: Logs) -> None:
    def refuse(params: dict[str, Any], **_: Any) -> None:
        if params["Item"]["qid"]["S"] == "QFAIL":
            raise ClientError({"Error": {"Code": "AccessDeniedException",
                                         "Message": "not authorized to perform PutItem"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutItem")

    dynamodb = aws.client("dynamodb", None, WORKER_AWS)  # the handler's own client
    dynamodb.meta.events.register("before-parameter-build.dynamodb.PutItem", refuse)
    transport.publish(documented("bounce_permanent", queue_id="QFAIL"),
                      documented("bounce_permanent", queue_id="QOK"))
    event = transport.receive()
    failed = transport.invoke(event)
    [failing] = [r for r in event["Records"] if "QFAIL" in r["body"]]
    assert failed == {failing["messageId"]}
    assert len(transport.events("QOK")) == 1
    assert transport.events("QFAIL") == []
    # Not stored, so not logged either: the retry logs it.
    assert all(line.startswith("QOK:") for line in maillog_lines(events_logs))

    dynamodb.meta.events.unregister("before-parameter-build.dynamodb.PutItem", refuse)
    retry = transport.receive()  # the failed record, visible again
    assert [r["messageId"] for r in retry["Records"]] == [failing["messageId"]]
    assert transport.invoke(retry) == set()
    assert len(transport.events("QFAIL")) == 1
    assert sum(line.startswith("QFAIL:") for line in maillog_lines(events_logs)) == 1


def test_unrequested_types_are_ignored_and_malformed_records_kept(
        transport: EventsTransport, events_logs: Logs) -> None:
    transport.publish(documented("open", queue_id="QOPEN"), {"not": "an SES event"})
    event = transport.receive()
    failed = transport.invoke(event)
    # The malformed record fails (SQS keeps it, then the DLQ); the Open event does not.
    [malformed] = [r for r in event["Records"] if "an SES event" in r["body"]]
    assert failed == {malformed["messageId"]}
    assert transport.reader().items("QOPEN") == []
    assert any(line.get("event_type") == "Open" and "ignored" in line["message"]
               for line in events_logs())
