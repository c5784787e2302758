"""The worker's own check of the header section (issue 15): a bare CR, a bare LF or a
NUL there is a permanent error and nothing is sent; other octets, such as the ESC of raw
ISO-2022-JP headers, pass as before."""

from __future__ import annotations

import pytest

from ses_worker.message import header_section_problem
from tests.worker.conftest import Spool, message, sent_messages
from tests.worker.test_failures import Logs

RECEIVED = (b"Received: from evil (unknown [192.0.2.1])\r\n"
            b"\tby relay.example.net (sesrelay) with ESMTP id TEST\r\n")


@pytest.mark.parametrize(("raw", "problem"), [
    (RECEIVED.replace(b"evil", b"evil\rBcc: victim@example.com") + b"Subject: x\r\n\r\nb\r\n",
     "bare CR in header line 1"),
    (RECEIVED + b"Subject: x\nBcc: victim@example.com\r\n\r\nbody\r\n", "bare LF in header line 3"),
    (RECEIVED + b"Subject: a\x00b\r\n\r\nbody\r\n", "NUL in header line 3"),
    (RECEIVED + b"Subject: x\r\n\n\r\nbody\r\n", "bare LF in header line 4"),
])
def test_line_breaking_octets_in_the_header_section_are_found(raw: bytes, problem: str) -> None:
    assert header_section_problem(raw) == f"{problem}: the header section is malformed"


@pytest.mark.parametrize("raw", [
    RECEIVED + b"Subject: \x1b$B$3$s$K$A$O\x1b(B\r\n\r\nbody\r\n",  # raw ISO-2022-JP
    RECEIVED + b"Subject: caf\xc3\xa9\r\n\r\nbody with a bare \r and \n and \x00\r\n",
    RECEIVED + b"Subject: no body\r\n",
])
def test_other_octets_and_the_body_are_left_alone(raw: bytes) -> None:
    assert header_section_problem(raw) is None


def test_a_malformed_header_section_is_never_sent_and_bounces(spool: Spool,
                                                             worker_logs: Logs) -> None:
    raw = message(extra_headers="X-Note: a\rBcc: victim@example.org\r\n")
    spool.put(raw, ["alice@example.org"])

    assert spool.invoke(spool.receive()) == set()

    # The message itself is never sent; its sender gets a DSN (5.6.0) whose copy of the
    # headers has the bare CR made harmless.
    [dsn] = sent_messages()
    assert set(dsn.destinations) == {"sender@example.com"}  # moto adds the To: address
    assert "Status: 5.6.0" in dsn.raw_data
    assert "bare CR in header line 5" in dsn.raw_data
    assert "X-Note: a Bcc: victim@example.org" in dsn.raw_data
    warnings = [line["message"] for line in worker_logs() if line["level"] == "WARNING"]
    assert any("MalformedHeaders: bare CR in header line 5" in w for w in warnings)
