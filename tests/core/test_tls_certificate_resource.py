"""The deploy-time certificate generator (lambdas/tls_certificate), driven with the events
CloudFormation sends, against moto's Secrets Manager; its answers go to a real HTTP
server standing in for CloudFormation's pre-signed response URL."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lambdas.tls_certificate import handler as resource
from sesrelay.tls_secret import parse_secret
from tests.support import moto_account

REGION = "eu-west-1"
STACK = f"arn:aws:cloudformation:{REGION}:123456789012:stack/sesrelay-dev/1a2b"
NAMES = ["smtp.dev.example.internal", "sesrelay-dev-lb-0123.elb.eu-west-1.amazonaws.com"]


class Responses(http.server.BaseHTTPRequestHandler):
    """Keeps each body PUT to it, as CloudFormation's response bucket would."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def response_url() -> Iterator[str]:
    Responses.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Responses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/response?X-Amz-Signature=x"
    server.shutdown()
    server.server_close()


@pytest.fixture
def secretsmanager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with moto_account(monkeypatch, REGION):
        yield boto3.client("secretsmanager", region_name=REGION)


def _event(request: str, url: str, names: list[str], physical_id: str | None = None,
           old_names: list[str] | None = None, secret: str = "sesrelay/dev/smtp-tls") -> dict:
    properties = {"ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:cert",
                  "SecretName": secret, "Names": names, "ValidityDays": "825"}
    event: dict[str, Any] = {
        "RequestType": request, "ServiceToken": properties["ServiceToken"],
        "ResponseURL": url, "StackId": STACK, "RequestId": f"{request}-request",
        "LogicalResourceId": "RelayCertificate", "ResourceType": "Custom::RelayCertificate",
        "ResourceProperties": properties,
    }
    if physical_id:
        event["PhysicalResourceId"] = physical_id
    if old_names is not None:
        event["OldResourceProperties"] = {**properties, "Names": old_names}
    return event


def _answer() -> dict[str, Any]:
    [answer] = Responses.received
    Responses.received.clear()
    return answer


def _stored(secretsmanager: Any, arn: str) -> tuple[x509.Certificate, str]:
    text = secretsmanager.get_secret_value(SecretId=arn)["SecretString"]
    certificate, key = parse_secret(text, arn)
    return x509.load_pem_x509_certificate(certificate.encode()), key


def _fingerprint(certificate: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in certificate.fingerprint(hashes.SHA256()))


def test_create_update_delete(secretsmanager: Any, response_url: str) -> None:
    resource.handler(_event("Create", response_url, NAMES), None)
    created = _answer()
    assert created["Status"] == "SUCCESS", created["Reason"]
    arn = created["PhysicalResourceId"]
    assert arn.startswith(f"arn:aws:secretsmanager:{REGION}:") and ":secret:sesrelay/dev/" in arn
    assert created["Data"]["SecretArn"] == arn
    assert (created["StackId"], created["RequestId"], created["LogicalResourceId"]) == (
        STACK, "Create-request", "RelayCertificate")

    certificate, key = _stored(secretsmanager, arn)
    assert certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == NAMES
    assert certificate.subject.rfc4514_string() == f"CN={NAMES[0]}"
    assert certificate.issuer == certificate.subject  # self-signed
    assert _fingerprint(certificate) == created["Data"]["Fingerprint"]
    # The key in the secret is the certificate's.
    private = serialization.load_pem_private_key(key.encode(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key().public_numbers() == certificate.public_key().public_numbers()
    # The answer to CloudFormation carries no key.
    assert "PRIVATE KEY" not in json.dumps(created)

    renamed = [*NAMES, "mail.dev.example.internal"]
    resource.handler(_event("Update", response_url, renamed, arn, old_names=NAMES), None)
    updated = _answer()
    assert updated["Status"] == "SUCCESS" and updated["PhysicalResourceId"] == arn
    certificate, _ = _stored(secretsmanager, arn)
    assert certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == renamed
    assert updated["Data"]["Fingerprint"] == _fingerprint(certificate) != \
        created["Data"]["Fingerprint"]

    resource.handler(_event("Delete", response_url, renamed, arn), None)
    assert _answer()["Status"] == "SUCCESS"
    # Deleted at once, not scheduled: no version of the key can be read or restored.
    with pytest.raises(secretsmanager.exceptions.ResourceNotFoundException):
        secretsmanager.get_secret_value(SecretId=arn)
    assert secretsmanager.list_secrets(IncludePlannedDeletion=True)["SecretList"] == []


def test_a_failed_create_answers_failed_and_its_delete_succeeds(
        secretsmanager: Any, response_url: str) -> None:
    resource.handler(_event("Create", response_url, []), None)
    failed = _answer()
    assert failed["Status"] == "FAILED" and "Names" in failed["Reason"]
    assert secretsmanager.list_secrets(IncludePlannedDeletion=True)["SecretList"] == []
    # CloudFormation then deletes the resource under the physical ID it was given.
    resource.handler(_event("Delete", response_url, [], failed["PhysicalResourceId"]), None)
    assert _answer()["Status"] == "SUCCESS"


def test_renaming_the_secret_creates_a_new_one(secretsmanager: Any, response_url: str) -> None:
    resource.handler(_event("Create", response_url, NAMES), None)
    first = _answer()["PhysicalResourceId"]
    event = _event("Update", response_url, NAMES, first, old_names=NAMES,
                   secret="sesrelay/dev/smtp-tls-2")
    event["OldResourceProperties"]["SecretName"] = "sesrelay/dev/smtp-tls"
    resource.handler(event, None)
    second = _answer()["PhysicalResourceId"]
    assert second != first and ":secret:sesrelay/dev/smtp-tls-2" in second
