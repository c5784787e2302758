"""A private Debian Postfix 3.x for the tests: its own configuration and queue in a temp
directory, listening on loopback, started with ``postfix -c DIR start-fg``."""

from __future__ import annotations

import contextlib
import os
import shutil
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from tests.support import free_port, wait_for_port

POSTFIX = "/usr/sbin/postfix"
SENDMAIL = "/usr/sbin/sendmail"
POSTQUEUE = "/usr/sbin/postqueue"


def postfix_unavailable() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    if not Path(POSTFIX).exists():
        return f"{POSTFIX} is missing: the test needs Debian's postfix package"
    if os.geteuid() != 0:
        return ("the test needs root: postfix -c DIR start-fg runs its daemons as the "
                "postfix user")
    return None


requires_postfix = pytest.mark.skipif(postfix_unavailable() is not None,
                                      reason=postfix_unavailable() or "")

# Debian's master.cf services that a relaying Postfix uses, without chroot (the temp
# directory is no chroot jail) and with smtpd on one loopback port. showq serves
# postqueue -p; pickup takes what sendmail drops into maildrop.
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n - 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - n - - showq
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


@dataclass
class PrivatePostfix:
    """A running private Postfix: its configuration directory, SMTP port and log."""

    conf: Path
    port: int
    log: Path

    def sendmail(self, arguments: list[str], message: bytes) -> None:
        """Submit message as a local program does: Postfix's sendmail -C conf."""
        subprocess.run([SENDMAIL, "-C", str(self.conf), *arguments], input=message,
                       check=True, capture_output=True, timeout=30)

    def queue_is_empty(self) -> bool:
        """Whether postqueue -p finds nothing in the queue (maildrop included)."""
        listing = subprocess.run([POSTQUEUE, "-c", str(self.conf), "-p"], check=True,
                                 capture_output=True, text=True, timeout=30).stdout
        return listing.strip() == "Mail queue is empty"

    def wait_for_empty_queue(self, timeout: float = 30) -> None:
        """Poll until Postfix has delivered (or bounced) everything; fail after timeout."""
        deadline = time.monotonic() + timeout
        while not self.queue_is_empty():
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.2)


@contextlib.contextmanager
def private_postfix(main_cf: str, prefix: str = "sesrelay-postfix-"
                    ) -> Iterator[PrivatePostfix]:
    """Postfix with main_cf's parameters, plus those that give it its own directories,
    loopback only and a log file. The directory is created outside pytest's (mode 700)
    tree: Postfix's daemons run as the postfix user and must reach it."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    conf, queue, data = base / "conf", base / "queue", base / "data"
    for directory in (conf, queue, data):
        directory.mkdir()
    shutil.chown(data, "postfix")
    port = free_port()
    log = base / "postfix.log"
    (conf / "main.cf").write_text(main_cf + f"""
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file = /dev/stdout
alias_maps =
alias_database =
""")
    (conf / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{port}"))
    with log.open("wb") as out:
        process = subprocess.Popen([POSTFIX, "-c", str(conf), "start-fg"], stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, timeout=30)
        yield PrivatePostfix(conf, port, log)
    finally:
        subprocess.run([POSTFIX, "-c", str(conf), "stop"], capture_output=True, timeout=30)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Delivered:
    """What one party would deliver: replies to RCPT and DATA, envelope, message."""

    rcpt_replies: list[int] = field(default_factory=list)
    data_reply: int = 0
    mail_from: str = ""
    rcpt_to: list[str] = field(default_factory=list)
    message: bytes = b""

    def header(self, name: str) -> list[str]:
        """Every value of header name, unfolded."""
        parsed = message_from_bytes(self.message)
        return [" ".join(str(v).split()) for v in parsed.get_all(name, [])]


class Sink:
    """aiosmtpd handler: every transaction Postfix relays, by Subject."""

    def __init__(self) -> None:
        self.received: dict[str, Delivered] = {}

    async def handle_DATA(self, server: object, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        subject = message_from_bytes(content)["Subject"]
        got = self.received.setdefault(subject, Delivered())
        got.mail_from = envelope.mail_from or ""
        got.rcpt_to.extend(envelope.rcpt_tos)
        got.message = content
        return "250 2.0.0 Ok"


def send(port: int, sender: str, recipients: list[str], message: bytes) -> Delivered:
    """One SMTP transaction; the replies to RCPT and DATA."""
    got = Delivered()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.org")
        client.mail(sender)
        for recipient in recipients:
            got.rcpt_replies.append(client.rcpt(recipient)[0])
        if 250 in got.rcpt_replies:
            got.data_reply = client.data(message)[0]
    return got


def write_tables(directory: Path, tables: dict[str, str]) -> Path:
    """Write each table (name: text, lines stripped) into directory, readable by
    Postfix's daemons (they run as the postfix user); directory itself."""
    directory.chmod(0o755)
    for name, text in tables.items():
        (directory / name).write_text(
            "\n".join(line.strip() for line in text.splitlines()) + "\n")
    return directory


@dataclass
class RelayingPostfix:
    """A running private Postfix that relays everything to a Python sink, and the
    main.cf lines it was given (the parameters a case shares with sesrelay)."""

    postfix: PrivatePostfix
    sink: Sink
    main_cf: str

    def relay(self, subject: str, sender: str, recipients: list[str],
              message: bytes) -> Delivered:
        """Send through Postfix; wait for the sink to get what Postfix delivers."""
        got = send(self.postfix.port, sender, recipients, message)
        if got.data_reply == 250:
            deadline = time.monotonic() + 30
            while subject not in self.sink.received:
                assert time.monotonic() < deadline, self.postfix.log.read_text()[-3000:]
                time.sleep(0.1)
            time.sleep(0.3)  # Postfix may split a message's recipients over deliveries
            delivered = self.sink.received[subject]
            got.mail_from, got.rcpt_to, got.message = (
                delivered.mail_from, delivered.rcpt_to, delivered.message)
        return got


@contextlib.contextmanager
def relaying_postfix(main_cf: str) -> Iterator[RelayingPostfix]:
    """A private Postfix with main_cf, relaying to a sink on loopback. Its own lines, which
    main_cf may override, make the loopback client remote (local_header_rewrite_clients
    empty), as every sesrelay client is behind the NLB, and give it no local domain."""
    sink = Sink()
    sink_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink_port)
    controller.start()
    try:
        with private_postfix(f"""\
compatibility_level = 3.6
myhostname = oracle.example.net
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
local_header_rewrite_clients =
""" + main_cf) as postfix:
            yield RelayingPostfix(postfix, sink, main_cf)
    finally:
        controller.stop()
