"""pflogsumm is the oracle of the maillog format: a log built from sesrelay.maillog's line
functions, as the relay, the worker and the events handler write them, summarised by
Debian's pflogsumm (1.1.5) exactly as the log says: received, delivered, deferred,
bounced and rejected counts, the per-domain tables, and the senders and recipients."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from sesrelay import maillog

PFLOGSUMM = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"
START = datetime(2026, 3, 2, 9, 0, 0, 120000, tzinfo=UTC)
RELAY = maillog.ses_relay("us-east-1")
CLIENT = maillog.client_name("10.1.2.3")


class Log:
    """A maillog written line by line, as the relay task and the Lambda functions would."""

    def __init__(self) -> None:
        self.lines: list[tuple[datetime, str]] = []

    def add(self, minutes: float, program: str, text: str, host: str = "ip-10-0-1-5",
            pid: int = 1234) -> None:
        when = START + timedelta(minutes=minutes)
        self.lines.append((when, maillog.line(program, text, when, host, pid)))

    def received(self, minutes: float, queue_id: str, sender: str, size: int,
                 recipients: int) -> None:
        """The relay's two lines for an accepted message."""
        self.add(minutes, maillog.SMTPD, maillog.client(queue_id, "10.1.2.3"))
        self.add(minutes, maillog.QMGR, maillog.queued(queue_id, sender, size, recipients))

    def delivery(self, minutes: float, queue_id: str, recipient: str, status: str,
                 dsn: str, text: str, delay: float = 0.4) -> None:
        """The worker's line for one recipient."""
        self.add(minutes, maillog.SMTP, maillog.delivery(
            queue_id, recipient, relay=RELAY, delay=delay, delays=(0.01, 0, 0.02, delay),
            dsn=dsn, status=status, text=text), host="sesrelay-test-worker", pid=20817)

    def text(self) -> str:
        """The lines in time order, as `sesrelay maillog` merges them."""
        return "".join(f"{line}\n" for _when, line in sorted(self.lines, key=lambda x: x[0]))


SES_OK = "250 Ok 0100018c2b7a1f3e-6a4b2c1d-8e9f-4a5b-b6c7-d8e9f0a1b2c3-000000"
THROTTLED = "454 4.7.0 Throttling: Maximum sending rate exceeded"


def day_of_mail() -> Log:
    """A morning's mail: what each message should count as is in the comments."""
    log = Log()
    # M1: one message to three recipients, sent to each (3 delivered, 1 received);
    # later SES's BOUNCE event for one of them (1 bounced).
    log.received(0, "M1DKV5Q3N7B1XR4W", "app@example.com", 2048, 3)
    for recipient in ("ann@example.org", "bob@example.net", "Cy@Example.NET"):
        log.delivery(0.1, "M1DKV5Q3N7B1XR4W", recipient, "sent", "2.0.0", SES_OK)
    log.add(0.1, maillog.QMGR, maillog.removed("M1DKV5Q3N7B1XR4W"))
    log.delivery(2, "M1DKV5Q3N7B1XR4W", "Cy@Example.NET", "bounced", "5.1.1",
                 "SES bounce: smtp; 550 5.1.1 user unknown")
    # M2: deferred once (throttled), sent five minutes later.
    log.received(1, "M2DKV5Q3P8C2YS5X", "billing@example.com", 4096, 1)
    log.delivery(1, "M2DKV5Q3P8C2YS5X", "dave@example.org", "deferred", "4.7.0", THROTTLED)
    log.delivery(6, "M2DKV5Q3P8C2YS5X", "dave@example.org", "sent", "2.0.0", SES_OK,
                 delay=300.5)
    log.add(6, maillog.QMGR, maillog.removed("M2DKV5Q3P8C2YS5X"))
    # M3: SES refuses the recipient: bounced, and a DSN (a message of its own, which
    # pflogsumm counts as delivered but not as received) goes back to the sender.
    log.received(65, "M3DKV5Q3Q9D3ZT6Y", "app@example.com", 1024, 1)
    log.delivery(65, "M3DKV5Q3Q9D3ZT6Y", "nobody@example.net", "bounced", "5.1.1",
                 "554 Message rejected: Address blacklisted")
    log.add(65, maillog.BOUNCE, maillog.bounce_notice("M3DKV5Q3Q9D3ZT6Y", "D3DKV5Q3R0F4BV7Z"))
    log.add(65, maillog.QMGR, maillog.queued("D3DKV5Q3R0F4BV7Z", "", 1500, 1))
    log.delivery(65, "D3DKV5Q3R0F4BV7Z", "app@example.com", "sent", "2.0.0", SES_OK)
    log.add(65, maillog.QMGR, maillog.removed("M3DKV5Q3Q9D3ZT6Y"))
    # M4: deferred twice, still waiting.
    log.received(70, "M4DKV5Q3S1G5CW8A", "ops@example.org", 512, 1)
    log.delivery(70, "M4DKV5Q3S1G5CW8A", "erin@example.net", "deferred", "4.7.0", THROTTLED)
    log.delivery(75, "M4DKV5Q3S1G5CW8A", "erin@example.net", "deferred", "4.7.0", THROTTLED)
    # Rejected: three NOQUEUE rejects at RCPT and MAIL, one by header_checks (whose
    # client= line counts it as received too).
    log.add(80, maillog.SMTPD, maillog.reject(
        "RCPT", maillog.client_name("203.0.113.9"),
        "554 5.7.1 <x@elsewhere.example>: Relay access denied",
        sender="spam@example.biz", recipient="x@elsewhere.example", helo="spammer"))
    log.add(81, maillog.SMTPD, maillog.reject(
        "RCPT", CLIENT, "550 5.1.1 <zed@example.org>: Recipient address rejected: User "
        "unknown in relay recipient table", sender="app@example.com",
        recipient="zed@example.org", helo="app.example.com"))
    log.add(82, maillog.SMTPD, maillog.reject(
        "MAIL", CLIENT, "552 5.3.4 Message size exceeds fixed limit", sender=None,
        helo="app.example.com"))
    log.add(83, maillog.SMTPD, maillog.client("M5DKV5Q3T2H6DX9B", "10.1.2.3"))
    log.add(83, maillog.CLEANUP, maillog.header_action(
        "M5DKV5Q3T2H6DX9B", "reject", "Subject: cheap pills", CLIENT,
        sender="app@example.com", recipient="ann@example.org", helo="app.example.com",
        text="5.7.1 message content rejected"))
    return log


def summarise(log_text: str) -> str:
    result = subprocess.run([PFLOGSUMM, "--syslog-name=sesrelay", "--problems-first"],
                            input=log_text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def sections(report: str) -> dict[str, list[str]]:
    """pflogsumm's sections by title (a line underlined with dashes): their lines."""
    lines = report.splitlines()
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for number, line in enumerate(lines):
        following = lines[number + 1] if number + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"-+", following) and len(following) >= len(
                line.strip()):
            current = found.setdefault(line.strip(), [])
        elif not re.fullmatch(r"-+", line):
            current.append(line)
    return found


def totals(report: str) -> dict[str, int]:
    """Grand Totals: each count by its name; deferrals from "deferred (N deferrals)"."""
    body = "\n".join(sections(report)["Grand Totals"])
    found = {m.group(2).strip(): int(m.group(1))
             for m in re.finditer(r"^\s+(\d+)\s+([a-z][a-z /.]+?)(?:\s+\(.*)?$", body, re.M)}
    deferrals = re.search(r"deferred\s+\((\d+)\s+deferrals\)", body)
    found["deferrals"] = int(deferrals.group(1)) if deferrals else 0
    return found


def table(report: str, title: str) -> list[list[str]]:
    """The data rows of one of pflogsumm's tables, split on white space."""
    return [row.split() for row in sections(report)[title] if row.strip() and not (
        row.lstrip().startswith(("--", "sent cnt", "msg cnt")))]


def detail(report: str, title: str) -> str:
    return "\n".join(sections(report)[title])


@pytest.fixture(scope="module")
def report() -> str:
    assert shutil.which(PFLOGSUMM), "pflogsumm is not installed: make system-packages"
    return summarise(day_of_mail().text())


def test_grand_totals(report: str) -> None:
    assert totals(report) | {"bytes received": 0} == {
        "received": 5,  # M1-M5 (client= lines)
        "delivered": 5,  # three recipients of M1, M2, the DSN
        "forwarded": 0,
        "deferred": 2,  # M2 and M4
        "deferrals": 3,  # M2 once, M4 twice
        "bounced": 2,  # M3, and M1's Cy after SES's event
        "rejected": 4,  # three NOQUEUE, one header_checks
        "reject warnings": 0,
        "held": 0,
        "discarded": 0,
        "bytes received": 0,
        "bytes delivered": 3 * 2048 + 4096 + 1500,
        "senders": 3,  # app, billing, ops (the DSN's null sender was not received)
        "sending hosts/domains": 2,
        "recipients": 5,  # ann, bob, cy, dave, app (the DSN)
        "recipient hosts/domains": 3,
    }
    assert re.search(r"^\s+4\s+rejected \(44%\)$", report, re.M)  # 4 of 4 + 5
    assert re.search(r"^\s+7680\s+bytes received$", report, re.M)  # M1-M4's sizes


def test_per_domain_tables(report: str) -> None:
    # sent cnt, bytes, defers, avg delay, max delay, domain (delays as pflogsumm rounds)
    delivery = {row[-1]: row[:3] for row in table(
        report, "Host/Domain Summary: Message Delivery")}
    assert delivery == {"example.org": ["2", "6144", "1"],  # ann, dave (deferred once)
                        "example.net": ["2", "4096", "2"],  # bob, cy; erin deferred twice
                        "example.com": ["1", "1500", "0"]}  # the DSN to app@
    received = {row[-1]: row[:2] for row in table(
        report, "Host/Domain Summary: Messages Received")}
    assert received == {"example.com": ["3", "7168"], "example.org": ["1", "512"]}


def test_senders_and_recipients(report: str) -> None:
    senders = {row[1]: int(row[0]) for row in table(report, "Senders by message count")}
    assert senders == {"app@example.com": 2, "billing@example.com": 1, "ops@example.org": 1}
    recipients = {row[1]: int(row[0]) for row in table(report, "Recipients by message count")}
    assert recipients == {"ann@example.org": 1, "bob@example.net": 1, "Cy@example.net": 1,
                          "dave@example.org": 1, "app@example.com": 1}


def test_problem_details(report: str) -> None:
    bounces = detail(report, "message bounce detail (by relay)")
    assert RELAY in bounces
    assert "Message rejected: Address blacklisted" in bounces
    deferrals = detail(report, "message deferral detail")
    assert re.search(r"smtp \(total: 3\)\n\s+3\s+4\.7\.0 Throttling: Maximum sending rate",
                     deferrals)
    rejects = detail(report, "message reject detail").strip("\n").splitlines()
    assert [line.strip() for line in rejects[:rejects.index("")]] == [
        "MAIL",
        "5.3.4 Message size exceeds fixed limit (total: 1)",
        "1   10.1.2.3",
        "RCPT",
        "Recipient address rejected: User unknown in relay recipient table (total: 1)",
        "1   zed@example.org",
        "Relay access denied (total: 1)",
        "1   203.0.113.9",
        "cleanup",
        "header (total: 1)",
        "1   Subject: cheap pills",
    ]
