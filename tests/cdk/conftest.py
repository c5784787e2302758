"""Synthesize each deployment once per test session, offline: no AWS credentials, no
Docker. Every environment in cdk.json is synthesized, plus variants for the options
cdk.json does not use: one that imports its VPC and offers a PrivateLink endpoint
service, and one for each egress without NAT gateways (endpoints, public)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

import app as cdk_app
from stacks.environment import load_environment
from tests.cdk.synth import Deployment

IMPORTED = "imported"
# Egress variants: dev (TLS and AUTH, so the relay reads secrets) with interface
# endpoints, and prod (two tasks in two AZs) with public subnets.
ENDPOINTS = "endpoints"
PUBLIC = "public"
EGRESS_VARIANTS = {ENDPOINTS: "dev", PUBLIC: "prod"}
IMPORTED_CIDRS = ["10.90.1.0/24", "10.90.2.0/24"]
CONSUMER_ACCOUNT = "arn:aws:iam::210987654321:root"
OPERATOR_SECRET = "sesrelay/imported/smtp-tls"


def imported_context() -> dict[str, Any]:
    """cdk.json's context plus an environment that imports its VPC, has PrivateLink,
    runs 2-vCPU tasks, adds its event destination to an existing configuration set and
    serves STARTTLS with the operator's certificate."""
    context = cdk_app.file_context()
    environment = copy.deepcopy(context["environments"]["prod"])
    environment["vpc"] = {
        "vpc_id": "vpc-0a1b2c3d4e5f60718",
        "availability_zones": ["eu-west-1a", "eu-west-1b"],
        "private_subnet_ids": ["subnet-0a1b2c3d4e5f60001", "subnet-0a1b2c3d4e5f60002"],
        "private_subnet_cidrs": IMPORTED_CIDRS,
    }
    environment["private_dns"] = {"zone_name": "corp.internal", "record_name": "mail",
                                  "zone_id": "Z0123456789ABCDEFGHIJ"}
    environment["endpoint_service"] = {"allowed_principals": [CONSUMER_ACCOUNT]}
    environment["relay"]["mynetworks"] = ["10.90.0.0/16"]
    environment["service"] = {**environment["service"], "cpu": 2048, "memory_mib": 4096}
    # The configuration set exists already: only its event destination is added.
    environment["events"] = {"configuration_set_exists": True}
    # STARTTLS on 25 and 587 with the operator's certificate; no AUTH.
    environment["relay"]["smtpd_tls_security_level"] = "may"
    environment["smtp_ports"] = [25, 587]
    environment["tls"] = {"certificate_secret": OPERATOR_SECRET}
    return {"environments": {**context["environments"], IMPORTED: environment},
            "env": IMPORTED}


def egress_context(name: str) -> dict[str, Any]:
    """cdk.json's context plus the egress variant name: its base environment with
    vpc.egress set to name (and no NAT gateway count)."""
    context = cdk_app.file_context()
    environment = copy.deepcopy(context["environments"][EGRESS_VARIANTS[name]])
    environment["vpc"] = {key: value for key, value in environment["vpc"].items()
                          if key != "nat_gateways"} | {"egress": name}
    return {"environments": {**context["environments"], name: environment}, "env": name}


@pytest.fixture(scope="session", autouse=True)
def offline() -> None:
    """No AWS credentials or region, and no usable Docker, for the whole session."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("CDK_DEFAULT_"):
            del os.environ[name]
    # Any attempt to run Docker would fail on this path.
    os.environ["CDK_DOCKER"] = "/nonexistent/docker"
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def _synthesize(name: str, context: dict[str, Any], outdir: Path) -> Deployment:
    app, checks = cdk_app.create_app(context, outdir=str(outdir))
    assembly = app.synth()
    stack = assembly.get_stack_by_name(f"sesrelay-{name}")
    settings = load_environment({**cdk_app.file_context(), **context}, name)
    return Deployment(name, settings, app, checks, assembly, stack.template)


@pytest.fixture(scope="session")
def deployments(offline: None, tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, Deployment]:
    """Every environment in cdk.json, the imported-VPC variant and the egress variants,
    synthesized once."""
    result = {}
    for name in cdk_app.file_context()["environments"]:
        result[name] = _synthesize(name, {"env": name}, tmp_path_factory.mktemp(name))
    result[IMPORTED] = _synthesize(IMPORTED, imported_context(),
                                   tmp_path_factory.mktemp(IMPORTED))
    for name in EGRESS_VARIANTS:
        result[name] = _synthesize(name, egress_context(name), tmp_path_factory.mktemp(name))
    return result


@pytest.fixture(scope="session")
def dev(deployments: dict[str, Deployment]) -> Deployment:
    """The dev environment."""
    return deployments["dev"]


@pytest.fixture(scope="session")
def prod(deployments: dict[str, Deployment]) -> Deployment:
    """The prod environment."""
    return deployments["prod"]


@pytest.fixture(scope="session")
def imported(deployments: dict[str, Deployment]) -> Deployment:
    """The variant with an imported VPC, an imported zone and PrivateLink."""
    return deployments[IMPORTED]


@pytest.fixture(scope="session")
def endpoints(deployments: dict[str, Deployment]) -> Deployment:
    """dev with egress through interface endpoints."""
    return deployments[ENDPOINTS]


@pytest.fixture(scope="session")
def public(deployments: dict[str, Deployment]) -> Deployment:
    """prod with its tasks in public subnets."""
    return deployments[PUBLIC]
