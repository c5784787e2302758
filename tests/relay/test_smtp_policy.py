"""The relay policy over real SMTP sessions (smtplib): every reply code a client can get."""

from __future__ import annotations

import smtplib
import socket

import pytest

from tests.relay.conftest import RunningRelay, SpoolAccount

UNTRUSTED = {"mynetworks": "10.0.0.0/8", "relay_domains": "example.com"}
MESSAGE = b"From: app@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"


def smtp(relay: RunningRelay) -> smtplib.SMTP:
    client = smtplib.SMTP(relay.host, relay.port, timeout=10)
    client.ehlo("client.example.org")
    return client


def rcpt(relay: RunningRelay, address: str, sender: str = "app@example.com") -> tuple[int, str]:
    with smtp(relay) as client:
        client.mail(sender)
        # docmd, not rcpt(): smtplib would "fix" source routes and quoted local parts.
        code, text = client.docmd("RCPT", f"TO:<{address}>")
        return code, text.decode()


def test_banner_ehlo_and_queued_reply(start_relay, spool_account: SpoolAccount) -> None:
    relay = start_relay(smtpd_banner="$myhostname ESMTP ready", message_size_limit=5000000)
    client = smtplib.SMTP()
    code, banner = client.connect(relay.host, relay.port)
    assert (code, banner) == (220, b"relay.example.net ESMTP ready")
    code, ehlo = client.ehlo("client.example.org")
    assert code == 250
    assert ehlo.decode().splitlines()[0] == "relay.example.net"
    assert client.esmtp_features["size"] == "5000000"
    assert "pipelining" in client.esmtp_features
    client.mail("app@example.com")
    client.rcpt("someone@example.org")
    code, reply = client.data(MESSAGE)
    client.quit()
    queued = spool_account.queued()
    assert len(queued) == 1
    assert (code, reply.decode()) == (250, f"2.0.0 Ok: queued as {queued[0].envelope.queue_id}")


def test_accepted_message_is_spooled_with_envelope_and_received_header(
        start_relay, spool_account: SpoolAccount) -> None:
    relay = start_relay()
    with smtp(relay) as client:
        client.sendmail("app@example.com", ["a@example.org", "b@example.net"], MESSAGE)
    [spooled] = spool_account.queued()
    envelope = spooled.envelope
    assert envelope.mail_from == "app@example.com"
    assert envelope.rcpt_to == ("a@example.org", "b@example.net")
    assert envelope.client_address == "127.0.0.1"
    assert envelope.client_helo == "client.example.org"
    assert envelope.inline and envelope.message() == spooled.raw  # small: no S3 object
    assert envelope.size == len(spooled.raw)
    first, second, third = spooled.raw.split(b"\r\n")[:3]
    assert first == b"Received: from client.example.org (unknown [127.0.0.1])"
    by = f"\tby relay.example.net (sesrelay) with ESMTP id {envelope.queue_id};"
    assert second == by.encode()
    assert third.startswith(b"\t") and b"+0000" in third
    assert spooled.raw.endswith(MESSAGE)


def test_single_recipient_received_header_names_it(start_relay, spool_account) -> None:
    relay = start_relay()
    with smtp(relay) as client:
        client.sendmail("app@example.com", ["only@example.org"], MESSAGE)
    [spooled] = spool_account.queued()
    assert b"\tfor <only@example.org>; " in spooled.raw.split(b"\r\n\r\n")[0]


def test_dot_stuffing_is_undone(start_relay, spool_account) -> None:
    relay = start_relay()
    body = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n"
    with smtp(relay) as client:
        client.sendmail("app@example.com", ["a@example.org"], body)
    [spooled] = spool_account.queued()
    assert spooled.raw.endswith(b"\r\n.leading dot\r\n..two dots\r\n")


def test_trusted_client_relays_anywhere(start_relay) -> None:
    relay = start_relay(mynetworks="127.0.0.0/8", relay_domains="example.com")
    assert rcpt(relay, "someone@elsewhere.example.org")[0] == 250


def test_untrusted_client_relays_only_to_relay_domains(start_relay) -> None:
    relay = start_relay(**UNTRUSTED)
    assert rcpt(relay, "user@example.com")[0] == 250
    assert rcpt(relay, "user@Sub.Example.COM")[0] == 250
    assert rcpt(relay, "user@example.org") == (
        554, "5.7.1 <user@example.org>: Relay access denied")


@pytest.mark.parametrize("address", [
    "user%elsewhere.org@example.com",          # percent hack
    "elsewhere.org!user@example.com",          # bang path
    '"user@elsewhere.org"@example.com',        # quoted local part with @
    "@example.com:user@elsewhere.org",         # source route to an outside host
    "@elsewhere.org:user@example.com",         # source route through an outside host
    "user@example.com.elsewhere.org",          # relay domain as a prefix
    "user@notexample.com",                     # relay domain as a suffix without dot
    "user@[192.0.2.1]",                        # address literal
    "example.com!user",                        # bang path without @ (user@example.com)
    "user%example.com",                        # percent hack without @
])
def test_open_relay_tricks_are_refused(start_relay, address: str) -> None:
    relay = start_relay(**UNTRUSTED)
    code, text = rcpt(relay, address)
    assert code == 554, text
    assert text.endswith("Relay access denied")


def test_a_trailing_dot_after_the_domain_is_dropped_as_postfix_does(
        start_relay, spool_account) -> None:
    # Postfix's trivial-rewrite strips it before the relay policy sees the domain.
    relay = start_relay(**UNTRUSTED)
    assert rcpt(relay, "user@elsewhere.org.")[0] == 554
    assert rcpt(relay, "user@example.com.")[0] == 250
    with smtp(relay) as client:
        client.sendmail("app@example.com.", ["user@example.com."], MESSAGE)
    [spooled] = spool_account.queued()
    assert spooled.envelope.mail_from == "app@example.com"
    assert spooled.envelope.rcpt_to == ("user@example.com",)


def test_bang_path_and_percent_hack_are_rewritten_as_postfix_does(
        start_relay, spool_account) -> None:
    # trivial-rewrite: an address without @ written site!user or user%domain is
    # user@domain (swap_bangpath, allow_percent_hack); a trusted client may relay there.
    relay = start_relay(mynetworks="127.0.0.0/8")
    with smtp(relay) as client:
        client.sendmail("a.example!app", ["b.example!c.example!u", "v%w%x.example"], MESSAGE)
    [spooled] = spool_account.queued()
    assert spooled.envelope.mail_from == "app@a.example"
    assert spooled.envelope.rcpt_to == ("c.example!u@b.example", "v%w@x.example")

    relay = start_relay(mynetworks="127.0.0.0/8", swap_bangpath="no",
                        allow_percent_hack="no", myorigin="example.net")
    with smtp(relay) as client:
        client.sendmail("a.example!app", ["v%x.example"], MESSAGE)
    [spooled] = [m for m in spool_account.queued() if m.envelope.mail_from != "app@a.example"]
    assert spooled.envelope.mail_from == "a.example!app@example.net"
    assert spooled.envelope.rcpt_to == ("v%x.example@example.net",)


def test_defer_unauth_destination_and_custom_reject_code(start_relay) -> None:
    relay = start_relay(mynetworks="10.0.0.0/8", relay_domains="example.com",
                        smtpd_relay_restrictions="permit_mynetworks, defer_unauth_destination")
    assert rcpt(relay, "user@example.org") == (450, "4.7.1 <user@example.org>: Relay access "
                                                    "denied")
    relay = start_relay(mynetworks="10.0.0.0/8", relay_domains="example.com",
                        relay_domains_reject_code=550)
    assert rcpt(relay, "user@example.org")[0] == 550


def test_reject_and_permit_restrictions(start_relay) -> None:
    relay = start_relay(smtpd_recipient_restrictions="reject")
    assert rcpt(relay, "user@example.org") == (
        554, "5.7.1 <user@example.org>: Recipient address rejected: Access denied")
    relay = start_relay(smtpd_recipient_restrictions="defer")
    assert rcpt(relay, "user@example.org")[0] == 450


def test_mydestination_is_relayed_like_relay_domains(start_relay) -> None:
    relay = start_relay(mynetworks="10.0.0.0/8", mydestination="internal.example")
    assert rcpt(relay, "user@internal.example")[0] == 250
    assert rcpt(relay, "user@sub.internal.example")[0] == 554  # no subdomain match


def test_relay_recipient_maps(start_relay) -> None:
    relay = start_relay(mynetworks="10.0.0.0/8", relay_domains="example.com",
                        recipient_delimiter="+",
                        relay_recipient_maps="inline:{ known@example.com=OK, @sales.example.com }")
    assert rcpt(relay, "known@example.com")[0] == 250
    assert rcpt(relay, "known+tag@example.com")[0] == 250
    assert rcpt(relay, "anyone@sales.example.com")[0] == 250
    assert rcpt(relay, "stranger@example.com") == (
        550, "5.1.1 <stranger@example.com>: Recipient address rejected: User unknown in relay "
             "recipient table")


def test_relay_recipient_maps_apply_to_trusted_clients_too(start_relay) -> None:
    relay = start_relay(relay_domains="example.com",
                        relay_recipient_maps="inline:{ known@example.com }",
                        unknown_relay_recipient_reject_code=450)
    assert rcpt(relay, "stranger@example.com")[0] == 450
    assert rcpt(relay, "anyone@example.org")[0] == 250  # not a relay domain: not checked


def test_soft_bounce_turns_every_5xx_into_4xx(start_relay) -> None:
    relay = start_relay(**UNTRUSTED, soft_bounce="yes")
    assert rcpt(relay, "user@example.org") == (454, "4.7.1 <user@example.org>: Relay access "
                                                    "denied")


def test_recipient_limit(start_relay) -> None:
    relay = start_relay(smtpd_recipient_limit=3)
    with smtp(relay) as client:
        client.mail("app@example.com")
        codes = [client.rcpt(f"u{i}@example.org")[0] for i in range(4)]
        assert client.rcpt("u9@example.org") == (452, b"4.5.3 Error: too many recipients")
    assert codes == [250, 250, 250, 452]


def test_overlong_recipient_address_is_refused(start_relay) -> None:
    relay = start_relay()
    assert rcpt(relay, "x" * 200 + "@" + "d" * 50 + ".org")[0] == 501  # 255 octets
    assert rcpt(relay, "x" * 200 + "@" + "d" * 49 + ".org")[0] == 250  # 254 octets


def test_size_limit_at_mail_from_and_in_data(start_relay, spool_account) -> None:
    relay = start_relay(message_size_limit=2000)
    with smtp(relay) as client:
        assert client.mail("app@example.com", ["SIZE=5000"]) == (
            552, b"5.3.4 Message size exceeds fixed limit")
        client.mail("app@example.com", ["SIZE=100"])
        client.rcpt("a@example.org")
        code, text = client.data(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 40)
        assert (code, text) == (552, b"5.3.4 Message size exceeds fixed limit")
        assert client.noop()[0] == 250  # the session goes on
    assert spool_account.queued() == []


def test_null_sender_and_unqualified_addresses(start_relay, spool_account) -> None:
    relay = start_relay(myorigin="example.com")
    with smtp(relay) as client:
        client.sendmail("<>", ["postmaster"], MESSAGE)
    [spooled] = spool_account.queued()
    assert spooled.envelope.mail_from == ""
    assert spooled.envelope.rcpt_to == ("postmaster@example.com",)


def raw_session(relay: RunningRelay, data: bytes) -> bytes:
    """Send bytes as they are and return everything the relay answered."""
    with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


SMUGGLING = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r\r\n"]


def smuggling_attempt(relay: RunningRelay, smuggled: bytes) -> list[bytes]:
    """A message with a fake end of DATA and a command after it; the reply lines."""
    answer = raw_session(relay, (
        b"EHLO client.example.org\r\nMAIL FROM:<app@example.com>\r\n"
        b"RCPT TO:<a@example.org>\r\nDATA\r\n"
        b"Subject: smuggle\r\n\r\nfirst" + smuggled + b"MAIL FROM:<evil@example.org>\r\n"
        b".\r\n"))
    return [line for line in answer.split(b"\r\n") if line[3:4] == b" "]


@pytest.mark.parametrize("smuggled", SMUGGLING)
def test_only_crlf_dot_crlf_ends_data(start_relay, spool_account, smuggled: bytes) -> None:
    # smtpd_forbid_bare_newline = normalize (Postfix 3.9's default): a bare <LF> is a
    # line end, but the message ends only at <CR><LF>.<CR><LF>; what follows a fake end
    # is content, never a command.
    replies_seen = smuggling_attempt(start_relay(), smuggled)
    assert [line[:3] for line in replies_seen] == [b"220", b"250", b"250", b"250", b"354",
                                                   b"250"]
    [spooled] = spool_account.queued()
    assert spooled.envelope.mail_from == "app@example.com"
    assert b"MAIL FROM:<evil@example.org>\r\n" in spooled.raw


@pytest.mark.parametrize("smuggled", SMUGGLING)
def test_bare_lf_refused_under_reject(start_relay, spool_account, smuggled: bytes) -> None:
    relay = start_relay(smtpd_forbid_bare_newline="reject",
                        smtpd_forbid_bare_newline_exclusions="")
    replies_seen = smuggling_attempt(relay, smuggled)
    if b"\n" in smuggled.replace(b"\r\n", b""):
        assert replies_seen[-1] == b"550 5.5.2 relay.example.net Error: bare <LF> received"
        assert spool_account.queued() == []
    else:  # a bare <CR> is content, as in Postfix
        assert replies_seen[-1].startswith(b"250 2.0.0 Ok: queued as")
        assert len(spool_account.queued()) == 1


def test_reject_spares_the_excluded_clients(start_relay, spool_account) -> None:
    relay = start_relay(smtpd_forbid_bare_newline="reject")  # exclusions: $mynetworks
    replies_seen = smuggling_attempt(relay, b"\n.\n")
    assert replies_seen[-1].startswith(b"250 2.0.0 Ok: queued as")


def test_bare_cr_in_a_header_is_refused_at_data(start_relay, spool_account) -> None:
    answer = raw_session(start_relay(), (
        b"EHLO client.example.org\r\nMAIL FROM:<app@example.com>\r\n"
        b"RCPT TO:<a@example.org>\r\nDATA\r\n"
        b"Subject: one\rBcc: evil@example.org\r\n\r\nbody\r\n.\r\nQUIT\r\n"))
    assert (b"550 5.6.0 relay.example.net Error: bare <CR> received in a message header"
            in answer)
    assert answer.endswith(b"221 2.0.0 Bye\r\n")
    assert spool_account.queued() == []


def test_pipelined_session_gets_every_reply(start_relay, spool_account) -> None:
    relay = start_relay()
    answer = raw_session(relay, (
        b"EHLO client.example.org\r\nMAIL FROM:<app@example.com>\r\n"
        b"RCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
        b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n"))
    codes = [line[:3] for line in answer.split(b"\r\n") if line[3:4] == b" "]
    assert codes == [b"220", b"250", b"250", b"250", b"250", b"354", b"250", b"221"]
    assert len(spool_account.queued()) == 1


def test_metrics_count_accepted_and_rejected(start_relay) -> None:
    relay = start_relay(**UNTRUSTED)
    rcpt(relay, "user@example.org")
    with smtp(relay) as client:
        client.sendmail("app@example.com", ["user@example.com"], MESSAGE)
    assert relay.metrics["Rejected"] == 1
    assert relay.metrics["Accepted"] == 1


def test_mail_without_helo_is_accepted_by_default(start_relay, spool_account) -> None:
    # Postfix's smtpd_helo_required = no: curl and many scripts send MAIL at once.
    answer = raw_session(start_relay(), (
        b"MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"
        b"Subject: no helo\r\n\r\nbody\r\n.\r\nQUIT\r\n"))
    assert b"250 2.0.0 Ok: queued as" in answer
    [spooled] = spool_account.queued()
    assert spooled.raw.startswith(b"Received: from unknown (unknown [127.0.0.1])\r\n")
    assert spooled.envelope.client_helo == ""


def test_smtpd_helo_required_refuses_mail_before_helo(start_relay, spool_account) -> None:
    answer = raw_session(start_relay(smtpd_helo_required="yes"), (
        b"MAIL FROM:<app@example.com>\r\nHELO client.example.org\r\n"
        b"MAIL FROM:<app@example.com>\r\nQUIT\r\n"))
    codes = [line[:3] for line in answer.split(b"\r\n") if line[3:4] == b" "]
    assert codes == [b"220", b"503", b"250", b"250", b"221"]
    assert b"503 5.5.1 Error: send HELO/EHLO first" in answer
