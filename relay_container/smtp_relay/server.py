"""`sesrelay serve`: listen, relay, and drain on SIGTERM.

On SIGTERM (ECS stopping the task) the relay stops accepting connections, lets every
transaction in flight finish, answers 421 to anything new, and exits once no client is
owed an answer or the drain time is up.

One Python process uses one CPU. `serve_processes` forks several relay processes that
each bind the same port with SO_REUSEPORT (the kernel spreads new connections over them)
and passes SIGTERM on to every one, so each drains as a single process would. With CPU
affinity, each process (its event loop and its spool threads) is kept on one CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from sesrelay.config import Config, ConfigError
from sesrelay.config.tls import server_context
from sesrelay.timeouts import DRAIN_SECONDS
from smtp_relay import eventloop
from smtp_relay.handoff import Spool
from smtp_relay.metrics import RelayMetrics
from smtp_relay.relay import Relay
from smtp_relay.session import RelaySession
from smtp_relay.tls import ImplicitTlsGate

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

log = logging.getLogger("sesrelay.relay")

_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)
# After the last store of a drain, how long its client has to take its answer.
ANSWER_GRACE = 2.0


@dataclass(frozen=True)
class Listener:
    """One address to listen on; implicit_tls: TLS from the first octet (port 465)."""

    host: str
    port: int
    implicit_tls: bool = False


def listeners(config: Config) -> list[Listener]:
    """Addresses from inet_interfaces, inet_protocols and sesrelay_listen_port (implicit
    TLS with smtpd_tls_wrappermode), and sesrelay_smtps_port (implicit TLS) when set."""
    hosts = listen_hosts(config)
    found = [Listener(h, config.sesrelay_listen_port, config.smtpd_tls_wrappermode)
             for h in hosts]
    return found + smtps_listeners(config, hosts)


def smtps_listeners(config: Config, hosts: list[str]) -> list[Listener]:
    """The implicit-TLS listeners of sesrelay_smtps_port on hosts (none when it is 0)."""
    if not config.sesrelay_smtps_port:
        return []
    return [Listener(h, config.sesrelay_smtps_port, implicit_tls=True) for h in hosts]


def listen_hosts(config: Config) -> list[str]:
    """The addresses of inet_interfaces and inet_protocols."""
    hosts: list[str] = []
    for interface in config.inet_interfaces:
        if interface == "all":
            hosts += [h for p, h in (("ipv4", "0.0.0.0"), ("ipv6", "::"))
                      if p in config.inet_protocols]
        elif interface in ("loopback-only", "localhost"):
            hosts += [h for p, h in (("ipv4", "127.0.0.1"), ("ipv6", "::1"))
                      if p in config.inet_protocols]
        else:
            hosts.append(interface.strip("[]"))
    return list(dict.fromkeys(hosts))


def parse_listen(text: str) -> Listener:
    """HOST:PORT or [IPV6]:PORT, as given to --listen."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"--listen {text!r}: expected HOST:PORT, such as 127.0.0.1:2525")
    return Listener(host.strip("[]"), int(port))


class RelayServer:
    """The listening sockets and the relay behind them."""

    def __init__(self, config: Config, addresses: list[Listener] | None = None) -> None:
        if not (config.sesrelay_spool_bucket and config.sesrelay_spool_queue_url
                and config.sesrelay_idempotency_table):
            raise ConfigError("sesrelay_spool_bucket, sesrelay_spool_queue_url and "
                              "sesrelay_idempotency_table must be set (SESRELAY_SPOOL_BUCKET, "
                              "SESRELAY_SPOOL_QUEUE_URL, SESRELAY_IDEMPOTENCY_TABLE): without "
                              "the table a lost SQS answer could not be settled")
        self.config = config
        self.addresses = addresses or listeners(config)
        self.metrics = RelayMetrics()
        self.relay = Relay(config, Spool(config.sesrelay_spool_bucket,
                                         config.sesrelay_spool_queue_url,
                                         config.sesrelay_idempotency_table,
                                         config.sesrelay_spool_client), self.metrics)
        self._servers: list[asyncio.Server] = []
        self._wrapper_context: ssl.SSLContext | None = None

    async def start(self, reuse_port: bool = False) -> list[tuple[str, int]]:
        """Open the listening sockets; return the bound (host, port) pairs."""
        loop = asyncio.get_running_loop()
        if self.relay.authenticator is not None:  # read at start; errors are logged
            await self.relay.authenticator.table()
        bound = []
        for address in self.addresses:
            factory: Callable[[], asyncio.BaseProtocol] = functools.partial(
                RelaySession, self.relay)
            if address.implicit_tls:
                factory = functools.partial(ImplicitTlsGate, self.relay,
                                            self._implicit_tls_context())
            try:
                server = await loop.create_server(
                    factory, address.host, address.port,
                    reuse_address=True, reuse_port=reuse_port, backlog=1024)
            except OSError as exc:
                if address.host == "::" and exc.errno in _NO_IPV6 and len(self.addresses) > 1:
                    # inet_protocols = all on a host without IPv6: Postfix warns and goes on.
                    log.warning("not listening on [::]: %s (no IPv6 on this host)", exc)
                    continue
                raise
            self._servers.append(server)
            for sock in server.sockets:
                name = sock.getsockname()
                bound.append((name[0], name[1]))
                log.info("listening on %s port %d%s", name[0], name[1],
                         " (implicit TLS)" if address.implicit_tls else "")
        return bound

    def _implicit_tls_context(self) -> ssl.SSLContext:
        """An implicit-TLS listener accepts TLS only: the mandatory settings apply."""
        if self._wrapper_context is None:
            self._wrapper_context = server_context(self.config, mandatory=True)
        return self._wrapper_context

    async def drain(self, timeout: float) -> None:
        """Stop accepting, let transactions finish, 421 the idle, then close everything.

        A session whose message is being stored when the time is up is not cut: its
        store runs to its end (each is bounded by its call budget, sesrelay.timeouts) and
        the client gets its answer, so a message is either acknowledged and queued or
        refused, never queued behind a client's back."""
        self.relay.draining = True
        for server in self._servers:
            server.close()
        log.info("draining: %d sessions open", len(self.relay.sessions))
        loop = asyncio.get_running_loop()
        await self._close_idle_until(loop.time() + timeout)
        for session in list(self.relay.sessions):
            if session.transport is not None and session.session not in self.relay.storing:
                log.warning("drain time over: closing a session in mid-transaction; the "
                            "client was not answered and keeps its message")
                session.transport.close()
        stores = self.relay.spool.stores
        if stores:
            log.info("draining: waiting for %d messages being stored", len(stores))
            await asyncio.wait(list(stores))
            await self._close_idle_until(loop.time() + ANSWER_GRACE)
        for session in list(self.relay.sessions):
            if session.transport is not None:
                session.transport.close()
        for server in self._servers:
            await server.wait_closed()
        if self.relay.authenticator is not None:
            self.relay.authenticator.close()
        self.metrics.flush()

    async def _close_idle_until(self, deadline: float) -> None:
        """421 and close each session as soon as it owes no answer, until deadline."""
        loop = asyncio.get_running_loop()
        while self.relay.sessions and loop.time() < deadline:
            for session in list(self.relay.sessions):
                session.close_idle()
            await asyncio.sleep(0.05)


async def run(config: Config, addresses: list[Listener] | None = None,
              drain_timeout: float = DRAIN_SECONDS, reuse_port: bool = False,
              on_ready: Callable[[list[tuple[str, int]]], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain."""
    server = RelayServer(config, addresses)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the first client: every stop drains
        loop.add_signal_handler(sig, stop.set)
    bound = await server.start(reuse_port=reuse_port)
    log.info("event loop: %s", eventloop.describe(loop))
    if on_ready:
        on_ready(bound)
    publisher = asyncio.create_task(server.metrics.publish_forever())
    try:
        await stop.wait()
        log.info("signal received: draining for up to %.0f s", drain_timeout)
        await server.drain(drain_timeout)
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")


def pin_to_cpu(index: int, cpus: list[int]) -> None:
    """Keep this process on one of cpus (round-robin by index).

    The threads of a Python process take turns on one interpreter lock: on one CPU they
    hand it over without waking each other across CPUs (docs/BENCHMARKS.md). Where the
    system refuses, the process runs unpinned: slower, but still relaying."""
    cpu = cpus[index % len(cpus)]
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        log.warning("relay process %d: cannot keep to CPU %d (%s); running unpinned",
                    index, cpu, exc.strerror)
        return
    log.info("relay process %d on CPU %d", index, cpu)


class StoppedBeforeServing(SystemExit):
    """SIGTERM or SIGINT reached a relay process before it began to serve. A SystemExit,
    because asyncio's loop swallows (and only logs) any other exception raised in one of
    its callbacks, and the process would serve on."""


def _stop_before_serving(signum: int, frame: object) -> None:
    raise StoppedBeforeServing(signal.Signals(signum).name)


def drain_when_orphaned(parent: int) -> None:
    """Have the kernel send this (forked) process SIGTERM when its parent dies, even by
    SIGKILL or the OOM killer: it then drains like any stopping relay process, instead of
    serving on as an orphan that keeps the port. (In the ECS task the parent is PID 1 and
    the kernel ends everything with it; on any other host it would not.)"""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("relay process %d: cannot ask to be stopped with its parent: %s",
                    os.getpid(), os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def serve_processes(processes: int, serve: Callable[[], None],
                    cpu_affinity: bool = False) -> int:
    """Run serve() in that many forked processes; return the exit status for the parent.

    The parent only forwards SIGTERM and SIGINT to the children and waits for them. It
    forks before anything (event loop, boto3 clients, threads) exists that a fork would
    break. If a child dies on its own, the others are stopped too and the status is 1, so
    that the container is replaced rather than left running short of processes. With
    cpu_affinity, process i runs on the i-th CPU it may use (round-robin).
    """
    cpus = sorted(os.sched_getaffinity(0))
    children: dict[int, int] = {}
    parent = os.getpid()
    for index in range(processes):
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                # Until serve() installs its drain, a stop means exit: nothing is accepted
                # yet (a slow start under load must not read as a crash).
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, _stop_before_serving)
                drain_when_orphaned(parent)
                if cpu_affinity:
                    pin_to_cpu(index, cpus)
                serve()
            except StoppedBeforeServing:
                log.info("relay process %d stopped before it served", index)
            except BaseException:
                log.exception("relay process %d failed", index)
                status = 1
            finally:
                os._exit(status)
        children[pid] = index
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    status = 0
    while children:
        pid, wait_status = os.wait()
        if pid not in children:
            continue
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if not stopping:
            log.error("relay process %d (pid %d) exited with status %d; stopping the others",
                      index, pid, code)
            forward(signal.SIGTERM, None)
            status = 1
        elif code != 0:
            status = 1
    return status


def check_port_free(address: Listener) -> None:
    """Fail early, with a clear message, when the port is taken."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address.host, address.port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {address.host}:{address.port}: "
                              f"{exc.strerror}") from None
