"""How the relay tasks reach AWS's APIs (vpc.egress): NAT gateways, interface endpoints
or public addresses, each synthesized (tests/cdk/conftest.py), and the settings that
choose it. cdk-nag and cfn-lint run on every variant in test_gates.py."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

import app as cdk_app
from stacks.environment import SettingsError, load_environment
from tests.cdk.conftest import IMPORTED, imported_context
from tests.cdk.synth import Deployment

HTTPS = 443


def _region_service(endpoint: dict[str, Any]) -> str:
    """An endpoint's service without its region: ``sqs``, ``ecr.dkr``, ``s3``."""
    return json.dumps(endpoint["ServiceName"]).rsplit('"', 2)[-2].lstrip(".")


def _endpoints(deployment: Deployment, kind: str) -> dict[str, dict[str, Any]]:
    """The VPC endpoints of a kind (Interface, Gateway) by service."""
    return {_region_service(r["Properties"]): r["Properties"]
            for r in deployment.resources("AWS::EC2::VPCEndpoint").values()
            if r["Properties"]["VpcEndpointType"] == kind}


def _network_configuration(deployment: Deployment) -> dict[str, Any]:
    return deployment.one("AWS::ECS::Service")["NetworkConfiguration"]["AwsvpcConfiguration"]


def _task_security_group(deployment: Deployment) -> str:
    [group] = _network_configuration(deployment)["SecurityGroups"]
    return str(group["Fn::GetAtt"][0])


def _default_routes(deployment: Deployment) -> list[str]:
    """What the VPC's 0.0.0.0/0 routes point at (NatGatewayId, GatewayId)."""
    return [key for r in deployment.resources("AWS::EC2::Route").values()
            if r["Properties"].get("DestinationCidrBlock") == "0.0.0.0/0"
            for key in r["Properties"] if key.endswith("Id") and key != "RouteTableId"]


def test_every_created_vpc_has_free_gateway_endpoints_for_s3_and_dynamodb(
        deployments: dict[str, Deployment]) -> None:
    for name, deployment in deployments.items():
        if name == IMPORTED:
            assert deployment.resources("AWS::EC2::VPCEndpoint") == {}
            continue
        gateways = _endpoints(deployment, "Gateway")
        assert set(gateways) == {"s3", "dynamodb"}, name
        # Routed from the subnets the tasks are in.
        task_subnets = {s["Ref"] for s in _network_configuration(deployment)["Subnets"]}
        associations = deployment.resources("AWS::EC2::SubnetRouteTableAssociation").values()
        task_tables = [a["Properties"]["RouteTableId"] for a in associations
                       if a["Properties"]["SubnetId"] in [{"Ref": s} for s in task_subnets]]
        assert task_tables, name
        for endpoint in gateways.values():
            assert all(table in endpoint["RouteTableIds"] for table in task_tables), name


def test_nat_egress_is_what_dev_and_prod_use(deployments: dict[str, Deployment]) -> None:
    for name, gateways in (("dev", 1), ("prod", 2)):
        deployment = deployments[name]
        assert len(deployment.resources("AWS::EC2::NatGateway")) == gateways
        assert _network_configuration(deployment)["AssignPublicIp"] == "DISABLED"
        assert _endpoints(deployment, "Interface") == {}


def test_endpoints_egress_has_no_way_to_the_internet(endpoints: Deployment) -> None:
    for kind in ("AWS::EC2::NatGateway", "AWS::EC2::EIP", "AWS::EC2::InternetGateway"):
        assert endpoints.resources(kind) == {}, kind
    assert _default_routes(endpoints) == []
    assert _network_configuration(endpoints)["AssignPublicIp"] == "DISABLED"
    assert not any(s["Properties"].get("MapPublicIpOnLaunch")
                   for s in endpoints.resources("AWS::EC2::Subnet").values())


def test_endpoints_egress_has_an_interface_endpoint_per_api_the_relay_calls(
        endpoints: Deployment) -> None:
    interface = _endpoints(endpoints, "Interface")
    # dev's relay reads its certificate and user table: Secrets Manager too. No ECS Exec,
    # so no ssmmessages; no SES (the worker Lambda sends, outside the VPC).
    assert set(interface) == {"sqs", "ecr.api", "ecr.dkr", "logs", "secretsmanager"}
    task_subnets = _network_configuration(endpoints)["Subnets"]
    for service, endpoint in interface.items():
        assert endpoint["SubnetIds"] == task_subnets, service
        assert endpoint["PrivateDnsEnabled"] is True, service


def test_each_endpoint_admits_https_from_the_relay_tasks_only(endpoints: Deployment) -> None:
    resources = endpoints.template["Resources"]
    task_group = _task_security_group(endpoints)
    groups = []
    for service, endpoint in _endpoints(endpoints, "Interface").items():
        [group] = endpoint["SecurityGroupIds"]
        group_id = group["Fn::GetAtt"][0]
        groups.append(group_id)
        assert "SecurityGroupIngress" not in resources[group_id]["Properties"], service
        rules = [r["Properties"] for r in endpoints.resources(
            "AWS::EC2::SecurityGroupIngress").values()
            if r["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}]
        assert [(r["SourceSecurityGroupId"], r["FromPort"], r["ToPort"], r["IpProtocol"])
                for r in rules] == [({"Fn::GetAtt": [task_group, "GroupId"]}, HTTPS, HTTPS,
                                     "tcp")], service
    assert len(set(groups)) == len(groups)  # a group of its own each


def test_public_egress_gives_tasks_public_addresses_but_admits_only_the_nlb(
        public: Deployment) -> None:
    for kind in ("AWS::EC2::NatGateway", "AWS::EC2::EIP"):
        assert public.resources(kind) == {}, kind
    assert _endpoints(public, "Interface") == {}
    network = _network_configuration(public)
    assert network["AssignPublicIp"] == "ENABLED"
    assert _default_routes(public) == ["GatewayId"] * 2  # the Internet gateway, per AZ
    resources = public.template["Resources"]
    for subnet in network["Subnets"]:
        assert resources[subnet["Ref"]]["Properties"]["MapPublicIpOnLaunch"] is True
    # Nothing reaches a task from an address: its one source is the NLB's security
    # group, on the container port (test_resources.py checks the ports).
    task_group = _task_security_group(public)
    assert "SecurityGroupIngress" not in resources[task_group]["Properties"]
    sources = [r["Properties"] for r in public.resources(
        "AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [task_group, "GroupId"]}]
    [lb_group] = public.one("AWS::ElasticLoadBalancingV2::LoadBalancer")["SecurityGroups"]
    assert sources and all(r.get("SourceSecurityGroupId") == lb_group and "CidrIp" not in r
                           for r in sources)
    # The NLB stays internal, admitting mynetworks only (test_resources.py).
    assert public.one("AWS::ElasticLoadBalancingV2::LoadBalancer")["Scheme"] == "internal"


def test_the_worker_lambdas_stay_outside_the_vpc(deployments: dict[str, Deployment]) -> None:
    for name, deployment in deployments.items():
        functions = deployment.resources("AWS::Lambda::Function")
        assert functions, name
        assert not any("VpcConfig" in f["Properties"] for f in functions.values()), name


# Settings ------------------------------------------------------------------------------

def _context(name: str, vpc: dict[str, Any]) -> dict[str, Any]:
    context = cdk_app.file_context()
    environments = copy.deepcopy(context["environments"])
    environments[name]["vpc"] = vpc
    return {"environments": environments}


def test_egress_defaults_to_nat_with_one_gateway() -> None:
    settings = load_environment(_context("dev", {"cidr": "10.80.0.0/16"}), "dev")
    assert (settings.vpc.egress, settings.vpc.nat_gateways) == ("nat", 1)
    settings = load_environment(_context("prod", {"egress": "public"}), "prod")
    assert (settings.vpc.egress, settings.vpc.nat_gateways) == ("public", 0)


@pytest.mark.parametrize(("vpc", "message"), [
    ({"egress": "nat-gateway"}, r"cdk\.json environments\.prod\.vpc\.egress: 'nat-gateway' "
                                r"is not one of nat, endpoints, public"),
    ({"egress": "endpoints", "nat_gateways": 2},
     r"environments\.prod\.vpc\.nat_gateways: egress 'endpoints' creates no NAT gateway"),
    ({"egress": 1}, r"environments\.prod\.vpc\.egress: expected str"),
])
def test_bad_egress_names_the_environment(vpc: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_environment(_context("prod", vpc), "prod")


def test_an_imported_vpc_brings_its_own_egress() -> None:
    context = imported_context()
    context["environments"][IMPORTED]["vpc"]["egress"] = "public"
    with pytest.raises(SettingsError, match=r"environments\.imported\.vpc\.egress: an "
                                            r"imported VPC \(vpc_id\) brings its own egress"):
        load_environment(context, IMPORTED)
