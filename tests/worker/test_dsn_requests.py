"""The worker honours the DSN requests of the envelope (RFC 3461): NOTIFY (NEVER: no
bounce; SUCCESS: a "relayed" DSN once SES accepted), RET, ENVID and ORCPT."""

from __future__ import annotations

import email

import pytest
from moto.sesv2.responses import SESV2Response

from sesrelay import dev_ses
from tests.worker.conftest import BOUNCE_SENDER, Spool, message, sent_messages

UNVERIFIED_SENDER = "someone@unverified.example"


def dsns() -> list[email.message.Message]:
    return [email.message_from_bytes(m.raw_data.encode("utf-8", "surrogateescape"))
            for m in sent_messages() if m.source == BOUNCE_SENDER]


def test_notify_never_means_no_bounce_for_that_recipient(spool: Spool) -> None:
    spool.put(message(), ["never@example.org", "default@example.org"],
              mail_from=UNVERIFIED_SENDER, notify=("NEVER", ""))
    spool.put(message(), ["a@example.org", "b@example.org"], mail_from=UNVERIFIED_SENDER,
              notify=("NEVER", "SUCCESS,DELAY"))
    assert spool.invoke(spool.receive()) == set()  # both done: nothing retried
    [dsn] = dsns()
    [_, recipient] = dsn.get_payload()[1].get_payload()
    assert recipient["Final-Recipient"] == "rfc822; default@example.org"
    assert spool.waiting() == spool.hidden() == 0


def test_envid_orcpt_and_ret_full_come_back_in_the_bounce(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    # moto decodes raw content as UTF-8; SES (and sesrelay dev's emulation) take 8 bits.
    monkeypatch.setattr(SESV2Response, "send_email", dev_ses.handler(SESV2Response.send_email))
    original = message(body="Caf\xe9\r\n").replace(b"Caf\xc3\xa9", b"Caf\xe9")
    spool.put(original, ["bob@example.org"], mail_from=UNVERIFIED_SENDER, ret="FULL",
              envid="QQ314159", orcpt=("rfc822;Bob+x@example.org",))
    assert spool.invoke(spool.receive()) == set()
    [dsn] = dsns()
    _, status, returned = dsn.get_payload()
    per_message, per_recipient = status.get_payload()
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert per_recipient["Original-Recipient"] == "rfc822;Bob+x@example.org"
    assert returned.get_content_type() == "message/rfc822"
    assert returned["Content-Transfer-Encoding"] == "8bit"
    raw = sent_messages()[0].raw_data.encode("utf-8", "surrogateescape")
    assert original in raw  # octet for octet


def test_ret_hdrs_returns_headers_only(spool: Spool) -> None:
    spool.put(message(subject="invoice 42"), ["bob@example.org"],
              mail_from=UNVERIFIED_SENDER, ret="HDRS")
    spool.invoke(spool.receive())
    [dsn] = dsns()
    returned = dsn.get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: invoice 42" in returned.get_payload()
    assert "Hello there." not in returned.get_payload()


def test_notify_success_gets_a_relayed_dsn_once(spool: Spool) -> None:
    spool.put(message(), ["carol@example.org", "dave@example.org"],
              notify=("SUCCESS", ""), envid="E-1")
    event = spool.receive()
    assert spool.invoke(event) == set()
    spool.invoke(event)  # a redelivered record: nothing is sent twice
    [sent, notice] = sent_messages()
    assert sorted(sent.destinations[:2]) == ["carol@example.org", "dave@example.org"]
    assert notice.source == BOUNCE_SENDER
    assert notice.destinations[0] == "sender@example.com"
    [dsn] = dsns()
    assert dsn["Subject"] == "Successful Mail Delivery Report"
    per_message, per_recipient = dsn.get_payload()[1].get_payload()
    assert per_message["Original-Envelope-Id"] == "E-1"
    assert per_recipient["Final-Recipient"] == "rfc822; carol@example.org"
    assert (per_recipient["Action"], per_recipient["Status"]) == ("relayed", "2.0.0")
    assert " ".join(per_recipient["Diagnostic-Code"].split()) == f"X-SES; 250 Ok {sent.id}"
