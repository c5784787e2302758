"""The relay's TLS certificate in AWS: a Secrets Manager secret holding the PEM chain and
its private key, which the relay task reads at start and writes to files for
smtpd_tls_cert_file and smtpd_tls_key_file.

The secret's value is JSON (the operator's own secret must have the same shape)::

    {"certificate": "-----BEGIN CERTIFICATE-----...(then any intermediates)",
     "private_key": "-----BEGIN PRIVATE KEY-----..."}

The task reads it with its own role (never through the ECS agent, so the private key is
in no environment variable), and the key file is readable by the relay's user only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import ssl
from pathlib import Path

from sesrelay import aws

CERTIFICATE_FIELD = "certificate"
PRIVATE_KEY_FIELD = "private_key"
# Where the deployment's smtpd_tls_cert_file and smtpd_tls_key_file point: the task's
# writable /tmp volume (its root filesystem is read-only), gone when the task stops.
TLS_DIRECTORY = Path("/tmp/sesrelay-tls")
CERT_FILE = TLS_DIRECTORY / "cert.pem"
KEY_FILE = TLS_DIRECTORY / "key.pem"

log = logging.getLogger("sesrelay.tls")


class CertificateSecretError(Exception):
    """The certificate secret cannot be read or is not a certificate and key."""


def fingerprint(pem: str) -> str:
    """The SHA-256 fingerprint of the first certificate in PEM text, as
    ``openssl x509 -fingerprint -sha256`` prints it (AA:BB:...)."""
    begin = pem.index("-----BEGIN CERTIFICATE-----")
    end = pem.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem[begin:end])).digest()
    return ":".join(f"{octet:02X}" for octet in digest)


def secret_value(certificate_pem: str, private_key_pem: str) -> str:
    """The secret's value for a certificate chain and its key."""
    return json.dumps({CERTIFICATE_FIELD: certificate_pem, PRIVATE_KEY_FIELD: private_key_pem})


def parse_secret(text: str, secret_id: str) -> tuple[str, str]:
    """(certificate chain, private key) from a secret's value. Errors name the secret and
    the field, never the value."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise CertificateSecretError(
            f"{secret_id}: not a JSON object with {CERTIFICATE_FIELD!r} and "
            f"{PRIVATE_KEY_FIELD!r}")
    markers = {CERTIFICATE_FIELD: "-----BEGIN CERTIFICATE-----",
               PRIVATE_KEY_FIELD: "PRIVATE KEY-----"}
    for field, marker in markers.items():
        if not isinstance(data.get(field), str) or marker not in data[field]:
            raise CertificateSecretError(f"{secret_id}: {field!r} is missing or not PEM")
    return data[CERTIFICATE_FIELD], data[PRIVATE_KEY_FIELD]


def materialise(secret_id: str, cert_file: Path = CERT_FILE, key_file: Path = KEY_FILE,
                region: str | None = None) -> str:
    """Read the certificate secret and write its PEM files (the key owner-only); return
    the certificate's fingerprint, which is logged so that operators can compare it
    with what clients see. The key is never logged."""
    try:
        text = aws.client("secretsmanager", region).get_secret_value(
            SecretId=secret_id)["SecretString"]
    except Exception as exc:  # botocore's errors: no secret, no access, no network
        raise CertificateSecretError(f"{secret_id}: {exc}") from None
    certificate, private_key = parse_secret(text, secret_id)
    key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Created owner-only before the key is written: never readable by others, not even
    # for a moment.
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(private_key)
    cert_file.write_text(certificate, encoding="ascii")
    result = fingerprint(certificate)
    log.info("TLS certificate from %s: SHA-256 fingerprint %s", secret_id, result)
    return result
