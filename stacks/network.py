"""The VPC the relay lives in: created with flow logs and the tasks' egress of choice
(NAT gateways, interface endpoints or public addresses), or imported from its attributes."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.environment import (
    EGRESS_ENDPOINTS,
    EGRESS_NAT,
    EGRESS_PUBLIC,
    CreatedVpc,
    EnvironmentSettings,
    ImportedVpc,
)

# The subnets that hold the NLB and the relay tasks, by egress.
_WORKLOAD_SUBNETS = {
    EGRESS_NAT: ec2.SubnetType.PRIVATE_WITH_EGRESS,
    EGRESS_ENDPOINTS: ec2.SubnetType.PRIVATE_ISOLATED,
    EGRESS_PUBLIC: ec2.SubnetType.PUBLIC,
}


class Network(Construct):
    """The VPC and the subnets that hold the NLB and the relay tasks: private (NAT
    egress, or an imported VPC's own), isolated (interface endpoints) or public.

    ``subnet_cidrs`` are the CIDRs of those subnets: the NLB's nodes (and its health
    checks) connect from there, so they are the only peers the relay accepts PROXY
    headers from. ``egress`` is the created VPC's egress option, None for an imported
    VPC.
    """

    def __init__(self, scope: Construct, construct_id: str, settings: EnvironmentSettings,
                 log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        self.egress: str | None = None
        if isinstance(settings.vpc, ImportedVpc):
            self.vpc = self._imported(settings.vpc)
            subnet_type = ec2.SubnetType.PRIVATE_WITH_EGRESS
        else:
            self.egress = settings.vpc.egress
            self.vpc = self._created(settings.vpc, log_retention)
            subnet_type = _WORKLOAD_SUBNETS[settings.vpc.egress]
        self.subnets = ec2.SubnetSelection(subnet_type=subnet_type)
        self.subnet_cidrs: list[str] = [
            subnet.ipv4_cidr_block
            for subnet in self.vpc.select_subnets(subnet_type=subnet_type).subnets
        ]

    @property
    def public_tasks(self) -> bool:
        """Whether the relay tasks sit in public subnets with a public IPv4 address each
        (their only way to AWS's APIs besides the gateway endpoints)."""
        return self.egress == EGRESS_PUBLIC

    def _imported(self, vpc: ImportedVpc) -> ec2.IVpc:
        return ec2.Vpc.from_vpc_attributes(
            self, "Vpc",
            vpc_id=vpc.vpc_id,
            availability_zones=list(vpc.availability_zones),
            private_subnet_ids=list(vpc.private_subnet_ids),
            private_subnet_ipv4_cidr_blocks=list(vpc.private_subnet_cidrs),
        )

    def _created(self, vpc: CreatedVpc, log_retention: logs.RetentionDays) -> ec2.IVpc:
        created = ec2.Vpc(
            self, "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(vpc.cidr),
            max_azs=vpc.max_azs,
            nat_gateways=vpc.nat_gateways,
            subnet_configuration=_subnets(vpc.egress),
            # Spooled messages and commit records reach S3 and DynamoDB without NAT
            # gateways or interface endpoints (gateway endpoints cost nothing).
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(
                    service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(
                    service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
        )
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=log_retention,
                                  removal_policy=cdk.RemovalPolicy.DESTROY)
        # Rejected flows show clients outside mynetworks knocking; accepted sessions are
        # in the relay's own log, with the client address from the PROXY header.
        created.add_flow_log("FlowLog",
                             destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                             traffic_type=ec2.FlowLogTrafficType.REJECT)
        return created


def _subnets(egress: str) -> list[ec2.SubnetConfiguration]:
    """The subnet groups of a created VPC, one subnet per AZ each."""
    workload = ec2.SubnetConfiguration(name="private", cidr_mask=22,
                                       subnet_type=_WORKLOAD_SUBNETS[egress])
    if egress == EGRESS_NAT:
        # Public subnets only carry the NAT gateways; nothing listens there.
        return [ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC,
                                        cidr_mask=24), workload]
    if egress == EGRESS_PUBLIC:
        # The internal NLB and the tasks share them; the tasks' security group admits
        # only the NLB, so their public addresses serve outbound calls alone.
        return [ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC,
                                        cidr_mask=22)]
    return [workload]
