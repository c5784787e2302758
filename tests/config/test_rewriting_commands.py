"""`sesrelay config show --tables` and `sesrelay config check FILE --address` (issue 18
item 5): the real command on a main.cf with tables, and the same addresses sent to a
relay over SMTP with that main.cf, which must answer and rewrite as the command said."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.config.test_seed_and_cli import run
from tests.relay.conftest import (  # noqa: F401 (fixtures)
    RunningRelay,
    SpoolAccount,
    spool_account,
    start_relay,
)

StartRelay = Callable[..., RunningRelay]
ADDRESSES = ["joe@example.com", "team@lists.example", "nobody@lists.example",
             "bob@elsewhere.org", "x@legacy.example"]


@pytest.fixture
def main_cf(tmp_path: Path) -> Callable[[str], str]:
    """main.cf text with canonical, sender canonical (regexp) and virtual alias tables,
    and the SES sender policy; mynetworks as given."""
    (tmp_path / "canonical").write_text("joe@example.com joseph.smith@example.com\n"
                                        "@old.example @example.com\n")
    (tmp_path / "sender.re").write_text("/^(.*)@legacy\\.example$/ ${1}@example.com\n")
    (tmp_path / "virtual").write_text("team@lists.example alice@example.com, bob@example.org\n"
                                      "lists.example anything\n")

    def text(mynetworks: str) -> str:
        return (f"myhostname = relay.example.net\n"
                f"mynetworks = {mynetworks}\n"
                f"relay_domains = example.com\n"
                f"canonical_maps = texthash:{tmp_path}/canonical\n"
                f"sender_canonical_maps = regexp:{tmp_path}/sender.re\n"
                f"virtual_alias_maps = texthash:{tmp_path}/virtual\n"
                f"masquerade_domains = example.com\n"
                f"ses_identities = example.com\n")

    return text


def test_show_tables_lists_each_table_under_its_parameter(main_cf: Callable[[str], str],
                                                          tmp_path: Path) -> None:
    path = tmp_path / "main.cf"
    path.write_text(main_cf("127.0.0.0/8"))
    result = run("config", "show", "--tables", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"sender_canonical_maps = regexp:{tmp_path}/sender.re",
        f"# regexp:{tmp_path}/sender.re",
        "/^(.*)@legacy\\.example$/\t${1}@example.com",
        "sender_canonical_classes = envelope_sender, header_sender",
        "recipient_canonical_maps =",
        "recipient_canonical_classes = envelope_recipient, header_recipient",
        f"canonical_maps = texthash:{tmp_path}/canonical",
        f"# texthash:{tmp_path}/canonical",
        "joe@example.com\tjoseph.smith@example.com",
        "@old.example\t@example.com",
        "canonical_classes = envelope_sender, envelope_recipient, header_sender, "
        "header_recipient",
        "masquerade_domains = example.com",
        "masquerade_exceptions =",
        "masquerade_classes = envelope_sender, header_sender, header_recipient",
        f"virtual_alias_maps = texthash:{tmp_path}/virtual",
        f"# texthash:{tmp_path}/virtual",
        "team@lists.example\talice@example.com, bob@example.org",
        "lists.example\tanything",
        # the default ($virtual_alias_maps), expanded, and the domains it names
        f"virtual_alias_domains = texthash:{tmp_path}/virtual",
        "lists.example",
    ]
    # Without --tables, postconf -n as before: the settings only.
    plain = run("config", "show", str(path))
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[:2] == [f"canonical_maps = texthash:{tmp_path}/canonical",
                                             "masquerade_domains = example.com"]
    assert "\t" not in plain.stdout and "#" not in plain.stdout


def address_report(path: Path) -> dict[str, dict[str, str]]:
    """`config check PATH --address A ...`, as {address: {line label: text}}."""
    args = [arg for address in ADDRESSES for arg in ("--address", address)]
    result = run("config", "check", str(path), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in result.stdout.splitlines()[1:]:
        if line.startswith("address <"):
            current = report.setdefault(line[len("address <"):-1], {})
            continue
        label, _, text = line.partition(": ")
        current[re.sub(r" \[.*\]$", "", label)] = text
    return report


def smtp_reply(relay: RunningRelay, sender: str, recipient: str) -> str:
    """The reply to RCPT TO (or to MAIL FROM when it refuses), "accepted" for 250."""
    with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
        client.ehlo("client.example.com")
        code, text = client.mail(sender)
        if code == 250:
            code, text = client.rcpt(recipient)
        return "accepted" if code == 250 else f"{code} {text.decode()}"


def test_address_verdicts_are_what_the_relay_answers(
        main_cf: Callable[[str], str], tmp_path: Path, start_relay: StartRelay,  # noqa: F811
        spool_account: SpoolAccount) -> None:  # noqa: F811
    trusted_cf = tmp_path / "trusted.cf"
    trusted_cf.write_text(main_cf("127.0.0.0/8"))
    # Loopback, where the test's SMTP client is, untrusted here.
    untrusted_cf = tmp_path / "untrusted.cf"
    untrusted_cf.write_text(main_cf("192.0.2.0/24"))
    trusted, untrusted = address_report(trusted_cf), address_report(untrusted_cf)

    assert trusted["joe@example.com"] == {
        "as a sender": "<joe@example.com> rewritten to <joseph.smith@example.com>",
        "as a recipient": "<joe@example.com> rewritten to <joseph.smith@example.com>",
        "recipient from a trusted client": "accepted",
        "recipient from an untrusted client": "accepted",
        "sender (ses_unverified_sender = reject)": "accepted",
    }
    assert trusted["team@lists.example"]["as a recipient"] == \
        "<team@lists.example> rewritten to <alice@example.com>, <bob@example.org>"
    assert trusted["bob@elsewhere.org"]["recipient from an untrusted client"] == \
        "554 5.7.1 <bob@elsewhere.org>: Relay access denied"
    assert trusted["x@legacy.example"]["as a sender"] == \
        "<x@legacy.example> rewritten to <x@example.com>"

    relay = start_relay(trusted_cf.read_text())
    relay_untrusted = start_relay(untrusted_cf.read_text())
    seen = set()
    for address in ADDRESSES:
        said, said_untrusted = trusted[address], untrusted[address]
        assert smtp_reply(relay, "", address) == said["recipient from a trusted client"]
        assert smtp_reply(relay_untrusted, "", address) \
            == said_untrusted["recipient from an untrusted client"]
        seen.add(said["recipient from a trusted client"] == "accepted")
        seen.add(said_untrusted["recipient from an untrusted client"] == "accepted")
        verdict = said["sender (ses_unverified_sender = reject)"]
        assert smtp_reply(relay, address, "joe@example.com") \
            == verdict.removesuffix(" (at RCPT TO)")
    assert seen == {True, False}  # accepted and refused cases both compared

    # What the relay spools is what the command said the addresses rewrite to.
    with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
        client.sendmail("x@legacy.example", ["joe@example.com", "team@lists.example"],
                        b"Subject: t\r\n\r\nhello\r\n")
    [spooled] = spool_account.queued()
    assert trusted["x@legacy.example"]["as a sender"] \
        == f"<x@legacy.example> rewritten to <{spooled.envelope.mail_from}>"
    assert list(spooled.envelope.rcpt_to) == [
        target for address in ("joe@example.com", "team@lists.example")
        for target in re.findall(r"<([^>]*)>", trusted[address]["as a recipient"])[1:]]
