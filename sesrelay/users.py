"""The SMTP AUTH user table: user names and salted, slow hashes of their passwords.

Passwords are never kept: each is hashed with scrypt (hashlib, from the standard
library's OpenSSL) under its own random salt, and checked by hashing the offered password
the same way. The table is JSON, in a file or in a Secrets Manager secret
(``secretsmanager:NAME``), managed with `sesrelay users add|remove|list`:

    {"version": 1, "users": {"app1": "$scrypt$ln=14,r=8,p=1$<salt>$<hash>"}}
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from sesrelay import aws

TABLE_VERSION = 1
SECRETS_MANAGER = "secretsmanager:"
# scrypt cost: 2**14 x 8 x 128 octets = 16 MiB and some tens of milliseconds per check.
_LOG_N, _R, _P = 14, 8, 1
_SALT_BYTES, _HASH_BYTES = 16, 32
_HASH_RE = re.compile(r"\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")
# A user name: printable ASCII without spaces (it is logged, and goes into Received:).
_USERNAME_RE = re.compile(r"[!-~]{1,255}")
# Checked instead when the user is unknown, so that the answer takes as long.
_DUMMY = "$scrypt$ln=14,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "="


class UserTableError(Exception):
    """The user table cannot be read, or is not a user table."""


def valid_username(name: str) -> bool:
    """True for names the table may hold: 1-255 printable ASCII characters, no space."""
    return bool(_USERNAME_RE.fullmatch(name))


def hash_password(password: str) -> str:
    """The stored form of a password: scrypt under a new random salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, _LOG_N, _R, _P)
    return (f"$scrypt$ln={_LOG_N},r={_R},p={_P}${base64.b64encode(salt).decode()}"
            f"${base64.b64encode(digest).decode()}")


def _scrypt(password: str, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << log_n, r=r, p=p,
                          maxmem=256 * 1024 * 1024, dklen=_HASH_BYTES)


def verify_password(encoded: str, password: str) -> bool:
    """True when password hashes to encoded (compared in constant time)."""
    match = _HASH_RE.fullmatch(encoded)
    if not match:
        return False
    log_n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    salt, expected = (base64.b64decode(match.group(i)) for i in (4, 5))
    return hmac.compare_digest(_scrypt(password, salt, log_n, r, p), expected)


@dataclass
class UserTable:
    """User names and their password hashes."""

    users: dict[str, str] = field(default_factory=dict)

    def verify(self, name: str, password: str) -> bool:
        """True when name is a user and password is theirs. An unknown name costs the same
        hash, so that the time taken does not tell which names exist."""
        encoded = self.users.get(name)
        ok = verify_password(encoded or _DUMMY, password)
        return ok and encoded is not None

    def to_json(self) -> str:
        """The table as stored."""
        return json.dumps({"version": TABLE_VERSION, "users": dict(sorted(self.users.items()))},
                          indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> UserTable:
        """Parse a stored table; raise UserTableError naming source when malformed."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UserTableError(f"{source}: not a user table (JSON: {exc})") from None
        if not isinstance(data, dict) or data.get("version") != TABLE_VERSION \
                or not isinstance(data.get("users"), dict):
            raise UserTableError(f"{source}: not a version {TABLE_VERSION} user table")
        users = data["users"]
        for name, encoded in users.items():
            if not valid_username(name) or not isinstance(encoded, str) \
                    or not _HASH_RE.fullmatch(encoded):
                raise UserTableError(f"{source}: bad entry for user {name[:64]!r}")
        return cls(dict(users))


@dataclass(frozen=True)
class UserStore:
    """Where the table lives: a file, or a Secrets Manager secret (secretsmanager:NAME)."""

    location: str
    region: str | None = None

    @property
    def secret_id(self) -> str | None:
        """The secret's name or ARN, or None for a file."""
        if self.location.startswith(SECRETS_MANAGER):
            return self.location[len(SECRETS_MANAGER):]
        return None

    def load(self, missing_ok: bool = False) -> UserTable:
        """Read the table (an empty one if it does not exist yet and missing_ok)."""
        secret = self.secret_id
        try:
            if secret is None:
                text = Path(self.location).read_text(encoding="utf-8")
            else:
                text = aws.client("secretsmanager", self.region).get_secret_value(
                    SecretId=secret)["SecretString"]
        except FileNotFoundError:
            if missing_ok:
                return UserTable()
            raise UserTableError(f"{self.location}: no such file") from None
        except OSError as exc:
            raise UserTableError(f"{self.location}: {exc.strerror}") from None
        except Exception as exc:  # botocore's errors: no secret, no access, no network
            if missing_ok and aws.error_code(exc) == "ResourceNotFoundException":
                return UserTable()
            raise UserTableError(f"{self.location}: {exc}") from None
        return UserTable.from_json(text, self.location)

    def save(self, table: UserTable) -> None:
        """Write the table: a file (owner-only, replaced whole) or a new secret version."""
        text = table.to_json()
        secret = self.secret_id
        if secret is None:
            path = Path(self.location)
            temporary = path.with_name(f".{path.name}.{os.getpid()}")
            temporary.touch(mode=0o600)
            temporary.write_text(text, encoding="utf-8")
            temporary.replace(path)
            return
        client = aws.client("secretsmanager", self.region)
        try:
            client.put_secret_value(SecretId=secret, SecretString=text)
        except Exception as exc:
            if aws.error_code(exc) != "ResourceNotFoundException":
                raise
            client.create_secret(Name=secret, SecretString=text,
                                 Description="sesrelay SMTP AUTH users (scrypt hashes)")
