"""Fixtures for the core contracts: a moto account with the idempotency and trail tables."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from sesrelay import trail
from tests.support import moto_account

REGION = "us-east-1"
IDEMPOTENCY_TABLE = "sesrelay-test-idempotency"
TRAIL_TABLE = "sesrelay-test-trail"


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A DynamoDB client on a moto account holding both tables."""
    with moto_account(monkeypatch, REGION):
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(
            TableName=IDEMPOTENCY_TABLE, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
        client.create_table(TableName=TRAIL_TABLE, **trail.table_definition())
        yield client
