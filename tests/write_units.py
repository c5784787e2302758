"""DynamoDB write request units, counted as on-demand bills them, for the tests that pin the
cost model's requests per message: one unit per item written (each checked below 1 KB),
plus one per global secondary index the write puts the item into or takes it out of,
two when it moves the item within an index (DynamoDB's documented index write costs)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.client
import pytest

ONE_UNIT = 1024
# botocore's own call, taken at import, before any test wraps it: the helper's reads go
# through it so that no counter of the code's calls sees them.
_UNCOUNTED = botocore.client.BaseClient._make_api_call


def _index_units(old: dict[str, Any] | None, new: dict[str, Any] | None,
                 keys: list[str]) -> int:
    before = old is not None and all(k in old for k in keys)
    after = new is not None and all(k in new for k in keys)
    if before and after:
        assert old is not None and new is not None
        return 2 if any(old[k] != new[k] for k in keys) else 1
    return 1 if before or after else 0


class WriteUnits:
    """Write units by table, while counting."""

    def __init__(self, region: str) -> None:
        self.units: Counter[str] = Counter()
        # A client of its own, for reading tables and items before a write.
        self._dynamodb = boto3.client("dynamodb", region_name=region)
        self._tables: dict[str, dict[str, Any]] = {}

    def _table(self, name: str) -> dict[str, Any]:
        if name not in self._tables:
            self._tables[name] = _UNCOUNTED(self._dynamodb, "DescribeTable",
                                            {"TableName": name})["Table"]
        return self._tables[name]

    def _old(self, table: str, item: dict[str, Any]) -> dict[str, Any] | None:
        key = {k["AttributeName"]: item[k["AttributeName"]]
               for k in self._table(table)["KeySchema"]}
        found = _UNCOUNTED(self._dynamodb, "GetItem",
                           {"TableName": table, "Key": key, "ConsistentRead": True})
        return found.get("Item")

    def put(self, table: str, item: dict[str, Any]) -> None:
        """A put of item into table, before it is made."""
        assert len(json.dumps(item)) < ONE_UNIT, item
        old = self._old(table, item)
        units = 1
        for index in self._table(table).get("GlobalSecondaryIndexes", []):
            units += _index_units(old, item, [k["AttributeName"] for k in index["KeySchema"]])
        self.units[table] += units

    def update(self, table: str, key: dict[str, Any]) -> None:
        """An update of the item at key (tables without indexes only)."""
        assert not self._table(table).get("GlobalSecondaryIndexes"), table
        assert len(json.dumps(self._old(table, key) or {})) < ONE_UNIT
        self.units[table] += 1

    def record(self, operation: str, params: dict[str, Any]) -> None:
        """Count a DynamoDB call about to be made."""
        if operation == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    self.put(table, request["PutRequest"]["Item"])
        elif operation == "PutItem":
            self.put(params["TableName"], params["Item"])
        elif operation in ("UpdateItem", "DeleteItem"):
            self.update(params["TableName"], params["Key"])


@contextmanager
def counting_writes(monkeypatch: pytest.MonkeyPatch, region: str) -> Iterator[WriteUnits]:
    """Count the write units of every DynamoDB call any client makes meanwhile."""
    counted = WriteUnits(region)
    make_api_call = botocore.client.BaseClient._make_api_call

    def counting(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if client.meta.service_model.service_name == "dynamodb":
            counted.record(operation, params)
        return make_api_call(client, operation, params)

    with monkeypatch.context() as patch:
        patch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
        yield counted
