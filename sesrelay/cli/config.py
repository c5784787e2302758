"""`sesrelay config check|show|parameters`: a main.cf as sesrelay reads it."""

from __future__ import annotations

import argparse

from sesrelay.config import load_config, postconf_n
from sesrelay.config.ignored import classification_table


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate a main.cf: errors name the file and line; ignored parameters are listed."""
    config = load_config(args.file, environ={})
    for warning in config.warnings:
        print(f"warning: {warning}")
    for assignment, reason in config.ignored:
        print(f"ignored: {assignment.name} ({assignment.where}): {reason}")
    print(f"{args.file}: ok ({len(config.settings) - len(config.ignored)} supported "
          f"parameters set, {len(config.ignored)} ignored)")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the effective non-default parameters, like `postconf -n`."""
    config = load_config(args.file)
    for line in postconf_n(config):
        print(line)
    return 0


def cmd_config_parameters(args: argparse.Namespace) -> int:
    """Print every Postfix parameter's class (implemented, refused, ignored) and reason:
    the table of docs/PARAMETERS.md."""
    print(classification_table(), end="")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `config check`, `config show` and `config parameters`."""
    config = commands.add_parser("config", help="check or show the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate a main.cf file")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)
    show = config_commands.add_parser(
        "show", help="print non-default parameters (like postconf -n), from FILE or "
        "$SESRELAY_CONFIG and SESRELAY_* variables")
    show.add_argument("file", nargs="?")
    show.set_defaults(func=cmd_config_show)
    parameters = config_commands.add_parser(
        "parameters", help="every Postfix parameter: implemented, refused or ignored, and why")
    parameters.set_defaults(func=cmd_config_parameters)
