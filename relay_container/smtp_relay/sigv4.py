"""AWS Signature Version 4 for the relay's hot-path requests (spool_client.py).

The relay signs its S3 PutObject and SQS SendMessage/SendMessageBatch requests itself, so
that a message costs no botocore request pipeline. This is the whole signer: headers-only
SigV4 with no query parameters, as those requests need. It follows botocore's SigV4Auth
(SQS) and S3SigV4Auth (S3) to the byte, and tests/relay/test_sigv4.py holds it to
botocore as the oracle over many generated requests. Everything else the relay and the
worker send is signed by botocore.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# Headers botocore leaves out of the signature (botocore.auth.SIGNED_HEADERS_BLACKLIST):
# hop-by-hop headers and those a proxy may rewrite.
UNSIGNED_HEADERS = frozenset({
    "baggage", "connection", "expect", "keep-alive", "proxy-authenticate",
    "proxy-authorization", "te", "traceparent", "tracestate", "trailer",
    "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id"})


@dataclass(frozen=True)
class Credentials:
    """One frozen set of AWS credentials (botocore's ReadOnlyCredentials has the same
    fields)."""

    access_key: str
    secret_key: str
    token: str | None = None


def uri_path(path: str) -> str:
    """A URL path as AWS encodes it in requests and canonical requests: UTF-8, every octet
    but unreserved characters and "/" percent-encoded (botocore's percent_encode for S3
    keys)."""
    return quote(path.encode("utf-8"), safe="/~")


@lru_cache(maxsize=16)
def _signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The day's signing key; derived once a day per credentials, not per request."""
    key = hmac.digest(f"AWS4{secret_key}".encode(), date.encode(), "sha256")
    for part in (region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def sign(method: str, host: str, path: str, headers: dict[str, str], payload_hash: str,
         credentials: Credentials, region: str, service: str, timestamp: str,
         s3: bool = False) -> dict[str, str]:
    """The headers to send: `headers` plus X-Amz-Date, X-Amz-Security-Token (with a
    session token), X-Amz-Content-SHA256 (S3 only) and Authorization.

    host is the Host header's value (no default port), path the request path already
    encoded with uri_path (S3 signs it as sent; SQS's is "/"), payload_hash the body's
    SHA-256 in hex or UNSIGNED_PAYLOAD, timestamp "YYYYMMDDTHHMMSSZ" in UTC.
    """
    out = dict(headers)
    out["X-Amz-Date"] = timestamp
    if credentials.token:
        out["X-Amz-Security-Token"] = credentials.token
    if s3:
        out["X-Amz-Content-SHA256"] = payload_hash
    signed: dict[str, list[str]] = {}
    for name, value in out.items():
        lname = name.lower()
        if lname not in UNSIGNED_HEADERS:
            signed.setdefault(lname, []).append(" ".join(value.split()))
    signed.setdefault("host", [host])
    names = sorted(signed)
    signed_headers = ";".join(names)
    canonical = "\n".join((
        method, path, "",
        "".join(f"{name}:{','.join(signed[name])}\n" for name in names),
        signed_headers, payload_hash))
    date = timestamp[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join((ALGORITHM, timestamp, scope,
                                hashlib.sha256(canonical.encode()).hexdigest()))
    signature = hmac.new(_signing_key(credentials.secret_key, date, region, service),
                         string_to_sign.encode(), "sha256").hexdigest()
    out["Authorization"] = (f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
                            f"SignedHeaders={signed_headers}, Signature={signature}")
    return out
