"""SMTP replies, in Postfix's codes and wording."""

from __future__ import annotations

# Each from Postfix 3.7's smtpd.c, in the function named beside it.
OK = "250 2.0.0 Ok"
SENDER_OK = "250 2.1.0 Ok"
RECIPIENT_OK = "250 2.1.5 Ok"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, closing transmission channel"
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"
SPOOL_FAILED = "451 4.3.0 Error: queue file write error"
SIZE_EXCEEDED = "552 5.3.4 Message size exceeds fixed limit"
# data_cmd(), from cleanup's CLEANUP_STAT_HOPS (cleanup_stat_detail): hopcount_limit.
TOO_MANY_HOPS = "554 5.4.0 Error: too many hops"
# sesrelay's own: re-encoding a signed part to fit SES's line limit breaks its signature.
SIGNED_LONG_LINES = ("554 5.6.0 Error: a multipart/signed part has a line longer than 998 "
                     "octets, which cannot be relayed without breaking its signature")
BAD_ADDRESS = "501 5.1.3 Bad recipient address syntax"  # rcpt_cmd()
BAD_SENDER = "501 5.1.7 Bad sender address syntax"  # mail_cmd()
BYE = "221 2.0.0 Bye"  # quit_cmd()
NEED_HELO = "503 5.5.1 Error: send HELO/EHLO first"  # mail_cmd(), smtpd_helo_required
NESTED_MAIL = "503 5.5.1 Error: nested MAIL command"  # mail_cmd()
MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM:<address>"  # mail_cmd()
BAD_SIZE = "501 5.5.4 Bad message size syntax"  # mail_cmd()
NEED_MAIL = "503 5.5.1 Error: need MAIL command"  # rcpt_cmd()
RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO:<address>"  # rcpt_cmd()
NEED_RECIPIENT = "503 5.5.1 Error: need RCPT command"  # data_cmd()
NO_VALID_RECIPIENTS = "554 5.5.1 Error: no valid recipients"  # data_cmd()
DATA_SYNTAX = "501 5.5.4 Syntax: DATA"  # data_cmd()
RSET_SYNTAX = "501 5.5.4 Syntax: RSET"  # rset_cmd()
VRFY_DISABLED = "502 5.5.1 VRFY command is disabled"  # vrfy_cmd(), disable_vrfy_command
NOT_IMPLEMENTED = "502 5.5.1 Error: command not implemented"  # unimpl_cmd()
BDAT_NOT_IMPLEMENTED = "521 5.5.1 Error: command not implemented"  # bdat_cmd()
UNKNOWN_COMMAND = "500 5.5.2 Error: command not recognized"  # smtpd_proto()
BAD_SYNTAX = "500 5.5.2 Error: bad syntax"  # smtpd_proto()
BAD_UTF8 = "500 5.5.2 Error: bad UTF-8 syntax"  # smtpd_proto()
NON_SMTP_COMMAND = "221 2.7.0 Error: I can break rules, too. Goodbye."  # smtpd_proto()
CONTENT_REJECTED = "Message content rejected"
# sesrelay's own: after virtual alias expansion the envelope must still fit one SQS
# message (sesrelay.spool.ENVELOPE_LIMIT). X.5.3 is RFC 3463's "too many recipients".
TOO_MANY_EXPANDED = "552 5.5.3 Error: too many recipients after address expansion"


def queued(queue_id: str) -> str:
    """The reply to an accepted message."""
    return f"250 2.0.0 Ok: queued as {queue_id}"


def unsupported_option(option: str) -> str:
    """mail_cmd(), rcpt_cmd(): an ESMTP parameter the relay does not know (printable)."""
    return f"555 5.5.4 Unsupported option: {option}"


def utf8_local_part(role: str, address: str) -> str:
    """sesrelay's reply to a "Sender" or "Recipient" address (made printable) with UTF-8
    before the "@": SES has no SMTPUTF8 and takes ASCII local parts only. X.6.7 is RFC
    6531's "non-ASCII addresses not permitted for that sender/recipient"."""
    return (f"553 5.6.7 <{address}>: {role} address rejected: Amazon SES accepts no UTF-8 "
            "in the local part of an address (no SMTPUTF8)")


def timeout(hostname: str) -> str:
    """smtpd_proto(): the client did not send or take anything for smtpd_timeout."""
    return f"421 4.4.2 {hostname} Error: timeout exceeded"


def too_many_errors(hostname: str) -> str:
    """smtpd_proto(): smtpd_hard_error_limit reached."""
    return f"421 4.7.0 {hostname} Error: too many errors"


def too_many_connections(hostname: str, client: str) -> str:
    """smtpd_proto(): smtpd_client_connection_count_limit reached."""
    return f"421 4.7.0 {hostname} Error: too many connections from {client}"


def bare_newline(hostname: str, code: int = 550) -> str:
    """Postfix 3.9's reply to a bare <LF> under smtpd_forbid_bare_newline = reject."""
    return f"{code} 5.5.2 {hostname} Error: bare <LF> received"


def bare_cr_in_header(hostname: str) -> str:
    """sesrelay's reply to a bare <CR> in a header line: the worker could not send it (a
    header line would end in a different place for SES), so it is refused at DATA."""
    return f"550 5.6.0 {hostname} Error: bare <CR> received in a message header"


def soften(reply: str, soft_bounce: bool) -> str:
    """With soft_bounce, a 5xx reply becomes 4xx, its enhanced status code too."""
    if not soft_bounce or not reply.startswith("5"):
        return reply
    code, _, rest = reply.partition(" ")
    if rest[:2] == "5.":
        rest = "4" + rest[1:]
    return "4" + code[1:] + " " + rest
