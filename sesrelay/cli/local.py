"""`sesrelay dev` (everything on this machine) and `sesrelay outbox` (what its emulated
SES sent)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from sesrelay import maillogfile
from sesrelay.dev import DEV_AWS_PORT, emulation_endpoint

log = logging.getLogger("sesrelay.dev")


def cmd_dev(args: argparse.Namespace) -> int:
    """Run relay, AWS emulation and local worker together, writing the maillog file."""
    from sesrelay.dev import run_dev

    path = Path(args.maillog) if args.maillog else maillogfile.default_path(args.aws_port)
    try:
        handler = maillogfile.install(path)
    except OSError as exc:
        if args.maillog:
            print(f"sesrelay dev: cannot write the maillog file {path}: {exc}",
                  file=sys.stderr)
            return 1
        # The default place is a convenience: no maillog file is no reason not to run.
        log.warning("no maillog file: cannot write %s: %s (choose one with --maillog)",
                    path, exc)
        handler = None
    else:
        print(f"sesrelay dev: maillog in {path}", flush=True)
    try:
        run_dev(args.config, args.listen, args.aws_port, tls=args.tls, users=args.users,
                state=maillogfile.state_directory())
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """List what the emulated SES has sent."""
    from sesrelay.outbox import format_outbox, read_outbox

    try:
        messages = read_outbox(args.endpoint)
    except OSError as exc:
        print(f"sesrelay outbox: cannot reach the AWS emulation at {args.endpoint} ({exc}); "
              "is `sesrelay dev` running?", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(messages, indent=2))
        return 0
    print(format_outbox(messages))
    # The emulation keeps no files: say so where users look for their mail.
    print(f"(held in the memory of `sesrelay dev`, in its AWS emulation at {args.endpoint}: "
          "gone when it stops)")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `dev` and `outbox`."""
    dev = commands.add_parser("dev", help="run relay, AWS emulation and worker locally")
    dev.add_argument("--config", help="main.cf file")
    dev.add_argument("--listen", default="127.0.0.1:2525", help="HOST:PORT of the relay")
    dev.add_argument("--aws-port", type=int, default=DEV_AWS_PORT,
                     help="port of the embedded AWS emulation")
    dev.add_argument("--maillog", metavar="FILE",
                     help="append maillog lines (relay, worker, events) to FILE (default: "
                     "$XDG_STATE_HOME/sesrelay/dev-<aws-port>.maillog, which `sesrelay "
                     "maillog` reads)")
    dev.add_argument("--tls", action="store_true",
                     help="offer STARTTLS, with a self-signed certificate made once in "
                     "$XDG_STATE_HOME/sesrelay/dev-tls/ unless main.cf names one (its path "
                     "and fingerprint are printed)")
    dev.add_argument("--users", metavar="TABLE",
                     help="offer SMTP AUTH with this user table (sesrelay users add NAME "
                     "--table TABLE); with the default smtpd_tls_auth_only, after --tls")
    dev.set_defaults(func=cmd_dev)

    outbox = commands.add_parser(
        "outbox", help="list mail the emulated SES of `sesrelay dev` has sent (held in its "
        "memory: gone when it stops)")
    outbox.add_argument("--json", action="store_true", help="print a JSON array")
    outbox.add_argument("--endpoint", default=emulation_endpoint(DEV_AWS_PORT),
                        help="URL of the AWS emulation")
    outbox.set_defaults(func=cmd_outbox)
