"""Where the relay listens: inet_interfaces, inet_protocols and the port."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from sesrelay.config import load_config
from smtp_relay import eventloop
from smtp_relay.server import Listener, RelayServer, listeners, parse_listen
from tests.relay.conftest import BUCKET, TABLE, SpoolAccount


def config(**settings: object):  # type: ignore[no-untyped-def]
    return load_config(None, environ={}, overrides=settings)


def test_listeners_follow_inet_interfaces_and_protocols() -> None:
    assert listeners(config(sesrelay_listen_port=2525)) == [
        Listener("0.0.0.0", 2525), Listener("::", 2525)]
    assert listeners(config(inet_interfaces="loopback-only", inet_protocols="ipv4")) == [
        Listener("127.0.0.1", 25)]
    assert listeners(config(inet_interfaces="10.0.0.5, [2001:db8::5]")) == [
        Listener("10.0.0.5", 25), Listener("2001:db8::5", 25)]
    assert parse_listen("[::1]:2525") == Listener("::1", 2525)


def test_no_ipv6_on_the_host_leaves_ipv4_listening(spool_account: SpoolAccount,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    relay_config = config(inet_interfaces="loopback-only", sesrelay_spool_bucket=BUCKET,
                          sesrelay_spool_queue_url=spool_account.queue_url,
                          sesrelay_idempotency_table=TABLE)
    server = RelayServer(relay_config, [Listener("127.0.0.1", 0), Listener("::", 0)])

    async def start_without_ipv6() -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        create_server = loop.create_server

        async def no_ipv6(factory, host, *args, **kwargs):  # type: ignore[no-untyped-def]
            if host == "::":  # what a kernel booted with ipv6.disable=1 answers
                raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
            return await create_server(factory, host, *args, **kwargs)

        loop.create_server = no_ipv6  # type: ignore[method-assign]
        bound = await server.start()
        await server.drain(timeout=1)
        return bound

    with caplog.at_level(logging.WARNING, logger="sesrelay.relay"):
        bound = eventloop.run(start_without_ipv6())
    assert [host for host, _ in bound] == ["127.0.0.1"]
    assert "not listening on [::]" in caplog.text
