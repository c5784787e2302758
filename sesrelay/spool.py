"""The spool contract between the relay and the worker.

For each accepted message the relay writes the raw message (exactly the bytes to hand
to SES, Received: header included) to S3 under ``object_key()``, then sends an
``Envelope`` as JSON to SQS. The worker reads the envelope, fetches the object and
sends it. This module is the only definition of that contract: key layout, object
metadata, the envelope schema and its version.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

CONTRACT_VERSION = 1
# RFC 5321 4.5.3.1.3: a path is at most 256 octets with its angle brackets.
MAX_ADDRESS_LENGTH = 254
KEY_PREFIX = "spool/"
# S3 object metadata keys (sent as x-amz-meta-*).
META_QUEUE_ID = "queue-id"
META_CONTRACT_VERSION = "contract-version"
# S3 object tag the worker adds once SES accepted the message.
TAG_SES_MESSAGE_ID = "ses-message-id"

_QUEUE_ID_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"  # no vowels: IDs never spell words


class ContractError(ValueError):
    """An SQS message body that is not a valid envelope of a known contract version."""


def new_queue_id(now_ns: int | None = None) -> str:
    """A unique queue ID: 10 characters of time (ordered), then 6 random characters."""
    micros = (time.time_ns() if now_ns is None else now_ns) // 1000
    base = len(_QUEUE_ID_ALPHABET)
    stamp = []
    for _ in range(10):
        micros, digit = divmod(micros, base)
        stamp.append(_QUEUE_ID_ALPHABET[digit])
    # One read of the system's randomness, not one per character.
    rand_bits = int.from_bytes(secrets.token_bytes(5))
    rand = ""
    for _ in range(6):
        rand_bits, digit = divmod(rand_bits, base)
        rand += _QUEUE_ID_ALPHABET[digit]
    return "".join(reversed(stamp)) + rand


def object_key(queue_id: str, received_at: datetime) -> str:
    """S3 key of a spooled message: spool/YYYY/MM/DD/<queue id>."""
    return f"{KEY_PREFIX}{received_at:%Y/%m/%d}/{queue_id}"


def utc_now() -> datetime:
    """The current time in UTC, as every contract timestamp is."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Envelope:
    """The SQS message body: who the message is from and to, and where its bytes are."""

    queue_id: str
    mail_from: str  # "" is the null sender <>
    rcpt_to: tuple[str, ...]
    bucket: str
    key: str
    size: int
    client_address: str
    client_helo: str
    received_at: str  # ISO 8601, UTC
    version: int = field(default=CONTRACT_VERSION)

    def to_json(self) -> str:
        """The SQS message body."""
        body = asdict(self)
        body["rcpt_to"] = list(self.rcpt_to)
        return json.dumps(body, separators=(",", ":"))

    @property
    def received(self) -> datetime:
        """received_at as a datetime."""
        return datetime.fromisoformat(self.received_at)

    @classmethod
    def from_json(cls, body: str) -> Envelope:
        """Parse an SQS message body; raise ContractError on anything malformed."""
        try:
            data = json.loads(body)
        except (TypeError, ValueError) as exc:
            raise ContractError(f"envelope is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ContractError("envelope is not a JSON object")
        if data.get("version") != CONTRACT_VERSION:
            raise ContractError(f"unsupported envelope version {data.get('version')!r} "
                                f"(this worker reads version {CONTRACT_VERSION})")
        expected = {
            "queue_id": str, "mail_from": str, "rcpt_to": list, "bucket": str, "key": str,
            "size": int, "client_address": str, "client_helo": str, "received_at": str,
        }
        for name, kind in expected.items():
            if not isinstance(data.get(name), kind):
                raise ContractError(f"envelope field {name!r} is missing or not a "
                                    f"{kind.__name__}")
        if not data["rcpt_to"] or not all(isinstance(r, str) and r for r in data["rcpt_to"]):
            raise ContractError("envelope rcpt_to must be a non-empty list of addresses")
        try:
            datetime.fromisoformat(data["received_at"])
        except ValueError:
            raise ContractError(f"envelope received_at {data['received_at']!r} is not "
                                "ISO 8601") from None
        return cls(**{**{k: data[k] for k in expected}, "rcpt_to": tuple(data["rcpt_to"])})
