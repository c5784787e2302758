"""sesrelay's Python Lambda functions, built one way: ARM64, the pinned Python runtime with
the matching public Powertools layer, and a code asset that holds the handler package
and the core package it imports (copied from the repository: no Docker needed)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.environment import EnvironmentSettings
from stacks.nag import acknowledge

REPO_ROOT = Path(__file__).resolve().parent.parent
CORE_PACKAGE = REPO_ROOT / "sesrelay"
RUNTIME = lambda_.Runtime.PYTHON_3_13
# boto3 comes with the runtime and powertools from its public layer.
POWERTOOLS_LAYER = ("arn:{partition}:lambda:{region}:017000801446:layer:"
                    "AWSLambdaPowertoolsPythonV3-python313-arm64:{version}")


@jsii.implements(cdk.ILocalBundling)
class CopyPackages:
    """Builds a function's code by copying Python packages into it."""

    def __init__(self, packages: dict[str, Path]) -> None:
        self.packages = packages

    def try_bundle(self, output_dir: str, *args: Any, **kwargs: Any) -> bool:
        """Copy each package into output_dir, without bytecode caches."""
        for name, source in self.packages.items():
            shutil.copytree(source, Path(output_dir) / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return True


def code_packages(handler_package: str) -> dict[str, Path]:
    """The packages of a function whose handler lives in lambdas/<handler_package>."""
    return {handler_package: REPO_ROOT / "lambdas" / handler_package, "sesrelay": CORE_PACKAGE}


def python_function(scope: Construct, construct_id: str, *, settings: EnvironmentSettings,
                    handler_package: str, role: iam.IRole, log_group: logs.ILogGroup,
                    timeout: cdk.Duration, memory_mib: int, environment: dict[str, str],
                    description: str) -> lambda_.Function:
    """A function running ``<handler_package>.handler.handler``."""
    packages = code_packages(handler_package)
    function = lambda_.Function(
        scope, construct_id,
        runtime=RUNTIME,
        architecture=lambda_.Architecture.ARM_64,
        handler=f"{handler_package}.handler.handler",
        code=lambda_.Code.from_asset(
            str(packages[handler_package]),
            bundling=cdk.BundlingOptions(
                # Never pulled: the local bundler always succeeds.
                image=RUNTIME.bundling_image,
                local=CopyPackages(packages),
            ),
        ),
        layers=[lambda_.LayerVersion.from_layer_version_arn(
            scope, f"{construct_id}Powertools", POWERTOOLS_LAYER.format(
                partition=cdk.Aws.PARTITION, region=cdk.Aws.REGION,
                version=settings.powertools_layer_version))],
        memory_size=memory_mib,
        timeout=timeout,
        role=role,
        log_group=log_group,
        environment=environment,
        description=description,
    )
    acknowledge(function, "AwsSolutions-L1",
                "The runtime is pinned to Python 3.13 together with the matching build of "
                "the public Powertools layer (python313); both move together, deliberately.")
    return function
