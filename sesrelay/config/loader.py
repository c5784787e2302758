"""Build a Config from main.cf, environment variables and explicit overrides.

Precedence, lowest first: defaults, the main.cf file, ``SESRELAY_<NAME>`` environment
variables, overrides (``-o name=value`` on the command line, or CDK context).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sesrelay import __version__
from sesrelay.config.ignored import postfix_parameter_names, reason_ignored
from sesrelay.config.maincf import Assignment, ConfigError, expand, parse_main_cf
from sesrelay.config.parameters import PARAMETERS, SES_MAX_MESSAGE_SIZE, Config
from sesrelay.config.sasl import check_sasl
from sesrelay.config.tls import check_tls

ENV_PREFIX = "SESRELAY_"
ENV_CONFIG_FILE = "SESRELAY_CONFIG"
# Variables with the prefix that are not parameters.
_RESERVED_ENV = {ENV_CONFIG_FILE, "SESRELAY_LOG_LEVEL"}

# Postfix parameters that only ever reject mail: ignoring one would make sesrelay more
# permissive than the Postfix it replaces, so a non-empty value is an error.
NOT_SILENTLY_IGNORED = frozenset({
    "smtpd_client_restrictions", "smtpd_helo_restrictions", "smtpd_sender_restrictions",
    "smtpd_data_restrictions", "smtpd_end_of_data_restrictions", "body_checks",
    "mime_header_checks", "nested_header_checks", "smtpd_milters", "non_smtpd_milters",
    "content_filter", "smtpd_proxy_filter",
})

# TLS and SASL settings sesrelay does not implement, and whose silent ignoring would weaken
# security or change whom the relay trusts: any value but empty or "no" is an error.
REFUSED = {
    "smtpd_tls_ask_ccert": "client certificates are not supported",
    "smtpd_tls_req_ccert": "client certificates are not supported",
    "smtpd_tls_chain_files": "use smtpd_tls_cert_file and smtpd_tls_key_file",
    "smtpd_tls_eccert_file": "one certificate chain only: smtpd_tls_cert_file",
    "smtpd_tls_eckey_file": "one certificate chain only: smtpd_tls_key_file",
    "smtpd_tls_dcert_file": "one certificate chain only: smtpd_tls_cert_file",
    "smtpd_tls_dkey_file": "one certificate chain only: smtpd_tls_key_file",
    "smtpd_sasl_local_domain": "user names are matched exactly as clients send them",
}

# With addresses of at most MAX_ADDRESS_LENGTH octets, this many recipients keep an envelope
# within SQS's 256 KiB message limit.
MAX_RECIPIENTS = 1000

_RELAY_GUARDS = {"reject_unauth_destination", "defer_unauth_destination", "reject", "defer"}


def env_name(parameter: str) -> str:
    """The environment variable that sets a parameter: mynetworks -> SESRELAY_MYNETWORKS,
    sesrelay_spool_bucket -> SESRELAY_SPOOL_BUCKET (the prefix is not doubled)."""
    return ENV_PREFIX + parameter.removeprefix("sesrelay_").upper()


def _parameter_of_env(key: str) -> str:
    name = key[len(ENV_PREFIX):].lower()
    return f"sesrelay_{name}" if f"sesrelay_{name}" in PARAMETERS else name


@dataclass
class _Sources:
    settings: dict[str, Assignment]
    config_directory: str

    def raw(self, name: str) -> str | None:
        """Unexpanded value of name: its setting, its default, or None if no such name."""
        if name in self.settings:
            return self.settings[name].value
        if name in PARAMETERS:
            return PARAMETERS[name].default
        builtin = self._builtin(name)
        if builtin is not None:
            return builtin
        if name in postfix_parameter_names():
            return ""
        return None

    def _builtin(self, name: str) -> str | None:
        if name == "config_directory":
            return self.config_directory
        if name == "mail_version":
            return __version__
        if name == "sesrelay_host_fqdn":
            return socket.getfqdn() or "localhost"
        if name == "sesrelay_host_domain":
            hostname = self.expanded("myhostname", "myhostname")
            _, dot, rest = hostname.partition(".")
            return rest if dot and rest else "localdomain"
        return None

    def expanded(self, name: str, where: str) -> str:
        raw = self.raw(name)
        assert raw is not None
        return expand(raw, self.raw, where, (name,))


def _stringify(value: object) -> str:
    """CDK context and overrides may hold JSON values: lists, numbers, booleans."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_stringify(v) for v in value)
    return str(value)


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    overrides_source: str = "override",
) -> Config:
    """Load and validate the configuration. Raises ConfigError naming the file and line.

    path defaults to $SESRELAY_CONFIG; with neither, only defaults and the environment
    apply. environ defaults to os.environ; pass {} to ignore the environment.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(ENV_CONFIG_FILE):
        path = environ[ENV_CONFIG_FILE]
    assignments: list[Assignment] = []
    config_directory = "/etc/sesrelay"
    if path is not None:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read configuration: {exc.strerror}", str(file)) from None
        except UnicodeDecodeError:
            raise ConfigError("configuration is not UTF-8 text", str(file)) from None
        assignments.extend(parse_main_cf(text, str(file)))
        config_directory = str(file.resolve().parent)
    for key in sorted(environ):
        if key.startswith(ENV_PREFIX) and key not in _RESERVED_ENV:
            assignments.append(Assignment(_parameter_of_env(key), environ[key].strip(),
                                          f"environment variable {key}"))
    for name, value in (overrides or {}).items():
        assignments.append(Assignment(name, _stringify(value).strip(),
                                      f"{overrides_source} {name}"))
    return build_config(assignments, config_directory)


def build_config(assignments: list[Assignment], config_directory: str = "/etc/sesrelay") -> Config:
    """Turn assignments (in precedence order, later wins) into a validated Config."""
    settings: dict[str, Assignment] = {}
    for assignment in assignments:
        if assignment.name not in PARAMETERS and assignment.name not in postfix_parameter_names():
            raise ConfigError(f"unknown parameter {assignment.name!r} (not a Postfix or "
                              "sesrelay parameter)", assignment.where)
        settings[assignment.name] = assignment
    sources = _Sources(settings, config_directory)
    parsed = {}
    for name, info in PARAMETERS.items():
        where = settings[name].where if name in settings else f"default value of {name}"
        parsed[name] = info.parse(sources.expanded(name, where), where)
    for name in NOT_SILENTLY_IGNORED & settings.keys():
        if settings[name].value:
            raise ConfigError(
                f"{name} is not supported by sesrelay, and ignoring it would let through "
                "mail that Postfix rejects: remove it, or express it with "
                "smtpd_relay_restrictions, smtpd_recipient_restrictions or header_checks",
                settings[name].where)
    for name in REFUSED.keys() & settings.keys():
        if settings[name].value.lower() not in ("", "no"):
            raise ConfigError(f"{name} is not supported by sesrelay: {REFUSED[name]}",
                              settings[name].where)
    ignored = tuple((a, reason_ignored(a.name)) for a in settings.values()
                    if a.name not in PARAMETERS)
    config = Config(**parsed, settings=settings, ignored=ignored,
                    warnings=tuple(_warnings(parsed, settings)))
    _check_consistency(config)
    return config


def _where(config: Config, name: str) -> str:
    return config.settings[name].where if name in config.settings else f"default value of {name}"


def _check_consistency(config: Config) -> None:
    if config.smtpd_upstream_proxy_protocol and not config.sesrelay_proxy_networks.patterns:
        raise ConfigError("smtpd_upstream_proxy_protocol = haproxy needs "
                          "sesrelay_proxy_networks: the peers allowed to send PROXY headers",
                          _where(config, "smtpd_upstream_proxy_protocol"))
    restrictions = set(config.smtpd_relay_restrictions) | set(config.smtpd_recipient_restrictions)
    if not restrictions & _RELAY_GUARDS:
        raise ConfigError(
            "smtpd_relay_restrictions and smtpd_recipient_restrictions would make an open "
            "relay: one of them needs reject_unauth_destination (or defer_unauth_destination, "
            "reject, defer)", _where(config, "smtpd_relay_restrictions"))
    if not 0 < config.message_size_limit <= SES_MAX_MESSAGE_SIZE:
        raise ConfigError(f"message_size_limit must be between 1 and {SES_MAX_MESSAGE_SIZE} "
                          "bytes (SES's per-message ceiling)",
                          _where(config, "message_size_limit"))
    if not 1 <= config.smtpd_recipient_limit <= MAX_RECIPIENTS:
        raise ConfigError(f"smtpd_recipient_limit must be between 1 and {MAX_RECIPIENTS}: "
                          "a message's envelope must fit in one SQS message (256 KiB)",
                          _where(config, "smtpd_recipient_limit"))
    if config.minimal_backoff_time > config.maximal_backoff_time:
        raise ConfigError("minimal_backoff_time is longer than maximal_backoff_time",
                          _where(config, "minimal_backoff_time"))
    if not 0 < config.sesrelay_listen_port < 65536:
        raise ConfigError("sesrelay_listen_port must be a TCP port (1-65535)",
                          _where(config, "sesrelay_listen_port"))
    if not 0 <= config.sesrelay_smtps_port < 65536:
        raise ConfigError("sesrelay_smtps_port must be a TCP port (1-65535) or 0",
                          _where(config, "sesrelay_smtps_port"))
    check_tls(config)
    check_sasl(config)


def _warnings(parsed: dict[str, object], settings: dict[str, Assignment]) -> list[str]:
    warnings = []
    if parsed["mydestination"]:
        warnings.append(f"{settings['mydestination'].where}: mydestination: sesrelay has no "
                        "local delivery; mail for these domains is relayed through SES like "
                        "relay_domains")
    for name in ("smtpd_relay_restrictions", "smtpd_recipient_restrictions"):
        restrictions = parsed[name]
        assert isinstance(restrictions, tuple)
        if ("permit_sasl_authenticated" in restrictions and name in settings
                and not parsed["smtpd_sasl_auth_enable"]):
            warnings.append(f"{settings[name].where}: permit_sasl_authenticated never matches: "
                            "smtpd_sasl_auth_enable = no")
    return warnings


def config_from_mapping(settings: Mapping[str, object], source: str) -> Config:
    """Validate a mapping of parameter settings (such as CDK context); environment ignored."""
    return load_config(None, environ={}, overrides=settings, overrides_source=source)


def non_default_settings(config: Config) -> dict[str, str]:
    """Supported parameters set explicitly to something other than their default, raw."""
    return {name: a.value for name, a in sorted(config.settings.items())
            if name in PARAMETERS and a.value != PARAMETERS[name].default}


def to_environment(config: Config) -> dict[str, str]:
    """The environment variables that give a process this configuration (for containers)."""
    return {env_name(name): value for name, value in non_default_settings(config).items()}


def postconf_n(config: Config) -> list[str]:
    """Lines like `postconf -n`: each non-default supported parameter as name = value."""
    return [f"{name} = {value}" for name, value in non_default_settings(config).items()]


