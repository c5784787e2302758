"""SMTP AUTH in the relay, with Postfix's meaning (smtpd_sasl_proto.c, smtpd_sasl_glue.c):
PLAIN and LOGIN, checked against sesrelay's user table (sesrelay.users).

- Replies as Postfix's: 235 2.7.0 Authentication successful; 535 5.7.8 Error:
  authentication failed: <reason>; 454 4.7.0 Temporary authentication failure when the
  user table cannot be read; 501 5.7.0 Authentication aborted for "*".
- Each failure is logged with the client address (Postfix's "SASL LOGIN authentication
  failed" warning) and answered after sesrelay_auth_failure_delay times the client's
  recent failures; a client with sesrelay_auth_failure_limit failures is refused AUTH for
  sesrelay_auth_lockout_time. The failures are counted per relay process, in a table of
  at most MAX_CLIENTS addresses (the oldest forgotten first).
- The user name is client input: only names the user table can hold (printable ASCII, no
  space) can succeed, so the name that is logged, put in Received: and in the envelope is
  always printable; a failed one is logged made printable.
- Password checks (scrypt, tens of milliseconds of CPU) run on a small thread pool of
  their own, never on the event loop; a successful check is remembered (an HMAC of the
  password under a key of this process) until the user's entry changes, so that an
  application that authenticates for each message costs one hash, not one per message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiosmtpd.smtp import Session

from sesrelay.config import Config
from sesrelay.config.sasl import auth_only_with_tls, mechanisms
from sesrelay.users import UserStore, UserTable, UserTableError
from smtp_relay import replies
from smtp_relay.edge import printable

if TYPE_CHECKING:
    from smtp_relay.session import RelaySession

log = logging.getLogger("sesrelay.relay")

SUCCESS = "235 2.7.0 Authentication successful"
NOT_ENABLED = "503 5.5.1 Error: authentication not enabled"
NEED_TLS = "504 5.5.4 Encryption required for requested authentication mechanism"
IN_TRANSACTION = "503 5.5.1 Error: MAIL transaction in progress"
ALREADY = "503 5.5.1 Error: already authenticated"
SYNTAX = "501 5.5.4 Syntax: AUTH mechanism"
ABORTED = "501 5.7.0 Authentication aborted"
AUTH_DISABLED = "503 5.5.4 Error: authentication disabled"  # MAIL FROM's AUTH= option
TEMPORARY = "454 4.7.0 Temporary authentication failure: user table not available"
BAD_MECHANISM = "Invalid authentication mechanism"
BAD_CREDENTIALS = "authentication failure"  # Cyrus SASL's SASL_BADAUTH text
MAX_CLIENTS = 10_000  # the failure table's bound, per relay process
_MAX_DELAY_FACTOR = 10
_HASH_THREADS = 2
_RETRY = 10.0  # seconds between tries while the user table has never been read
_MAX_REMEMBERED = 10_000


def failed(reason: str) -> str:
    """RFC 4954, section 6, in Postfix's words."""
    return f"535 5.7.8 Error: authentication failed: {reason}"


def too_many_failures(client: str) -> str:
    """The reply to a client that is locked out (Postfix's anvil reply for AUTH)."""
    return f"450 4.7.1 Error: too many AUTH commands from {client}"


@dataclass(frozen=True)
class Login:
    """A session's successful AUTH: the user name (checked, printable) and mechanism."""

    username: str
    method: str


def login_of(session: Session) -> Login | None:
    """The session's login (kept in aiosmtpd's Session.auth_data), or None."""
    data = session.auth_data
    return data if isinstance(data, Login) else None


class _Refused(Exception):
    """The exchange ended without credentials; the reply says why."""

    def __init__(self, reply: str, reason: str = "") -> None:
        super().__init__(reply)
        self.reply = reply
        self.reason = reason


class AuthFailures:
    """Failed AUTH commands per client address, in this process, bounded."""

    def __init__(self, limit: int, lockout: float) -> None:
        self.limit = limit
        self.lockout = lockout
        # client -> [failures, first failure, locked until]
        self._clients: OrderedDict[str, list[float]] = OrderedDict()

    def locked(self, client: str, now: float) -> bool:
        """True while client is cut off."""
        entry = self._clients.get(client)
        return entry is not None and entry[2] > now

    def failure(self, client: str, now: float) -> int:
        """Count one failure; returns the client's failures in the current window."""
        entry = self._clients.pop(client, None)
        if entry is None or now - entry[1] > self.lockout:
            entry = [0, now, 0.0]
        entry[0] += 1
        if self.limit and entry[0] >= self.limit:
            entry[2] = now + self.lockout
        self._clients[client] = entry
        while len(self._clients) > MAX_CLIENTS:
            self._clients.popitem(last=False)
        return int(entry[0])

    def success(self, client: str) -> None:
        """A client that authenticated starts again from no failures."""
        self._clients.pop(client, None)


class Authenticator:
    """What one relay process needs for AUTH: the user table (read at start and again
    every sesrelay_sasl_users_refresh), the failure table and the hashing threads."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = UserStore(config.sesrelay_sasl_users)
        self.failures = AuthFailures(config.sesrelay_auth_failure_limit,
                                     config.sesrelay_auth_lockout_time)
        self._table: UserTable | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        self._pool = ThreadPoolExecutor(_HASH_THREADS, thread_name_prefix="sasl")
        self._key = secrets.token_bytes(32)
        self._remembered: dict[str, tuple[str, bytes]] = {}

    async def table(self) -> UserTable | None:
        """The user table, reread when older than the refresh interval; None while it
        cannot be read (tried again after at most _RETRY seconds). A failed reread keeps
        the table read before."""
        loop = asyncio.get_running_loop()
        refresh = self.config.sesrelay_sasl_users_refresh
        async with self._lock:
            if loop.time() - self._loaded_at >= refresh or self._loaded_at == 0.0:
                self._loaded_at = loop.time()
                try:
                    self._table = await loop.run_in_executor(self._pool, self.store.load)
                except UserTableError as exc:
                    log.error("SASL user table: %s", exc)
                    if self._table is None:
                        self._loaded_at -= refresh - min(refresh, _RETRY)
        return self._table

    async def check(self, table: UserTable, username: str, password: str) -> bool:
        """True when password is username's, remembered or hashed off the event loop."""
        encoded = table.users.get(username)
        proof = hmac.new(self._key, password.encode("utf-8"), hashlib.sha256).digest()
        remembered = self._remembered.get(username)
        if encoded and remembered and remembered[0] == encoded \
                and hmac.compare_digest(remembered[1], proof):
            return True
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(self._pool, table.verify, username, password)
        if ok and encoded:
            if len(self._remembered) >= _MAX_REMEMBERED:
                self._remembered.clear()
            self._remembered[username] = (encoded, proof)
        return ok

    def close(self) -> None:
        """Stop the hashing threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)


async def auth_command(session: RelaySession, words: list[str]) -> bool:
    """AUTH mechanism [initial-response]: True when the client authenticated."""
    config = session.relay.config
    smtp = session.session
    assert smtp is not None
    refusal = _refusal(session, config, smtp, len(words))
    if refusal:
        await session.push(refusal)
        return False
    authenticator = session.relay.authenticator
    assert authenticator is not None
    client = session.client
    loop = asyncio.get_running_loop()
    if authenticator.failures.locked(client, loop.time()):
        log.warning("%s: AUTH refused: too many authentication failures", session.namaddr)
        await session.push(too_many_failures(client))
        return False
    method = printable(words[1]).upper()
    username = ""
    try:
        if method not in mechanisms(config, session.tls is not None):
            raise _Refused(failed(BAD_MECHANISM), BAD_MECHANISM)
        username, password = await _exchange(session, method,
                                             words[2] if len(words) == 3 else None)
        table = await authenticator.table()
        if table is None:
            log.warning("%s: SASL %s authentication failed: user table not available",
                        session.namaddr, method)
            await session.push(TEMPORARY)
            return False
        if not await authenticator.check(table, username, password):
            raise _Refused(failed(BAD_CREDENTIALS), BAD_CREDENTIALS)
    except _Refused as refused:
        if refused.reason:
            count = authenticator.failures.failure(client, loop.time())
            log.warning("%s: SASL %s authentication failed: %s%s", session.namaddr, method,
                        refused.reason,
                        f", sasl_username={printable(username)[:255]}" if username else "")
            delay = config.sesrelay_auth_failure_delay * min(count, _MAX_DELAY_FACTOR)
            if delay:
                await asyncio.sleep(delay)
        else:
            log.warning("%s: SASL %s authentication aborted", session.namaddr, method)
        await session.push(refused.reply)
        return False
    authenticator.failures.success(client)
    smtp.auth_data = Login(username, method)
    smtp.authenticated = True
    await session.push(SUCCESS)
    return True


def _refusal(session: RelaySession, config: Config, smtp: Session, argc: int) -> str | None:
    """Postfix's checks before any exchange (smtpd_sasl_auth_cmd()), in its order."""
    if not smtp.host_name:
        return replies.NEED_HELO
    if not config.smtpd_sasl_auth_enable or session.relay.authenticator is None:
        return NOT_ENABLED
    if session.tls is None and auth_only_with_tls(config):
        return NEED_TLS
    if session.in_transaction:
        return IN_TRANSACTION
    if login_of(smtp) is not None:
        return ALREADY
    if argc not in (2, 3):
        return SYNTAX
    return None


async def _exchange(session: RelaySession, method: str,
                    initial: str | None) -> tuple[str, str]:
    """The mechanism's challenges and responses: (user name, password)."""
    if method == "PLAIN":
        response = _decode(initial if initial is not None
                           else await _challenge(session, ""), initial is not None)
        parts = response.split(b"\0")
        if len(parts) != 3:
            raise _Refused(failed(BAD_CREDENTIALS), BAD_CREDENTIALS)
        authzid, authcid, password = parts
        if authzid and authzid != authcid:  # no acting for another user
            raise _Refused(failed(BAD_CREDENTIALS), BAD_CREDENTIALS)
        return _text(authcid), _text(password)
    username = _text(_decode(initial, True) if initial is not None
                     else _decode(await _challenge(session, "Username:"), False))
    password = _text(_decode(await _challenge(session, "Password:"), False))
    return username, password


async def _challenge(session: RelaySession, prompt: str) -> str:
    """Send a 334 challenge and read the response; "*" aborts."""
    await session.push(f"334 {base64.b64encode(prompt.encode()).decode()}")
    response = (await session.read_line()).decode("ascii", "replace").strip()
    if response == "*":
        raise _Refused(ABORTED)
    return response


def _decode(text: str, initial: bool) -> bytes:
    if text == "=":  # RFC 4954: an empty initial response
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        reason = f"Invalid base64 data in {'initial' if initial else 'continued'} response"
        raise _Refused(failed(reason), reason) from None


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(failed(BAD_CREDENTIALS), BAD_CREDENTIALS) from None
