"""Every Postfix parameter is implemented, ignored with a reason, or refused
(docs/PARAMETERS.md), and a refused one set in a main.cf is an error naming the line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sesrelay.config import PARAMETERS, ConfigError, load_config
from sesrelay.config.ignored import (
    IGNORED,
    REFUSED_CLASS,
    classification_table,
    classify,
    postfix_parameter_names,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "PARAMETERS.md"


def documented() -> dict[str, tuple[str, str]]:
    return {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(
        r"^\| `([A-Za-z0-9_-]+)` \| (\w+) \| (.*) \|$", DOCS.read_text(), re.M)}


def test_the_table_in_docs_is_the_model() -> None:
    names = postfix_parameter_names() | set(PARAMETERS)
    assert len(postfix_parameter_names()) > 1000
    assert documented() == {name: classify(name) for name in sorted(names)}
    # Regenerate with: sesrelay config parameters
    assert DOCS.read_text().endswith(classification_table())


@pytest.mark.parametrize("name", [
    "smtpd_tls_security_level", "smtpd_sasl_auth_enable", "smtpd_tls_wrappermode",
    "transport_maps", "relocated_maps", "sender_dependent_relayhost_maps",
    "smtp_generic_maps", "always_bcc", "sender_bcc_maps", "recipient_bcc_maps",
    "smtp_body_checks", "smtp_mime_header_checks", "virtual_mailbox_domains"])
def test_what_changes_delivery_or_security_is_never_merely_ignored(name: str) -> None:
    assert classify(name)[0] != IGNORED  # implemented (TLS, AUTH) or refused


def test_each_refused_parameter_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "main.cf"
    refused = [n for n in sorted(postfix_parameter_names()) if classify(n)[0] == REFUSED_CLASS]
    for name in refused:
        path.write_text(f"myorigin = example.net\n{name} = hash:/etc/postfix/{name}\n")
        with pytest.raises(ConfigError) as error:
            load_config(path, environ={})
        assert str(error.value).startswith(f"{path}:2: {name} is not supported by sesrelay")
        path.write_text(f"{name} = no\n{name} =\n")  # off: may stay in a main.cf
        load_config(path, environ={})


@pytest.mark.parametrize(("name", "default", "other"), [
    ("smtpd_forbidden_commands", "CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}", "CONNECT"),
    ("smtpd_forbidden_commands", "CONNECT, GET, POST", "GET POST"),
    ("smtpd_per_request_deadline",
     "${smtpd_per_record_deadline?{$smtpd_per_record_deadline}:{${stress?{yes}:{no}}}}",
     "yes"),
    ("parent_domain_matches_subdomains",
     "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,"
     "qmqpd_authorized_clients,relay_domains,smtpd_access_maps", "mynetworks"),
    ("owner_request_special", "yes", "maybe"),
    ("smtpd_relay_before_recipient_restrictions", "yes", "maybe"),
    ("reject_code", "554", "450"),
    ("defer_code", "450", "554"),
])
def test_a_refused_parameter_at_the_default_sesrelay_follows_is_accepted(
        tmp_path: Path, name: str, default: str, other: str) -> None:
    assert classify(name)[0] == REFUSED_CLASS
    path = tmp_path / "main.cf"
    path.write_text(f"{name} = {default}\n")  # as postconf -d prints it
    assert [(a.name, reason) for a, reason in load_config(path, environ={}).ignored] == [
        (name, "off, or Postfix's default, which is what sesrelay does")]
    path.write_text(f"{name} = {other}\n")
    with pytest.raises(ConfigError, match=f"^{path}:1: {name} is not supported"):
        load_config(path, environ={})
