"""One sesrelay deployment: everything an environment in cdk.json describes."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as route53_targets
from constructs import Construct

from sesrelay.config import env_name, to_environment
from stacks.environment import EnvironmentSettings
from stacks.monitoring import Monitoring
from stacks.network import Network
from stacks.relay_service import RelayService
from stacks.spool import Spool
from stacks.worker import Worker


class SesRelayStack(cdk.Stack):
    """Network, spool, worker, relay service and monitoring of one environment."""

    def __init__(self, scope: Construct, construct_id: str, settings: EnvironmentSettings,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        retention = settings.log_retention
        network = Network(self, "Network", settings, retention)
        # Validated again with the parameters the deployment fixes (PROXY v2 from the
        # NLB's subnets, the container port), so the relay and the worker get exactly
        # what the configuration model accepts.
        config = settings.relay_config(network.subnet_cidrs)
        worker_timeout = cdk.Duration.seconds(settings.worker.timeout_seconds)
        spool = Spool(self, "Spool", settings, worker_timeout)
        # Resource names are tokens until deployment: they are set under the model's
        # environment names instead of going through its $name expansion.
        environment = {
            **to_environment(config),
            env_name("sesrelay_spool_bucket"): spool.bucket.bucket_name,
            env_name("sesrelay_spool_queue_url"): spool.queue.queue_url,
        }
        worker = Worker(self, "Worker", settings=settings, environment=environment,
                        bucket_arn=spool.bucket.bucket_arn, queue=spool.queue,
                        timeout=worker_timeout, log_retention=retention)
        relay = RelayService(self, "Relay", settings=settings, network=network,
                             environment=environment, bucket_arn=spool.bucket.bucket_arn,
                             queue=spool.queue, log_retention=retention)
        Monitoring(self, "Monitoring", settings=settings, relay=relay, spool=spool,
                   worker=worker)

        endpoint = relay.load_balancer.load_balancer_dns_name
        if settings.private_dns:
            endpoint = self._private_dns(settings, network, relay)
        if settings.endpoint_service:
            service = ec2.VpcEndpointService(
                self, "EndpointService",
                vpc_endpoint_service_load_balancers=[relay.load_balancer],
                acceptance_required=settings.endpoint_service.acceptance_required,
                allowed_principals=[iam.ArnPrincipal(arn) for arn in
                                    settings.endpoint_service.allowed_principals])
            cdk.CfnOutput(self, "EndpointServiceName", value=service.vpc_endpoint_service_name,
                          description="PrivateLink service name for interface endpoints")
        cdk.CfnOutput(self, "RelayHost", value=endpoint,
                      description="relayhost for applications (SMTP, port 25)")

    def _private_dns(self, settings: EnvironmentSettings, network: Network,
                     relay: RelayService) -> str:
        """An alias record for the NLB in a private zone (imported, or created here)."""
        dns = settings.private_dns
        assert dns is not None
        if dns.zone_id:
            zone: route53.IHostedZone = route53.HostedZone.from_hosted_zone_attributes(
                self, "Zone", hosted_zone_id=dns.zone_id, zone_name=dns.zone_name)
        else:
            zone = route53.PrivateHostedZone(self, "Zone", zone_name=dns.zone_name,
                                             vpc=network.vpc)
        route53.ARecord(self, "RelayRecord", zone=zone, record_name=dns.record_name,
                        target=route53.RecordTarget.from_alias(
                            route53_targets.LoadBalancerTarget(relay.load_balancer)))
        return dns.fqdn
