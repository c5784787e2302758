"""main.cf syntax and values, following postconf(5): what an administrator writes, and the
error they get when it is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from sesrelay.config import ConfigError, load_config


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None):
    path = tmp_path / "main.cf"
    path.write_text(text)
    return load_config(path, environ=environ or {})


def error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, environ)
    return str(info.value)


def test_comments_blank_lines_and_continuations(tmp_path: Path) -> None:
    config = load(tmp_path, (
        "# a comment\n"
        "\n"
        "relay_domains = example.com,\n"
        "    example.org\n"
        "  # a comment inside a continued value is skipped\n"
        "\texample.net\n"
        "myhostname=relay.example.com\n"))
    assert config.relay_domains.domains == ["example.com", "example.org", "example.net"]
    assert config.myhostname == "relay.example.com"


def test_later_assignment_wins_and_expansion_uses_the_final_value(tmp_path: Path) -> None:
    config = load(tmp_path, (
        "myorigin = $mydomain\n"
        "mydomain = first.example\n"
        "mydomain = second.example\n"))
    assert config.myorigin == "second.example"


def test_expansion_forms(tmp_path: Path) -> None:
    config = load(tmp_path, (
        "myhostname = mx.example.com\n"
        "smtpd_banner = ${myhostname} $(mail_name) $$5 ${soft_bounce?soft} "
        "${recipient_delimiter:nodelim} ${myhostname?{has host}}\n"))
    assert config.smtpd_banner == "mx.example.com sesrelay $5 soft nodelim has host"
    assert config.mydomain == "example.com"  # default: $myhostname minus its first label


def test_mail_version_and_config_directory(tmp_path: Path) -> None:
    (tmp_path / "mynetworks").write_text("10.0.0.0/8\n# comment\n192.168.0.0/16 [2001:db8::]/32\n")
    config = load(tmp_path, "mynetworks = $config_directory/mynetworks\n"
                            "smtpd_banner = $myhostname ESMTP $mail_name ($mail_version)\n")
    assert config.mynetworks.networks == ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]
    assert config.smtpd_banner.endswith("ESMTP sesrelay (0.1.0)")


@pytest.mark.parametrize("text,expected", [
    ("mydomain = $nosuchthing\n", "main.cf:1: $nosuchthing: no such parameter"),
    ("myorigin = $mydomain\nmydomain = $myorigin\n", "refers to itself"),
    ("myhostname\n", "main.cf:1: expected 'name = value'"),
    ("  indented = value\n", "main.cf:1: continuation line"),
    ("# c\nnot-a-name = x\n", "main.cf:2: 'not-a-name' is not a valid parameter name"),
    ("relayhost = x\nmy_custom_thing = 1\n",
     "main.cf:2: unknown parameter 'my_custom_thing'"),
    ("mynetworks = 10.0.0.0/33\n", "main.cf:1: bad network '10.0.0.0/33'"),
    ("mynetworks = 10.0.0.1/8\n", "host bits set"),
    ("soft_bounce = maybe\n", "main.cf:1: expected yes or no, got 'maybe'"),
    ("message_size_limit = 10MB\n", "main.cf:1: expected a whole number"),
    ("message_size_limit = 0\n", "SES's per-message ceiling"),
    ("message_size_limit = 50000000\n", "SES's per-message ceiling"),
    ("smtpd_recipient_limit = 5000\n", "envelope must fit in one SQS message"),
    ("maximal_queue_lifetime = 5 days\n", "expected a time"),
    ("unknown_relay_recipient_reject_code = 250\n", "expected an SMTP reply code"),
    ("smtpd_relay_restrictions = permit_mynetworks, check_client_access hash:/x\n",
     "restriction 'check_client_access' is not supported"),
    ("smtpd_relay_restrictions = permit_mynetworks\n", "would make an open relay"),
    ("smtpd_upstream_proxy_protocol = haproxy\n", "needs sesrelay_proxy_networks"),
    ("smtpd_upstream_proxy_protocol = v2\n", "expected haproxy or nothing"),
    ("relay_recipient_maps = ldap:/etc/postfix/ldap.cf\n", "unsupported table"),
    ("relay_domains = exa mple..com\n", "bad domain name 'mple..com'"),
    ("minimal_backoff_time = 2h\nmaximal_backoff_time = 1h\n", "minimal_backoff_time is "
     "longer"),
    ("ses_email_tags = team:mail\n", "bad SES tag"),
    ("smtpd_sender_restrictions = reject_non_fqdn_sender\n",
     "main.cf:1: smtpd_sender_restrictions is not supported by sesrelay, and ignoring it "
     "would let through mail that Postfix rejects"),
    ("body_checks = regexp:/etc/postfix/body_checks\n", "body_checks is not supported"),
])
def test_errors_name_the_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error(tmp_path, text)


def test_errors_name_the_table_file_and_line(tmp_path: Path) -> None:
    checks = tmp_path / "header_checks"
    checks.write_text("/^Subject: spam/ REJECT no spam\n/^X-Hold:/ HOLD\n")
    message = error(tmp_path, f"header_checks = regexp:{checks}\n")
    assert f"{checks}:2: header_checks action 'HOLD' is not supported" in message


@pytest.mark.parametrize("action", ["REJECT", "DISCARD", "HOLD", "REDIRECT a@b.example",
                                    "FILTER smtp:x", "BCC a@b.example", "PASS"])
def test_smtp_header_checks_refuses_what_smtp8_does_not_support(tmp_path: Path,
                                                                action: str) -> None:
    checks = tmp_path / "smtp_header_checks"
    checks.write_text(f"/^From:/ REPLACE From: a@example.com\n/^Subject:/ {action}\n")
    message = error(tmp_path, f"smtp_header_checks = regexp:{checks}\n")
    assert (f"{checks}:2: smtp_header_checks action '{action.split()[0]}' is not "
            "supported") in message


def test_smtp_header_checks_takes_every_action_smtp8_supports(tmp_path: Path) -> None:
    checks = tmp_path / "smtp_header_checks"
    checks.write_text("/^A:/ DUNNO\n/^B:/ IGNORE\n/^C:/ INFO seen\n/^D:(.*)/ PREPEND X-D:$1\n"
                      "/^E:/ REPLACE E: e\n/^F:/ STRIP gone\n/^G:/ WARN look\n/^H:/ OK\n")
    table = load(tmp_path, f"smtp_header_checks = pcre:{checks}\n").smtp_header_checks
    assert [rule.action for rule in table.rules] == [
        "DUNNO", "IGNORE", "INFO", "PREPEND", "REPLACE", "STRIP", "WARN", "OK"]


def test_missing_table_file_is_an_error(tmp_path: Path) -> None:
    message = error(tmp_path, "\nrelay_recipient_maps = hash:/nonexistent/relay_recipients\n")
    assert message.startswith(str(tmp_path / "main.cf") + ":2: cannot read table "
                              "/nonexistent/relay_recipients")


def test_tables(tmp_path: Path) -> None:
    (tmp_path / "relay_recipients").write_text(
        "# postmap source\nalice@example.com OK\n@sales.example.com\tOK\n")
    (tmp_path / "networks.cidr").write_text("10.1.0.0/16 OK\n2001:db8::/32 OK\n")
    (tmp_path / "domains").write_text("example.com example.org\n")
    (tmp_path / "more_domains").write_text("sales.example.net OK\n")
    config = load(tmp_path, (
        f"relay_recipient_maps = hash:{tmp_path}/relay_recipients, inline:{{ bob@example.com }}\n"
        f"mynetworks = 127.0.0.1, !10.1.9.0/24, cidr:{tmp_path}/networks.cidr\n"
        f"relay_domains = {tmp_path}/domains, texthash:{tmp_path}/more_domains\n"))
    table = config.relay_recipient_maps
    assert table.knows("Alice@Example.com") and table.knows("bob@example.com")
    assert table.knows("anyone@sales.example.com") and not table.knows("carol@example.com")
    assert "10.1.2.3" in config.mynetworks and "2001:db8::5" in config.mynetworks
    assert "10.1.9.9" not in config.mynetworks  # the exclusion comes first
    assert "::ffff:10.1.2.3" in config.mynetworks  # IPv4-mapped IPv6
    assert "192.0.2.1" not in config.mynetworks
    assert config.relay_domains.matches("mail.example.org")
    assert config.relay_domains.matches("eu.sales.example.net")  # key of a texthash table


def test_regexp_header_checks(tmp_path: Path) -> None:
    checks = tmp_path / "header_checks"
    checks.write_text(
        "# comment\n"
        "/^Subject:.*viagra/ REJECT no thanks\n"
        "if /^X-/\n"
        "!/^X-Keep:/ IGNORE\n"
        "endif\n"
        "/^(Subject:)\\s*\\[ext\\](.*)/ REPLACE $1$2\n")
    table = load(tmp_path, f"header_checks = regexp:{checks}\n").header_checks
    rule, text = table.lookup("subject: Cheap VIAGRA")  # case-insensitive by default
    assert (rule.action, text) == ("REJECT", "no thanks")
    assert table.lookup("X-Mailer: foo")[0].action == "IGNORE"
    assert table.lookup("X-Keep: yes") is None
    assert table.lookup("Subject: [ext] hello")[1] == "Subject: hello"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = load(tmp_path, "relay_domains = example.com\n",
                  {"SESRELAY_RELAY_DOMAINS": "example.org", "SESRELAY_SPOOL_BUCKET": "b-1",
                   "SESRELAY_LOG_LEVEL": "DEBUG", "OTHER": "x"})
    assert config.relay_domains.domains == ["example.org"]
    assert config.sesrelay_spool_bucket == "b-1"
    assert config.settings["relay_domains"].where == "environment variable SESRELAY_RELAY_DOMAINS"


def test_bad_environment_variable_is_named(tmp_path: Path) -> None:
    message = error(tmp_path, "", {"SESRELAY_SOFT_BOUNCE": "perhaps"})
    assert message == ("environment variable SESRELAY_SOFT_BOUNCE: expected yes or no, "
                       "got 'perhaps'")
    message = error(tmp_path, "", {"SESRELAY_RELAY_DOMIANS": "example.com"})
    assert message.startswith("environment variable SESRELAY_RELAY_DOMIANS: unknown parameter "
                              "'relay_domians'")


def test_other_postfix_parameters_are_ignored_with_a_reason(tmp_path: Path) -> None:
    config = load(tmp_path, ("relayhost = [email-smtp.us-west-2.amazonaws.com]:587\n"
                             "smtp_sasl_password_maps = hash:/etc/postfix/sasl_passwd\n"
                             "alias_maps = hash:/etc/aliases\n"
                             "queue_directory = /var/spool/postfix\n"
                             "in_flow_delay = 1s\n"))
    reasons = {a.name: reason for a, reason in config.ignored}
    assert reasons["relayhost"] == "outbound delivery is SES's SendEmail API, not an SMTP client"
    assert reasons["smtp_sasl_password_maps"] == reasons["relayhost"]
    assert reasons["alias_maps"] == "there is no local delivery"
    assert "container" in reasons["queue_directory"]
    assert "ses_max_send_rate" in reasons["in_flow_delay"]


def test_empty_restriction_parameters_are_fine(tmp_path: Path) -> None:
    config = load(tmp_path, "smtpd_client_restrictions =\nbody_checks =\n")
    assert {a.name for a, _ in config.ignored} == {"smtpd_client_restrictions", "body_checks"}


def test_warnings(tmp_path: Path) -> None:
    config = load(tmp_path, "mydestination = example.com\n"
                            "smtpd_relay_restrictions = permit_mynetworks, "
                            "permit_sasl_authenticated, reject_unauth_destination\n")
    assert any("no local delivery" in str(w) for w in config.warnings)
    assert any("permit_sasl_authenticated never matches" in str(w) for w in config.warnings)


def test_defaults_are_safe(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.mynetworks.networks == ["127.0.0.0/8", "::1/128"]
    assert not config.relay_domains and not config.mydestination
    assert config.smtpd_relay_restrictions == ("permit_mynetworks", "permit_sasl_authenticated",
                                               "reject_unauth_destination")
    assert config.message_size_limit == 10240000 and config.smtpd_recipient_limit == 1000
    assert (config.minimal_backoff_time, config.maximal_backoff_time,
            config.maximal_queue_lifetime) == (300, 4000, 5 * 86400)
