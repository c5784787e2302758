"""Certificates for the TLS tests: a self-signed one (as `sesrelay dev --tls` makes), and a
chain (root CA, intermediate CA, server) whose root only the client trusts."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import read_reply

SERVER_NAME = "relay.example.net"


@dataclass(frozen=True)
class Chain:
    """cert_file holds the server certificate then the intermediate; ca_file the root."""

    cert_file: Path
    key_file: Path
    ca_file: Path


def _certificate(subject: str, key, issuer: str, issuer_key, ca: bool):  # type: ignore[no-untyped-def]
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        names = [x509.DNSName(subject), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_chain(directory: Path) -> Chain:
    """Root -> intermediate -> server certificate for SERVER_NAME and 127.0.0.1."""
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    root = _certificate("sesrelay test root", keys[0], "sesrelay test root", keys[0], True)
    middle = _certificate("sesrelay test intermediate", keys[1], "sesrelay test root",
                          keys[0], True)
    server = _certificate(SERVER_NAME, keys[2], "sesrelay test intermediate", keys[1], False)
    pem = serialization.Encoding.PEM
    chain = Chain(directory / "chain.pem", directory / "server.key", directory / "root.pem")
    chain.cert_file.write_bytes(server.public_bytes(pem) + middle.public_bytes(pem))
    chain.key_file.write_bytes(keys[2].private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    chain.ca_file.write_bytes(root.public_bytes(pem))
    return chain


def client_context(ca_file: Path) -> ssl.SSLContext:
    """A client context that trusts ca_file only and checks the name."""
    return ssl.create_default_context(cafile=str(ca_file))


def starttls(sock: socket.socket, context: ssl.SSLContext) -> tuple[ssl.SSLSocket, bytes]:
    """Greeting, EHLO, STARTTLS on a plain socket, then the handshake; returns the TLS
    socket and the EHLO reply."""
    stream = sock.makefile("rb")
    assert read_reply(stream).startswith(b"220 ")
    sock.sendall(b"EHLO client.example.org\r\n")
    ehlo = read_reply(stream)
    sock.sendall(b"STARTTLS\r\n")
    assert read_reply(stream) == b"220 2.0.0 Ready to start TLS\r\n"
    return context.wrap_socket(sock, server_hostname=SERVER_NAME), ehlo
