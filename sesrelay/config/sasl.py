"""Which SMTP AUTH mechanisms a session offers, from Postfix's smtpd_sasl_* parameters.

sesrelay has PLAIN and LOGIN, both plaintext mechanisms: smtpd_sasl_security_options (or
smtpd_sasl_tls_security_options inside TLS) with any option but noanonymous removes
both; smtpd_tls_auth_only, and smtpd_tls_security_level = encrypt as in Postfix, keep
AUTH out of sessions without TLS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sesrelay.config.maincf import ConfigError
from sesrelay.config.tls import tls_wanted

if TYPE_CHECKING:
    from sesrelay.config.parameters import Config

MECHANISMS = ("PLAIN", "LOGIN")


def auth_only_with_tls(config: Config) -> bool:
    """True when AUTH needs TLS first (smtpd_tls_auth_only, or encrypt)."""
    return config.smtpd_tls_auth_only or config.tls_level == "encrypt"


def mechanisms(config: Config, tls: bool) -> tuple[str, ...]:
    """The mechanisms a session offers, inside TLS or not; () when none."""
    if not config.smtpd_sasl_auth_enable or (not tls and auth_only_with_tls(config)):
        return ()
    options = (config.smtpd_sasl_tls_security_options if tls
               else config.smtpd_sasl_security_options)
    if any(option != "noanonymous" for option in options):
        return ()
    return MECHANISMS


def check_sasl(config: Config) -> None:
    """Refuse an AUTH configuration that can never authenticate anyone, and
    sesrelay_auth_networks without AUTH (nobody from there could ever relay)."""
    if not config.smtpd_sasl_auth_enable:
        if config.sesrelay_auth_networks.patterns:
            raise ConfigError("sesrelay_auth_networks needs smtpd_sasl_auth_enable = yes: "
                              "its clients may relay only after AUTH, which is off",
                              config.settings["sesrelay_auth_networks"].where)
        return
    assignment = config.settings.get("smtpd_sasl_auth_enable")
    where = assignment.where if assignment else "default value of smtpd_sasl_auth_enable"
    if not config.sesrelay_sasl_users:
        raise ConfigError("smtpd_sasl_auth_enable = yes needs sesrelay_sasl_users, the user "
                          "table (sesrelay users add)", where)
    if not mechanisms(config, tls=False) and not (tls_wanted(config)
                                                   and mechanisms(config, tls=True)):
        raise ConfigError("smtpd_sasl_auth_enable = yes, but no session could offer AUTH: "
                          "PLAIN and LOGIN need TLS (smtpd_tls_auth_only) or are ruled out by "
                          "smtpd_sasl_security_options / smtpd_sasl_tls_security_options",
                          where)
