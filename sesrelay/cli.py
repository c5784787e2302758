"""The `sesrelay` command: config check/show, serve, dev, outbox, healthcheck."""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import socket
import sys

from sesrelay.config import ConfigError, load_config, postconf_n
from sesrelay.dev import DEV_AWS_PORT, emulation_endpoint


def _setup_logging() -> None:
    level = os.environ.get("SESRELAY_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s sesrelay[%(process)d]: %(levelname)s %(message)s")
    # aiosmtpd logs every command at INFO; the relay logs what Postfix would.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)


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


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the relay (the container's entry point)."""
    import asyncio

    from smtp_relay.server import parse_listen, pin_to_cpu, run, serve_processes

    config = load_config(args.config)
    for warning in config.warnings:
        logging.warning("%s", warning)
    # Every SMTP session holds a file descriptor: a soft limit of 1,024 would cap sessions.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    addresses = [parse_listen(args.listen)] if args.listen else None
    # 0: one per CPU this process may run on (a container's vCPUs, not the host's).
    processes = args.processes or len(os.sched_getaffinity(0))
    if processes == 1:
        if args.cpu_affinity:
            pin_to_cpu(0, sorted(os.sched_getaffinity(0)))
        asyncio.run(run(config, addresses, drain_timeout=args.drain_seconds,
                        reuse_port=args.reuse_port))
        return 0
    ports = [a.port for a in addresses] if addresses else [config.sesrelay_listen_port]
    if 0 in ports:
        raise ConfigError("--processes needs a fixed port: port 0 would give each process "
                          "its own")
    return serve_processes(processes, lambda: asyncio.run(run(
        config, addresses, drain_timeout=args.drain_seconds, reuse_port=True)),
        cpu_affinity=args.cpu_affinity)


def cmd_dev(args: argparse.Namespace) -> int:
    """Run relay, AWS emulation and local worker together."""
    from sesrelay.dev import run_dev

    run_dev(args.config, args.listen, args.aws_port)
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
    print(json.dumps(messages, indent=2) if args.json else format_outbox(messages))
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 when the relay accepts TCP connections on its port (container health check)."""
    config = load_config()
    try:
        with socket.create_connection(("127.0.0.1", config.sesrelay_listen_port), timeout=3):
            return 0
    except OSError as exc:
        print(f"unhealthy: port {config.sesrelay_listen_port}: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the sesrelay command."""
    parser = argparse.ArgumentParser(prog="sesrelay", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

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

    serve = commands.add_parser("serve", help="run the relay (production entry point)")
    serve.add_argument("--config", help="main.cf file (default: $SESRELAY_CONFIG)")
    serve.add_argument("--listen", help="HOST:PORT instead of inet_interfaces and "
                       "sesrelay_listen_port")
    serve.add_argument("--drain-seconds", type=float, default=25.0,
                       help="on SIGTERM, how long transactions in flight may take to finish")
    serve.add_argument("--reuse-port", action="store_true",
                       help="set SO_REUSEPORT so that several relay processes share the port")
    serve.add_argument("--processes", type=int, default=1, metavar="N",
                       help="relay processes sharing the port with SO_REUSEPORT, one per "
                       "vCPU (0: one per CPU of this machine; default 1)")
    serve.add_argument("--cpu-affinity", action="store_true",
                       help="keep each relay process on one CPU (process i on the i-th CPU "
                       "it may use): less CPU per message when processes match CPUs")
    serve.set_defaults(func=cmd_serve)

    dev = commands.add_parser("dev", help="run relay, AWS emulation and worker locally")
    dev.add_argument("--config", help="main.cf file")
    dev.add_argument("--listen", default="127.0.0.1:2525", help="HOST:PORT of the relay")
    dev.add_argument("--aws-port", type=int, default=DEV_AWS_PORT,
                     help="port of the embedded AWS emulation")
    dev.set_defaults(func=cmd_dev)

    outbox = commands.add_parser("outbox", help="list mail the emulated SES has sent")
    outbox.add_argument("--json", action="store_true", help="print a JSON array")
    outbox.add_argument("--endpoint", default=emulation_endpoint(DEV_AWS_PORT),
                        help="URL of the AWS emulation")
    outbox.set_defaults(func=cmd_outbox)

    health = commands.add_parser("healthcheck", help="exit 0 if the relay's port answers")
    health.set_defaults(func=cmd_healthcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the sesrelay command."""
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"sesrelay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
