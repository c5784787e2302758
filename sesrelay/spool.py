"""The spool contract between the relay and the worker.

For each accepted message the relay sends an ``Envelope`` as JSON to SQS. The message
itself (exactly the bytes to hand to SES, Received: header included) travels inside the
envelope, base64-encoded, when the whole envelope fits one SQS message (INLINE_LIMIT);
a larger message is first written to S3 under ``object_key()`` and the envelope names
it (AWS's "extended client" pattern). Most messages are therefore committed by a single
SendMessage. The worker reads either form. This module is the only definition of that
contract: key layout, object metadata, the envelope schema and its versions.

Address rewriting (canonical, masquerade, virtual aliases) happens in the relay before
the envelope is written: ``mail_from`` and ``rcpt_to`` are the addresses to send to, and
``orig_mail_from`` / ``orig_rcpt_to`` keep what the client sent when rewriting changed
anything (Postfix's orig_to). Both are optional, within version 2: a worker that does not
know them ignores them, and an envelope without them means nothing was rewritten.

A deferred message goes back on the queue as a copy of its envelope (the worker's
ses_worker.requeue) carrying ``attempts``, ``first_seen`` and ``not_before``, optional
within version 2 too: the relay never writes them, a worker that does not know them
ignores them (it tries the copy at once and counts its attempts from one again, which
only makes a retry early), and the message's lifetime still runs from ``received_at``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

CONTRACT_VERSION = 2
# Version 1 envelopes (always an S3 object) come from relays deployed before version 2;
# the worker still reads them, so a deployment never strands messages in the queue.
READABLE_VERSIONS = (1, 2)
# SQS's classic message size limit. SQS now takes up to 1 MiB, but a batch of ten such
# messages would not fit the 6 MB payload of one Lambda invocation.
INLINE_LIMIT = 256 * 1024
# An envelope must fit one SQS message even with its message in S3: this is the cap on
# the recipients (and their originals) after virtual alias expansion.
ENVELOPE_LIMIT = INLINE_LIMIT
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


class NewerContract(ContractError):
    """An envelope of a contract version newer than this code reads: a relay of a later
    release wrote it (the worker was rolled back, or updated after the relay). It is
    not malformed, only not understood yet, so it must be kept, never dropped or sent."""

    def __init__(self, version: int) -> None:
        super().__init__(f"envelope version {version} is newer than this worker reads "
                         f"(versions {', '.join(map(str, READABLE_VERSIONS))})")
        self.version = version


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
    return (f"{KEY_PREFIX}{received_at.year:04d}/{received_at.month:02d}/"
            f"{received_at.day:02d}/{queue_id}")


def utc_now() -> datetime:
    """The current time in UTC, as every contract timestamp is."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Envelope:
    """The SQS message body: who the message is from and to, and the message's bytes
    (``body``, base64) or where they are in S3 (``bucket`` and ``key``)."""

    queue_id: str
    mail_from: str  # "" is the null sender <>
    rcpt_to: tuple[str, ...]
    bucket: str  # "" when the message is inline
    key: str  # "" when the message is inline
    size: int
    client_address: str
    client_helo: str
    received_at: str  # ISO 8601, UTC
    version: int = field(default=CONTRACT_VERSION)
    body: str = field(default="", repr=False)  # the message, base64; "" when in S3
    # What the client sent, when address rewriting changed it: the sender (None: not
    # rewritten) and, for each rcpt_to entry, its original recipient (empty: none was).
    orig_mail_from: str | None = None
    orig_rcpt_to: tuple[str, ...] = ()
    # DSN requests (RFC 3461), optional: absent from envelopes without them, and from
    # those queued before they existed. ret: "FULL", "HDRS" or "" (not given); envid:
    # ENVID, xtext-decoded; notify and orcpt: one entry per rcpt_to entry (NOTIFY as
    # given, upper case, and ORCPT as "type;address" decoded; "" where not given), or
    # empty when no recipient gave one.
    ret: str = ""
    envid: str = ""
    notify: tuple[str, ...] = ()
    orcpt: tuple[str, ...] = ()
    # The client's SMTP AUTH user name (printable ASCII), "" when it did not authenticate.
    # Optional in both directions: absent from older relays' envelopes, and ignored by
    # older workers, so relays and workers of either version can meet in a deployment.
    sasl_username: str = ""
    # Set only on a copy the worker re-enqueued to defer the message (never by the
    # relay): the delivery attempts made before this copy, when a worker first received
    # the message (ISO 8601, UTC), and the time before which it is not to be tried again
    # (SQS delays a message by 15 minutes at most: a copy received earlier goes back).
    attempts: int = 0
    first_seen: str = ""
    not_before: str = ""

    def to_json(self) -> str:
        """The SQS message body."""
        data: dict[str, object] = {
            "queue_id": self.queue_id, "mail_from": self.mail_from,
            "rcpt_to": list(self.rcpt_to), "bucket": self.bucket, "key": self.key,
            "size": self.size, "client_address": self.client_address,
            "client_helo": self.client_helo, "received_at": self.received_at,
            "version": self.version}
        # Optional fields are left out when unset: envelopes stay as they were before
        # each one existed, and older workers read them.
        if self.orig_mail_from is not None:
            data["orig_mail_from"] = self.orig_mail_from
        if self.orig_rcpt_to:
            data["orig_rcpt_to"] = list(self.orig_rcpt_to)
        for name in (*_DSN_FIELDS, "sasl_username", *_DEFERRAL_FIELDS):
            value = getattr(self, name)
            if value:
                data[name] = list(value) if isinstance(value, tuple) else value
        if self.version == 1:
            return json.dumps(data, separators=(",", ":"))
        if '"' in self.body or "\\" in self.body:  # never base64: let json escape it
            data["body"] = self.body
            return json.dumps(data, separators=(",", ":"))
        # The body is base64 (made by spool_envelope, or checked by from_json), which JSON
        # needs no escaping for: appended as it is rather than scanned by the encoder,
        # on the relay's hot path with a whole message in it.
        return f'{json.dumps(data, separators=(",", ":"))[:-1]},"body":"{self.body}"}}'

    def original_recipient(self, recipient: str) -> str:
        """What the client sent for recipient (recipient itself when not rewritten)."""
        if self.orig_rcpt_to and recipient in self.rcpt_to:
            return self.orig_rcpt_to[self.rcpt_to.index(recipient)]
        return recipient

    def notify_of(self, index: int) -> frozenset[str]:
        """The NOTIFY keywords of recipient rcpt_to[index]; empty when it gave none (the
        default: FAILURE, and DELAY at the MTA's discretion)."""
        value = self.notify[index] if self.notify else ""
        return frozenset(value.split(",")) if value else frozenset()

    def orcpt_of(self, index: int) -> str:
        """The ORCPT of recipient rcpt_to[index], "type;address", or ""."""
        return self.orcpt[index] if self.orcpt else ""

    @property
    def inline(self) -> bool:
        """True when the message travels inside the envelope."""
        return bool(self.body)

    def message(self) -> bytes:
        """The inline message's bytes (only for an inline envelope)."""
        return base64.b64decode(self.body)

    @property
    def location(self) -> str:
        """Where the message is, for log lines."""
        return "inline" if self.inline else f"s3://{self.bucket}/{self.key}"

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
        version = data.get("version")
        if type(version) is int and version > CONTRACT_VERSION:
            raise NewerContract(version)
        if type(version) is not int or version not in READABLE_VERSIONS:  # true is not 1
            raise ContractError(f"unsupported envelope version {version!r} (this worker "
                                f"reads versions {', '.join(map(str, READABLE_VERSIONS))})")
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
        body = data.get("body", "") if version == 2 else ""
        if not isinstance(body, str):
            raise ContractError("envelope field 'body' is not a str")
        sasl_username = data.get("sasl_username", "")
        if not isinstance(sasl_username, str):
            raise ContractError("envelope field 'sasl_username' is not a str")
        if body:
            try:
                base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                raise ContractError("envelope body is not base64") from None
        elif not (data["bucket"] and data["key"]):
            raise ContractError("envelope has neither an inline body nor an S3 bucket and key")
        orig_mail_from = data.get("orig_mail_from")
        if orig_mail_from is not None and not isinstance(orig_mail_from, str):
            raise ContractError("envelope field 'orig_mail_from' is not a str")
        orig_rcpt_to = data.get("orig_rcpt_to", [])
        if not isinstance(orig_rcpt_to, list) or not all(
                isinstance(r, str) and r for r in orig_rcpt_to) or (
                orig_rcpt_to and len(orig_rcpt_to) != len(data["rcpt_to"])):
            raise ContractError("envelope orig_rcpt_to must list one original address for "
                                "each rcpt_to entry")
        dsn = _dsn_fields(data, len(data["rcpt_to"]))
        return cls(**{**{k: data[k] for k in expected}, "rcpt_to": tuple(data["rcpt_to"]),
                      "version": version, "body": body, "orig_mail_from": orig_mail_from,
                      "orig_rcpt_to": tuple(orig_rcpt_to), "sasl_username": sasl_username,
                      **dsn, **_deferral_fields(data)})

    @property
    def first_seen_at(self) -> datetime | None:
        """first_seen as a datetime, or None when this is no re-enqueued copy."""
        return datetime.fromisoformat(self.first_seen) if self.first_seen else None

    @property
    def not_before_at(self) -> datetime | None:
        """not_before as a datetime, or None when the envelope may be tried at once."""
        return datetime.fromisoformat(self.not_before) if self.not_before else None


_DSN_FIELDS = ("ret", "envid", "notify", "orcpt")
_DEFERRAL_FIELDS = ("attempts", "first_seen", "not_before")


def _deferral_fields(data: dict[str, object]) -> dict[str, object]:
    """The optional fields of a re-enqueued copy, checked."""
    attempts = data.get("attempts", 0)
    if type(attempts) is not int or attempts < 0:  # true is not 1
        raise ContractError("envelope field 'attempts' is not a count")
    found: dict[str, object] = {"attempts": attempts}
    for name in ("first_seen", "not_before"):
        value = data.get(name, "")
        if not isinstance(value, str):
            raise ContractError(f"envelope field {name!r} is not a str")
        if value:
            try:
                stamp = datetime.fromisoformat(value)
            except ValueError:
                raise ContractError(f"envelope {name} {value!r} is not ISO 8601") from None
            if stamp.tzinfo is None:
                raise ContractError(f"envelope {name} {value!r} has no time zone")
        found[name] = value
    return found
DSN_RET_VALUES = ("FULL", "HDRS")


def _dsn_fields(data: dict[str, object], recipients: int) -> dict[str, object]:
    """The optional DSN fields of an envelope's JSON, checked."""
    found: dict[str, object] = {}
    ret = data.get("ret", "")
    if ret not in ("", *DSN_RET_VALUES):
        raise ContractError(f"envelope ret {ret!r} is not FULL or HDRS")
    found["ret"] = ret
    envid = data.get("envid", "")
    if not isinstance(envid, str):
        raise ContractError("envelope field 'envid' is not a str")
    found["envid"] = envid
    for name in ("notify", "orcpt"):
        values = data.get(name, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ContractError(f"envelope field {name!r} is not a list of str")
        if values and len(values) != recipients:
            raise ContractError(f"envelope field {name!r} has {len(values)} entries for "
                                f"{recipients} recipients")
        found[name] = tuple(values)
    return found


def spool_envelope(fields: dict[str, object], message: bytes | bytearray, bucket: str,
                   key: str) -> tuple[Envelope, str]:
    """The envelope for message and its JSON: inline when it fits one SQS message,
    else naming bucket and key (where the caller must store the message first).

    fields holds the other Envelope fields (queue_id, mail_from, rcpt_to, size,
    client_address, client_helo, received_at, orig_mail_from / orig_rcpt_to when
    addresses were rewritten, the DSN fields, and sasl_username if any)."""
    # base64 is 4/3 of the message; the rest of an envelope is rarely over a few KB.
    if len(message) * 4 // 3 < INLINE_LIMIT:
        inline = Envelope(**fields, bucket="", key="",  # type: ignore[arg-type]
                          body=base64.b64encode(message).decode("ascii"))
        body = inline.to_json()
        if len(body) <= INLINE_LIMIT:
            return inline, body
    stored = Envelope(**fields, bucket=bucket, key=key)  # type: ignore[arg-type]
    return stored, stored.to_json()


def envelope_size_bound(fields: dict[str, object], bucket: str, key: str) -> int:
    """At least the length of the envelope's JSON with its message in S3, without
    building it: JSON writes a character in at most 12 (two \\uXXXX escapes), repr() in
    at least one, and the rest of the envelope (bucket, key and version with their
    names) takes less than 100."""
    return 12 * (len(repr(fields)) + len(bucket) + len(key)) + 100


def envelope_fits(fields: dict[str, object], bucket: str, key: str) -> bool:
    """True when the envelope, with its message in S3, fits one SQS message
    (ENVELOPE_LIMIT): the relay's cap on recipients after address expansion."""
    # Checked for every message: the bound spares building the envelope's JSON twice
    # (here and in spool_envelope) for all but a huge expansion.
    if envelope_size_bound(fields, bucket, key) <= ENVELOPE_LIMIT:
        return True
    envelope = Envelope(**fields, bucket=bucket, key=key)  # type: ignore[arg-type]
    return len(envelope.to_json()) <= ENVELOPE_LIMIT
