"""Log records as maillog lines: ``<RFC 3339 time> <host> sesrelay/<daemon>[<pid>]: <text>``.

The relay writes its log this way to stderr (which becomes CloudWatch Logs in AWS), so
that grep, pflogsumm (``--syslog-name=sesrelay``) and `sesrelay maillog` read it as they
read Postfix's maillog; `sesrelay dev` writes its maillog file with the same formatter.

A record names its daemon with the attribute MAILLOG_PROGRAM
(``log.info(text, extra={"maillog_program": "smtpd"})``); without one, the daemon is the
logger's default below. A record with the attribute MAILLOG_TEXT (as the worker's are)
is written with exactly that text; any other warning or error carries Postfix's
``warning:`` or ``error:`` prefix, as Postfix's msg_warn() and msg_error() write them. One record is
always one line: control characters are escaped as rsyslog does (``#012`` for a newline),
so that nothing a client sent, and no traceback, can start a line of its own.
"""

from __future__ import annotations

import logging
import re
import socket

from sesrelay import maillog

# Record attributes (set with extra=...): the line's text and the daemon that writes it.
MAILLOG_TEXT = "maillog"
MAILLOG_PROGRAM = "maillog_program"

# The daemon of records that name none, by logger. The relay's lines, and aiosmtpd's own
# ("mail.log"), are smtpd's (its sessions, policy and handoff); anything else (the dev
# worker loop, library warnings) is the supervisor's, as Postfix's master writes such lines.
DEFAULT_PROGRAMS = {"sesrelay.relay": maillog.SMTPD, "mail.log": maillog.SMTPD}
FALLBACK_PROGRAM = "master"

_SEVERITY = ((logging.ERROR, "error: "), (logging.WARNING, "warning: "))
# Text that already names its severity, or a queue ID and then an action, as Postfix's
# own lines do ("warning: ...", "<ID>: warning: header ...", "<ID>: reject: ...").
_ALREADY_MARKED = re.compile(r"^(?:(?:warning|error|fatal|panic):|[^\s:]+: (?:warning|error|"
                             r"fatal|panic|reject|reject_warning|discard|hold|info):)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def escape_controls(text: str) -> str:
    """text with each control character written as '#' and three octal digits, as
    rsyslog escapes them: a record stays one line."""
    if text.isprintable():  # no control character (the usual case), without the regex
        return text
    return _CONTROL.sub(lambda m: f"#{ord(m.group()):03o}", text)


def program_of(record: logging.LogRecord) -> str:
    """The Postfix daemon a record is written under."""
    program = getattr(record, MAILLOG_PROGRAM, None)
    if program:
        return str(program)
    name = record.name
    while name:
        if name in DEFAULT_PROGRAMS:
            return DEFAULT_PROGRAMS[name]
        name = name.rpartition(".")[0]
    return FALLBACK_PROGRAM


def text_of(record: logging.LogRecord, formatter: logging.Formatter | None = None) -> str:
    """The text after ``program[pid]: ``: the record's maillog text (or message), with
    Postfix's severity prefix and any exception, on one line."""
    text = getattr(record, MAILLOG_TEXT, None)
    if text:
        # A maillog line is Postfix's text exactly: its record's level is the writer's
        # severity for CloudWatch (a deferral is a warning there), not a "warning:" that
        # would hide a status=deferred line from pflogsumm.
        text = str(text)
    else:
        text = record.getMessage()
        for level, prefix in _SEVERITY:
            if record.levelno >= level:
                if not _ALREADY_MARKED.match(text):
                    text = prefix + text
                break
    if record.exc_info:
        text += "\n" + (formatter or logging.Formatter()).formatException(record.exc_info)
    return escape_controls(text)


class MaillogFormatter(logging.Formatter):
    """Formats any record as a full maillog line (without the newline)."""

    def __init__(self, host: str | None = None) -> None:
        super().__init__()
        self.host = host or socket.gethostname() or "localhost"

    def format(self, record: logging.LogRecord) -> str:
        """The record as one maillog line."""
        return maillog.line(program_of(record), text_of(record, self),
                            maillog.epoch_timestamp(record.created), self.host,
                            record.process or 0)
