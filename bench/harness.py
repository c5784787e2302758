"""sesrelay against Postfix: identical smtp-source loads, interleaved, in one run.

Run through bench/run, which installs what this needs. Both sides run on loopback:

- Postfix, with a private configuration and queue under a temporary directory, set up as
  the seed main.cf's relay (mynetworks, relayhost) and relaying to smtp-sink;
- `sesrelay serve`, whose AWS endpoints point at bench/spool_sink.py, the spool's smtp-sink.

The TLS load runs against a second pair, Postfix and sesrelay with the same certificate and
TLS settings (TLS_SETTINGS), driven by tls_source: smtp-source cannot STARTTLS, so this
harness's own client (threads, one message per connection, as smtp-source) does, the same
for both sides.

Each load runs against Postfix, then sesrelay, then sesrelay, then Postfix (and so on for
more rounds), so a drift of the machine hits both alike. Reported per load and side:
msg/s (smtp-source's wall time), relay CPU ms per message and peak PSS (from /proc, over
every process of the side), S3/SQS requests per message, and for the 1-session and the
sizing loads the acknowledgement latency p50/p99 (from a client that times "." to "250"
per message, one session at a time, after the load).
The sizing load runs the relay against a second sink that answers as far away as AWS
(AWS_LATENCY_MS), and turns its figures into messages per second per vCPU, sessions and
tasks per 1,000 msg/s (sizing()). The relay runs on the interpreter bench/interpreters.py
chooses (or those given with --relay-python, each a side of its own).
Results go to bench/results/<time>/ (results.json, table.md, chart.png).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from interpreters import default_python, describe, environment

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SENDER, RECIPIENT = "bench@bench.test", "rcpt@example.com"
BIG_MESSAGE = 40 * 1024 * 1024 - 64 * 1024  # 40 MiB less room for headers and the limit
TLS_NAME = "tls.bench.test"
SPOOL_CLIENTS = ("botocore", "lean")  # sesrelay_spool_client's values
# The sizing load: the spool sink holds each answer as long as AWS would take from a task
# in the same region (typical, not measured here: no AWS access), so group commit and the
# number of sessions a rate needs are as in production. Postfix's side is unchanged.
AWS_LATENCY_MS = {"s3": 20.0, "sqs": 8.0}
AWS_LATENCY_LOAD = "20 sessions, 10 KB, AWS latency"
# The TLS load's server settings, in Postfix's names, given alike to both sides (sesrelay's
# defaults for the rest match Postfix's: medium ciphers, no TLS log lines or header).
TLS_SETTINGS = {"smtpd_tls_security_level": "may", "smtpd_tls_protocols": ">=TLSv1.2",
                "smtpd_tls_mandatory_protocols": ">=TLSv1.2", "smtpd_tls_loglevel": "0",
                "smtpd_tls_received_header": "no"}


def log(text: str) -> None:
    """Progress, on stderr (stdout ends with the ratio line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.recv(512)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.1)


# --- measuring processes --------------------------------------------------------------

def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, own CPU ticks, reaped children's CPU ticks) of pid, or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    # fields[0] is field 3 (state) of proc(5): ppid is 4, utime..cstime are 14..17.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _own_ticks(pid: int) -> int:
    """CPU ticks pid has used itself (0 once it is gone)."""
    stat = _stat(pid)
    return stat[1] if stat is not None else 0


def _children_seconds() -> float:
    """CPU seconds of this process's reaped children (smtp-source runs as one)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pss(pid: int) -> int:
    """Proportional set size: shared pages (Postfix's processes share libraries) are split
    among the processes that map them, so a sum over processes counts memory once."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


class ProcessTree:
    """CPU time and peak memory (PSS) of a process and all its descendants, from /proc.

    CPU is counted exactly even for short-lived children (Postfix's smtpd processes come
    and go): the root's reaped-children time covers every child that exited, and the live
    ones are read directly; the part each used before the measurement began is subtracted.
    """

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root = root
        self.interval = interval
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base: dict[int, int] = {}
        self._root_base = 0
        self._seen: set[int] = set()

    def _tree(self) -> dict[int, tuple[int, int, int]]:
        stats = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                stat = _stat(int(entry.name))
                if stat is not None:
                    stats[int(entry.name)] = stat
        members = {self.root}
        changed = True
        while changed:
            changed = False
            for pid, (ppid, _, _) in stats.items():
                if ppid in members and pid not in members:
                    members.add(pid)
                    changed = True
        return {pid: stats[pid] for pid in members if pid in stats}

    def _sample(self) -> None:
        tree = self._tree()
        self._seen.update(tree)
        self.peak_pss = max(self.peak_pss, sum(_pss(pid) for pid in tree))

    def __enter__(self) -> ProcessTree:
        tree = self._tree()
        root = tree[self.root]
        self._root_base = root[1] + root[2]
        self._base = {pid: own for pid, (_, own, _) in tree.items() if pid != self.root}
        self._seen = set(tree)
        self.peak_pss = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._sample()

    def cpu_seconds(self) -> float:
        """CPU used by the tree since __enter__ (call after __exit__)."""
        tree = self._tree()
        root = tree[self.root]
        ticks = root[1] + root[2] - self._root_base
        for pid in self._seen - {self.root}:
            if pid in tree:
                ticks += tree[pid][1] - self._base.get(pid, 0)
            else:  # exited: all its time is in the root's reaped-children time
                ticks -= self._base.get(pid, 0)
        return ticks / CLK_TCK


# --- the two sides ------------------------------------------------------------------

class Postfix:
    """A private Postfix instance: config, queue and log under workdir, relaying to
    smtp-sink on loopback."""

    def __init__(self, workdir: Path, tls: dict[str, str] | None = None) -> None:
        self.dir = workdir / ("postfix-tls" if tls else "postfix")
        self.tls = tls or {}
        self.port = free_port()
        self.sink_port = free_port()
        self.sink: subprocess.Popen[bytes] | None = None
        self.master_pid = 0
        self.maillog = self.dir / "maillog"

    def start(self) -> None:
        """Write main.cf/master.cf, start smtp-sink and Postfix, wait for the port."""
        queue, data = self.dir / "queue", self.dir / "data"
        queue.mkdir(parents=True)
        data.mkdir()
        shutil.chown(data, "postfix")
        for path in (self.dir.parent, self.dir):
            path.chmod(0o755)
        # The seed main.cf's relay settings, with loopback addresses instead of SES's.
        (self.dir / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
maillog_file = {self.maillog}
maillog_file_prefixes = {self.dir}
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = $mydomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{self.sink_port}
smtpd_banner = $myhostname ESMTP $mail_name
""" + "".join(f"{name} = {value}\n" for name, value in self.tls.items()))
        master = Path("/etc/postfix/master.cf").read_text().splitlines()
        for number, line in enumerate(master):
            if line.split()[:2] == ["smtp", "inet"]:
                master[number] = line.replace("smtp ", f"127.0.0.1:{self.port} ", 1)
        (self.dir / "master.cf").write_text("\n".join(master) + "\n")
        shutil.copy("/etc/postfix/dynamicmaps.cf", self.dir)
        self.sink = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", f"127.0.0.1:{self.sink_port}", "1024"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["postfix", "-c", str(self.dir), "start"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        pid_file = queue / "pid" / "master.pid"
        self.master_pid = int(pid_file.read_text().split()[0])

    def queued(self) -> int:
        """Messages in Postfix's queue, not yet delivered."""
        queue = self.dir / "queue"
        return sum(len(files) for name in ("maildrop", "incoming", "active", "deferred")
                   for _, _, files in os.walk(queue / name))

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until everything accepted has been delivered to smtp-sink."""
        deadline = time.monotonic() + timeout
        while self.queued() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.queued():
            raise RuntimeError(f"Postfix still has {self.queued()} messages queued")

    def delivered(self) -> int:
        """Messages delivered to smtp-sink so far, from Postfix's log."""
        with contextlib.suppress(OSError):
            return self.maillog.read_text(errors="replace").count("status=sent")
        return 0

    def stop(self) -> None:
        """Stop Postfix and smtp-sink."""
        subprocess.run(["postfix", "-c", str(self.dir), "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while _stat(self.master_pid) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.sink is not None:
            self.sink.terminate()
            self.sink.wait()


class SpoolSink:
    """bench/spool_sink.py in its own process."""

    def __init__(self, workdir: Path, latency_ms: dict[str, float] | None = None) -> None:
        """latency_ms: how long the sink holds each answer, by service ("s3", "sqs")."""
        self.latency_ms = latency_ms or {}
        self.ready = workdir / f"sink-{id(self)}.port"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        """Start the sink and learn its port."""
        self.ready.unlink(missing_ok=True)
        self.process = subprocess.Popen([
            PYTHON, str(REPO / "bench" / "spool_sink.py"), "--ready-file", str(self.ready),
            "--s3-latency-ms", str(self.latency_ms.get("s3", 0)),
            "--sqs-latency-ms", str(self.latency_ms.get("sqs", 0))])
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the spool sink did not start")
            time.sleep(0.05)
        self.port = int(self.ready.read_text())

    def _call(self, path: str) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", data=(
                b"" if path == "/_reset" else None), timeout=10) as answer:
            text = answer.read()
        return json.loads(text) if text else {}

    def reset(self) -> None:
        """Zero the request counters."""
        self._call("/_reset")

    def stats(self) -> dict[str, object]:
        """Requests answered since the last reset."""
        return self._call("/_stats")

    def capacity(self, seconds: float) -> float:
        """The sink's own rate in messages/s (PutObject + SendMessage each)."""
        out = subprocess.run([PYTHON, str(REPO / "bench" / "spool_sink.py"), "--measure",
                              str(self.port), "--seconds", str(seconds), "--generators",
                              str(os.cpu_count() or 1)],
                             check=True, capture_output=True, text=True).stdout
        return float(json.loads(out)["msg_per_s"])

    def stop(self) -> None:
        """Stop the sink."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait()


class Sesrelay:
    """`sesrelay serve` on loopback, spooling to the sink."""

    def __init__(self, sink: SpoolSink, processes: int, workdir: Path,
                 cpu_affinity: bool = False, tls: dict[str, str] | None = None,
                 spool_client: str = "botocore", bin_dir: Path | None = None,
                 side: str = "") -> None:
        """bin_dir: the virtualenv whose `sesrelay` runs (default: this harness's);
        side: the side's name in the results (default: "sesrelay (<spool client>)")."""
        self.sink = sink
        self.tls = tls or {}
        self.spool_client = spool_client
        self.side = side or f"sesrelay ({spool_client})"
        self.sesrelay = str((bin_dir or Path(PYTHON).parent) / "sesrelay")
        self.processes = processes
        self.cpu_affinity = cpu_affinity
        self.port = free_port()
        self.log = workdir / f"sesrelay-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the relay and wait until every process listens."""
        endpoint = f"http://127.0.0.1:{self.sink.port}"
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
               "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
               "SESRELAY_SPOOL_BUCKET": "bench-spool",
               "SESRELAY_SPOOL_QUEUE_URL": f"{endpoint}/000000000000/bench-spool",
               "SESRELAY_IDEMPOTENCY_TABLE": "bench-idempotency",
               "SESRELAY_MYNETWORKS": "127.0.0.0/8",
               # Every bench client is 127.0.0.1 and the idle-session figure holds 1000 of
               # them; Postfix's side exempts $mynetworks from its connection limit.
               "SESRELAY_SMTPD_CLIENT_CONNECTION_COUNT_LIMIT": "0",
               "SESRELAY_MYHOSTNAME": "sesrelay.bench.test",
               "SESRELAY_MESSAGE_SIZE_LIMIT": str(40 * 1024 * 1024),
               "POWERTOOLS_METRICS_DISABLED": "true",
               "SESRELAY_SPOOL_CLIENT": self.spool_client,
               **{f"SESRELAY_{name.upper()}": value for name, value in self.tls.items()}}
        # The relay logs at its production level (INFO: a line per message, to a file),
        # as Postfix writes its maillog.
        for name in ("AWS_PROFILE", "SESRELAY_CONFIG", "AWS_ENDPOINT_URL_S3",
                     "AWS_ENDPOINT_URL_SQS", "SESRELAY_LOG_LEVEL"):
            env.pop(name, None)
        command = [self.sesrelay, "serve", "--listen", f"127.0.0.1:{self.port}",
                   "--processes", str(self.processes)]
        if self.cpu_affinity:
            command.append("--cpu-affinity")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
        wait_port(self.port)
        deadline = time.monotonic() + 30
        while len(self.pids()) < self.processes + (self.processes > 1):
            if time.monotonic() > deadline:
                raise RuntimeError("the relay processes did not all start")
            time.sleep(0.1)
        time.sleep(0.5)  # the last process forked may not listen yet

    def pids(self) -> list[int]:
        """The relay's processes: the parent, and the forked ones if any."""
        assert self.process is not None
        root = self.process.pid
        children = [int(p) for p in Path(f"/proc/{root}/task/{root}/children")
                    .read_text().split()]
        return [root, *children]

    def stop(self) -> None:
        """SIGTERM (the relay drains), then wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- loads ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Load:
    """One smtp-source load."""

    name: str
    sessions: int
    size: int
    messages: int
    # After the load, this many more messages, one session at a time, each timed: the
    # acknowledgement latency and the whole session (timed_messages).
    timed: int = 0
    tls: bool = False  # STARTTLS on each connection, with tls_source (against the TLS pair)
    aws_latency: bool = False  # the relay's sink answers as far away as AWS (AWS_LATENCY_MS)


@dataclass
class Sample:
    """One load, run once against one side."""

    side: str
    load: str
    messages: int
    seconds: float
    msg_per_s: float
    cpu_ms_per_msg: float
    peak_pss_mb: float
    requests_per_msg: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    # The rest of the machine's work for this side, per message of the load: smtp-source
    # (0 for the TLS load, whose client runs in the harness) and the side's sink
    # (smtp-sink for Postfix, the spool sink for sesrelay). On 2 cores shared by all of
    # them, the throughput ratio follows the sum, not the server's share alone.
    client_cpu_ms_per_msg: float = 0.0
    sink_cpu_ms_per_msg: float = 0.0


def smtp_source(port: int, load: Load) -> float:
    """Run smtp-source; return its wall time in seconds (its CPU time is in this
    process's reaped children's, _children_seconds)."""
    started = time.monotonic()
    result = subprocess.run(
        ["smtp-source", "-s", str(load.sessions), "-l", str(load.size), "-m",
         str(load.messages), "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    if result.returncode != 0 or result.stderr.strip():
        raise RuntimeError(f"smtp-source against port {port}: {result.stderr.strip()}")
    return seconds


def send_load(port: int, load: Load, ca_file: Path | None) -> float:
    """Run the load's client (tls_source for a TLS load, else smtp-source); its wall time
    in seconds."""
    if load.tls:
        assert ca_file is not None
        return tls_source(port, load, ca_file)
    return smtp_source(port, load)


def tls_source(port: int, load: Load, ca_file: Path) -> float:
    """What smtp-source does (load.sessions at a time, one message per connection), with
    STARTTLS on each connection and the certificate checked; its wall time in seconds.
    Threads: the handshakes and the encryption run in OpenSSL, outside the GIL."""
    context = ssl.create_default_context(cafile=str(ca_file))
    payload = message_bytes(load.size) + b"."  # and the end-of-data line, sent with CRLF
    remaining = iter(range(load.messages))
    lock = threading.Lock()
    failures: list[BaseException] = []

    def one_message() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            stream = sock.makefile("rb")
            _expect(stream, b"220")
            for command, code in ((b"EHLO client.bench.test", b"250"),
                                  (b"STARTTLS", b"220")):
                sock.sendall(command + b"\r\n")
                _expect(stream, code)
            with context.wrap_socket(sock, server_hostname=TLS_NAME) as secure:
                secure_stream = secure.makefile("rb")
                for command, code in ((b"EHLO client.bench.test", b"250"),
                                      (f"MAIL FROM:<{SENDER}>".encode(), b"250"),
                                      (f"RCPT TO:<{RECIPIENT}>".encode(), b"250"),
                                      (b"DATA", b"354"), (payload, b"250"),
                                      (b"QUIT", b"221")):
                    secure.sendall(command + b"\r\n")
                    _expect(secure_stream, code)

    def session() -> None:
        try:
            while True:
                with lock:
                    if failures or next(remaining, None) is None:
                        return
                one_message()
        except (OSError, RuntimeError) as exc:
            with lock:
                failures.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=session) for _ in range(load.sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"TLS client against port {port}: {failures[0]!r}")
    return time.monotonic() - started


def _expect(stream: socket.SocketIO | object, code: bytes) -> None:
    reply = _reply(stream)
    if not reply.startswith(code):
        raise RuntimeError(f"expected {code.decode()}, got {reply!r}")


def _reply(stream: socket.SocketIO | object) -> bytes:
    lines = []
    while True:
        line = stream.readline()  # type: ignore[attr-defined]
        if not line:
            raise RuntimeError("connection closed")
        lines.append(line)
        if line[3:4] != b"-":
            return b"".join(lines)


def start_data(sock: socket.socket) -> socket.SocketIO:
    """Greeting, EHLO, MAIL, RCPT and DATA on a new connection; the stream of replies."""
    stream = sock.makefile("rb")
    _reply(stream)
    for command in (b"EHLO client.bench.test", f"MAIL FROM:<{SENDER}>".encode(),
                    f"RCPT TO:<{RECIPIENT}>".encode(), b"DATA"):
        sock.sendall(command + b"\r\n")
        _reply(stream)
    return stream  # type: ignore[return-value]


def message_bytes(size: int) -> bytes:
    """A message of about size bytes, lines of 78 characters, like smtp-source's."""
    head = (f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: bench\r\n\r\n").encode()
    line = b"X" * 76 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def timed_messages(port: int, size: int, count: int) -> list[tuple[float, float]]:
    """One session at a time, one message per connection (as smtp-source does): per
    message, seconds from sending its last line to the 250 reply, and of the whole session
    (from connecting to the reply to QUIT)."""
    payload = message_bytes(size)
    body, end = payload, b".\r\n"
    times = []
    for _ in range(count):
        connecting = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            stream = start_data(sock)
            sock.sendall(body)
            started = time.perf_counter()
            sock.sendall(end)
            reply = _reply(stream)
            acknowledged = time.perf_counter() - started
            if not reply.startswith(b"250"):
                raise RuntimeError(f"message not accepted: {reply!r}")
            sock.sendall(b"QUIT\r\n")
            _reply(stream)
        times.append((acknowledged, time.perf_counter() - connecting))
    return times


def ack_latencies(port: int, size: int, count: int) -> list[float]:
    """timed_messages' acknowledgement latencies."""
    return [ack for ack, _session in timed_messages(port, size, count)]


def percentile(values: list[float], fraction: float) -> float:
    """The value below which that fraction of values lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def run_postfix(postfix: Postfix, load: Load, ca_file: Path | None = None) -> Sample:
    """One load against Postfix, until every message reached smtp-sink."""
    postfix.settle()
    before = postfix.delivered()
    assert postfix.sink is not None
    others = _Others(postfix.sink.pid)
    with ProcessTree(postfix.master_pid) as tree:
        seconds = send_load(postfix.port, load, ca_file)
        others.client_done()
        timed = timed_messages(postfix.port, load.size, load.timed)
        postfix.settle()
    count = load.messages + load.timed
    delivered = postfix.delivered() - before
    if delivered < count:
        log(f"warning: Postfix delivered {delivered} of {count} messages (log lag?)")
    return _sample("postfix", load, seconds, tree, count, timed, {}, others)


def run_sesrelay(relay: Sesrelay, load: Load, ca_file: Path | None = None) -> Sample:
    """One load against sesrelay; every message must have reached the spool sink."""
    relay.sink.reset()
    assert relay.process is not None and relay.sink.process is not None
    others = _Others(relay.sink.process.pid)
    with ProcessTree(relay.process.pid) as tree:
        seconds = send_load(relay.port, load, ca_file)
        others.client_done()
        timed = timed_messages(relay.port, load.size, load.timed)
    count = load.messages + load.timed
    stats = relay.sink.stats()
    if stats["sqs_messages"] != count:
        raise RuntimeError(f"sesrelay spooled {stats['sqs_messages']} of {count} messages")
    ops = stats["ops"]
    assert isinstance(ops, dict)
    requests = {op: n / count for op, n in sorted(ops.items())}
    return _sample(relay.side, load, seconds, tree, count, timed, requests, others)


class _Others:
    """The CPU of a load's client (smtp-source) and of the side's sink over one sample."""

    def __init__(self, sink_pid: int) -> None:
        self.sink_pid = sink_pid
        self.sink_base = _own_ticks(sink_pid)
        self.client_base = _children_seconds()
        self.client_seconds = 0.0

    def client_done(self) -> None:
        """Call when smtp-source has exited."""
        self.client_seconds = _children_seconds() - self.client_base

    def sink_seconds(self) -> float:
        """The sink's CPU since the sample began."""
        return (_own_ticks(self.sink_pid) - self.sink_base) / CLK_TCK


def _sample(side: str, load: Load, seconds: float, tree: ProcessTree, count: int,
            timed: list[tuple[float, float]], requests: dict[str, float],
            others: _Others) -> Sample:
    latency = {}
    if timed:
        acks, sessions = [t[0] for t in timed], [t[1] for t in timed]
        latency = {"p50": percentile(acks, 0.5) * 1000, "p99": percentile(acks, 0.99) * 1000,
                   "session_p50": percentile(sessions, 0.5) * 1000}
    return Sample(side, load.name, load.messages, seconds, load.messages / seconds,
                  tree.cpu_seconds() * 1000 / count, tree.peak_pss / 2**20, requests, latency,
                  others.client_seconds * 1000 / load.messages,
                  others.sink_seconds() * 1000 / count)


# --- relay-only targets ---------------------------------------------------------------

def big_message(relay: Sesrelay) -> dict[str, float]:
    """Send one 40 MiB message to a fresh one-process relay; RSS growth of that process."""
    [pid] = relay.pids()
    before = _rss(pid)
    payload = message_bytes(BIG_MESSAGE)
    with socket.create_connection(("127.0.0.1", relay.port), timeout=300) as sock:
        stream = start_data(sock)
        started = time.monotonic()
        sock.sendall(payload + b".\r\n")
        reply = _reply(stream)
        seconds = time.monotonic() - started
        sock.sendall(b"QUIT\r\n")
    hwm = int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text()
                   .splitlines() if line.startswith("VmHWM:"))) * 1024
    growth = hwm - before
    return {"accepted": float(reply.startswith(b"250")), "size_mb": len(payload) / 2**20,
            "seconds": seconds, "rss_before_mb": before / 2**20,
            "rss_peak_mb": hwm / 2**20, "growth_over_size": growth / len(payload)}


def idle_sessions(relay: Sesrelay, count: int) -> dict[str, float]:
    """Hold count idle sessions (greeted, EHLO answered) on a one-process relay, then send a
    message on a further session while they stay open."""
    [pid] = relay.pids()
    sockets: list[socket.socket] = []
    held = 0
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", relay.port), timeout=60)
            sockets.append(sock)
        for sock in sockets:
            stream = sock.makefile("rb")
            _reply(stream)
            sock.sendall(b"EHLO idle.bench.test\r\n")
            if _reply(stream).startswith(b"250"):
                held += 1
        latency = ack_latencies(relay.port, 10240, 1)[0]
        open_fds = len(os.listdir(f"/proc/{pid}/fd"))
        still_open = sum(1 for sock in sockets if _alive(sock))
    finally:
        for sock in sockets:
            sock.close()
    return {"sessions": float(count), "greeted": float(held), "still_open": float(still_open),
            "relay_fds": float(open_fds), "message_meanwhile_ms": latency * 1000,
            "rss_mb": _rss(pid) / 2**20}


def _alive(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


# --- report ---------------------------------------------------------------------------

def _medians(mine: list[Sample]) -> dict[str, object]:
    return {
        "msg_per_s": statistics.median(s.msg_per_s for s in mine),
        "cpu_ms_per_msg": statistics.median(s.cpu_ms_per_msg for s in mine),
        "peak_pss_mb": max(s.peak_pss_mb for s in mine),
        "latency_ms": {k: statistics.median(s.latency_ms[k] for s in mine)
                       for k in mine[0].latency_ms},
        "requests_per_msg": mine[-1].requests_per_msg,
        "client_cpu_ms_per_msg": statistics.median(s.client_cpu_ms_per_msg for s in mine),
        "sink_cpu_ms_per_msg": statistics.median(s.sink_cpu_ms_per_msg for s in mine),
    }


def summarise(samples: list[Sample], loads: list[Load]) -> list[dict[str, object]]:
    """Per load and relay side (the relay, and a variant if one ran beside it): the median
    of each figure, Postfix's, and the relay/postfix ratios."""
    relays = list(dict.fromkeys(s.side for s in samples if s.side != "postfix"))
    rows = []
    for load in loads:
        theirs = _medians([s for s in samples if s.side == "postfix" and s.load == load.name])
        for side in relays:
            ours = _medians([s for s in samples if s.side == side and s.load == load.name])
            rows.append({"load": load.name, "relay": side, "sesrelay": ours, "postfix": theirs,
                         "throughput_ratio": float(ours["msg_per_s"])  # type: ignore[arg-type]
                         / float(theirs["msg_per_s"]),  # type: ignore[arg-type]
                         "cpu_ratio": float(ours["cpu_ms_per_msg"])  # type: ignore[arg-type]
                         / float(theirs["cpu_ms_per_msg"])})  # type: ignore[arg-type]
    return rows


def table(rows: list[dict[str, object]]) -> str:
    """The results as a Markdown table."""
    lines = ["| load | relay | msg/s ratio | CPU/msg ratio | sesrelay msg/s | postfix msg/s | "
             "sesrelay CPU ms/msg | postfix CPU ms/msg | sesrelay peak PSS MB | "
             "postfix peak PSS MB | latency p50/p99 ms (sesrelay; postfix) | "
             "S3+SQS requests/msg |", "|" + "---|" * 12]
    for row in rows:
        ours, theirs = row["sesrelay"], row["postfix"]
        assert isinstance(ours, dict) and isinstance(theirs, dict)
        latency = "-"
        if ours["latency_ms"]:
            latency = (f"{ours['latency_ms']['p50']:.1f}/{ours['latency_ms']['p99']:.1f}; "
                       f"{theirs['latency_ms']['p50']:.1f}/{theirs['latency_ms']['p99']:.1f}")
        requests = ", ".join(f"{op} {n:.2f}" for op, n in ours["requests_per_msg"].items())
        lines.append(
            f"| {row['load']} | {row['relay']} | {row['throughput_ratio']:.2f} | "
            f"{row['cpu_ratio']:.2f} | "
            f"{ours['msg_per_s']:.0f} | {theirs['msg_per_s']:.0f} | "
            f"{ours['cpu_ms_per_msg']:.2f} | {theirs['cpu_ms_per_msg']:.2f} | "
            f"{ours['peak_pss_mb']:.0f} | {theirs['peak_pss_mb']:.0f} | {latency} | "
            f"{requests} |")
    return "\n".join(lines)


def whole_side_lines(rows: list[dict[str, object]]) -> str:
    """Per row, the CPU per message of everything each side kept busy (server, client,
    sink) and the throughput ratio those sums predict when the machine's CPUs are the
    limit: what separates the server's CPU ratio from the throughput ratio."""
    lines = []
    for row in rows:
        ours, theirs = row["sesrelay"], row["postfix"]
        assert isinstance(ours, dict) and isinstance(theirs, dict)
        totals = []
        for figures in (ours, theirs):
            parts = [float(figures[k]) for k in ("cpu_ms_per_msg", "client_cpu_ms_per_msg",
                                                 "sink_cpu_ms_per_msg")]
            totals.append((sum(parts), " + ".join(f"{p:.2f}" for p in parts)))
        lines.append(f"{row['load']}, {row['relay']}: CPU ms/msg server + client + sink: "
                     f"sesrelay {totals[0][1]} = {totals[0][0]:.2f}; postfix {totals[1][1]} = "
                     f"{totals[1][0]:.2f}; throughput ratio if CPU-bound "
                     f"{totals[1][0] / totals[0][0]:.2f}")
    return "\n".join(lines)


def chart(rows: list[dict[str, object]], path: Path) -> None:
    """Ratios per load (above 1.0 on throughput, below 1.0 on CPU favour sesrelay)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = len({r["relay"] for r in rows}) > 1
    names = [f"{r['load']}, {str(r['relay']).removeprefix('sesrelay ')}" if variants
             else str(r["load"]) for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(9, 5.4), dpi=110)
    width = 0.38
    ax.bar([i - width / 2 for i in x], [float(r["throughput_ratio"]) for r in rows],  # type: ignore[arg-type]
           width, label="throughput (msg/s), sesrelay/postfix", color="#2b7bba")
    ax.bar([i + width / 2 for i in x], [float(r["cpu_ratio"]) for r in rows],  # type: ignore[arg-type]
           width, label="CPU per message, sesrelay/postfix", color="#e08a2b")
    ax.axhline(1.0, color="black", linewidth=0.8)
    # Slanted, so that the loads' names do not run into each other.
    ax.set_xticks(list(x), names, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("ratio (1.0 = same as Postfix)")
    ax.set_title("sesrelay vs Postfix, same machine, same smtp-source loads")
    # Headroom above the tallest bar, so that the legend covers no bar or label.
    tallest = max(max(float(r["throughput_ratio"]), float(r["cpu_ratio"]))  # type: ignore[arg-type]
                  for r in rows)
    ax.set_ylim(0, tallest * 1.3)
    ax.legend(loc="upper right", fontsize=8)
    for i, r in enumerate(rows):
        ax.annotate(f"{float(r['throughput_ratio']):.2f}", (i - width / 2,  # type: ignore[arg-type]
                    float(r["throughput_ratio"])), ha="center", va="bottom", fontsize=8)  # type: ignore[arg-type]
        ax.annotate(f"{float(r['cpu_ratio']):.2f}", (i + width / 2,  # type: ignore[arg-type]
                    float(r["cpu_ratio"])), ha="center", va="bottom", fontsize=8)  # type: ignore[arg-type]
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def sizing(rows: list[dict[str, object]], processes: int) -> list[dict[str, float | str]]:
    """From the AWS-latency load, per relay side: messages per second per vCPU (the relay's
    CPU per message, all of it, at 100 % of a vCPU), the concurrent sessions 1,000 msg/s
    needs (Little's law: the rate times a lone session's time per message, connect to QUIT,
    one message per connection as smtp-source sends them; a busier relay's sessions take
    longer), and the Fargate tasks 1,000 msg/s needs at the size cdk.json gives prod, at
    the service's CPU scaling target."""
    from sesrelay.deployment import CPU_TARGET_PERCENT, FARGATE_CPU_UNITS_PER_VCPU

    prod_cpu = json.loads((REPO / "cdk.json").read_text())["context"]["environments"][
        "prod"]["service"]["cpu"]
    sized = []
    for row in rows:
        if row["load"] != AWS_LATENCY_LOAD:
            continue
        ours = row["sesrelay"]
        assert isinstance(ours, dict)
        per_vcpu = 1000 / float(ours["cpu_ms_per_msg"])
        seconds_per_message = float(ours["latency_ms"]["session_p50"]) / 1000
        task_vcpus = prod_cpu / FARGATE_CPU_UNITS_PER_VCPU
        sized.append({"relay": str(row["relay"]), "msg_per_s_per_vcpu": per_vcpu,
                      "session_seconds_per_msg": seconds_per_message,
                      "sessions_per_1000_msg_per_s": 1000 * seconds_per_message,
                      "prod_task_vcpus": task_vcpus, "cpu_target_percent": CPU_TARGET_PERCENT,
                      "prod_tasks_per_1000_msg_per_s":
                          1000 / (per_vcpu * task_vcpus * CPU_TARGET_PERCENT / 100),
                      "relay_processes_measured": processes})
    return sized


def sizing_line(sized: dict[str, float | str]) -> str:
    """One relay side's sizing, for the end of the run."""
    return (f"sizing, {sized['relay']}: {float(sized['msg_per_s_per_vcpu']):.0f} msg/s per vCPU; "
            f"1,000 msg/s needs {float(sized['sessions_per_1000_msg_per_s']):.0f} concurrent "
            f"sessions and {float(sized['prod_tasks_per_1000_msg_per_s']):.1f} prod tasks of "
            f"{float(sized['prod_task_vcpus']):g} vCPU at {sized['cpu_target_percent']} % CPU "
            f"(S3 {AWS_LATENCY_MS['s3']:g} ms, SQS {AWS_LATENCY_MS['sqs']:g} ms per call)")


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    postfix = subprocess.run(["postconf", "-h", "mail_version"], capture_output=True,
                             text=True).stdout.strip()
    return {"cpu": cpu, "vcpus": str(os.cpu_count()), "memory_gb": f"{int(memory) / 2**20:.1f}",
            "kernel": os.uname().release, "postfix": postfix}


# --- main -----------------------------------------------------------------------------

def loads_for(quick: bool) -> tuple[list[Load], int]:
    """The loads and the number of rounds (each round runs each side once)."""
    scale = 1 if quick else 2
    return [
        Load("20 sessions, 10 KB", 20, 10 * 1024, 3000 * scale),
        Load("1 session, 10 KB", 1, 10 * 1024, 200 * scale, timed=200 * scale),
        Load("20 sessions, 100 KB", 20, 100 * 1024, 600 * scale),
        Load("20 sessions, 1 MB", 20, 1024 * 1024, 100 * scale),
        Load("20 sessions, STARTTLS, 10 KB", 20, 10 * 1024, 600 * scale, tls=True),
        Load(AWS_LATENCY_LOAD, 20, 10 * 1024, 1500 * scale, timed=100, aws_latency=True),
    ], (4 if quick else 6)


def tls_settings(workdir: Path) -> tuple[dict[str, str], Path]:
    """TLS_SETTINGS with one self-signed certificate for both sides; and the file the
    client trusts (the certificate itself)."""
    from sesrelay.certificates import self_signed

    files = self_signed(workdir / "tls", [TLS_NAME])
    return ({**TLS_SETTINGS, "smtpd_tls_cert_file": str(files.cert_file),
             "smtpd_tls_key_file": str(files.key_file)}, files.cert_file)


@contextlib.contextmanager
def running(*parts: Postfix | SpoolSink | Sesrelay) -> Iterator[None]:
    """Start the parts in order; stop them in reverse order, whatever happens."""
    started: list[Postfix | SpoolSink | Sesrelay] = []
    try:
        for part in parts:
            part.start()
            started.append(part)
        yield
    finally:
        for part in reversed(started):
            part.stop()


def side_name(client: str, interpreter: dict[str, str], several: bool) -> str:
    """A relay side's name in the results: its spool client, and its interpreter when
    several are measured."""
    if not several:
        return f"sesrelay ({client})"
    return f"sesrelay ({client}, Python {interpreter['python']} {interpreter['python_source']})"


def interleave(rounds: int, *sides: Callable[[], Sample]) -> list[Sample]:
    """A, B, C, C, B, A, ...: each round runs every side, every other round in reverse
    order (ABBA for two sides), so drift hits every side alike."""
    samples = []
    for number in range(rounds):
        order = sides if number % 2 == 0 else tuple(reversed(sides))
        for run in order:
            samples.append(run())
            log(f"  {samples[-1].side:20s} {samples[-1].msg_per_s:8.1f} msg/s  "
                f"{samples[-1].cpu_ms_per_msg:6.2f} CPU ms/msg")
    return samples


def main() -> int:
    """Run the benchmark; print the table and end with the ratio line."""
    parser = argparse.ArgumentParser(description="sesrelay vs Postfix benchmark")
    parser.add_argument("--quick", action="store_true", help="the short run (< 5 minutes)")
    cpus = len(os.sched_getaffinity(0))
    parser.add_argument("--relay-processes", type=int, default=cpus,
                        help="sesrelay serve --processes (default: one per CPU)")
    parser.add_argument("--relay-cpu-affinity", action=argparse.BooleanOptionalAction,
                        default=True, help="sesrelay serve --cpu-affinity (default: on; "
                        "one process per CPU with affinity measured best, docs/BENCHMARKS.md)")
    from sesrelay.config import load_config

    default_client = load_config(Path(os.devnull), environ={}).sesrelay_spool_client
    parser.add_argument("--spool-client", choices=SPOOL_CLIENTS, default=default_client,
                        help="the relay's sesrelay_spool_client (default: the relay's own "
                        f"default, {default_client}); the final ratio line is this side's")
    parser.add_argument("--compare-spool-client", choices=[*SPOOL_CLIENTS, "none"],
                        help="also measure the relay with this spool client, interleaved in "
                        "the same rounds (default: the other one; none: skip)")
    parser.add_argument("--relay-python", action="append", metavar="PATH",
                        help="run the relay on this interpreter (in a virtualenv made for it "
                        "under bench/.venvs/); repeatable, each one a side of its own in the "
                        "same rounds; the final ratio line is the first one's (default: the "
                        "container image's Python version if the machine has it, "
                        "bench/interpreters.py)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this load, or 'limits' (the 40 MiB message and the "
                        "1,000 sessions); repeatable; for measuring one lever")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/run: Postfix needs root to start (run as root, e.g. in a container)",
              file=sys.stderr)
        return 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 sessions need fds
    if args.relay_python:
        pythons = [(path, "asked for with --relay-python") for path in args.relay_python]
        bin_dirs = [environment(path) for path, _ in pythons]
    else:
        pythons = [default_python()]
        try:
            bin_dirs = [environment(pythons[0][0])]
        except (OSError, subprocess.CalledProcessError) as exc:
            # e.g. a distribution Python without its venv module: measure what runs here.
            log(f"no virtualenv on {pythons[0][0]} ({exc}): the relay runs on {PYTHON}")
            pythons = [(PYTHON, f"the chosen interpreter could not make a virtualenv: {exc}")]
            bin_dirs = [Path(PYTHON).parent]
    interpreters = [{**describe(path), "chosen_because": why} for path, why in pythons]
    loads, rounds = loads_for(args.quick)
    if args.only:
        unknown = set(args.only) - {load.name for load in loads} - {"limits"}
        if unknown:
            parser.error(f"--only: no load named {', '.join(sorted(unknown))}")
        loads = [load for load in loads if load.name in args.only]
    out = REPO / "bench" / "results" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sesrelay-bench-") as tmp:
        work = Path(tmp)
        postfix, sink = Postfix(work), SpoolSink(work)
        other = args.compare_spool_client or next(
            c for c in SPOOL_CLIENTS if c != args.spool_client)
        clients = [args.spool_client] + ([other] if other not in ("none",
                                                                  args.spool_client) else [])
        sides = [(client, bin_dir, side_name(client, found, len(pythons) > 1))
                 for bin_dir, found in zip(bin_dirs, interpreters, strict=True)
                 for client in clients]
        relays = [Sesrelay(sink, args.relay_processes, work, args.relay_cpu_affinity,
                           spool_client=client, bin_dir=bin_dir, side=name)
                  for client, bin_dir, name in sides]
        # The TLS load's pair: the other loads keep servers without TLS, as measured before.
        tls, ca_file = tls_settings(work)
        tls_postfix = Postfix(work, tls)
        tls_relays = [Sesrelay(sink, args.relay_processes, work, args.relay_cpu_affinity, tls,
                               spool_client=client, bin_dir=bin_dir, side=name)
                      for client, bin_dir, name in sides]
        tls_parts = (tls_postfix, *tls_relays) if any(load.tls for load in loads) else ()
        far_sink = SpoolSink(work, AWS_LATENCY_MS)
        far_relays = [Sesrelay(far_sink, args.relay_processes, work, args.relay_cpu_affinity,
                               spool_client=client, bin_dir=bin_dir, side=name)
                      for client, bin_dir, name in sides]
        far_parts = (far_sink, *far_relays) if any(load.aws_latency for load in loads) else ()
        samples: list[Sample] = []
        with running(postfix, sink, *relays, *tls_parts, *far_parts):
            for load in loads:
                log(f"load: {load.name} ({load.messages} messages)")
                side_postfix, side_relays = (tls_postfix, tls_relays) if load.tls else \
                    (postfix, far_relays) if load.aws_latency else (postfix, relays)
                samples += interleave(
                    rounds,
                    lambda load=load, side=side_postfix: run_postfix(side, load, ca_file),
                    *(lambda load=load, side=side: run_sesrelay(side, load, ca_file)
                      for side in side_relays))
            rows = summarise(samples, loads)
            best = max((float(r["sesrelay"]["msg_per_s"]) for r in rows  # type: ignore[index]
                        if r["load"] != AWS_LATENCY_LOAD), default=1.0)
            log("spool sink capacity")
            capacity = sink.capacity(3.0 if args.quick else 5.0)
        limits: dict[str, dict[str, float]] = {}
        if not args.only or "limits" in args.only:
            single = Sesrelay(sink, 1, work, bin_dir=bin_dirs[0])
            with running(sink, single):
                log("one relay process: a 40 MiB message")
                limits["big_message"] = big_message(single)
                log("one relay process: 1,000 idle sessions")
                limits["idle_sessions"] = idle_sessions(single, 1000)
    results = {"machine": machine(), "quick": args.quick, "rounds": rounds,
               "spool_clients": clients, "relay_interpreters": interpreters,
               "relay_processes": args.relay_processes,
               "relay_cpu_affinity": args.relay_cpu_affinity, "rows": rows,
               "samples": [asdict(s) for s in samples],
               "sink_capacity_msg_per_s": capacity, "sink_capacity_over_relay": capacity / best,
               "limits": limits, "sizing": sizing(rows, args.relay_processes),
               "seconds": time.monotonic() - started}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    interpreter_line = "\n".join(
        f"relay interpreter: Python {found['python']} ({found['python_executable']}, "
        f"{found['python_source']}; PGO {found['python_pgo']}, LTO {found['python_lto']} as "
        f"declared by its build; {found['chosen_because']})" for found in interpreters)
    (out / "table.md").write_text(table(rows) + "\n\n" + whole_side_lines(rows) + "\n\n"
                                  + interpreter_line + "\n")
    if rows:  # none with --only limits
        chart(rows, out / "chart.png")
    print(table(rows))
    print(f"\n{whole_side_lines(rows)}")
    print(f"\n{interpreter_line}")
    print(f"\nspool sink capacity: {capacity:.0f} msg/s" + (
        f" = {capacity / best:.1f}x the best sesrelay rate of this run" if rows else ""))
    for sized in results["sizing"]:  # type: ignore[attr-defined]
        print(sizing_line(sized))
    for name, figures in limits.items():
        print(f"{name}: " + ", ".join(f"{k}={v:.2f}" for k, v in figures.items()))
    print(f"results: {out} ({results['seconds']:.0f} s)")
    head = next((r for r in rows if r["load"] == "20 sessions, 10 KB"
                 and r["relay"] == sides[0][2]), None)
    if head is not None:
        ours, theirs = head["sesrelay"], head["postfix"]
        assert isinstance(ours, dict) and isinstance(theirs, dict)
        print(f"sesrelay/postfix throughput ratio: {head['throughput_ratio']:.2f} "
              f"(spool client {args.spool_client}) "
              f"(sesrelay {ours['msg_per_s']:.0f} msg/s, postfix {theirs['msg_per_s']:.0f} "
              f"msg/s; 20 sessions, 10 KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
