"""SMTP replies, in Postfix's codes and wording."""

from __future__ import annotations

OK = "250 2.0.0 Ok"
SENDER_OK = "250 2.1.0 Ok"
RECIPIENT_OK = "250 2.1.5 Ok"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, closing transmission channel"
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"
SPOOL_FAILED = "451 4.3.0 Error: queue file write error"
SIZE_EXCEEDED = "552 5.3.4 Message size exceeds fixed limit"
LINE_TOO_LONG = "500 5.5.2 Error: line too long (RFC 5321 section 4.5.3.1.6)"
NEED_RECIPIENT = "554 5.5.1 Error: no valid recipients"
BAD_ADDRESS = "501 5.1.3 Bad recipient address syntax"
BAD_SENDER = "501 5.1.7 Bad sender address syntax"
CONTENT_REJECTED = "Message content rejected"


def queued(queue_id: str) -> str:
    """The reply to an accepted message."""
    return f"250 2.0.0 Ok: queued as {queue_id}"


def bare_newline(hostname: str) -> str:
    """Postfix 3.9's reply to a bare <CR> or <LF> in DATA (smtpd_forbid_bare_newline)."""
    return f"521 5.5.2 {hostname} Error: bare <CR> or <LF> received"


def soften(reply: str, soft_bounce: bool) -> str:
    """With soft_bounce, a 5xx reply becomes 4xx, its enhanced status code too."""
    if not soft_bounce or not reply.startswith("5"):
        return reply
    code, _, rest = reply.partition(" ")
    if rest[:2] == "5.":
        rest = "4" + rest[1:]
    return "4" + code[1:] + " " + rest
