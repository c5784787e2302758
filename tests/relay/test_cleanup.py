"""Address rewriting (smtp_relay/cleanup.py): the rules the Postfix oracle
(test_postfix_oracle.py) does not exercise, and the relay's use of them over SMTP."""

from __future__ import annotations

import json
import logging
import smtplib
from pathlib import Path

import pytest

from sesrelay.config import ConfigError, load_config
from sesrelay.spool import Envelope
from smtp_relay.cleanup import Cleanup, ExpansionError
from tests.relay.conftest import SpoolAccount


def cleanup(tmp_path: Path, main_cf: str, **tables: str) -> Cleanup:
    for name, text in tables.items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "main.cf"
    path.write_text(main_cf.format(dir=tmp_path))
    return Cleanup(load_config(path, environ={}, overrides={"myhostname": "relay.example.net",
                                                            "myorigin": "example.net",
                                                            "mydomain": "example.net"}))


def test_qualification_of_envelope_addresses(tmp_path: Path) -> None:
    plain = cleanup(tmp_path, "")
    assert plain.sender("bob") == "bob@example.net"
    assert plain.sender("bob@host") == "bob@host"  # append_dot_mydomain = no (Postfix 3)
    assert plain.sender("") == ""  # the null sender is never rewritten
    dotted = cleanup(tmp_path, "append_dot_mydomain = yes\nappend_at_myorigin = no\n")
    assert dotted.sender("bob@host") == "bob@host.example.net"
    assert dotted.sender("bob@[10.0.0.1]") == "bob@[10.0.0.1]"
    assert dotted.qualify("bob") == "bob"


def test_bare_user_keys_apply_only_to_local_domains(tmp_path: Path) -> None:
    rules = cleanup(tmp_path, "canonical_maps = texthash:{dir}/canonical\n"
                              "proxy_interfaces = 192.0.2.7\nmydestination = local.example\n",
                    canonical="carol carol.x@b.example\n")
    assert rules.sender("carol@example.net") == "carol.x@b.example"  # $myorigin
    assert rules.sender("carol@local.example") == "carol.x@b.example"  # $mydestination
    assert rules.sender("carol@[192.0.2.7]") == "carol.x@b.example"  # $proxy_interfaces
    assert rules.sender("carol@[127.0.0.1]") == "carol.x@b.example"  # inet_interfaces = all
    assert rules.sender("carol@elsewhere.example") == "carol@elsewhere.example"


def test_classes_and_propagation_switches(tmp_path: Path) -> None:
    rules = cleanup(tmp_path, "canonical_maps = texthash:{dir}/canonical\n"
                              "canonical_classes = envelope_recipient\n"
                              "recipient_delimiter = +-\n"
                              "propagate_unmatched_extensions = virtual\n"
                              "masquerade_domains = corp.example\n"
                              "masquerade_classes = envelope_recipient\n",
                    canonical="bob@a.example robert@a.example\n")
    assert rules.sender("bob@a.example") == "bob@a.example"  # not in canonical_classes
    assert rules.recipient("bob+x@a.example") == ["robert@a.example"]  # not propagated
    assert rules.recipient("bob-x@a.example") == ["robert@a.example"]  # either delimiter
    assert rules.recipient("ops@mx.corp.example") == ["ops@corp.example"]
    assert rules.sender("ops@mx.corp.example") == "ops@mx.corp.example"


def test_regexp_tables_see_the_whole_address_once(tmp_path: Path) -> None:
    rules = cleanup(tmp_path, "recipient_delimiter = +\n"
                              "canonical_maps = regexp:{dir}/canonical.re\n",
                    **{"canonical.re": "/^bob@a\\.example$/ robert@a.example\n"
                                       "/^(.+)@old\\.example$/ $1@new.example\n"})
    assert rules.sender("bob@a.example") == "robert@a.example"
    assert rules.sender("bob+x@a.example") == "bob+x@a.example"  # no user@domain retry
    assert rules.sender("joe+x@old.example") == "joe+x@new.example"


def test_virtual_expansion_limits(tmp_path: Path) -> None:
    rules = cleanup(tmp_path, "virtual_alias_maps = texthash:{dir}/virtual\n"
                              "virtual_alias_recursion_limit = 3\n"
                              "virtual_alias_expansion_limit = 3\n",
                    virtual="a@x.example b@x.example\nb@x.example c@x.example\n"
                            "c@x.example d@x.example\n"
                            "two@x.example 1@y.example, 2@y.example\n"
                            "four@x.example two@x.example, two@x.example, 3@y.example\n")
    assert rules.recipient("b@x.example") == ["d@x.example"]  # lookups: b, c, d
    with pytest.raises(ExpansionError, match=r"nesting for a@x\.example"):
        rules.recipient("a@x.example")
    with pytest.raises(ExpansionError, match=r"expansion size for four@x\.example"):
        rules.recipient("four@x.example")
    rewritten = rules.envelope("s@x.example", ["two@x.example", "two@x.example"])
    assert rewritten.recipients == (("two@x.example", "1@y.example"),
                                    ("two@x.example", "2@y.example"))


def test_refused_header_rewriting_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "main.cf"
    path.write_text("myorigin = example.net\nlocal_header_rewrite_clients = permit_mynetworks\n")
    with pytest.raises(ConfigError, match=r"main\.cf:2: local_header_rewrite_clients"):
        load_config(path, environ={})
    path.write_text("remote_header_rewrite_domain = domain.invalid\n")
    with pytest.raises(ConfigError, match=r"main\.cf:1: remote_header_rewrite_domain"):
        load_config(path, environ={})


def test_envelope_keeps_originals_and_old_envelopes_still_read() -> None:
    old = {"queue_id": "Q", "mail_from": "a@x", "rcpt_to": ["b@y"], "bucket": "", "key": "",
           "size": 1, "client_address": "127.0.0.1", "client_helo": "h",
           "received_at": "2026-01-01T00:00:00+00:00", "version": 2, "body": "eA=="}
    envelope = Envelope.from_json(json.dumps(old))
    assert envelope.orig_mail_from is None and envelope.original_recipient("b@y") == "b@y"
    assert "orig_rcpt_to" not in envelope.to_json()
    rewritten = Envelope.from_json(json.dumps({**old, "orig_mail_from": "a",
                                               "orig_rcpt_to": ["list@y"]}))
    assert rewritten.original_recipient("b@y") == "list@y"
    assert Envelope.from_json(rewritten.to_json()) == rewritten


def test_relay_spools_the_rewritten_envelope_and_checks_rcpt_as_postfix(
        start_relay, spool_account: SpoolAccount, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sesrelay.relay")
    (tmp_path / "virtual").write_text("sales@example.com ann@x.example, ben@x.example\n"
                                      "aliases.example anything\n"
                                      "info@aliases.example info@aliases.example\n"
                                      "team@aliases.example ann@x.example\n")
    (tmp_path / "relay_recipients").write_text("known@example.com ok\n")
    relay = start_relay(f"virtual_alias_maps = texthash:{tmp_path}/virtual\n"
                        f"relay_recipient_maps = texthash:{tmp_path}/relay_recipients\n"
                        "relay_domains = example.com\nmynetworks = 10.0.0.0/8\n")
    with smtplib.SMTP(relay.host, relay.port) as client:
        client.ehlo("client.example.org")
        client.mail("app@example.com")
        # An alias counts as a known relay recipient; aliases.example is a virtual alias
        # domain, open to untrusted clients, where only aliases exist.
        assert client.rcpt("sales@example.com")[0] == 250
        assert client.rcpt("other@example.com") == (
            550, b"5.1.1 <other@example.com>: Recipient address rejected: User unknown in "
                 b"relay recipient table")
        assert client.rcpt("nobody@aliases.example") == (
            550, b"5.1.1 <nobody@aliases.example>: Recipient address rejected: User unknown "
                 b"in virtual alias table")
        assert client.rcpt("team@aliases.example")[0] == 250
        assert client.rcpt("info@aliases.example")[0] == 250
        assert client.data(b"Subject: hi\r\n\r\nHi.\r\n")[0] == 250
        # Left in the alias domain by expanding to itself: Postfix would bounce it.
        client.mail("app@example.com")
        client.rcpt("info@aliases.example")
        assert client.data(b"Subject: hi\r\n\r\nHi.\r\n") == (
            550, b"5.1.1 Error: User unknown in virtual alias table")
    [spooled] = spool_account.queued()
    envelope = spooled.envelope
    # Each (original, rewritten) pair once, as Postfix's duplicate filter keeps them.
    assert envelope.rcpt_to == ("ann@x.example", "ben@x.example", "ann@x.example")
    assert envelope.orig_rcpt_to == ("sales@example.com", "sales@example.com",
                                     "team@aliases.example")
    assert envelope.orig_mail_from == "app@example.com"
    logged = caplog.text
    assert "to=<sales@example.com> rewritten to <ann@x.example>, <ben@x.example>" in logged
    assert ("to=<info@aliases.example>, relay=none" in logged
            and "status=bounced (User unknown in virtual alias table)" in logged)


def test_envelope_cap_after_expansion(start_relay, spool_account: SpoolAccount,
                                      tmp_path: Path) -> None:
    many = ", ".join(f"member-with-a-long-name-{i:04d}@lists.example.org" for i in range(999))
    (tmp_path / "virtual").write_text(f"all@example.com {many}\n")
    relay = start_relay(f"virtual_alias_maps = texthash:{tmp_path}/virtual\n"
                        "virtual_alias_expansion_limit = 100000\nrecipient_delimiter = +\n")
    with smtplib.SMTP(relay.host, relay.port) as client:
        client.ehlo("client.example.org")
        client.mail("app@example.com")
        for i in range(5):
            client.rcpt(f"all+{i}@example.com")
        assert client.data(b"Subject: hi\r\n\r\nHi.\r\n") == (
            552, b"5.5.3 Error: too many recipients after address expansion")
    assert spool_account.queued() == []
