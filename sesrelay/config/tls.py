"""The relay's TLS contexts, built from Postfix's smtpd_tls_* parameters with Python's ssl
module (OpenSSL): certificate and key files, protocol range and cipher grade.

Building a context reads and checks the files, so the loader builds them once to refuse,
naming the file and line, a configuration that asks for TLS the relay could not offer.
"""

from __future__ import annotations

import ssl
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from sesrelay.config.maincf import ConfigError

if TYPE_CHECKING:
    from sesrelay.config.parameters import Config

_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
# Postfix's "high" grade (tls_high_cipherlist); "medium" is OpenSSL's default list.
_HIGH_CIPHERS = "HIGH:!aNULL:!MD5"
# OpenSSL 3 refuses TLS 1.0 and 1.1 at its default security level 2 (no SHA-1 signatures).
# An administrator who lists them is asking for old clients to be served: level 0 does.
_OLD_PROTOCOL_SECLEVEL = "@SECLEVEL=0"


def tls_wanted(config: Config) -> bool:
    """True when some listener must speak TLS: STARTTLS offered, or implicit TLS."""
    return (config.tls_level != "none" or config.smtpd_tls_wrappermode
            or config.sesrelay_smtps_port != 0)


def _where(config: Config, name: str) -> str:
    assignment = config.settings.get(name)
    return assignment.where if assignment else f"default value of {name}"


def _why_tls(config: Config) -> str:
    """The setting that asks for TLS, for error messages."""
    for name in ("smtpd_tls_security_level", "smtpd_enforce_tls", "smtpd_use_tls",
                 "smtpd_tls_wrappermode", "sesrelay_smtps_port"):
        if name in config.settings:
            return _where(config, name)
    return "default value of smtpd_tls_security_level"


def server_context(config: Config, mandatory: bool) -> ssl.SSLContext:
    """The server-side context for a session: mandatory (smtpd_tls_security_level =
    encrypt, or implicit TLS) uses the smtpd_tls_mandatory_* parameters, else the
    opportunistic ones. Raises ConfigError naming the parameter's file and line."""
    if not config.smtpd_tls_cert_file:
        raise ConfigError("TLS is asked for, but smtpd_tls_cert_file is not set",
                          _why_tls(config))
    protocols_name = "smtpd_tls_mandatory_protocols" if mandatory else "smtpd_tls_protocols"
    protocols = getattr(config, protocols_name)
    grade = config.smtpd_tls_mandatory_ciphers if mandatory else config.smtpd_tls_ciphers
    excluded = config.smtpd_tls_exclude_ciphers + (
        config.smtpd_tls_mandatory_exclude_ciphers if mandatory else ())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for name in ("smtpd_tls_cert_file", "smtpd_tls_key_file"):
        path = Path(getattr(config, name))
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{name} {str(path)!r}: {exc.strerror}", _where(config, name)
                              ) from None
    try:
        context.load_cert_chain(config.smtpd_tls_cert_file, config.smtpd_tls_key_file)
    except ssl.SSLError as exc:
        raise ConfigError(f"smtpd_tls_cert_file {config.smtpd_tls_cert_file!r} and "
                          f"smtpd_tls_key_file {config.smtpd_tls_key_file!r}: not a PEM "
                          f"certificate chain and its private key ({exc.reason or exc})",
                          _where(config, "smtpd_tls_cert_file")) from None
    with warnings.catch_warnings():  # Python deprecates TLS 1.0 and 1.1; asked for here
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = _VERSIONS[protocols.minimum]
    context.maximum_version = _VERSIONS[protocols.maximum]
    ciphers = _HIGH_CIPHERS if grade == "high" else "DEFAULT"
    ciphers += "".join(f":!{name}" for name in excluded)
    if protocols.minimum in ("TLSv1", "TLSv1.1"):
        ciphers += ":" + _OLD_PROTOCOL_SECLEVEL
    try:
        context.set_ciphers(ciphers)
    except ssl.SSLError:
        raise ConfigError(f"no cipher left for TLS 1.2 and below after excluding "
                          f"{', '.join(excluded)}", _where(config, "smtpd_tls_exclude_ciphers")
                          ) from None
    context.verify_mode = ssl.CERT_NONE  # client certificates are never asked for
    return context


def check_tls(config: Config) -> None:
    """Refuse a configuration that asks for TLS without usable certificate files."""
    if tls_wanted(config):
        server_context(config, mandatory=False)
        server_context(config, mandatory=True)
