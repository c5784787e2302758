"""Fixtures shared by the suites: `sesrelay dev` running as users run it."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from moto.core.botocore_stubber import BotocoreStubber

from tests.support import free_port, wait_for_port

# The console script users run, from the same environment as the tests.
SESRELAY = str(Path(sys.executable).parent / "sesrelay")


PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
JSII_RUNTIME = "jsii-runtime.js"


def pytest_configure(config: pytest.Config) -> None:
    """Make this process the reaper of every process the tests start, so that one they
    leave behind (an orphan whose parent was killed) stays its descendant and is found
    at the end of the session instead of living on under init."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    serialise_moto_requests()
    load_botocore_data_once()


# Units of xdist work that take minutes, each started at the beginning of the run: xdist
# orders units by their number of tests, which put the one-test pipeline soak last and
# made it the run's tail.
PIPELINE_SOAK = "tests/test_fault_soak.py"
CDK_UNIT = "tests/cdk/"
# The relay soak's file follows the pipeline soak on the same worker, never beside it:
# on two cores the two starve each other's AWS emulation.
RELAY_SOAK = "tests/relay/test_commit_faults.py"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With --dist loadfile (make test): every file is one unit of work, but the CDK tests
    are one together, so that one worker synthesizes every environment once (the session
    fixture in tests/cdk/conftest.py) instead of each worker that runs a CDK file. The
    longest units start first (PIPELINE_SOAK, CDK_UNIT, RELAY_SOAK)."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return CDK_UNIT if nodeid.startswith(CDK_UNIT) else super()._split_scope(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            if not getattr(self, "ordered", False):
                self.ordered = True
                order = [scope for scope in self.workqueue
                         if scope not in (PIPELINE_SOAK, CDK_UNIT, RELAY_SOAK)]
                order[:0] = [s for s in (PIPELINE_SOAK, CDK_UNIT) if s in self.workqueue]
                if RELAY_SOAK in self.workqueue:
                    # xdist gives each worker a first unit, then the next ones, in the
                    # same order, to each worker with two tests or fewer left: the
                    # pipeline soak's worker (one test) takes this one after it.
                    order.insert(len(self.nodes), RELAY_SOAK)
                for scope in order:
                    self.workqueue.move_to_end(scope)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


def serialise_moto_requests() -> None:
    """Answer mock_aws's in-process requests one at a time. moto's backends are not
    thread-safe (its documentation says so): the worker delivers a batch's records on
    threads, and two of them writing the same table at once could make moto fail a
    request as AWS never would (a rare, unreproducible deferral in the worker tests)."""
    process = BotocoreStubber.process_request
    lock = threading.RLock()  # a backend may call another in the same request

    def one_at_a_time(self: BotocoreStubber, request: Any) -> Any:
        with lock:
            return process(self, request)

    BotocoreStubber.process_request = one_at_a_time  # type: ignore[method-assign]


def load_botocore_data_once() -> None:
    """Share one botocore data loader among the sessions of this process, as the clients
    of one session share theirs. Each session parses botocore's JSON (service models,
    endpoints) anew, and the tests make hundreds: mock_aws starts each test with a new
    default session, and sesrelay.aws makes a session per client; parsing the same files
    again was most of a moto test's time. The data and the clients made from it are
    unchanged."""
    botocore.session.create_loader = functools.cache(botocore.session.create_loader)


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Fail the run (in each xdist worker) if a test left a process running; stop it.
    Set up first, so torn down last: after every other fixture has stopped its own."""
    yield
    left = leftover_processes()
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes the tests left running: {left}"


def leftover_processes() -> list[tuple[int, str]]:
    """This process's children still running (zombies aside), with their command."""
    me = os.getpid()
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # jsii's runtime serves aws_cdk in this interpreter until it exits.
        if int(fields[1]) == me and fields[0] != "Z" and JSII_RUNTIME not in command:
            found.append((int(stat.parent.name), command.strip()))
    return found


@dataclass
class DevRelay:
    """A running `sesrelay dev`: its SMTP port and the AWS emulation's endpoint."""

    smtp_port: int
    endpoint: str
    output: Path  # what `sesrelay dev` printed on stdout

    def outbox(self) -> list[dict[str, Any]]:
        """`sesrelay outbox --json`, parsed."""
        result = subprocess.run([SESRELAY, "outbox", "--json", "--endpoint", self.endpoint],
                                capture_output=True, check=True, timeout=30)
        return list(json.loads(result.stdout))

    def wait_for_outbox(self, done: Callable[[list[dict[str, Any]]], bool],
                        timeout: float = 60) -> list[dict[str, Any]]:
        """Poll the outbox until done(sends) holds; fail after timeout seconds."""
        deadline = time.monotonic() + timeout
        sends = self.outbox()
        while not done(sends):
            assert time.monotonic() < deadline, f"outbox after {timeout} s: {sends}"
            time.sleep(0.5)
            sends = self.outbox()
        return sends


@contextlib.contextmanager
def running_dev(tmp_path: Path, *options: str, main_cf: str = "") -> Iterator[DevRelay]:
    """`sesrelay dev` on free loopback ports, with a main.cf for relay.example.net (and
    main_cf's further lines) and any further command-line options."""
    smtp_port, aws_port = free_port(), free_port()
    config = tmp_path / "main.cf"
    config.write_text("myhostname = relay.example.net\n"
                      "mynetworks = 127.0.0.0/8\n"
                      "ses_identities = example.com\n"
                      # The dev tests send from unverified senders to see SES refuse
                      # them, as without ses_identities (the README's tour).
                      "ses_unverified_sender = accept\n"
                      "ses_max_send_rate = 0\n" + main_cf)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SESRELAY_", "AWS_", "POWERTOOLS_"))}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")  # dev's maillog file, not in $HOME
    output = tmp_path / "dev.out"
    with output.open("wb") as stdout:
        process = subprocess.Popen(
            [SESRELAY, "dev", "--config", str(config), "--listen", f"127.0.0.1:{smtp_port}",
             "--aws-port", str(aws_port), *options],
            env=env, stdout=stdout, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(smtp_port, process)
        yield DevRelay(smtp_port, f"http://127.0.0.1:{aws_port}", output)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def dev_relay(tmp_path: Path) -> Iterator[DevRelay]:
    """`sesrelay dev` for one test."""
    with running_dev(tmp_path) as running:
        yield running


@pytest.fixture(scope="module")
def dev_relay_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRelay]:
    """`sesrelay dev` shared by the tests of one module."""
    with running_dev(tmp_path_factory.mktemp("dev")) as running:
        yield running
