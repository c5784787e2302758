"""sesrelay's Python Lambda functions, built one way: ARM64, the pinned Python runtime,
and a code asset that holds the handler package, the core package it imports and the
pinned dependencies (stacks/lambda_bundle.py: built on this machine, no Docker)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.lambda_bundle import bundled_code, code_packages
from stacks.nag import acknowledge

RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.ARM_64


def python_function(scope: Construct, construct_id: str, *, handler_package: str,
                    role: iam.IRole, log_group: logs.ILogGroup, timeout: cdk.Duration,
                    memory_mib: int, environment: dict[str, str],
                    description: str) -> lambda_.Function:
    """A function running ``<handler_package>.handler.handler``."""
    function = lambda_.Function(
        scope, construct_id,
        runtime=RUNTIME,
        architecture=ARCHITECTURE,
        handler=f"{handler_package}.handler.handler",
        code=bundled_code(code_packages(handler_package), RUNTIME, ARCHITECTURE),
        memory_size=memory_mib,
        timeout=timeout,
        role=role,
        log_group=log_group,
        environment=environment,
        description=description,
    )
    acknowledge(function, "AwsSolutions-L1",
                "The runtime is pinned to Python 3.13: the asset's dependencies are built "
                "for it, and the isolation test runs the asset on it.")
    return function
