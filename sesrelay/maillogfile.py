"""The maillog file of `sesrelay dev`: what syslog's /var/log/maillog is to Postfix.

`sesrelay dev` runs the relay, the worker and the events handler in one process. A
MaillogFileHandler on the root logger writes, as full maillog lines (sesrelay.logformat):

- every line of the relay (loggers under ``sesrelay``), as the relay writes to stderr;
- every record of any logger that carries a maillog line: the worker's and the events
  handler's powertools records with the extra keys ``maillog`` (the text) and
  ``maillog_program`` (the daemon), for example
  ``logger.info(text, maillog=text, maillog_program="smtp")``.

Other records (the worker's structured JSON, library chatter) stay where they are. The
file is appended to, line by line, so that `sesrelay maillog`, ``tail -f`` and pflogsumm
read it while `sesrelay dev` runs. Its default place is per emulation port, so that the
`sesrelay maillog` of a dev instance finds its file from the same ``--endpoint``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TextIO

from sesrelay import maillog
from sesrelay.logformat import MAILLOG_TEXT, MaillogFormatter

# Loggers whose every record is a maillog line: the relay's (and the dev loop's).
RELAY_LOGGERS = "sesrelay"


def state_directory() -> Path:
    """``$XDG_STATE_HOME/sesrelay`` (``~/.local/state/sesrelay`` when unset): where
    `sesrelay dev` keeps its maillog file and its TLS certificate."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "sesrelay"


def default_path(aws_port: int) -> Path:
    """Where `sesrelay dev --aws-port aws_port` writes its maillog by default:
    ``$XDG_STATE_HOME/sesrelay/dev-<port>.maillog``."""
    return state_directory() / f"dev-{aws_port}.maillog"


def wanted(record: logging.LogRecord) -> bool:
    """True for the records the maillog file holds."""
    return (bool(getattr(record, MAILLOG_TEXT, None))
            or record.name == RELAY_LOGGERS or record.name.startswith(RELAY_LOGGERS + "."))


class MaillogFileHandler(logging.Handler):
    """Appends maillog lines to a file, one write per line."""

    def __init__(self, path: Path, host: str | None = None) -> None:
        super().__init__(level=logging.INFO)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Line-buffered: each line is in the file as soon as it is logged.
        self.stream: TextIO = path.open("a", encoding="utf-8", buffering=1)
        self.setFormatter(MaillogFormatter(host))

    def filter(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        """Choose by content alone. powertools adds a filter to every handler of the root
        logger that hides its own loggers' records (so that they are not printed twice);
        this handler wants exactly those records that carry a maillog line."""
        return wanted(record)

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record's line."""
        try:
            self.stream.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        """Close the file."""
        self.acquire()
        try:
            self.stream.close()
        finally:
            self.release()
        super().close()


def install(path: Path, host: str | None = None) -> MaillogFileHandler:
    """Start writing the maillog file: a MaillogFileHandler on the root logger. Raises
    OSError when the file cannot be opened."""
    handler = MaillogFileHandler(path, host)
    logging.getLogger().addHandler(handler)
    return handler


def read(path: Path, since: datetime | None = None) -> Iterator[str]:
    """The lines of a maillog file written at or after since, in time order (lines
    without a timestamp stay after the line before them)."""
    with path.open(encoding="utf-8", errors="replace") as stream:
        lines = [line.rstrip("\n") for line in stream]
    stamped: list[tuple[datetime, int, str]] = []
    last: datetime | None = None
    for number, text in enumerate(lines):
        last = maillog.line_time(text) or last
        if last is None or (since is not None and last < since):
            continue
        stamped.append((last, number, text))
    # Lines are appended as they are logged, by threads that may interleave: sorting
    # (stable, nearly in order already) makes the merge exact.
    stamped.sort()
    for _when, _number, text in stamped:
        yield text
