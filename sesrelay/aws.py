"""AWS clients, made once per process and shared.

boto3 honours the standard endpoint variables (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3,
AWS_ENDPOINT_URL_SQS, ...), so the same code talks to AWS, to moto, or to any
S3/SQS-compatible endpoint.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

_lock = threading.Lock()
_clients: dict[tuple[str, str | None], Any] = {}

# Short timeouts: a slow store must turn into a 451 the client retries, not a hung session.
CLIENT_CONFIG = BotoConfig(
    connect_timeout=5,
    read_timeout=20,
    retries={"mode": "standard", "max_attempts": 3},
    max_pool_connections=64,
)


def client(service: str, region: str | None = None) -> Any:
    """The process-wide boto3 client for service (thread-safe; boto3 clients are)."""
    key = (service, region or None)
    with _lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client(
                service, region_name=region or None, config=CLIENT_CONFIG)
        return _clients[key]


def reset_clients() -> None:
    """Forget cached clients (after the endpoint or credentials change, as in tests)."""
    with _lock:
        _clients.clear()
