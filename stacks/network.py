"""The VPC the relay lives in: created with flow logs, or imported from its attributes."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.environment import CreatedVpc, EnvironmentSettings, ImportedVpc


class Network(Construct):
    """The VPC and the private subnets that hold the NLB and the relay tasks.

    ``subnet_cidrs`` are the CIDRs of those subnets: the NLB's nodes (and its health
    checks) connect from there, so they are the only peers the relay accepts PROXY
    headers from.
    """

    def __init__(self, scope: Construct, construct_id: str, settings: EnvironmentSettings,
                 log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        if isinstance(settings.vpc, ImportedVpc):
            self.vpc = self._imported(settings.vpc)
        else:
            self.vpc = self._created(settings.vpc, log_retention)
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.subnet_cidrs: list[str] = [
            subnet.ipv4_cidr_block for subnet in self.vpc.select_subnets(
                subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnets
        ]

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
            subnet_configuration=[
                # Public subnets only carry the NAT gateways; nothing listens there.
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC,
                                        cidr_mask=24),
                ec2.SubnetConfiguration(name="private",
                                        subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                                        cidr_mask=22),
            ],
            # Spooled messages go to S3 without crossing the NAT gateways.
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(
                service=ec2.GatewayVpcEndpointAwsService.S3)},
        )
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=log_retention,
                                  removal_policy=cdk.RemovalPolicy.DESTROY)
        # Rejected flows show clients outside mynetworks knocking; accepted sessions are
        # in the relay's own log, with the client address from the PROXY header.
        created.add_flow_log("FlowLog",
                             destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                             traffic_type=ec2.FlowLogTrafficType.REJECT)
        return created
