"""Self-signed certificates for local TLS (`sesrelay dev --tls`) and for the deploy-time
generator (lambdas/tls_certificate), made with the `cryptography` package: a development
dependency (through moto), and installed into the generator's asset from
requirements/certificate.txt. It is imported only when a certificate is made."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertificateFiles:
    """A PEM certificate and key on disk, and the certificate's SHA-256 fingerprint."""

    cert_file: Path
    key_file: Path
    fingerprint: str  # AA:BB:..., as openssl x509 -fingerprint -sha256 prints it


def fingerprint(pem: bytes) -> str:
    """The SHA-256 fingerprint of the first certificate in PEM data."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    digest = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256())
    return ":".join(f"{octet:02X}" for octet in digest)


def self_signed_pem(names: list[str], days: int = 825) -> tuple[bytes, bytes]:
    """(certificate PEM, PKCS#8 key PEM) of a self-signed P-256 certificate for server
    authentication, valid for days, for names: DNS names or IP addresses, the first one
    its subject (cut to the 64 characters a common name may have). What `sesrelay dev
    --tls` writes to files and the deploy-time generator (lambdas/tls_certificate) keeps
    in its secret."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])])
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA256()))
    return (certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def self_signed(directory: Path, names: list[str], days: int = 825) -> CertificateFiles:
    """Write a self-signed certificate for names (self_signed_pem) and its key to
    directory; the key file is readable by its owner only."""
    pem, key = self_signed_pem(names, days)
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(pem)
    key_file.touch(mode=0o600)
    key_file.chmod(0o600)
    key_file.write_bytes(key)
    return CertificateFiles(cert_file, key_file, fingerprint(pem))
