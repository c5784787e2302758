"""The `sesrelay` command.

This package is the composition root: the one place that imports the relay
(smtp_relay) and, through sesrelay.dev, the worker. One module per group of commands:
config (config check/show), serve (serve, healthcheck), local (dev, outbox), mailq,
queue (flush, delete, redrive), trace, maillog, users, smoke and cost; where.py finds an
environment's resources for all of them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)

from sesrelay.aws import error_code
from sesrelay.cli import (
    config,
    cost,
    local,
    maillog,
    mailq,
    queue,
    serve,
    smoke,
    trace,
    users,
)
from sesrelay.cli.where import WhereError
from sesrelay.config import ConfigError
from sesrelay.logformat import MaillogFormatter

COMMAND_MODULES = (config, serve, local, trace, mailq, queue, maillog, users, smoke, cost)


def _setup_logging() -> None:
    """Every log line as a maillog line on stderr (sesrelay.logformat)."""
    level = os.environ.get("SESRELAY_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaillogFormatter())
    logging.basicConfig(level=level, handlers=[handler])
    # aiosmtpd logs every command at INFO; the relay logs what Postfix would.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    # A maillog line names no source file, thread or process name: the logging HOWTO's
    # optimisations for records that need none (the relay writes several per message).
    logging._srcfile = None
    logging.logThreads = logging.logMultiprocessing = False


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the sesrelay command."""
    parser = argparse.ArgumentParser(
        prog="sesrelay", description="sesrelay: an SMTP relay to Amazon SES with Postfix's "
        "rules, and the commands to see and fix what happened to each message.")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def _aws_failure(args: argparse.Namespace, exc: Exception) -> str:
    """What to tell the user about an AWS call that failed."""
    dev = not getattr(args, "env", None)
    endpoint = getattr(args, "endpoint", None)
    if isinstance(exc, EndpointConnectionError):
        if dev:
            return (f"cannot reach the AWS emulation at {endpoint}: is `sesrelay dev` "
                    "running?")
        return f"cannot reach AWS: {exc}"
    if isinstance(exc, NoCredentialsError):
        return ("no AWS credentials: the usual chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, SSO, "
                "an instance role, ...) found none")
    if isinstance(exc, NoRegionError):
        return "no AWS region: set AWS_REGION"
    text = str(exc)
    if dev and error_code(exc) == "ResourceNotFoundException":
        text += (f" (at {endpoint}: does this `sesrelay dev` create the trail table? A dev "
                 "started before the trail existed does not)")
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point of the sesrelay command."""
    args = build_parser().parse_args(argv)
    _setup_logging()
    name = " ".join(filter(None, ("sesrelay", args.command,
                                  getattr(args, "config_command", None),
                                  getattr(args, "users_command", None))))
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"sesrelay: {exc}", file=sys.stderr)
        return 2
    except WhereError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except (ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError) as exc:
        print(f"{name}: {_aws_failure(args, exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `sesrelay maillog | head`: the reader left; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130
