"""TLS and SMTP AUTH parameters: Postfix's syntax and meaning, and the configurations that
are refused (with file and line) rather than quietly served without what they ask for."""

from __future__ import annotations

from pathlib import Path

import pytest

from sesrelay.certificates import self_signed
from sesrelay.config.sasl import mechanisms
from tests.config.test_maincf import error, load


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return self_signed(tmp_path_factory.mktemp("cert"), ["relay.example.net"])


def test_tls_without_a_certificate_is_an_error_naming_the_line(tmp_path: Path) -> None:
    assert error(tmp_path, "myhostname = r.example\nsmtpd_tls_security_level = may\n") == (
        f"{tmp_path}/main.cf:2: TLS is asked for, but smtpd_tls_cert_file is not set")
    assert error(tmp_path, "smtpd_use_tls = yes\n").startswith(f"{tmp_path}/main.cf:1: ")
    missing = error(tmp_path, "smtpd_tls_security_level = encrypt\n"
                              "smtpd_tls_cert_file = /etc/ssl/nowhere.pem\n")
    assert missing == (f"{tmp_path}/main.cf:2: smtpd_tls_cert_file '/etc/ssl/nowhere.pem': "
                       "No such file or directory")


def test_a_key_that_does_not_match_is_an_error(tmp_path: Path, certificate) -> None:
    other = self_signed(tmp_path / "other", ["other.example"])
    message = error(tmp_path, "smtpd_tls_security_level = may\n"
                              f"smtpd_tls_cert_file = {certificate.cert_file}\n"
                              f"smtpd_tls_key_file = {other.key_file}\n")
    assert message.startswith(f"{tmp_path}/main.cf:2: smtpd_tls_cert_file ")
    assert "not a PEM certificate chain and its private key" in message


def test_levels_and_their_obsolete_forms(tmp_path: Path, certificate) -> None:
    files = (f"smtpd_tls_cert_file = {certificate.cert_file}\n"
             f"smtpd_tls_key_file = {certificate.key_file}\n")
    assert load(tmp_path, "").tls_level == "none"
    assert load(tmp_path, files + "smtpd_use_tls = yes\n").tls_level == "may"
    assert load(tmp_path, files + "smtpd_enforce_tls = yes\n").tls_level == "encrypt"
    assert load(tmp_path, files + "smtpd_enforce_tls = yes\n"
                                  "smtpd_tls_security_level = may\n").tls_level == "may"


@pytest.mark.parametrize(("value", "expected"), [
    (">=TLSv1.2", ("TLSv1.2", "TLSv1.3")),
    ("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1", ("TLSv1.2", "TLSv1.3")),
    ("TLSv1.2", ("TLSv1.2", "TLSv1.2")),
    (">=TLSv1, <=TLSv1.2", ("TLSv1", "TLSv1.2")),
    ("", ("TLSv1", "TLSv1.3")),
])
def test_protocol_syntax(tmp_path: Path, value: str, expected: tuple[str, str]) -> None:
    protocols = load(tmp_path, f"smtpd_tls_protocols = {value}\n").smtpd_tls_protocols
    assert (protocols.minimum, protocols.maximum) == expected


def test_default_protocol_floor_is_tls_1_2(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.smtpd_tls_protocols.minimum == "TLSv1.2"
    assert config.smtpd_tls_mandatory_protocols.minimum == "TLSv1.2"


def test_bad_protocol_lists(tmp_path: Path) -> None:
    assert "leaves a gap" in error(tmp_path, "smtpd_tls_protocols = !TLSv1.2\n")
    assert "unknown TLS protocol 'TLSv9'" in error(tmp_path, "smtpd_tls_protocols = TLSv9\n")
    assert "leaves no TLS protocol" in error(tmp_path, "smtpd_tls_protocols = >=TLSv1.3, "
                                                       "<=TLSv1.2\n")


@pytest.mark.parametrize("setting", ["smtpd_tls_req_ccert = yes", "smtpd_tls_ask_ccert = yes",
                                     "smtpd_tls_chain_files = /etc/x.pem",
                                     "smtpd_sasl_local_domain = example.com"])
def test_settings_that_cannot_be_ignored_safely_are_errors(tmp_path: Path,
                                                           setting: str) -> None:
    message = error(tmp_path, f"myhostname = r.example\n{setting}\n")
    assert message.startswith(f"{tmp_path}/main.cf:2: {setting.split()[0]} is not supported")


def test_other_tls_and_sasl_parameters_are_ignored_with_a_reason(tmp_path: Path) -> None:
    config = load(tmp_path, "smtpd_tls_req_ccert = no\nsmtpd_tls_CAfile = /etc/ca.pem\n"
                            "smtpd_sasl_type = dovecot\ntls_high_cipherlist = HIGH\n")
    reasons = {a.name: reason for a, reason in config.ignored}
    assert "never requested" in reasons["smtpd_tls_CAfile"]
    assert "sesrelay_sasl_users" in reasons["smtpd_sasl_type"]
    assert "OpenSSL" in reasons["tls_high_cipherlist"]


def test_sasl_needs_a_user_table_and_a_session_that_can_offer_it(tmp_path: Path,
                                                                  certificate) -> None:
    assert error(tmp_path, "smtpd_sasl_auth_enable = yes\n") == (
        f"{tmp_path}/main.cf:1: smtpd_sasl_auth_enable = yes needs sesrelay_sasl_users, the "
        "user table (sesrelay users add)")
    # No TLS, and AUTH only with TLS (sesrelay's default): no session could offer it.
    assert "no session could offer AUTH" in error(
        tmp_path, "smtpd_sasl_auth_enable = yes\nsesrelay_sasl_users = /etc/users.json\n")
    allowed = load(tmp_path, "smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\n"
                             "sesrelay_sasl_users = /etc/users.json\n")
    assert mechanisms(allowed, tls=False) == ("PLAIN", "LOGIN")



def test_auth_networks_without_auth_is_an_error_naming_the_line(tmp_path: Path) -> None:
    # Clients there are outside mynetworks and may relay only after AUTH: with AUTH off,
    # admitting them could never let anyone relay.
    assert error(tmp_path, "mynetworks = 10.1.0.0/16\nsesrelay_auth_networks = 10.2.0.0/16\n"
                 ) == (f"{tmp_path}/main.cf:2: sesrelay_auth_networks needs "
                       "smtpd_sasl_auth_enable = yes: its clients may relay only after AUTH, "
                       "which is off")
    with_auth = load(tmp_path, "smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\n"
                               "sesrelay_sasl_users = /etc/users.json\n"
                               "sesrelay_auth_networks = 10.2.0.0/16\n")
    assert with_auth.sesrelay_auth_networks.networks == ["10.2.0.0/16"]
    assert "10.2.3.4" not in with_auth.mynetworks

def test_mechanisms_follow_postfix_security_options(tmp_path: Path, certificate) -> None:
    base = ("smtpd_sasl_auth_enable = yes\nsesrelay_sasl_users = /etc/users.json\n"
            "smtpd_tls_security_level = may\n"
            f"smtpd_tls_cert_file = {certificate.cert_file}\n"
            f"smtpd_tls_key_file = {certificate.key_file}\n")
    default = load(tmp_path, base)
    assert (mechanisms(default, tls=False), mechanisms(default, tls=True)) == ((), (
        "PLAIN", "LOGIN"))
    # Postfix's other way to say "plaintext passwords only over TLS".
    split = load(tmp_path, base + "smtpd_tls_auth_only = no\n"
                                  "smtpd_sasl_security_options = noanonymous, noplaintext\n"
                                  "smtpd_sasl_tls_security_options = noanonymous\n")
    assert (mechanisms(split, tls=False), mechanisms(split, tls=True)) == ((), (
        "PLAIN", "LOGIN"))
    encrypt = load(tmp_path, base + "smtpd_tls_auth_only = no\n"
                                    "smtpd_tls_security_level = encrypt\n")
    assert mechanisms(encrypt, tls=False) == ()
    assert "no session could offer AUTH" in error(
        tmp_path, base + "smtpd_sasl_tls_security_options = noplaintext\n")
