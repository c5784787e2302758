"""The address parser and command tokenizer: Postfix's replies for a table of addresses,
and a property: for any bytes at all, a well-formed reply and no exception.

The table's replies were captured from a real Postfix 3.7.11 smtpd (a throwaway instance
run as bench/harness.py runs one, mynetworks = 127.0.0.0/8, each address sent as MAIL
FROM and as RCPT TO); the code paths are smtpd.c mail_cmd(), rcpt_cmd(), extract_addr()
and smtpd_token.c."""

from __future__ import annotations

import logging
import re
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_relay.addresses import local_part_is_utf8, parse_path, tokenize
from smtp_relay.edge import command_text, helo_name
from tests.support import read_reply

# (token, MAIL reply class, RCPT reply class) as Postfix 3.7.11 answers them; "501" is
# 501 5.1.7 / 501 5.1.3. STRICTER marks where sesrelay refuses what Postfix accepts.
POSTFIX = [
    ("a@", "501", "501"), ('"', "501", "501"), ("%@[", "501", "501"), ("<a@b", "501", "501"),
    ('<"unterminated@x>', "501", "501"), ("<@>", "501", "501"), ("<a b>", "501", "501"),
    ("x@", "501", "501"), ("<>", "250", "501"), ("<a@[192.0.2.1>", "250", "250"),
    ("<a@example.com.>", "250", "250"), ("a@b", "250", "250"), ("<a@b>junk", "501", "501"),
    ('<"a@b"@c>', "250", "250"), ("<@a,@b:u@d>", "250", "250"), ("<u>", "250", "250"),
    ("<a..b@c>", "250", "250"), ("<.a@c>", "250", "250"), ("<a@b..c>", "501", "501"),
    ("<a@-b>", "501", "501"), ("<a@b_c>", "250", "250"), ("<a@[1.2.3.4]>", "250", "250"),
    ("<a@[ipv6:::1]>", "250", "250"), ("<a@b,c@d>", "501", "501"), ("<a;b@c>", "501", "501"),
    ('<"a"b@c>', "501", "501"), ("<a@>", "501", "501"), ("<a@.>", "501", "501"),
    ("<a@b.>", "250", "250"), ("a", "250", "250"), ("<@a:b>", "250", "250"),
    ('<""@b>', "STRICTER", "STRICTER"), ("<@b>", "STRICTER", "STRICTER"),
    ("<a(comment)@b>", "STRICTER", "STRICTER"), ("<a @ b>", "STRICTER", "STRICTER"),
    ("<a@b@c>", "STRICTER", "STRICTER"), ("<<a@b>>", "STRICTER", "STRICTER"),
    ("<a\x7f@b>", "STRICTER", "STRICTER"), ("<a\x01@b>", "STRICTER", "STRICTER"),
    ("<a\x1b@b>", "STRICTER", "STRICTER"), ('<"a\tb"@c>', "STRICTER", "STRICTER"),
    ('<"a\rBcc: v@x"@b>', "STRICTER", "STRICTER"), ("<a\u00e9@b>", "STRICTER", "STRICTER"),
]


@pytest.mark.parametrize(("token", "mail", "rcpt"), POSTFIX)
def test_postfix_table(token: str, mail: str, rcpt: str) -> None:
    [word] = tokenize(token)
    address = parse_path(word.text) if word.ok else None
    assert (address is not None) == (mail == "250")
    assert bool(address) == (rcpt == "250")


def test_internal_forms() -> None:
    assert parse_path("<a@[192.0.2.1>") == "a@[192.0.2.1]"
    assert parse_path("<a@Example.COM.>") == "a@Example.COM"
    assert parse_path("<@a,@b:u@d>") == "@a,@b:u@d"
    assert parse_path('<"user@host"@example.com>') == '"user@host"@example.com'
    assert parse_path("<>") == ""


def test_idn_domains_become_a_labels_and_utf8_local_parts_are_told_apart() -> None:
    assert parse_path("<a@Bu\u0308cher.example.>") == "a@xn--bcher-kva.example"  # NFD in
    assert parse_path("<a@fa\u00df.de>") == "a@xn--fa-hia.de"  # non-transitional: keeps ß
    # What UTS #46 would map to another domain, and what IDNA 2008 disallows: malformed.
    for token in ("<a@b\u200bc.example>", "<a@\uff45xample.com>", "<a@\u2603.example>",
                  "<a@b\u0085c>"):
        assert parse_path(token) is None and not local_part_is_utf8(token), token
    assert parse_path("<\u00fcnal@example.org>") is None
    assert local_part_is_utf8("<\u00fcnal@b\u00fccher.example>")
    assert local_part_is_utf8('<"\u00fc x"@example.org>')
    assert not local_part_is_utf8("<\u00fcnal@>")


def test_tokenizer_is_postfixs() -> None:
    assert tokenize("MAIL FROM:<a@b> SIZE=10") == [
        ("MAIL", True), ("FROM:", True), ("<a@b>", True), ("SIZE=10", True)]
    assert tokenize("MAIL FROM: <a b@c>") == [("MAIL", True), ("FROM:", True),
                                              ("<a b@c>", True)]
    assert tokenize('RCPT TO:<"x>"@c>') == [("RCPT", True), ("TO:", True), ('<"x>"@c>', True)]
    assert tokenize('RCPT TO:<"x>') == [("RCPT", True), ("TO:", True), ('<"x>', False)]
    assert tokenize("  ") == []


def test_helo_name_is_printable_and_neutered() -> None:
    assert helo_name(tokenize("a  b\x01<>()\\\";@ \u00e9")) == "a?b" + "?" * 11
    assert helo_name(tokenize("x" * 300)) == "x" * 255


# Postfix's replies to MAIL and RCPT carry an enhanced status code; only printable ASCII.
WELL_FORMED = re.compile(r"[2-5]\d\d [2-5]\.\d{1,3}\.\d{1,3} [ -~]+\r\n\Z")


def test_any_bytes_as_an_address_get_a_well_formed_reply(start_relay, caplog) -> None:
    """For any byte string after MAIL FROM: and RCPT TO: (one command line: the bytes
    up to a line end), over a real session: one well-formed reply, no exception."""
    relay = start_relay(smtpd_hard_error_limit=10**6, smtpd_soft_error_limit=10**6,
                        smtpd_junk_command_limit=10**6)
    with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        read_reply(stream)

        def ask(line: bytes) -> str:
            sock.sendall(line + b"\r\n")
            return read_reply(stream).decode("latin-1")

        ask(b"EHLO client.example.org")

        @settings(max_examples=1500, deadline=None)
        @given(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")))
        def check(raw: bytes) -> None:
            reply = ask(b"MAIL FROM:" + raw)
            assert WELL_FORMED.match(reply), (raw, reply)
            if not reply.startswith("250"):
                assert ask(b"MAIL FROM:<app@example.com>").startswith("250")
            reply = ask(b"RCPT TO:" + raw)
            assert WELL_FORMED.match(reply), (raw, reply)
            assert ask(b"RSET") == "250 2.0.0 Ok\r\n"

        check()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_to_a_clean_address_or_none(raw: bytes) -> None:
    """What the session does with a MAIL or RCPT argument: decode, tokenize, parse."""
    for prefix in (b"MAIL FROM:", b"RCPT TO:"):
        text = command_text((prefix + raw).split(b"\0")[0])
        if text is None:
            continue  # 500 5.5.2 Error: bad UTF-8 syntax
        words = tokenize(text)
        if len(words) < 3:
            continue  # 501 5.5.4 Syntax: ...
        address = parse_path(words[2].text)
        if address:
            assert re.fullmatch(r"[ -~]+", address)  # nothing a header line could end on


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_without_exception(text: str) -> None:
    for word in tokenize(text):
        parse_path(word.text)
    assert re.fullmatch(r"[ -~]*", helo_name(tokenize(text)))
