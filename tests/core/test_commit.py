"""Commit records: the relay's refusal and the worker's claim exclude each other."""

from __future__ import annotations

from typing import Any

from sesrelay import commit
from sesrelay.commit import CommitState
from tests.core.conftest import IDEMPOTENCY_TABLE as TABLE


def test_a_refusal_before_the_claim_stops_the_worker(dynamodb: Any) -> None:
    assert commit.refuse(dynamodb, TABLE, "Q1") is True
    assert commit.refuse(dynamodb, TABLE, "Q1") is True  # repeating it is harmless
    stopped = commit.claim(dynamodb, TABLE, "Q1")
    assert stopped is not None and stopped.state is CommitState.REFUSED


def test_a_claim_before_the_refusal_means_the_message_is_queued(dynamodb: Any) -> None:
    assert commit.claim(dynamodb, TABLE, "Q2") is None
    assert commit.claim(dynamodb, TABLE, "Q2") is None  # a redelivery claims again
    assert commit.refuse(dynamodb, TABLE, "Q2") is False
    assert commit.read(dynamodb, TABLE, "Q2").state is CommitState.CLAIMED


def test_a_deleted_message_is_never_claimed(dynamodb: Any) -> None:
    assert commit.claim(dynamodb, TABLE, "Q3") is None
    assert commit.delete(dynamodb, TABLE, "Q3", by="admin") is None
    stopped = commit.claim(dynamodb, TABLE, "Q3")
    assert stopped is not None and stopped.state is CommitState.DELETED
    assert stopped.by == "admin"
    assert commit.refuse(dynamodb, TABLE, "Q3") is False


def test_deleting_a_refused_message_reports_the_refusal(dynamodb: Any) -> None:
    assert commit.refuse(dynamodb, TABLE, "Q4") is True
    stopped = commit.delete(dynamodb, TABLE, "Q4", by="admin")
    assert stopped is not None and stopped.state is CommitState.REFUSED


def test_records_expire_with_the_table_ttl(dynamodb: Any) -> None:
    commit.claim(dynamodb, TABLE, "Q5", now=1_000_000.0)
    item = dynamodb.get_item(TableName=TABLE, Key={"id": {"S": commit.commit_key("Q5")}})
    assert int(item["Item"]["expiration"]["N"]) == 1_000_000 + commit.RECORD_TTL
