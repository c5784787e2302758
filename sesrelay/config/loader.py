"""Build a Config from main.cf, environment variables and explicit overrides.

Precedence, lowest first: defaults, the main.cf file, ``SESRELAY_<NAME>`` environment
variables, overrides (``-o name=value`` on the command line, or CDK context).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sesrelay import __version__, ses_identities
from sesrelay.config.ignored import (
    postfix_parameter_names,
    reason_ignored,
    refused_setting,
)
from sesrelay.config.maincf import (
    Assignment,
    ConfigError,
    ConfigWarning,
    expand,
    parse_main_cf,
)
from sesrelay.config.parameters import PARAMETERS, SES_MAX_MESSAGE_SIZE, Config
from sesrelay.config.sasl import check_sasl
from sesrelay.config.tls import check_tls

ENV_PREFIX = "SESRELAY_"
ENV_CONFIG_FILE = "SESRELAY_CONFIG"
# The secret `sesrelay serve` reads the TLS certificate from (sesrelay.tls_secret).
ENV_TLS_SECRET = "SESRELAY_TLS_SECRET"
# Variables with the prefix that are not parameters.
_RESERVED_ENV = {ENV_CONFIG_FILE, ENV_TLS_SECRET, "SESRELAY_LOG_LEVEL"}

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
    assignments, config_directory = _read_assignments(path, environ, overrides,
                                                      overrides_source, None)
    return build_config(assignments, config_directory)


@dataclass(frozen=True)
class CheckReport:
    """Everything `config check` finds in a main.cf, in one pass."""

    errors: tuple[ConfigError, ...]
    warnings: tuple[ConfigWarning, ...]
    ignored: tuple[tuple[Assignment, str], ...]
    supported: int  # supported parameters the file sets, well or badly
    config: Config  # what is left once each wrong setting is treated as unset


def check_config(path: str | Path) -> CheckReport:
    """Validate a main.cf (environment ignored) and report every error, not only the first.

    A setting found wrong is reported and then treated as unset, so that the checks after
    it still run; an unreadable file is the one error that ends the check.
    """
    errors: list[ConfigError] = []
    assignments, config_directory = _read_assignments(path, {}, None, "override", errors)
    config = build_config(assignments, config_directory, errors)
    return CheckReport(tuple(errors), config.warnings, config.ignored,
                       len({a.name for a in assignments if a.name in PARAMETERS}), config)


def _read_assignments(
    path: str | Path | None,
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, object] | None,
    overrides_source: str,
    errors: list[ConfigError] | None,
) -> tuple[list[Assignment], str]:
    """The assignments of the file, the environment and the overrides, in precedence
    order, and the configuration directory (that of the file)."""
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
        assignments.extend(parse_main_cf(text, str(file), errors))
        config_directory = str(file.resolve().parent)
    for key in sorted(environ):
        if key.startswith(ENV_PREFIX) and key not in _RESERVED_ENV:
            assignments.append(Assignment(_parameter_of_env(key), environ[key].strip(),
                                          f"environment variable {key}"))
    for name, value in (overrides or {}).items():
        assignments.append(Assignment(name, _stringify(value).strip(),
                                      f"{overrides_source} {name}"))
    return assignments, config_directory


def build_config(assignments: list[Assignment], config_directory: str = "/etc/sesrelay",
                 errors: list[ConfigError] | None = None) -> Config:
    """Turn assignments (in precedence order, later wins) into a validated Config.

    Raises the first ConfigError; when errors is a list, records every error there
    instead, treats each wrong setting as unset, and returns the Config that is left.
    """
    def report(error: ConfigError) -> None:
        if errors is None:
            raise error
        errors.append(error)

    settings: dict[str, Assignment] = {}
    for assignment in assignments:
        if assignment.name not in PARAMETERS and assignment.name not in postfix_parameter_names():
            report(ConfigError(f"unknown parameter {assignment.name!r} (not a Postfix or "
                               "sesrelay parameter)", assignment.where))
            continue
        settings[assignment.name] = assignment
    sources = _Sources(settings, config_directory)
    parsed = {}
    for name in PARAMETERS:
        try:
            parsed[name] = _parse(sources, name)
        except ConfigError as exc:
            report(exc)
            if name not in settings:
                raise  # a default that fails is a bug in PARAMETERS, not in the file
            # Reported once; what depends on it sees the default instead.
            del settings[name]
            parsed[name] = _parse(sources, name)
    for name, assignment in list(settings.items()):
        refused = None if name in PARAMETERS else refused_setting(name, assignment.value)
        if refused:
            report(ConfigError(f"{name} is not supported by sesrelay, and {refused}",
                               assignment.where))
            del settings[name]  # reported as an error, not also as ignored
    ignored = tuple((a, reason_ignored(a.name)) for a in settings.values()
                    if a.name not in PARAMETERS)
    config = Config(**parsed, settings=settings, ignored=ignored,
                    warnings=tuple(_warnings(parsed, settings)))
    for error in _consistency_errors(config):
        report(error)
    return config


def _parse(sources: _Sources, name: str) -> object:
    """The parsed value of one supported parameter: its setting, or else its default."""
    where = sources.settings[name].where if name in sources.settings else f"default value of {name}"
    return PARAMETERS[name].parse(sources.expanded(name, where), where)


def _where(config: Config, name: str) -> str:
    return config.settings[name].where if name in config.settings else f"default value of {name}"


def _consistency_errors(config: Config) -> Iterator[ConfigError]:
    """What is wrong with the combination of values, each parameter being well formed."""
    if config.smtpd_upstream_proxy_protocol and not config.sesrelay_proxy_networks.patterns:
        yield ConfigError("smtpd_upstream_proxy_protocol = haproxy needs "
                          "sesrelay_proxy_networks: the peers allowed to send PROXY headers",
                          _where(config, "smtpd_upstream_proxy_protocol"))
    restrictions = set(config.smtpd_relay_restrictions) | set(config.smtpd_recipient_restrictions)
    if not restrictions & _RELAY_GUARDS:
        yield ConfigError(
            "smtpd_relay_restrictions and smtpd_recipient_restrictions would make an open "
            "relay: one of them needs reject_unauth_destination (or defer_unauth_destination, "
            "reject, defer)", _where(config, "smtpd_relay_restrictions"))
    if not 0 < config.message_size_limit <= SES_MAX_MESSAGE_SIZE:
        yield ConfigError(f"message_size_limit must be between 1 and {SES_MAX_MESSAGE_SIZE} "
                          "bytes (SES's per-message ceiling)",
                          _where(config, "message_size_limit"))
    if not 1 <= config.smtpd_recipient_limit <= MAX_RECIPIENTS:
        yield ConfigError(f"smtpd_recipient_limit must be between 1 and {MAX_RECIPIENTS}: "
                          "a message's envelope must fit in one SQS message (256 KiB)",
                          _where(config, "smtpd_recipient_limit"))
    if config.minimal_backoff_time > config.maximal_backoff_time:
        yield ConfigError("minimal_backoff_time is longer than maximal_backoff_time",
                          _where(config, "minimal_backoff_time"))
    if not 0 < config.sesrelay_listen_port < 65536:
        yield ConfigError("sesrelay_listen_port must be a TCP port (1-65535)",
                          _where(config, "sesrelay_listen_port"))
    if not 0 <= config.sesrelay_smtps_port < 65536:
        yield ConfigError("sesrelay_smtps_port must be a TCP port (1-65535) or 0",
                          _where(config, "sesrelay_smtps_port"))
    if config.ses_unverified_sender == "rewrite":
        if not config.ses_default_sender:
            yield ConfigError("ses_unverified_sender = rewrite needs ses_default_sender: the "
                              "verified address to send as",
                              _where(config, "ses_unverified_sender"))
        elif not ses_identities.covers(config.ses_identities, config.ses_default_sender):
            yield ConfigError(f"ses_default_sender {config.ses_default_sender} is not a "
                              "verified SES identity: no entry of ses_identities covers it",
                              _where(config, "ses_default_sender"))
    for check in (check_tls, check_sasl):  # each raises its first error
        try:
            check(config)
        except ConfigError as exc:
            yield exc


def _warnings(parsed: dict[str, object],
              settings: dict[str, Assignment]) -> list[ConfigWarning]:
    warnings = []
    if parsed["mydestination"]:
        warnings.append(ConfigWarning(
            settings["mydestination"].where, "mydestination: sesrelay has no local delivery; "
            "mail for these domains is relayed through SES like relay_domains"))
    for name in ("smtpd_relay_restrictions", "smtpd_recipient_restrictions"):
        restrictions = parsed[name]
        assert isinstance(restrictions, tuple)
        if ("permit_sasl_authenticated" in restrictions and name in settings
                and not parsed["smtpd_sasl_auth_enable"]):
            warnings.append(ConfigWarning(
                settings[name].where, "permit_sasl_authenticated never matches: "
                "smtpd_sasl_auth_enable = no"))
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


def parameter_values(path: str | Path | None, environ: Mapping[str, str] | None,
                     names: Sequence[str], *, defaults: bool = False,
                     expand_values: bool = False) -> list[tuple[str, str]]:
    """(name, value) pairs as postconf shows them, from a validated configuration.

    With names, those parameters (any Postfix or sesrelay parameter); without, the
    non-default settings (``postconf -n``), or with defaults every supported parameter.
    defaults shows default values instead of the configured ones (``postconf -d``);
    expand_values expands ``$name`` in them (``postconf -x``).
    """
    assignments, config_directory = _read_assignments(path, environ, None, "override", None)
    config = build_config(assignments, config_directory)
    sources = _Sources({} if defaults else config.settings, config_directory)
    if not names:
        names = list(PARAMETERS) if defaults else list(non_default_settings(config))
    pairs = []
    for name in names:
        raw = sources.raw(name)
        if raw is None:
            raise ConfigError(f"unknown parameter {name!r} (not a Postfix or sesrelay "
                              "parameter)", name)
        pairs.append((name, sources.expanded(name, name) if expand_values else raw))
    return pairs


