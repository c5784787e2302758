"""The trail writes each SES event of a delivered message costs (Send, then Delivery),
counted in write units, indexes included, from the events handler's DynamoDB calls
against moto: the number the cost model (sesrelay.cost) prices per event."""

from __future__ import annotations

import pytest

from sesrelay import cost, trail
from tests.events.conftest import REGION, TRAIL_TABLE, EventsTransport, documented
from tests.write_units import counting_writes


def test_each_event_of_a_delivered_message_costs_the_modelled_trail_writes(
        transport: EventsTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ("send", "delivery")
    assert {trail.EVENT_SEND, trail.EVENT_DELIVERY} <= set(trail.EVENT_TYPES)
    assert len(names) == cost.EVENTS_PER_MESSAGE
    transport.publish(*(documented(name, queue_id="QCOST", attempt_id="A-cost")
                        for name in names))
    received = transport.receive()  # before counting: the event source's part
    assert len(received["Records"]) == len(names)
    with counting_writes(monkeypatch, REGION) as writes:
        assert transport.invoke(received) == set()

    assert len(transport.events("QCOST")) == len(names)
    assert writes.units == {TRAIL_TABLE: cost.TRAIL_WRITES_PER_EVENT * len(names)}
