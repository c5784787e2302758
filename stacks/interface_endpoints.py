"""Interface endpoints for relay tasks in isolated subnets (egress ``endpoints``): one per
AWS API the tasks call besides S3 and DynamoDB (which have free gateway endpoints)."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

HTTPS = 443


def relay_endpoint_services(reads_secrets: bool) -> dict[str, ec2.InterfaceVpcEndpointAwsService]:
    """The APIs a relay task calls, by construct ID: SQS (the spool queue), ECR's API and
    registry (the image pull; its layers come from S3), CloudWatch Logs (the awslogs
    driver; the relay's metrics are EMF log lines) and, when the relay reads its
    certificate or user table, Secrets Manager. No ECS Exec, so no ssmmessages."""
    services = {
        "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
        "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
        "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
        "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    }
    if reads_secrets:
        services["SecretsManager"] = ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER
    return services


class InterfaceEndpoints(Construct):
    """An interface endpoint per service in the tasks' subnets (one network interface
    per AZ, each billed), with private DNS so the SDKs' default endpoints resolve to
    it, and a security group of its own that admits HTTPS from the tasks alone."""

    def __init__(self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc,
                 subnets: ec2.SubnetSelection, clients: ec2.ISecurityGroup,
                 services: dict[str, ec2.InterfaceVpcEndpointAwsService]) -> None:
        super().__init__(scope, construct_id)
        self.endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {}
        for name, service in services.items():
            group = ec2.SecurityGroup(
                self, f"{name}SecurityGroup", vpc=vpc, allow_all_outbound=False,
                description=f"sesrelay {name} endpoint: HTTPS from the relay tasks only")
            group.add_ingress_rule(clients, ec2.Port.tcp(HTTPS), "HTTPS from the relay tasks")
            self.endpoints[name] = ec2.InterfaceVpcEndpoint(
                self, name, vpc=vpc, service=service, subnets=subnets,
                private_dns_enabled=True, security_groups=[group],
                # open=True would also admit the whole VPC's CIDR.
                open=False)
