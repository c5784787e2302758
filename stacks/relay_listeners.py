"""The load balancer's listeners beyond port 25: submission (587, STARTTLS) and implicit
TLS (465), as smtp_ports lists them. Each is TCP pass-through with PROXY v2 to a target
group of its own, so TLS ends in the relay, the relay still learns each client's
address, and each port has its own health check and health metrics."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from constructs import Construct

from stacks.environment import (
    CONTAINER_PORT,
    SMTP_PORT,
    SMTPS_CONTAINER_PORT,
    SMTPS_PORT,
    SUBMISSION_PORT,
    EnvironmentSettings,
)

# The load balancer's port -> the relay's port in its container.
CONTAINER_PORTS = {SMTP_PORT: CONTAINER_PORT, SUBMISSION_PORT: CONTAINER_PORT,
                   SMTPS_PORT: SMTPS_CONTAINER_PORT}
PORT_NAMES = {SMTP_PORT: "SMTP", SUBMISSION_PORT: "submission (STARTTLS)",
              SMTPS_PORT: "SMTPS (implicit TLS)"}


def target_group(scope: Construct, construct_id: str, vpc: ec2.IVpc, container_port: int,
                 deregistration_delay: cdk.Duration) -> elbv2.NetworkTargetGroup:
    """A target group of relay tasks on one container port: PROXY v2 and TCP health
    checks (which arrive as PROXY LOCAL, accepted quietly by the relay)."""
    return elbv2.NetworkTargetGroup(
        scope, construct_id, vpc=vpc, port=container_port, protocol=elbv2.Protocol.TCP,
        target_type=elbv2.TargetType.IP,
        # The relay learns each client's address from the PROXY v2 header.
        proxy_protocol_v2=True,
        deregistration_delay=deregistration_delay,
        health_check=elbv2.HealthCheck(
            protocol=elbv2.Protocol.TCP, interval=cdk.Duration.seconds(10),
            healthy_threshold_count=2, unhealthy_threshold_count=2),
    )


class RelayListeners(Construct):
    """Listeners and target groups for the ports other than 25, and their ingress rules
    (the same client networks as port 25)."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: EnvironmentSettings,
                 vpc: ec2.IVpc, load_balancer: elbv2.NetworkLoadBalancer,
                 security_group: ec2.SecurityGroup, peers: dict[str, ec2.IPeer],
                 deregistration_delay: cdk.Duration) -> None:
        super().__init__(scope, construct_id)
        self.target_groups: dict[int, elbv2.NetworkTargetGroup] = {}
        for port in settings.smtp_ports:
            if port == SMTP_PORT:
                continue  # RelayService's own listener, created first
            group = target_group(self, f"Targets{port}", vpc, CONTAINER_PORTS[port],
                                 deregistration_delay)
            load_balancer.add_listener(f"Listener{port}", port=port,
                                       protocol=elbv2.Protocol.TCP,
                                       default_target_groups=[group])
            for description, peer in peers.items():
                security_group.add_ingress_rule(peer, ec2.Port.tcp(port),
                                                f"{PORT_NAMES[port]} from {description}")
            self.target_groups[port] = group

    def register(self, service: ecs.FargateService, container_name: str) -> None:
        """Put the service's tasks in every target group, on the right container port."""
        for port, group in self.target_groups.items():
            group.add_target(service.load_balancer_target(
                container_name=container_name, container_port=CONTAINER_PORTS[port]))
