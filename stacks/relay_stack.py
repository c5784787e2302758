"""One sesrelay deployment: everything an environment in cdk.json describes."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as route53_targets
from constructs import Construct

from sesrelay import deployment
from sesrelay.config import env_name, to_environment
from sesrelay.config.parameters import PARAMETERS, SASL, TLS
from stacks.environment import EnvironmentSettings
from stacks.monitoring import Monitoring
from stacks.network import Network
from stacks.relay_service import RelayService
from stacks.ses_events import SesEvents
from stacks.spool import Spool
from stacks.trail import Trail
from stacks.worker import Worker


class SesRelayStack(cdk.Stack):
    """Network, spool, trail, worker, relay service, SES events (with a configuration
    set) and monitoring of one environment."""

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
        trail = Trail(self, "Trail")
        # Resource names are tokens until deployment: they are set under the model's
        # environment names instead of going through its $name expansion.
        # TLS and AUTH are the relay's alone: the worker and the events handler would
        # look for certificate files and a user table they do not have.
        relay_only = {env_name(p.name) for p in PARAMETERS.values() if p.group in (TLS, SASL)}
        relay_parameters = {name: value for name, value in to_environment(config).items()
                            if name in relay_only}
        environment = {
            **{name: value for name, value in to_environment(config).items()
               if name not in relay_only},
            env_name("sesrelay_spool_bucket"): spool.bucket.bucket_name,
            env_name("sesrelay_spool_queue_url"): spool.queue.queue_url,
            env_name("sesrelay_trail_table"): trail.table.table_name,
        }
        worker = Worker(self, "Worker", settings=settings, environment=environment,
                        bucket_arn=spool.bucket.bucket_arn, queue=spool.queue, trail=trail,
                        timeout=worker_timeout, log_retention=retention)
        idempotency_table = worker.idempotency_table
        relay = RelayService(
            self, "Relay", settings=settings, network=network,
            environment={**environment, **relay_parameters,
                         env_name("sesrelay_idempotency_table"): idempotency_table.table_name},
            bucket_arn=spool.bucket.bucket_arn, queue=spool.queue,
            idempotency_table_arn=idempotency_table.table_arn, log_retention=retention)
        events = None
        if config.ses_configuration_set:
            events = SesEvents(self, "SesEvents", settings=settings, environment=environment,
                               trail_store=trail, max_concurrency=worker.max_concurrency,
                               log_retention=retention)
        Monitoring(self, "Monitoring", settings=settings, relay=relay, spool=spool,
                   worker=worker, events=events)
        self._outputs(spool, trail, worker, relay, events)

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
        cdk.CfnOutput(self, deployment.OUTPUT_RELAY_HOST, value=endpoint,
                      description="relayhost for applications (ports: "
                                  f"{', '.join(map(str, settings.smtp_ports))})")
        self._tls_outputs(relay)

    def _tls_outputs(self, relay: RelayService) -> None:
        """The certificate clients must trust, and the user table to manage."""
        if relay.certificate:
            cdk.CfnOutput(self, "TlsCertificateSecret", value=relay.certificate.secret_arn,
                          description="the secret the relay reads its certificate from")
        if relay.certificate and relay.certificate.fingerprint:
            cdk.CfnOutput(self, "TlsCertificateFingerprint",
                          value=relay.certificate.fingerprint,
                          description="SHA-256 fingerprint of the generated self-signed "
                                      "certificate (what clients must trust)")
        if relay.users:
            cdk.CfnOutput(self, "SmtpUsersSecret", value=relay.users.secret.secret_name,
                          description="SMTP AUTH users: sesrelay users add NAME --table "
                                      "secretsmanager:<this value>")

    def _outputs(self, spool: Spool, trail: Trail, worker: Worker, relay: RelayService,
                 events: SesEvents | None) -> None:
        """What the CLI needs to find this environment's resources (`--env NAME`)."""
        outputs = {
            deployment.OUTPUT_QUEUE_URL: (spool.queue.queue_url, "the spool queue"),
            deployment.OUTPUT_DLQ_URL: (spool.dead_letter_queue.queue_url,
                                                  "the spool queue's DLQ"),
            deployment.OUTPUT_BUCKET: (spool.bucket.bucket_name, "the spool bucket"),
            deployment.OUTPUT_IDEMPOTENCY_TABLE: (worker.idempotency_table.table_name,
                                              "idempotency and commit records"),
            deployment.OUTPUT_TRAIL_TABLE: (trail.table.table_name, "the message trail"),
            deployment.OUTPUT_RELAY_LOG_GROUP: (relay.log_group.log_group_name,
                                            "the relay's log (smtpd, qmgr lines)"),
            deployment.OUTPUT_WORKER_LOG_GROUP: (worker.log_group.log_group_name,
                                             "the worker's log (smtp, bounce lines)"),
            deployment.OUTPUT_REGION: (self.region, "the region of every resource above"),
        }
        if events:
            outputs |= {
                deployment.OUTPUT_EVENTS_QUEUE_URL: (events.queue.queue_url,
                                                 "the SES events queue"),
                deployment.OUTPUT_EVENTS_DLQ_URL: (
                    events.dead_letter_queue.queue_url, "the SES events queue's DLQ"),
                deployment.OUTPUT_EVENTS_LOG_GROUP: (events.log_group.log_group_name,
                                                 "the SES events handler's log"),
                deployment.OUTPUT_CONFIGURATION_SET: (events.configuration_set_name,
                                                  "the SES configuration set"),
            }
        for name, (value, description) in outputs.items():
            # Defined on the stack itself, so each output key is exactly its name.
            cdk.CfnOutput(self, name, value=value, description=description)

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
