"""The spool contract: envelopes round-trip, malformed bodies are refused clearly, and the
largest envelope the relay accepts fits in one SQS message."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sesrelay.config.loader import MAX_RECIPIENTS
from sesrelay.spool import (
    ENVELOPE_LIMIT,
    INLINE_LIMIT,
    MAX_ADDRESS_LENGTH,
    ContractError,
    Envelope,
    envelope_fits,
    envelope_size_bound,
    new_queue_id,
    object_key,
    spool_envelope,
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
    assert json.loads(original.to_json())["version"] == 2


def test_small_messages_travel_inline_and_large_ones_in_s3() -> None:
    queue_id, now = new_queue_id(), utc_now()
    fields = {"queue_id": queue_id, "mail_from": "a@example.com", "rcpt_to": ("b@example.org",),
              "size": 0, "client_address": "10.0.0.1", "client_helo": "h",
              "received_at": now.isoformat()}
    small = b"Subject: hi\r\n\r\n\x00\xff binary is fine\r\n"
    inline, body = spool_envelope(fields, small, "bucket", "key")
    assert inline.inline and inline.key == "" and len(body) <= INLINE_LIMIT
    assert Envelope.from_json(body).message() == small
    large = b"x" * (INLINE_LIMIT * 3 // 4)
    stored, body = spool_envelope(fields, large, "bucket", "key")
    assert not stored.inline and (stored.bucket, stored.key) == ("bucket", "key")
    assert len(body) < 1000 and Envelope.from_json(body) == stored


def test_version_1_envelopes_from_older_relays_are_still_read() -> None:
    data = json.loads(envelope(("a@example.org",)).to_json())
    data["version"] = 1
    old = Envelope.from_json(json.dumps(data))
    assert old.version == 1 and not old.inline and old.key == data["key"]


def test_the_largest_envelope_fits_one_sqs_message() -> None:
    local = "x" * (MAX_ADDRESS_LENGTH - len("@example.org") - 4)
    largest = tuple(f"{local}{i:04}@example.org" for i in range(MAX_RECIPIENTS))
    assert all(len(r) == MAX_ADDRESS_LENGTH for r in largest)
    assert len(envelope(largest).to_json().encode()) <= SQS_MAX_MESSAGE


_TEXT = st.text(max_size=40)


@given(mail_from=_TEXT, rcpt_to=st.lists(_TEXT, min_size=1, max_size=5), helo=_TEXT,
       orig_mail_from=st.none() | _TEXT, envid=_TEXT, sasl_username=_TEXT,
       ret=st.sampled_from(["", "FULL", "HDRS"]), size=st.integers(0, 10**9),
       dsn=st.booleans(), key=_TEXT)
def test_the_cheap_size_bound_is_never_below_the_envelope(
        mail_from: str, rcpt_to: list[str], helo: str, orig_mail_from: str | None,
        envid: str, sasl_username: str, ret: str, size: int, dsn: bool, key: str) -> None:
    """envelope_fits trusts the bound without building the JSON: for any text (escapes,
    control characters, characters outside the BMP) the bound is at least the JSON."""
    fields: dict[str, object] = {
        "queue_id": new_queue_id(), "mail_from": mail_from, "rcpt_to": tuple(rcpt_to),
        "size": size, "client_address": "2001:db8::1", "client_helo": helo,
        "received_at": utc_now().isoformat(), "ret": ret, "envid": envid,
        "notify": tuple("SUCCESS,DELAY" for _ in rcpt_to) if dsn else (),
        "orcpt": tuple(f"rfc822;{r}" for r in rcpt_to) if dsn else ()}
    if orig_mail_from is not None:
        fields["orig_mail_from"] = orig_mail_from
        fields["orig_rcpt_to"] = tuple(reversed(rcpt_to))
    if sasl_username:
        fields["sasl_username"] = sasl_username
    exact = len(Envelope(**fields, bucket="spool-bucket", key=key).to_json())  # type: ignore[arg-type]
    assert envelope_size_bound(fields, "spool-bucket", key) >= exact


def test_an_expansion_too_large_for_one_sqs_message_does_not_fit() -> None:
    queue_id, now = new_queue_id(), utc_now()
    recipients = tuple(f"{'x' * 240}{i:05}@example.org" for i in range(1100))
    fields: dict[str, object] = {
        "queue_id": queue_id, "mail_from": "a@example.com", "rcpt_to": recipients,
        "size": 1, "client_address": "10.0.0.1", "client_helo": "h",
        "received_at": now.isoformat()}
    exact = len(Envelope(**fields, bucket="b", key="k").to_json())  # type: ignore[arg-type]
    assert exact > ENVELOPE_LIMIT and not envelope_fits(fields, "b", "k")
    fields["rcpt_to"] = recipients[:900]
    assert envelope_size_bound(fields, "b", "k") > ENVELOPE_LIMIT  # decided exactly
    assert envelope_fits(fields, "b", "k")


def test_queue_ids_are_unique_and_ordered_by_time() -> None:
    ids = [new_queue_id(now_ns=1_800_000_000_000_000_000 + i * 1000) for i in range(50)]
    assert len(set(ids)) == 50
    assert [i[:10] for i in ids] == sorted(i[:10] for i in ids)


@pytest.mark.parametrize("body,message", [
    ("not json", "envelope is not JSON"),
    ("[]", "not a JSON object"),
    ('{"version": 3}', r"envelope version 3 is newer than this worker reads \(versions 1, 2\)"),
    ('{"version": "2"}', "unsupported envelope version '2'"),
    ('{"version": true}', "unsupported envelope version True"),
    ('{"version": 0}', "unsupported envelope version 0"),
    ('{"version": 2, "queue_id": "Q"}', "field 'mail_from' is missing"),
])
def test_malformed_bodies_are_refused_clearly(body: str, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        Envelope.from_json(body)


def test_empty_recipient_list_is_refused() -> None:
    body = json.loads(envelope(("a@example.org",)).to_json())
    body["rcpt_to"] = []
    with pytest.raises(ContractError, match="non-empty list"):
        Envelope.from_json(json.dumps(body))


def test_the_sasl_user_is_optional_in_both_directions() -> None:
    """An envelope without sasl_username (older relays) reads as "", and one without a
    login carries no such field, byte for byte what older relays sent; with a login the
    field is there, and older workers, which read only the fields they know, ignore it."""
    plain = envelope(("a@example.org",))
    assert "sasl_username" not in json.loads(plain.to_json())
    assert Envelope.from_json(plain.to_json()).sasl_username == ""
    data = json.loads(plain.to_json())
    data["sasl_username"] = "app1"
    parsed = Envelope.from_json(json.dumps(data))
    assert parsed.sasl_username == "app1"
    assert Envelope.from_json(parsed.to_json()) == parsed
    data["sasl_username"] = 7
    with pytest.raises(ContractError, match="sasl_username"):
        Envelope.from_json(json.dumps(data))


def test_the_fields_of_a_deferred_copy_are_optional_and_checked() -> None:
    """The worker's re-enqueued copy carries attempts, first_seen and not_before; the
    relay's envelopes carry none of them (byte for byte what they were), and a copy
    stays version 2, so a worker of the previous release reads it too."""
    plain = envelope(("a@example.org",))
    data = json.loads(plain.to_json())
    assert not {"attempts", "first_seen", "not_before"} & set(data)
    now = utc_now()
    data.update(attempts=3, first_seen=now.isoformat(), not_before=now.isoformat())
    copy = Envelope.from_json(json.dumps(data))
    assert (copy.attempts, copy.first_seen_at, copy.not_before_at) == (3, now, now)
    assert copy.version == 2
    assert Envelope.from_json(copy.to_json()) == copy
    for name, bad, why in [("attempts", "3", "attempts"), ("attempts", True, "attempts"),
                           ("attempts", -1, "attempts"), ("not_before", "soon", "ISO 8601"),
                           ("first_seen", "2026-11-29T07:00:00", "time zone")]:
        with pytest.raises(ContractError, match=why):
            Envelope.from_json(json.dumps({**data, name: bad}))
