"""The relay's event loop: uvloop (libuv), not asyncio's pure-Python selector loop.

With the lean spool client the relay's Python work per message is small, and asyncio's
own loop (its `_run_once`, handles, selector and transports) had become about half of
the relay's busy time. On uvloop the same messages cost 4-17 % less CPU in interleaved
A/B runs (docs/BENCHMARKS.md, "The event loop"). uvloop implements asyncio's loop API
(transports, protocols, streams, start_tls, signal handlers), so the relay's code is the
same on either loop.

The relay runs on this loop wherever it runs: `sesrelay serve`, `sesrelay dev`, and the
tests' in-process relay, so that the hostile-client tests exercise the loop that
production runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

_T = TypeVar("_T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the kind the relay runs on."""
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run main to its end on a new relay event loop (as asyncio.run does)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


def describe(loop: asyncio.AbstractEventLoop) -> str:
    """What loop this is, for the start-up log line: "uvloop 0.23.0", or asyncio's."""
    if isinstance(loop, uvloop.Loop):
        return f"uvloop {uvloop.__version__}"
    return f"asyncio {type(loop).__name__}"
