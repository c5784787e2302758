"""`sesrelay config check|show|parameters`: a main.cf as sesrelay reads it."""

from __future__ import annotations

import argparse
import re

from sesrelay.cli.rewriting import TABLE_PARAMETERS, address_lines, table_lines
from sesrelay.config import CheckReport, check_config, load_config, parameter_values
from sesrelay.config.ignored import classification_table
from sesrelay.config.maincf import NAME_RE

_FILE_LINE_RE = re.compile(r"(.*):(\d+)")


def _position(where: str) -> tuple[int, str, int]:
    """Sort key: places in files by file and line, then the others (defaults, ...)."""
    match = _FILE_LINE_RE.fullmatch(where)
    if match:
        return 0, match.group(1), int(match.group(2))
    return 1, where, 0


def report_lines(report: CheckReport) -> list[str]:
    """Every error, warning and ignored parameter, one line each, in file order."""
    found = [(_position(e.where or ""), f"error: {e}") for e in report.errors]
    found += [(_position(w.where), f"warning: {w}") for w in report.warnings]
    found += [(_position(a.where), f"ignored: {a.where}: {a.name}: {reason}")
              for a, reason in report.ignored]
    return [line for _, line in sorted(found, key=lambda item: item[0])]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate a main.cf: every error and warning with its file and line, and the
    ignored parameters with the reason; exit 2 if there is an error. Then, for each
    --address, what the relay would do with it."""
    report = check_config(args.file)
    for line in report_lines(report):
        print(line)
    counts = f"({report.supported} supported parameters set, {len(report.ignored)} ignored)"
    if report.errors:
        print(f"{args.file}: {_plural(len(report.errors), 'error')}, "
              f"{_plural(len(report.warnings), 'warning')} {counts}")
        return 2
    print(f"{args.file}: ok {counts}")
    for address in args.address or ():
        for line in address_lines(report.config, address):
            print(line)
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print parameters as postconf does: the non-default ones (-n), or the named ones;
    -d for defaults, -x to expand $name, -h for values only; or --tables: the address
    rewriting parameters and their tables' entries."""
    names = list(args.names)
    path = args.config
    # `config show FILE [NAME...]`: a first argument that cannot be a parameter name is the
    # file (parameter names are letters, digits and _).
    if path is None and names and not NAME_RE.fullmatch(names[0]):
        path = names.pop(0)
    if args.tables:
        headings = dict(parameter_values(path, None, TABLE_PARAMETERS, expand_values=True))
        for line in table_lines(load_config(path), headings):
            print(line)
        return 0
    for name, value in parameter_values(path, None, names, defaults=args.defaults,
                                        expand_values=args.expand):
        print(value if args.value_only else f"{name} = {value}")
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
    check = config_commands.add_parser(
        "check", help="validate a main.cf file: every error and warning, with file and line")
    check.add_argument("file")
    check.add_argument(
        "--address", action="append", metavar="ADDRESS",
        help="then print what ADDRESS rewrites to as a sender and as a recipient, and the "
        "relay's verdicts on it (repeatable)")
    check.set_defaults(func=cmd_config_check)
    # add_help=False: -h is postconf's "values only"; --help stays.
    show = config_commands.add_parser(
        "show", add_help=False,
        help="print parameters like postconf: the non-default ones (postconf -n), or the "
        "NAMEs given, from FILE or $SESRELAY_CONFIG and SESRELAY_* variables")
    show.add_argument("names", nargs="*", metavar="[FILE] NAME",
                      help="a main.cf (or use -c), then parameter names")
    show.add_argument("--help", action="help", help="show this help message and exit")
    show.add_argument("-c", "--config", metavar="FILE", help="the main.cf to read")
    show.add_argument("-d", "--defaults", action="store_true",
                      help="default values instead of the configured ones (postconf -d)")
    show.add_argument("-x", "--expand", action="store_true",
                      help="expand $name in values (postconf -x)")
    show.add_argument("-h", "--value-only", action="store_true",
                      help="values only, without 'name = ' (postconf -h)")
    show.add_argument("--tables", action="store_true",
                      help="the address rewriting parameters (expanded) and, under each, "
                      "its tables' entries as postmap -s lists them")
    show.set_defaults(func=cmd_config_show)
    parameters = config_commands.add_parser(
        "parameters", help="every Postfix parameter: implemented, refused or ignored, and why")
    parameters.set_defaults(func=cmd_config_parameters)
