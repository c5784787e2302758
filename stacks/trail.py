"""The trail table: what happened to each message, written by the worker and the SES
events handler, read by the CLI. Its layout is the one ``sesrelay.trail`` declares."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from sesrelay import trail

# What the worker does with the trail: its own items (received, attempts, state), the
# events of a send in doubt (Query), and lookups by message ID (an index).
WORKER_TABLE_ACTIONS = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                        "dynamodb:BatchWriteItem", "dynamodb:Query"]
# The events handler only puts one item per SES event.
EVENTS_TABLE_ACTIONS = ["dynamodb:PutItem"]


def _key(definition: dict[str, Any], schema: list[dict[str, str]], kind: str
         ) -> dynamodb.Attribute | None:
    names = [k["AttributeName"] for k in schema if k["KeyType"] == kind]
    if not names:
        return None
    [attribute] = [a for a in definition["AttributeDefinitions"]
                   if a["AttributeName"] == names[0]]
    assert attribute["AttributeType"] == "S"
    return dynamodb.Attribute(name=names[0], type=dynamodb.AttributeType.STRING)


class Trail(Construct):
    """The trail table: keys and indexes from ``trail.table_definition()``, TTL on
    ``expires``, point-in-time recovery, on-demand capacity.

    Kept when the stack is deleted (RETAIN): the trail is the record of what happened
    to mail (bounces, complaints, who deleted what), which an admin may still need
    after tearing an environment down; a kept table costs nothing but its storage and
    empties itself through its TTL within sesrelay_trail_retention.
    """

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        definition = trail.table_definition()
        self.table = dynamodb.TableV2(
            self, "Table",
            partition_key=_key(definition, definition["KeySchema"], "HASH"),
            sort_key=_key(definition, definition["KeySchema"], "RANGE"),
            global_secondary_indexes=[
                dynamodb.GlobalSecondaryIndexPropsV2(
                    index_name=index["IndexName"],
                    partition_key=_key(definition, index["KeySchema"], "HASH"),
                    sort_key=_key(definition, index["KeySchema"], "RANGE"),
                    projection_type=dynamodb.ProjectionType.ALL)
                for index in definition["GlobalSecondaryIndexes"]],
            billing=dynamodb.Billing.on_demand(),
            time_to_live_attribute=trail.TTL_ATTRIBUTE,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.index_names = [index["IndexName"] for index in definition["GlobalSecondaryIndexes"]]

    def index_arns(self) -> list[str]:
        """Each index's ARN, named: a grant never needs ``index/*``."""
        return [f"{self.table.table_arn}/index/{name}" for name in self.index_names]

    def grant_worker(self, role: iam.IRole) -> None:
        """The worker's reads and writes, on the table and (Query) its indexes."""
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="TrailReadWrite", actions=WORKER_TABLE_ACTIONS,
            resources=[self.table.table_arn]))
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="TrailLookups", actions=["dynamodb:Query"], resources=self.index_arns()))

    def grant_events(self, role: iam.IRole) -> None:
        """The events handler's one write."""
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="TrailEvents", actions=EVENTS_TABLE_ACTIONS, resources=[self.table.table_arn]))
