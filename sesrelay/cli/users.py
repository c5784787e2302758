"""`sesrelay users add|remove|list`: the SMTP AUTH user table (sesrelay.users), in a file or
in Secrets Manager (secretsmanager:NAME), as sesrelay_sasl_users names it."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

from sesrelay.config import ConfigError, load_config
from sesrelay.users import UserStore, UserTable, UserTableError, hash_password, valid_username


def _store(args: argparse.Namespace) -> UserStore:
    """--table, else sesrelay_sasl_users from --config (or $SESRELAY_CONFIG and the
    environment)."""
    location = args.table or load_config(args.config).sesrelay_sasl_users
    if not location:
        raise ConfigError("no user table: give --table FILE|secretsmanager:NAME, or set "
                          "sesrelay_sasl_users")
    return UserStore(location)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the two passwords differ")
    return first


class _Refused(Exception):
    """A change the user table does not take; its message is the error."""


def _change(verb: str, store: UserStore, change: Callable[[UserTable], str], *,
            missing_ok: bool = False) -> int:
    """`users VERB`: load the table, change it (change returns what to print, or raises
    _Refused) and save it. A refused change or a table error is printed as
    `sesrelay users VERB: ...` and is status 1, with the table left as it was."""
    try:
        table = store.load(missing_ok=missing_ok)
        done = change(table)
        store.save(table)
    except (UserTableError, _Refused) as exc:
        print(f"sesrelay users {verb}: {exc}", file=sys.stderr)
        return 1
    print(done)
    return 0


def cmd_users_add(args: argparse.Namespace) -> int:
    """Add a user, or give an existing one a new password."""
    if not valid_username(args.name):
        raise ConfigError(f"{args.name!r}: a user name is 1 to 255 printable ASCII "
                          "characters without spaces")
    store = _store(args)
    password = _password(args)
    if not password:
        raise ConfigError("empty password")

    def add(table: UserTable) -> str:
        replaced = args.name in table.users
        table.users[args.name] = hash_password(password)
        return f"{'changed password of' if replaced else 'added'} {args.name} in {store.location}"

    return _change("add", store, add, missing_ok=True)


def cmd_users_remove(args: argparse.Namespace) -> int:
    """Remove a user."""
    store = _store(args)

    def remove(table: UserTable) -> str:
        if table.users.pop(args.name, None) is None:
            raise _Refused(f"no user {args.name!r} in {store.location}")
        return f"removed {args.name} from {store.location}"

    return _change("remove", store, remove)


def cmd_users_list(args: argparse.Namespace) -> int:
    """Print the user names, one a line (never the hashes)."""
    try:
        table = _store(args).load()
    except UserTableError as exc:
        print(f"sesrelay users list: {exc}", file=sys.stderr)
        return 1
    for name in sorted(table.users):
        print(name)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `users add`, `users remove` and `users list`."""
    users = commands.add_parser("users", help="manage the SMTP AUTH user table")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    for name, func, text in (
            ("add", cmd_users_add, "add a user (or change its password)"),
            ("remove", cmd_users_remove, "remove a user"),
            ("list", cmd_users_list, "list the user names")):
        command = users_commands.add_parser(name, help=text)
        if name != "list":
            command.add_argument("name")
        if name == "add":
            command.add_argument("--password-stdin", action="store_true",
                                 help="read the password from the first line of stdin "
                                 "instead of asking twice")
        command.add_argument("--table", help="the user table: a file or secretsmanager:NAME "
                             "(default: sesrelay_sasl_users)")
        command.add_argument("--config", help="main.cf file (default: $SESRELAY_CONFIG)")
        command.set_defaults(func=func)
