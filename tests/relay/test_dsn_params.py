"""DSN (RFC 3461) at the relay: offered in EHLO, RET/ENVID/NOTIFY/ORCPT checked with
Postfix's replies and carried in the spool envelope; the contract stays readable both
ways."""

from __future__ import annotations

import smtplib

import pytest

from sesrelay.spool import ContractError, Envelope
from smtp_relay.dsn_params import RecipientParameters, xtext_decode
from tests.relay.conftest import SpoolAccount

MESSAGE = b"From: a@example.com\r\nSubject: dsn\r\n\r\nhello\r\n"


def test_dsn_is_offered_and_its_parameters_reach_the_envelope(
        start_relay, spool_account: SpoolAccount) -> None:
    relay = start_relay()
    with smtplib.SMTP(relay.host, relay.port) as client:
        client.ehlo("client.example.com")
        assert client.has_extn("dsn")
        client.mail("a@example.com", ["RET=HDRS", "ENVID=QQ314159+2Bx"])
        assert client.rcpt("b@example.org", ["NOTIFY=SUCCESS,failure",
                                             "ORCPT=rfc822;B+2Bx@example.org"])[0] == 250
        assert client.rcpt("c@example.org")[0] == 250
        assert client.rcpt("d@example.org", ["NOTIFY=NEVER"])[0] == 250
        assert client.data(MESSAGE)[0] == 250
        # A message without DSN parameters: its envelope is as it always was.
        client.sendmail("a@example.com", ["e@example.org"], MESSAGE)
    with_dsn, without = sorted(spool_account.queued(), key=lambda s: len(s.envelope.rcpt_to),
                               reverse=True)
    envelope = with_dsn.envelope
    assert (envelope.ret, envelope.envid) == ("HDRS", "QQ314159+x")
    assert envelope.notify == ("SUCCESS,FAILURE", "", "NEVER")
    assert envelope.orcpt == ("rfc822;B+x@example.org", "", "")
    assert envelope.notify_of(0) == {"SUCCESS", "FAILURE"} and not envelope.notify_of(1)
    plain = without.envelope.to_json()
    assert not any(f'"{name}"' in plain for name in ("ret", "envid", "notify", "orcpt"))


def test_recipients_from_an_alias_inherit_its_notify_and_orcpt(
        start_relay, spool_account: SpoolAccount, tmp_path) -> None:
    (tmp_path / "virtual").write_text("team@example.org ann@example.org, ben@example.org\n")
    relay = start_relay(f"virtual_alias_maps = texthash:{tmp_path}/virtual\n")
    with smtplib.SMTP(relay.host, relay.port) as client:
        client.ehlo("client.example.com")
        client.mail("a@example.com")
        assert client.rcpt("zed@example.org")[0] == 250
        assert client.rcpt("team@example.org", ["NOTIFY=NEVER",
                                                "ORCPT=rfc822;team@example.org"])[0] == 250
        assert client.data(MESSAGE)[0] == 250
    [spooled] = spool_account.queued()
    envelope = spooled.envelope
    assert envelope.rcpt_to == ("zed@example.org", "ann@example.org", "ben@example.org")
    assert envelope.notify == ("", "NEVER", "NEVER")
    assert envelope.orcpt == ("", "rfc822;team@example.org", "rfc822;team@example.org")


@pytest.mark.parametrize(("command", "reply"), [
    (b"MAIL FROM:<a@example.com> RET=FULL RET=HDRS", "501 5.5.4 Bad RET parameter syntax"),
    (b"MAIL FROM:<a@example.com> ENVID=a+0Db", "501 5.5.4 Bad ENVID parameter syntax"),
    (b"MAIL FROM:<a@example.com> ENVID=a+zz", "501 5.5.4 Bad ENVID parameter syntax"),
    (b"MAIL FROM:<a@example.com> ENVID=" + b"x" * 101, "501 5.5.4 Bad ENVID parameter syntax"),
])
def test_bad_mail_parameters_get_postfix_replies(start_relay, command: bytes,
                                                 reply: str) -> None:
    relay = start_relay()
    with smtplib.SMTP(relay.host, relay.port) as client:
        client.ehlo("client.example.com")
        assert client.docmd(command.decode()) == (int(reply[:3]), reply[4:].encode())


@pytest.mark.parametrize(("option", "reply"), [
    ("NOTIFY=NEVER,SUCCESS", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
    ("NOTIFY=SOMETIMES", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
    ("NOTIFY=DELAY NOTIFY=DELAY", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
    ("ORCPT=b@example.org", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
    ("ORCPT=;b@example.org", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
    ("ORCPT=rfc822;b+0A@example.org", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
    ("XYZZY=1", "555 5.5.4 Unsupported option: XYZZY=1"),
])
def test_bad_rcpt_parameters_get_postfix_replies(start_relay, option: str, reply: str) -> None:
    relay = start_relay()
    with smtplib.SMTP(relay.host, relay.port) as client:
        client.ehlo("client.example.com")
        client.mail("a@example.com")
        answer = client.docmd(f"RCPT TO:<b@example.org> {option}")
        assert answer == (int(reply[:3]), reply[4:].encode())


def test_xtext() -> None:
    assert xtext_decode("a+2Bb+3dc") == "a+b=c"
    assert xtext_decode("+2") is None and xtext_decode("a+00") is None
    params = RecipientParameters()
    with pytest.raises(KeyError):
        params.take("SIZE=1")


def test_envelopes_queued_before_dsn_still_read_and_bad_dsn_fields_do_not() -> None:
    old = ('{"queue_id":"Q1","mail_from":"a@example.com","rcpt_to":["b@example.org"],'
           '"bucket":"","key":"","size":5,"client_address":"10.0.0.1","client_helo":"h",'
           '"received_at":"2026-01-01T00:00:00+00:00","version":2,"body":"aGVsbG8="}')
    envelope = Envelope.from_json(old)
    assert (envelope.ret, envelope.envid, envelope.notify, envelope.orcpt) == ("", "", (), ())
    assert not envelope.notify_of(0) and envelope.orcpt_of(0) == ""
    assert Envelope.from_json(envelope.to_json()) == envelope
    with pytest.raises(ContractError, match="notify"):
        Envelope.from_json(old[:-1] + ',"notify":["NEVER","NEVER"]}')
    with pytest.raises(ContractError, match="ret"):
        Envelope.from_json(old[:-1] + ',"ret":"ALL"}')


def test_dsn_parameters_never_make_an_envelope_too_large_for_sqs() -> None:
    from aiosmtpd.smtp import Envelope as SmtpEnvelope

    from sesrelay.spool import INLINE_LIMIT, MAX_ADDRESS_LENGTH
    from smtp_relay import dsn_params

    def address(i: int) -> str:
        return f"{i:04d}".ljust(MAX_ADDRESS_LENGTH - len("@example.org"), "x") + "@example.org"

    plain = SmtpEnvelope()
    for i in range(1000):  # the largest smtpd_recipient_limit, longest addresses: fits
        assert dsn_params.fits(plain, address(i), RecipientParameters())
        dsn_params.accept_recipient(plain, address(i), RecipientParameters())
    long_orcpt = SmtpEnvelope()
    accepted = []
    for i in range(1000):
        params = RecipientParameters(notify="SUCCESS,FAILURE,DELAY",
                                     orcpt="rfc822;" + '"' * 240 + address(i)[:250])
        if not dsn_params.fits(long_orcpt, address(i), params):
            break
        long_orcpt.rcpt_tos.append(address(i))  # as the relay does
        dsn_params.accept_recipient(long_orcpt, address(i), params)
        accepted.append(address(i))
    assert 200 < len(accepted) < 1000  # the rest would get 452 4.5.3, and come later
    fields = dsn_params.envelope_fields(long_orcpt, accepted)
    envelope = Envelope(queue_id="Q" * 16, mail_from="a" * 254, rcpt_to=tuple(accepted),
                        bucket="b" * 63, key="spool/2026/01/01/" + "Q" * 16, size=1,
                        client_address="f" * 45, client_helo="h" * 255,
                        received_at="2026-01-01T00:00:00.000000+00:00",
                        **{**fields, "ret": "HDRS", "envid": "e" * 100})  # type: ignore[arg-type]
    assert len(envelope.to_json()) <= INLINE_LIMIT
