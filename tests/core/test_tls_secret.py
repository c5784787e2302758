"""The relay task's certificate from Secrets Manager (sesrelay.tls_secret), against moto:
the files it writes serve TLS, the key is its owner's alone, and errors never show it."""

from __future__ import annotations

import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from sesrelay import aws
from sesrelay.certificates import self_signed
from sesrelay.config import load_config
from sesrelay.config.loader import ENV_TLS_SECRET
from sesrelay.tls_secret import CertificateSecretError, materialise, secret_value
from tests.support import moto_account

REGION = "eu-west-1"


@pytest.fixture
def secretsmanager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with moto_account(monkeypatch, REGION):
        aws.reset_clients()
        yield boto3.client("secretsmanager", region_name=REGION)
    aws.reset_clients()


def test_materialised_files_serve_tls_and_the_key_is_owner_only(
        secretsmanager: Any, tmp_path: Path) -> None:
    made = self_signed(tmp_path / "made", ["smtp.example.internal"])
    arn = secretsmanager.create_secret(Name="sesrelay/test/smtp-tls", SecretString=secret_value(
        made.cert_file.read_text(), made.key_file.read_text()))["ARN"]
    cert_file, key_file = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    assert materialise(arn, cert_file, key_file) == made.fingerprint
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)


def test_a_bad_secret_is_named_without_its_value(secretsmanager: Any, tmp_path: Path) -> None:
    key = "-----BEGIN PRIVATE KEY-----\nsecret material\n-----END PRIVATE KEY-----\n"
    secretsmanager.create_secret(Name="broken", SecretString=secret_value("not pem", key))
    with pytest.raises(CertificateSecretError) as error:
        materialise("broken", tmp_path / "c.pem", tmp_path / "k.pem")
    assert "'certificate' is missing or not PEM" in str(error.value)
    assert "secret material" not in str(error.value)
    with pytest.raises(CertificateSecretError, match="missing"):
        materialise("missing", tmp_path / "c.pem", tmp_path / "k.pem")


def test_the_secret_variable_is_not_a_parameter() -> None:
    assert load_config(environ={ENV_TLS_SECRET: "arn:aws:secretsmanager:x"}) is not None
