"""`sesrelay maillog`: the relay's, the worker's and the events handler's maillog lines,
merged in time order, so that ``sesrelay maillog | pflogsumm --syslog-name=sesrelay``
works as it does on Postfix's maillog.

- Without ``--env``: the maillog file `sesrelay dev` writes (sesrelay.maillogfile), found
  from ``--endpoint``'s port as dev chose it, or given with ``--file``.
- With ``--env NAME``: CloudWatch Logs (FilterLogEvents) on the log groups the stack's
  outputs name. The relay's events are already full maillog lines; the Lambda functions'
  are powertools JSON records, and those with a ``maillog`` key become lines: their
  ``timestamp``, the function's name as the host, ``sesrelay/<maillog_program>`` and,
  since a Lambda function has no stable process ID, a number derived from the log stream
  (one stream is one execution environment) as the pid.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sesrelay import deployment, maillog, maillogfile
from sesrelay.cli import where
from sesrelay.cli.common import duration, now
from sesrelay.logformat import FALLBACK_PROGRAM, escape_controls

# The term that selects the Lambda functions' maillog records (each has a "maillog" key).
LAMBDA_FILTER = "maillog"
# powertools' default timestamp: "2026-11-28 10:02:03,123+0000".
_POWERTOOLS_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[.,](\d+))?"
                              r"\s*(Z|[+-]\d{2}:?\d{2})?$")


def powertools_time(value: Any) -> datetime | None:
    """A powertools ``timestamp`` as a datetime (None if it is not one)."""
    match = _POWERTOOLS_TIME.match(str(value or "").strip())
    if not match:
        return None
    day, clock, fraction, zone = match.groups()
    zone = (zone or "+00:00").replace("Z", "+00:00")
    if len(zone) == 5:
        zone = f"{zone[:3]}:{zone[3:]}"
    return datetime.fromisoformat(f"{day}T{clock}.{(fraction or '0')[:6]:0<6}{zone}")


def stream_pid(stream: str) -> int:
    """A stable stand-in pid for a log stream."""
    return zlib.crc32(stream.encode()) % 90000 + 10000


def _event_time(event: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(int(event["timestamp"]) / 1000, UTC)


def relay_line(event: dict[str, Any], group: str) -> tuple[datetime, str]:
    """A relay log event: already a maillog line (anything else, such as an interpreter's
    crash output, is wrapped as a line of the supervisor)."""
    text = event["message"].rstrip("\n")
    when = maillog.line_time(text)
    if when is not None:
        return when, text
    host = event.get("logStreamName", "").rpartition("/")[2] or group
    when = _event_time(event)
    return when, maillog.line(FALLBACK_PROGRAM, escape_controls(text), when, host,
                              stream_pid(event.get("logStreamName", "")))


def lambda_line(event: dict[str, Any], group: str) -> tuple[datetime, str] | None:
    """A Lambda log event as a maillog line, if it is a record with a maillog key."""
    try:
        record = json.loads(event["message"])
    except ValueError:
        return None
    if not isinstance(record, dict) or not record.get("maillog"):
        return None
    when = powertools_time(record.get("timestamp")) or _event_time(event)
    host = str(record.get("function_name") or group.rpartition("/")[2] or "lambda")
    program = str(record.get("maillog_program") or maillog.SMTP)
    stream = event.get("logStreamName", "")
    return when, maillog.line(program, escape_controls(str(record["maillog"])), when, host,
                              stream_pid(stream))


def cloudwatch_lines(location: where.Location, since: datetime) -> Iterator[str]:
    """The environment's maillog lines since then, merged in time order."""
    logs = location.client("logs")
    sources = [(deployment.OUTPUT_RELAY_LOG_GROUP, True), (deployment.OUTPUT_WORKER_LOG_GROUP,
                                                          False)]
    if location.outputs.get(deployment.OUTPUT_EVENTS_LOG_GROUP):  # only with events
        sources.append((deployment.OUTPUT_EVENTS_LOG_GROUP, False))
    found: list[tuple[datetime, int, str]] = []
    for output, is_relay in sources:
        group = location.output(output)
        query: dict[str, Any] = {"logGroupName": group,
                                 "startTime": int(since.timestamp() * 1000)}
        if not is_relay:
            query["filterPattern"] = LAMBDA_FILTER
        for page in logs.get_paginator("filter_log_events").paginate(**query):
            for event in page.get("events", []):
                line = relay_line(event, group) if is_relay else lambda_line(event, group)
                if line is not None and line[0] >= since:
                    found.append((line[0], len(found), line[1]))
    found.sort()
    for _when, _number, text in found:
        yield text


def cmd_maillog(args: argparse.Namespace) -> int:
    """Print the maillog lines of the last --since."""
    since = now() - args.since
    if args.env:
        lines = cloudwatch_lines(where.resolve(args), since)
    else:
        path = Path(args.file) if args.file else maillogfile.default_path(
            where.endpoint_port(args.endpoint))
        if not path.exists():
            print(f"sesrelay maillog: no maillog file {path}: is `sesrelay dev` running "
                  "(with this --endpoint)? It writes one as it starts", file=sys.stderr)
            return 1
        lines = maillogfile.read(path, since)
    for line in lines:
        sys.stdout.write(line + "\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `maillog`."""
    command = commands.add_parser(
        "maillog", help="relay, worker and events lines in maillog format, in time order "
        "(pipe into pflogsumm --syslog-name=sesrelay)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    command.add_argument("--since", type=duration, default=timedelta(hours=1),
                         help="lines of this long ago or later (30m, 1h, 7d; default 1h)")
    command.add_argument("--file", metavar="FILE",
                         help="read this maillog file (`sesrelay dev --maillog FILE`)")
    where.add_arguments(command)
    command.set_defaults(func=cmd_maillog)
