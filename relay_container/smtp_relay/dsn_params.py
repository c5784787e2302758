"""The DSN extension's parameters (RFC 3461): RET and ENVID on MAIL, NOTIFY and ORCPT on
RCPT, checked as Postfix's smtpd checks them and with its replies, and kept with the
transaction for the spool envelope (sesrelay.spool.Envelope's ret, envid, notify, orcpt).

The session calls ``mail_parameter`` and ``RecipientParameters.take`` for each option,
and the relay ``accept_recipient`` for each recipient it accepts; ``envelope_fields``
gives what the spool envelope carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiosmtpd.smtp import Envelope

from sesrelay.spool import DSN_RET_VALUES, INLINE_LIMIT

BAD_RET = "501 5.5.4 Bad RET parameter syntax"  # smtpd.c mail_cmd()
BAD_ENVID = "501 5.5.4 Bad ENVID parameter syntax"  # mail_cmd()
BAD_NOTIFY = "501 5.5.4 Error: Bad NOTIFY parameter syntax"  # rcpt_cmd()
BAD_ORCPT = "501 5.5.4 Error: Bad ORCPT parameter syntax"  # rcpt_cmd()

NOTIFY_KEYWORDS = ("NEVER", "SUCCESS", "FAILURE", "DELAY")
# RFC 3461 4.4: an ENVID is at most 100 characters; 4.2: an ORCPT at most 500 (xtext).
MAX_ENVID = 100
MAX_ORCPT = 500
# An envelope's JSON besides its recipients (queue ID, sender, HELO name, client, time,
# S3 key, ENVID and the field names) is well under this.
_ENVELOPE_BASE = 2048


@dataclass
class DsnState:
    """The DSN parameters of one transaction: MAIL's, and one entry per recipient."""

    ret: str = ""
    envid: str = ""
    notify: list[str] = field(default_factory=list)
    orcpt: list[str] = field(default_factory=list)
    # The envelope's JSON, as far as recipients go: rcpt_to's entries, and notify's and
    # orcpt's, which exist for every recipient once one recipient gave one.
    addresses_size: int = 0
    notify_size: int = 0
    orcpt_size: int = 0

    def json_size(self, params: RecipientParameters | None = None,
                  address: str = "") -> int:
        """The envelope's size in octets (an upper bound), with one more recipient."""
        notify = self.notify_size + (_quoted(params.notify) if params else 0)
        orcpt = self.orcpt_size + (_quoted(params.orcpt) if params else 0)
        return (_ENVELOPE_BASE + self.addresses_size + _quoted(address)
                + (notify if any(self.notify) or (params and params.notify) else 0)
                + (orcpt if any(self.orcpt) or (params and params.orcpt) else 0))


def _quoted(text: str) -> int:
    """Octets of text as one JSON list entry: quotes, comma, and escapes (the text is
    printable ASCII: only a quote or a backslash is escaped)."""
    return len(text) + text.count('"') + text.count("\\") + 3


def state(envelope: Envelope) -> DsnState:
    """The DSN state of aiosmtpd's envelope (a new envelope, after RSET or a message,
    starts without one)."""
    found = getattr(envelope, "dsn", None)
    if found is None:
        found = DsnState()
        envelope.dsn = found  # type: ignore[attr-defined]
    return found


def xtext_decode(text: str) -> str | None:
    """RFC 3461 4 xtext: "+" and two hex digits stand for an octet (either case, as
    Postfix reads it). None if malformed, or if the result is not printable ASCII."""
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "+":
            pair = text[i + 1:i + 3]
            if len(pair) != 2 or not all(c in "0123456789abcdefABCDEF" for c in pair):
                return None
            ch = chr(int(pair, 16))
            i += 3
        else:
            i += 1
        if not " " <= ch <= "~" and ch != "\t":
            return None
        out.append(ch)
    return "".join(out)


def mail_parameter(dsn: DsnState, option: str) -> str | None:
    """Take RET= or ENVID= from MAIL FROM; the error reply, or None when it is good."""
    name, _, value = option.partition("=")
    if name.upper() == "RET":
        if dsn.ret or value.upper() not in DSN_RET_VALUES:
            return BAD_RET
        dsn.ret = value.upper()
        return None
    decoded = xtext_decode(value) if len(value) <= 3 * MAX_ENVID else None
    if dsn.envid or not decoded or len(decoded) > MAX_ENVID:
        return BAD_ENVID
    dsn.envid = decoded
    return None


def is_mail_parameter(option: str) -> bool:
    """True for the DSN parameters of MAIL FROM (RET=, ENVID=)."""
    return option.upper().startswith(("RET=", "ENVID="))


@dataclass
class RecipientParameters:
    """NOTIFY= and ORCPT= of one RCPT TO."""

    notify: str = ""
    orcpt: str = ""

    def take(self, option: str) -> str | None:
        """Take one RCPT TO option; the reply when it is bad, or None when it is good.
        Raises KeyError for an option that is not a DSN parameter."""
        name, _, value = option.partition("=")
        name = name.upper()
        if name == "NOTIFY":
            keywords = value.upper().split(",")
            if (self.notify or not all(k in NOTIFY_KEYWORDS for k in keywords)
                    or len(set(keywords)) != len(keywords)
                    or ("NEVER" in keywords and len(keywords) > 1)):
                return BAD_NOTIFY
            self.notify = ",".join(keywords)
            return None
        if name == "ORCPT":
            kind, semicolon, address = value.partition(";")
            decoded = xtext_decode(address) if len(value) <= MAX_ORCPT else None
            if self.orcpt or not semicolon or not kind or not decoded:
                return BAD_ORCPT
            self.orcpt = f"{kind};{decoded}"
            return None
        raise KeyError(option)


def fits(envelope: Envelope, address: str, params: RecipientParameters) -> bool:
    """True if one more recipient keeps the envelope within one SQS message."""
    return state(envelope).json_size(params, address) <= INLINE_LIMIT


def accept_recipient(envelope: Envelope, address: str, params: RecipientParameters) -> None:
    """Record the DSN parameters of a recipient the relay has just accepted."""
    dsn = state(envelope)
    dsn.notify.append(params.notify)
    dsn.orcpt.append(params.orcpt)
    dsn.addresses_size += _quoted(address)
    dsn.notify_size += _quoted(params.notify)
    dsn.orcpt_size += _quoted(params.orcpt)


def envelope_fields(envelope: Envelope, originals: list[str]) -> dict[str, object]:
    """The spool envelope's DSN fields (sesrelay.spool.Envelope) for this transaction,
    whose recipients after address rewriting came from originals (one entry each, as
    received): each inherits its original's NOTIFY and ORCPT, as in Postfix."""
    dsn = state(envelope)
    index = {address: n for n, address in reversed(list(enumerate(envelope.rcpt_tos)))}
    notify = tuple(dsn.notify[index[o]] for o in originals) if any(dsn.notify) else ()
    orcpt = tuple(dsn.orcpt[index[o]] for o in originals) if any(dsn.orcpt) else ()
    return {"ret": dsn.ret, "envid": dsn.envid, "notify": notify, "orcpt": orcpt}
