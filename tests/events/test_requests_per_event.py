"""The trail writes each SES event of a delivered message costs (Send, then Delivery),
counted from the events handler's DynamoDB calls against moto: the number the cost model
(sesrelay.cost) prices per event."""

from __future__ import annotations

import json
from typing import Any

import botocore.client
import pytest

from sesrelay import cost, trail
from tests.events.conftest import EventsTransport, documented


def test_each_event_of_a_delivered_message_costs_the_modelled_trail_writes(
        transport: EventsTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    items: list[dict[str, Any]] = []
    make_api_call = botocore.client.BaseClient._make_api_call

    def counting(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "BatchWriteItem":
            items.extend(r["PutRequest"]["Item"] for rs in params["RequestItems"].values()
                         for r in rs)
        elif operation in ("PutItem", "UpdateItem", "DeleteItem"):
            items.append(params.get("Item", params.get("Key")))
        return make_api_call(client, operation, params)

    names = ("send", "delivery")
    assert {trail.EVENT_SEND, trail.EVENT_DELIVERY} <= set(trail.EVENT_TYPES)
    assert len(names) == cost.EVENTS_PER_MESSAGE
    transport.publish(*(documented(name, queue_id="QCOST", attempt_id="A-cost")
                        for name in names))
    received = transport.receive()  # before counting: the event source's part
    assert len(received["Records"]) == len(names)
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
    assert transport.invoke(received) == set()

    assert len(transport.events("QCOST")) == len(names)
    assert all(len(json.dumps(item)) < 1024 for item in items)  # one write unit each
    assert len(items) == cost.TRAIL_WRITES_PER_EVENT * len(names)
