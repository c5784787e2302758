"""The spool contract: envelopes round-trip, malformed bodies are refused clearly, and the
largest envelope the relay accepts fits in one SQS message."""

from __future__ import annotations

import json

import pytest

from sesrelay.config.loader import MAX_RECIPIENTS
from sesrelay.spool import (
    MAX_ADDRESS_LENGTH,
    ContractError,
    Envelope,
    new_queue_id,
    object_key,
    utc_now,
)

SQS_MAX_MESSAGE = 256 * 1024


def envelope(recipients: tuple[str, ...]) -> Envelope:
    queue_id, now = new_queue_id(), utc_now()
    return Envelope(queue_id, "app@example.com", recipients, "spool-bucket",
                    object_key(queue_id, now), 1234, "2001:db8::1", "client.example.org",
                    now.isoformat())


def test_round_trip() -> None:
    original = envelope(("a@example.org", "b@example.net"))
    assert Envelope.from_json(original.to_json()) == original
    assert json.loads(original.to_json())["version"] == 1


def test_the_largest_envelope_fits_one_sqs_message() -> None:
    local = "x" * (MAX_ADDRESS_LENGTH - len("@example.org") - 4)
    largest = tuple(f"{local}{i:04}@example.org" for i in range(MAX_RECIPIENTS))
    assert all(len(r) == MAX_ADDRESS_LENGTH for r in largest)
    assert len(envelope(largest).to_json().encode()) <= SQS_MAX_MESSAGE


def test_queue_ids_are_unique_and_ordered_by_time() -> None:
    ids = [new_queue_id(now_ns=1_800_000_000_000_000_000 + i * 1000) for i in range(50)]
    assert len(set(ids)) == 50
    assert [i[:10] for i in ids] == sorted(i[:10] for i in ids)


@pytest.mark.parametrize("body,message", [
    ("not json", "envelope is not JSON"),
    ("[]", "not a JSON object"),
    ('{"version": 2}', "unsupported envelope version 2"),
    ('{"version": 1, "queue_id": "Q"}', "field 'mail_from' is missing"),
])
def test_malformed_bodies_are_refused_clearly(body: str, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        Envelope.from_json(body)


def test_empty_recipient_list_is_refused() -> None:
    body = json.loads(envelope(("a@example.org",)).to_json())
    body["rcpt_to"] = []
    with pytest.raises(ContractError, match="non-empty list"):
        Envelope.from_json(json.dumps(body))
