"""The seed main.cf this project replaces, and the `sesrelay config` commands."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sesrelay.config import PARAMETERS, load_config

SEED = Path(__file__).resolve().parents[2].parent / "shared/seed/postfix-main.cf-ses-relay.txt"
SESRELAY = str(Path(sys.executable).parent / "sesrelay")


def seed_with_prose_commented_out() -> str:
    """The seed lost its comment markers; put them back on every line that is not a
    `name = value` parameter line (stock main.cf writes those with spaces around =)."""
    lines = SEED.read_text().splitlines()
    return "\n".join(line if re.match(r"[a-z0-9_]+ =( |$)", line) else f"# {line}"
                     for line in lines) + "\n"


@pytest.fixture
def seed_cf(tmp_path: Path) -> Path:
    if not SEED.exists():
        pytest.skip(f"seed file not found at {SEED}")
    path = tmp_path / "main.cf"
    path.write_text(seed_with_prose_commented_out())
    return path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SESRELAY, *args], capture_output=True, text=True, timeout=60,
                          env=env or {"PATH": "/usr/bin:/bin"})


def test_seed_names_its_missing_tables(seed_cf: Path) -> None:
    result = run("config", "check", str(seed_cf))
    assert result.returncode == 2
    line = next(i for i, text in enumerate(seed_cf.read_text().splitlines(), 1)
                if text == "mynetworks = hash:/etc/postfix/network_table")
    assert (f"error: {seed_cf}:{line}: cannot read table /etc/postfix/network_table: No such "
            "file or directory") in result.stdout.splitlines()


def test_seed_with_its_tables_gives_a_sensible_config(seed_cf: Path, tmp_path: Path) -> None:
    tables = tmp_path / "postfix"
    tables.mkdir()
    (tables / "network_table").write_text("10.5.1.7 OK\n")
    (tables / "relay_recipients").write_text("@provlima.com OK\n")
    (tables / "header_checks").write_text("/^Subject:.*unsubscribe/ WARN\n")
    seed_cf.write_text(seed_cf.read_text().replace("/etc/postfix/", f"{tables}/"))

    config = load_config(seed_cf, environ={})
    assert config.myhostname == "virtual.domain.tld"  # the later assignment wins
    assert config.mydomain == "provlima.com"
    assert config.myorigin == "provlima.com"
    assert config.inet_interfaces == ("localhost",)
    assert config.inet_protocols == ("ipv4",)
    assert "10.5.1.7" in config.mynetworks and "10.5.1.8" not in config.mynetworks
    assert config.relay_domains.domains == ["virtual.domain.tld", "localhost.provlima.com",
                                            "localhost", "provlima.com"]
    assert config.relay_recipient_maps.knows("anyone@provlima.com")
    assert config.recipient_delimiter == "+"
    assert config.smtpd_banner == "virtual.domain.tld ESMTP sesrelay (0.1.0)"
    assert not config.soft_bounce
    ignored = {a.name: reason for a, reason in config.ignored}
    assert ignored["relayhost"].startswith("outbound delivery is SES")
    assert ignored["smtp_sasl_password_maps"].startswith("outbound delivery is SES")
    assert ignored["alias_maps"] == "there is no local delivery"
    assert config.settings["relayhost"].value == "[email-smtp.us-west-2.amazonaws.com]:587"

    result = run("config", "check", str(seed_cf))
    assert result.returncode == 0, result.stderr
    assert "relayhost: outbound delivery is SES" in result.stdout
    assert "warning:" in result.stdout and "no local delivery" in result.stdout
    assert result.stdout.rstrip().endswith("ok (14 supported parameters set, 40 ignored)")


def test_config_show_prints_non_default_parameters_like_postconf_n(tmp_path: Path) -> None:
    main_cf = tmp_path / "main.cf"
    main_cf.write_text("relay_domains = example.com\nsoft_bounce = no\n"
                       "message_size_limit = 20000000\nrelayhost = [x]:587\n")
    result = run("config", "show", str(main_cf))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["message_size_limit = 20000000",
                                          "relay_domains = example.com"]


def test_config_show_reads_the_environment(tmp_path: Path) -> None:
    result = run("config", "show", env={"PATH": "/usr/bin:/bin",
                                        "SESRELAY_MYNETWORKS": "10.0.0.0/8",
                                        "SESRELAY_SPOOL_BUCKET": "spool-bucket"})
    assert result.stdout.splitlines() == ["mynetworks = 10.0.0.0/8",
                                          "sesrelay_spool_bucket = spool-bucket"]


def test_config_check_reports_a_bad_value_with_file_and_line(tmp_path: Path) -> None:
    main_cf = tmp_path / "main.cf"
    main_cf.write_text("# relay\nmynetworks = 10.0.0.0/8,\n  10.300.0.0/16\n")
    result = run("config", "check", str(main_cf))
    assert result.returncode == 2
    assert result.stdout.splitlines()[0] == (f"error: {main_cf}:2: bad network "
                                             "'10.300.0.0/16': not an IP address or CIDR")


def test_config_check_lists_every_problem_in_one_run(tmp_path: Path) -> None:
    main_cf = tmp_path / "main.cf"
    main_cf.write_text("soft_bounce = perhaps\n"              # 1: bad value
                       "relayhost = [x]:587\n"                # 2: ignored
                       "this is not an assignment\n"          # 3: syntax
                       "mydestination = example.com\n"        # 4: warning
                       "relay_domians = example.com\n"        # 5: unknown name
                       "myorigin = $nosuch\n"                 # 6: undefined reference
                       "body_checks = regexp:/x\n"            # 7: refused Postfix parameter
                       "message_size_limit = 99999999999\n"   # 8: beyond SES's ceiling
                       )
    result = run("config", "check", str(main_cf))
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    kinds = [(line.split(": ", 2)[0], line.split(": ", 2)[1]) for line in lines[:-1]]
    assert kinds == [("error", f"{main_cf}:1"), ("ignored", f"{main_cf}:2"),
                     ("error", f"{main_cf}:3"), ("warning", f"{main_cf}:4"),
                     ("error", f"{main_cf}:5"), ("error", f"{main_cf}:6"),
                     ("error", f"{main_cf}:7"), ("error", f"{main_cf}:8")]
    assert "expected yes or no, got 'perhaps'" in lines[0]
    assert "unknown parameter 'relay_domians'" in lines[4]
    assert "$nosuch: no such parameter" in lines[5]
    assert lines[-1] == f"{main_cf}: 6 errors, 1 warning (4 supported parameters set, 1 ignored)"


def test_config_show_defaults_one_parameter_and_expansion(tmp_path: Path) -> None:
    main_cf = tmp_path / "main.cf"
    main_cf.write_text("myhostname = mx.example.com\nmail_name = Relay\n")
    show = functools.partial(run, "config", "show")
    assert show(str(main_cf), "smtpd_banner").stdout == (
        "smtpd_banner = $myhostname ESMTP $mail_name\n")
    assert show("-x", str(main_cf), "smtpd_banner", "relayhost").stdout == (
        "smtpd_banner = mx.example.com ESMTP Relay\nrelayhost = \n")
    assert show("-h", "-c", str(main_cf), "myhostname").stdout == "mx.example.com\n"
    assert show("-x", str(main_cf)).stdout == "mail_name = Relay\nmyhostname = mx.example.com\n"
    assert show("-d", str(main_cf), "mail_name", "soft_bounce").stdout == (
        "mail_name = sesrelay\nsoft_bounce = no\n")
    defaults = show("-d").stdout.splitlines()
    assert defaults == [f"{name} = {info.default}" for name, info in PARAMETERS.items()]
    assert "myorigin = localhost" in show("-dx", "myorigin", env={
        "PATH": "/usr/bin:/bin", "SESRELAY_MYHOSTNAME": "localhost"}).stdout
    unknown = show(str(main_cf), "relay_domians")
    assert unknown.returncode == 2
    assert "unknown parameter 'relay_domians'" in unknown.stderr
