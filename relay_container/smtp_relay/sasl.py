"""SMTP AUTH in the relay (Postfix's smtpd_sasl_* meaning): PLAIN and LOGIN against
sesrelay's user table."""

from __future__ import annotations

from dataclasses import dataclass

from aiosmtpd.smtp import Session


@dataclass(frozen=True)
class Login:
    """A session's successful AUTH: the user name (checked, printable) and mechanism."""

    username: str
    method: str


def login_of(session: Session) -> Login | None:
    """The session's login (kept in aiosmtpd's Session.auth_data), or None."""
    data = session.auth_data
    return data if isinstance(data, Login) else None
