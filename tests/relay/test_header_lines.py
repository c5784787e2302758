"""Which message lines start a header field, and how many are Received: headers: the DATA
reader, header_checks and the hop count decide on these for every message."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smtp_relay.headers import is_header_start, received_count

# Lines made mostly of the octets that matter here: field-name characters, ':', space,
# tab and a few outside printable ASCII.
_LINES = st.binary(max_size=30) | st.lists(
    st.sampled_from([b"R", b"e", b"c", b"i", b"v", b"d", b"-", b":", b" ", b"\t", b"\x7f",
                     b"\x00", b"\xc3", b"X"]), max_size=14).map(b"".join)


def _field_name(line: bytes) -> bytes | None:
    """RFC 5322 2.2: a field name is one or more printable US-ASCII octets but ':',
    followed by ':'."""
    name, colon, _ = line.partition(b":")
    if not colon or not name or any(octet < 33 or octet > 126 for octet in name):
        return None
    return name


@given(_LINES)
def test_a_header_starts_with_a_field_name_and_a_colon(line: bytes) -> None:
    assert is_header_start(line) == (_field_name(line) is not None)


@given(st.lists(_LINES | st.sampled_from([b"Received: from a", b"RECEIVED:x", b" Received: no",
                                           b"Received : no", b"X-Received: no"]), max_size=8))
def test_received_headers_are_counted_in_any_case_but_not_continuations(
        lines: list[bytes]) -> None:
    expected = sum(1 for line in lines if (_field_name(line) or b"").lower() == b"received")
    assert received_count(lines) == expected
