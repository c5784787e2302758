"""`sesrelay dev`'s AWS emulation keeps the promise the exactly-once protocol relies on:
a conditional write to a DynamoDB item succeeds for exactly one of many concurrent
writers, as in DynamoDB (moto's threaded server alone lets two succeed now and then:
the fault soak once sent a message twice that way)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError

from sesrelay.dev import start_emulation
from tests.support import free_port

WRITERS = 16
ROUNDS = 100


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = free_port()
    server = start_emulation(port)
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_one_conditional_write_wins_among_concurrent_writers(endpoint: str) -> None:
    settings = {"endpoint_url": endpoint, "region_name": "us-east-1",
                "aws_access_key_id": "test", "aws_secret_access_key": "test"}
    boto3.client("dynamodb", **settings).create_table(
        TableName="claims", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    clients = [boto3.client("dynamodb", **settings) for _ in range(WRITERS)]
    winners_per_round = [len(race(clients, f"item-{n}")) for n in range(ROUNDS)]
    assert set(winners_per_round) == {1}


def race(clients: list[object], key: str) -> list[int]:
    """Every client writes key at once, on condition that it does not exist yet; the
    writers that succeeded."""
    winners: list[int] = []
    start = threading.Barrier(len(clients))

    def claim(writer: int) -> None:
        start.wait()
        try:
            clients[writer].update_item(  # type: ignore[attr-defined]
                TableName="claims", Key={"id": {"S": key}}, UpdateExpression="SET w = :w",
                ConditionExpression="attribute_not_exists(id)",
                ExpressionAttributeValues={":w": {"N": str(writer)}})
            winners.append(writer)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ConditionalCheckFailedException"

    threads = [threading.Thread(target=claim, args=(w,)) for w in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return winners
