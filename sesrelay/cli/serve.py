"""`sesrelay serve` (the container's entry point) and `sesrelay healthcheck`."""

from __future__ import annotations

import argparse
import logging
import os
import resource
import socket
import sys

from sesrelay.config import ConfigError, load_config
from sesrelay.config.loader import ENV_TLS_SECRET
from sesrelay.timeouts import DRAIN_SECONDS


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the relay (the container's entry point)."""
    from smtp_relay import eventloop
    from smtp_relay.server import (
        Listener,
        parse_listen,
        pin_to_cpu,
        run,
        serve_processes,
        smtps_listeners,
    )

    if os.environ.get(ENV_TLS_SECRET):
        # In AWS the certificate files are made from a secret before the configuration,
        # which checks them, is loaded.
        from sesrelay.tls_secret import CertificateSecretError, materialise

        try:
            materialise(os.environ[ENV_TLS_SECRET])
        except CertificateSecretError as exc:
            print(f"sesrelay serve: TLS certificate secret {exc}", file=sys.stderr)
            return 2
    config = load_config(args.config)
    for warning in config.warnings:
        logging.warning("%s", warning)
    # Every SMTP session holds a file descriptor: a soft limit of 1,024 would cap sessions.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    addresses = None
    if args.listen:
        main = parse_listen(args.listen)
        addresses = [Listener(main.host, main.port, config.smtpd_tls_wrappermode),
                     *smtps_listeners(config, [main.host])]
    # 0: one per CPU this process may run on (a container's vCPUs, not the host's).
    processes = args.processes or len(os.sched_getaffinity(0))
    if processes == 1:
        if args.cpu_affinity:
            pin_to_cpu(0, sorted(os.sched_getaffinity(0)))
        eventloop.run(run(config, addresses, drain_timeout=args.drain_seconds,
                          reuse_port=args.reuse_port))
        return 0
    ports = [a.port for a in addresses] if addresses else [config.sesrelay_listen_port]
    if 0 in ports:
        raise ConfigError("--processes needs a fixed port: port 0 would give each process "
                          "its own")
    return serve_processes(processes, lambda: eventloop.run(run(
        config, addresses, drain_timeout=args.drain_seconds, reuse_port=True)),
        cpu_affinity=args.cpu_affinity)


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 when the relay accepts TCP connections on its port (container health check)."""
    config = load_config()
    try:
        with socket.create_connection(("127.0.0.1", config.sesrelay_listen_port), timeout=3):
            return 0
    except OSError as exc:
        print(f"unhealthy: port {config.sesrelay_listen_port}: {exc}", file=sys.stderr)
        return 1


def register(commands: argparse._SubParsersAction) -> None:
    """Add `serve` and `healthcheck`."""
    serve = commands.add_parser("serve", help="run the relay (production entry point)")
    serve.add_argument("--config", help="main.cf file (default: $SESRELAY_CONFIG)")
    serve.add_argument("--listen", help="HOST:PORT instead of inet_interfaces and "
                       "sesrelay_listen_port (sesrelay_smtps_port, if set, on the same host)")
    serve.add_argument("--drain-seconds", type=float, default=DRAIN_SECONDS,
                       help="on SIGTERM, how long transactions in flight may take to finish "
                       "(default %(default)s)")
    serve.add_argument("--reuse-port", action="store_true",
                       help="set SO_REUSEPORT so that several relay processes share the port")
    serve.add_argument("--processes", type=int, default=1, metavar="N",
                       help="relay processes sharing the port with SO_REUSEPORT, one per "
                       "vCPU (0: one per CPU of this machine; default 1)")
    serve.add_argument("--cpu-affinity", action="store_true",
                       help="keep each relay process on one CPU (process i on the i-th CPU "
                       "it may use): less CPU per message when processes match CPUs")
    serve.set_defaults(func=cmd_serve)

    health = commands.add_parser("healthcheck", help="exit 0 if the relay's port answers")
    health.set_defaults(func=cmd_healthcheck)
