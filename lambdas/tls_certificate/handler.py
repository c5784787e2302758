"""CloudFormation custom resource: a self-signed certificate for the relay's names, made at
deploy time and kept in a Secrets Manager secret that this resource owns.

Properties: ``SecretName`` (the secret to create), ``Names`` (DNS names, the first one
the subject), ``ValidityDays``. Create makes the secret; Update (new names) puts a new
certificate in the same secret; Delete removes the secret at once, without Secrets
Manager's recovery window, so that no copy of the private key outlives the resource.
The physical ID is the secret's ARN; ``Fingerprint`` (SHA-256) and ``SecretArn`` are
returned. Nothing here logs the key or the event's secret values.
"""

from __future__ import annotations

import contextlib
import json
import logging
import urllib.request
from typing import Any

import boto3

from sesrelay.certificates import self_signed_pem
from sesrelay.tls_secret import fingerprint, secret_value

log = logging.getLogger()
log.setLevel(logging.INFO)


def _names(properties: dict[str, Any]) -> list[str]:
    # CloudFormation passes every property as a string; dict.fromkeys keeps the order.
    names = list(dict.fromkeys(n.strip().lower().rstrip(".") for n in properties["Names"]))
    if not names or not all(names):
        raise ValueError("Names must list at least one DNS name")
    return names


def _certificate(properties: dict[str, Any]) -> tuple[str, str]:
    """(secret value, fingerprint) of a new certificate for the properties' names."""
    pem, key = self_signed_pem(_names(properties), int(properties.get("ValidityDays", 825)))
    certificate = pem.decode("ascii")
    return secret_value(certificate, key.decode("ascii")), fingerprint(certificate)


def handle(event: dict[str, Any], client: Any) -> tuple[str, dict[str, str]]:
    """Carry out one request; return (physical ID, data)."""
    request = event["RequestType"]
    properties = event["ResourceProperties"]
    if request == "Create":
        # Made before the secret, with its value in the same call: a Create that fails
        # leaves no secret behind (CloudFormation's Delete then has no ARN to remove).
        value, digest = _certificate(properties)
        arn = client.create_secret(
            Name=properties["SecretName"], SecretString=value,
            Description="sesrelay: the relay's generated self-signed TLS certificate and key",
        )["ARN"]
        return arn, {"Fingerprint": digest, "SecretArn": arn}
    arn = event["PhysicalResourceId"]
    if request == "Update":
        if properties["SecretName"] != event["OldResourceProperties"]["SecretName"]:
            # A new physical ID: CloudFormation then deletes the old secret.
            return handle({**event, "RequestType": "Create"}, client)
        value, digest = _certificate(properties)
        client.put_secret_value(SecretId=arn, SecretString=value)
        return arn, {"Fingerprint": digest, "SecretArn": arn}
    if request == "Delete":
        if arn.startswith("arn:"):  # a failed Create leaves no secret, only its request ID
            with contextlib.suppress(client.exceptions.ResourceNotFoundException):
                client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
        return arn, {}
    raise ValueError(f"unknown RequestType {request!r}")


def respond(event: dict[str, Any], status: str, physical_id: str, data: dict[str, str],
            reason: str = "") -> None:
    """Send the result to CloudFormation's pre-signed response URL."""
    body = json.dumps({
        "Status": status, "Reason": reason[:1000], "PhysicalResourceId": physical_id,
        "StackId": event["StackId"], "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"], "Data": data,
    }).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT",
                                     headers={"Content-Type": ""})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def handler(event: dict[str, Any], context: Any) -> None:
    """Lambda entry point: every outcome, failures included, goes back to CloudFormation
    (a resource that never answers holds the stack for an hour)."""
    log.info("%s %s", event.get("RequestType"), event.get("LogicalResourceId"))
    # A failed Create has no physical ID yet: the request ID stands in (Delete skips it).
    physical_id = event.get("PhysicalResourceId") or event["RequestId"]
    try:
        physical_id, data = handle(event, boto3.client("secretsmanager"))
    except Exception as exc:
        log.exception("certificate %s failed", event.get("RequestType"))
        respond(event, "FAILED", physical_id, {}, f"{type(exc).__name__}: {exc}")
        return
    respond(event, "SUCCESS", physical_id, data)
