"""Where the relay's CPU goes: py-spy samples `sesrelay serve` under a bench load.

    .venv/bin/python bench/hotpath_profile.py                       # 20 x 10 KB and 1 x 10 KB
    .venv/bin/python bench/hotpath_profile.py --sessions 1 --messages 400
    .venv/bin/python bench/hotpath_profile.py --spool-client botocore

It starts the spool sink and the relay as bench/run does (bench/harness.py; the relay on
the interpreter bench/interpreters.py chooses, or --relay-python), records every relay
process with py-spy (which must be installed in the virtualenv this runs from; it is a
tool, not a dependency of the relay) while smtp-source runs, and prints the share of samples in each
part of the hot path. Idle samples (the event loop waiting in epoll, threads waiting for
work) are left out, so the shares are of the relay's busy time. The collapsed stacks are
kept under bench/results/ for a flame graph.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, Load, Sesrelay, SpoolSink, running, smtp_source
from interpreters import default_python, describe, environment

PY_SPY = str(Path(sys.executable).parent / "py-spy")

# Where a stack's CPU goes: the first of SPOOL_PARTS whose marker is anywhere in the
# stack (all the work of an S3 or SQS request, its logging and hashing included), else the
# first of PARTS whose marker is in the innermost frame that has one, so that e.g. logging
# called from the session counts as logging. Markers are substrings of py-spy's
# "function (module path:line)" frames.
SPOOL_PARTS: list[tuple[str, tuple[str, ...]]] = [
    # The botocore client's calls run as closures (put, send) in its thread pool.
    ("S3 write (PutObject)", ("_put (smtp_relay/handoff.py", "put_object (",
                              "put (smtp_relay/spool_client.py")),
    ("SQS write (SendMessage/Batch)", ("_send (smtp_relay/handoff.py", "send_messages (",
                                       "send (smtp_relay/spool_client.py")),
]
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("logging", ("(logging/",)),
    ("metrics", ("(smtp_relay/metrics.py", "(aws_lambda_powertools/")),
    ("thread handoffs (executor, futures, wake-ups)", (
        "(concurrent/futures/", "(threading.py", "run_in_executor", "call_soon_threadsafe",
        "_write_to_self", "_read_from_self", "_chain_future", "_copy_future_state",
        "_call_set_state")),
    ("policy and headers", ("(smtp_relay/policy.py", "(smtp_relay/headers.py",
                            "(smtp_relay/cleanup.py", "(smtp_relay/addresses.py",
                            "(smtp_relay/from_header.py", "(smtp_relay/verdicts.py",
                            "(email/")),
    ("spool envelope (JSON, base64)", ("(sesrelay/spool.py", "(json/", "(base64.py")),
    ("SMTP parsing and aiosmtpd", ("(aiosmtpd/", "(smtp_relay/session.py",
                                   "(smtp_relay/server.py", "(smtp_relay/replies.py",
                                   "(smtp_relay/edge.py", "(smtp_relay/relay.py")),
    ("event loop and sockets (SMTP and HTTP I/O)", ("(asyncio/", "(selectors.py")),
]


def classify(stack: str) -> str:
    """The part of the hot path a collapsed stack (outermost frame first) belongs to."""
    for part, markers in SPOOL_PARTS:
        if any(marker in stack for marker in markers):
            return part
    for frame in reversed(stack.split(";")):
        for part, markers in PARTS:
            if any(marker in frame for marker in markers):
                return part
    return "other (interpreter, start-up)"


def breakdown(collapsed: Path) -> Counter[str]:
    """Samples per part, from py-spy's raw (collapsed) output."""
    parts: Counter[str] = Counter()
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            parts[classify(stack)] += int(count)
    return parts


def profile(relay: Sesrelay, load: Load, out: Path) -> Counter[str]:
    """Record every relay process while load runs; the samples per part."""
    assert relay.process is not None
    spy = subprocess.Popen([PY_SPY, "record", "--subprocesses", "--nonblocking",
                            "--rate", "250", "--format", "raw", "--output", str(out),
                            "--pid", str(relay.process.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches
    smtp_source(relay.port, load)
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=60)
    return breakdown(out)


def main() -> int:
    """Profile the relay under the 20 x 10 KB and 1 x 10 KB loads (or one given load)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, action="append")
    parser.add_argument("--messages", type=int, default=0)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--spool-client", default="lean", choices=("botocore", "lean"),
                        help="the relay's sesrelay_spool_client")
    parser.add_argument("--relay-python", metavar="PATH",
                        help="the relay's interpreter (default: bench/run's choice)")
    args = parser.parse_args()
    python = args.relay_python or default_python()[0]
    found = describe(python)
    print(f"relay interpreter: Python {found['python']} ({found['python_executable']}, "
          f"{found['python_source']})")
    loads = [Load(f"{s} sessions", s, args.size, args.messages or (6000 if s > 1 else 600))
             for s in (args.sessions or [20, 1])]
    results = REPO / "bench" / "results" / (
        f"profile-{args.spool_client}-" + time.strftime("%Y%m%d-%H%M%S"))
    results.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="sesrelay-profile-") as tmp:
        work = Path(tmp)
        sink = SpoolSink(work)
        relay = Sesrelay(sink, args.processes, work, cpu_affinity=True,
                         spool_client=args.spool_client, bin_dir=environment(python))
        with running(sink, relay):
            smtp_source(relay.port, Load("warm-up", 20, args.size, 500))
            for load in loads:
                parts = profile(relay, load, results / f"{load.sessions}-sessions.txt")
                total = sum(parts.values()) or 1
                print(f"\n{args.spool_client}: {load.sessions} session(s) x "
                      f"{load.size // 1024} KB, "
                      f"{load.messages} messages, {total} busy samples:")
                for part, count in parts.most_common():
                    print(f"  {100 * count / total:5.1f} %  {part}")
    print(f"\ncollapsed stacks: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
