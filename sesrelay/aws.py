"""AWS clients, made once per process and shared.

boto3 honours the standard endpoint variables (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3,
AWS_ENDPOINT_URL_SQS, ...), so the same code talks to AWS, to moto, or to any
S3/SQS-compatible endpoint. Each client carries the time budget of the calls it makes
(sesrelay.timeouts).
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)

from sesrelay.timeouts import DEFAULT, CallBudget

_lock = threading.Lock()
_clients: dict[tuple[str, str | None, CallBudget, int], Any] = {}


def client(service: str, region: str | None = None, budget: CallBudget = DEFAULT,
           pool: int = 10) -> Any:
    """The process-wide boto3 client for service with this budget (thread-safe; boto3
    clients are). pool is the size of its HTTP connection pool."""
    key = (service, region or None, budget, pool)
    with _lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client(
                service, region_name=region or None, config=budget.boto_config(pool))
        return _clients[key]


def reset_clients() -> None:
    """Forget cached clients (after the endpoint or credentials change, as in tests)."""
    with _lock:
        _clients.clear()


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ("" for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def certainly_not_done(exc: BotoCoreError | ClientError) -> bool:
    """True when a failed call certainly had no effect: the service answered with a
    client error (4xx), or the request never left (no connection). A read timeout, a
    connection dropped after the request was written, or a server error (5xx) leave the
    outcome unknown: the service may have acted."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return 400 <= int(status or 0) < 500
    return isinstance(exc, EndpointConnectionError | ConnectTimeoutError)
