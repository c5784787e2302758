"""The emulated SES's event records: the mailbox simulator's outcomes, in shapes the
events handler reads as it reads AWS's documented records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ses_events.parsing import parse_event
from ses_events.verdicts import maillog_lines
from sesrelay import trail
from sesrelay.dev_simulator import AcceptedSend, Outcome, events_for, outcome

RAW = (b"From: App <app@example.com>\r\nTo: someone@example.org\r\n"
       b"Subject: hello\r\nMessage-ID: <1@example.com>\r\n\r\nHi.\r\n")


def _send(*destination: str) -> AcceptedSend:
    return AcceptedSend(
        message_id="0100-test", configuration_set="sesrelay-dev",
        from_address="app@example.com", destination=destination,
        tags=((trail.QUEUE_ID_TAG, "Q1"), (trail.ATTEMPT_TAG, "A1"), ("team", "billing")),
        raw=RAW, account="123456789012", region="us-east-1",
        accepted_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))


def test_simulator_addresses_and_their_labels() -> None:
    assert outcome("success@simulator.amazonses.com") is Outcome.DELIVERED
    assert outcome("bounce@simulator.amazonses.com") is Outcome.BOUNCED
    assert outcome("bounce+run42@simulator.amazonses.com") is Outcome.BOUNCED
    assert outcome("complaint@simulator.amazonses.com") is Outcome.COMPLAINED
    assert outcome("suppressionlist@simulator.amazonses.com") is Outcome.SUPPRESSED
    assert outcome("bounce@example.com") is Outcome.DELIVERED  # not the simulator


def test_events_come_in_ses_order_and_carry_the_send_and_its_tags() -> None:
    send = _send("someone@example.org", "bounce@simulator.amazonses.com",
                 "complaint@simulator.amazonses.com")
    records = events_for(send, now=send.accepted_at + timedelta(seconds=2))
    assert [r["eventType"] for r in records] == ["Send", "Delivery", "Bounce", "Delivery",
                                                 "Complaint"]
    parsed = [parse_event(r) for r in records]
    assert all(p is not None for p in parsed)
    events = [p.record for p in parsed if p]
    assert {(e.queue_id, e.attempt_id, e.ses_message_id) for e in events} == {
        ("Q1", "A1", "0100-test")}
    # Times never go backwards, so the trail keeps SES's order.
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    assert events[0].timestamp == "2026-01-02T03:04:05.678000+00:00"
    mail = records[0]["mail"]
    assert mail["tags"]["team"] == ["billing"]
    assert mail["tags"]["ses:configuration-set"] == ["sesrelay-dev"]
    assert mail["commonHeaders"]["subject"] == "hello"
    assert mail["source"] == "app@example.com"


def test_suppressed_address_bounces_without_a_dsn() -> None:
    send = _send("suppressionlist@simulator.amazonses.com")
    [_, bounce] = events_for(send)
    parsed = parse_event(bounce)
    assert parsed is not None
    assert (parsed.record.bounce_type, parsed.record.bounce_subtype) == (
        "Permanent", "OnAccountSuppressionList")
    [line] = maillog_lines(parsed)
    assert "dsn=5.0.0, status=bounced (Amazon SES: Permanent bounce " \
           "(OnAccountSuppressionList))" in line
