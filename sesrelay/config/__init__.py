"""The configuration model, in Postfix's vocabulary (see parameters.py for every parameter)."""

from sesrelay.config.loader import (
    ENV_CONFIG_FILE,
    CheckReport,
    check_config,
    config_from_mapping,
    env_name,
    load_config,
    parameter_values,
    to_environment,
)
from sesrelay.config.maincf import ConfigError, ConfigWarning
from sesrelay.config.parameters import PARAMETERS, SES_MAX_MESSAGE_SIZE, Config

__all__ = [
    "ENV_CONFIG_FILE",
    "PARAMETERS",
    "SES_MAX_MESSAGE_SIZE",
    "CheckReport",
    "Config",
    "ConfigError",
    "ConfigWarning",
    "check_config",
    "config_from_mapping",
    "env_name",
    "load_config",
    "parameter_values",
    "to_environment",
]
