"""The SMTP front end: an internal NLB that admits only mynetworks and passes PROXY v2
headers to the Fargate relay tasks behind it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_applicationautoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from sesrelay import timeouts
from sesrelay.commit import COMMIT_PREFIX
from sesrelay.config import env_name
from sesrelay.config.loader import ENV_TLS_SECRET
from sesrelay.deployment import CPU_TARGET_PERCENT, FARGATE_CPU_UNITS_PER_VCPU
from sesrelay.spool import KEY_PREFIX
from sesrelay.telemetry import NAMESPACE_ENV, SERVICE_ENV, SERVICE_RELAY, metrics_namespace
from sesrelay.tls_secret import CERT_FILE, KEY_FILE
from sesrelay.users import SECRETS_MANAGER
from stacks.certificate import RelayCertificate
from stacks.environment import (
    CONTAINER_PORT,
    EGRESS_ENDPOINTS,
    SMTP_PORT,
    SMTPS_CONTAINER_PORT,
    SMTPS_PORT,
    EnvironmentSettings,
)
from stacks.interface_endpoints import InterfaceEndpoints, relay_endpoint_services
from stacks.nag import acknowledge, logical_id
from stacks.network import Network
from stacks.relay_listeners import RelayListeners, target_group
from stacks.smtp_users import SmtpUsers

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "relay_container/Dockerfile"
# The image is built from the repository root; nothing here belongs in it.
IMAGE_EXCLUDE = [".git", ".venv", "cdk.out*", "build", "tests", "bench", "docs",
                 "app.py", "cdk.json", "stacks",
                 "**/__pycache__", "**/*.pyc", ".ruff_cache", ".pytest_cache", "*.egg-info"]
# A numeric non-root user, so ECS refuses to start the task as root whatever the image
# says.
RELAY_USER = "10001"
# Fargate's longest stop timeout: time for open SMTP sessions to finish after SIGTERM.
STOP_TIMEOUT = cdk.Duration.seconds(timeouts.STOP_TIMEOUT)
# Draining ends before the task is stopped, and well inside its stop timeout.
DEREGISTRATION_DELAY = cdk.Duration.seconds(60)
HEALTH_CHECK_COMMAND = ["CMD", "sesrelay", "healthcheck"]
# How long ECS ignores failing load-balancer and container health checks of a new task.
# A cold start pulls the whole image (Fargate keeps no image cache: the arm64 Python base
# and the relay's virtualenv, 30-90 s from ECR), starts Python (seconds on a quarter
# vCPU), then waits for the NLB: a new target can take from half a minute to a few
# minutes to register before its checks count, and two passing checks 10 s apart make
# it healthy. 60 s let ECS stop tasks that were still starting; five minutes cover the
# slow end with margin. The cost: a task that never becomes healthy is replaced that much
# later (the deployment circuit breaker still rolls a broken revision back).
HEALTH_CHECK_GRACE = cdk.Duration.minutes(5)


def serve_arguments(cpu_units: int) -> list[str]:
    """The arguments after the image's `sesrelay serve`: one relay process per vCPU of the
    task, each kept on its CPU (what measured best, docs/BENCHMARKS.md). A task of less
    than one vCPU still runs one process."""
    processes = max(1, cpu_units // FARGATE_CPU_UNITS_PER_VCPU)
    return ["--processes", str(processes), "--cpu-affinity"]


def _peer(cidr: str) -> ec2.IPeer:
    network = ipaddress.ip_network(cidr)
    return ec2.Peer.ipv4(cidr) if network.version == 4 else ec2.Peer.ipv6(cidr)


def access_log_reason(settings: EnvironmentSettings) -> str:
    """Why the NLB writes no access logs, and what protects the SMTP traffic it passes:
    TLS in the relay where this environment asks for it, otherwise nothing but the
    network (said plainly, so that an auditor reads it)."""
    config = settings.config
    if not settings.tls_enabled:
        protection = (
            "this environment's relay speaks plain SMTP (smtpd_tls_security_level = none, "
            "no port 465): mail and its addresses cross the VPC unencrypted, protected "
            "only by the internal load balancer's security group, which admits the SMTP "
            "ports from mynetworks and sesrelay_auth_networks alone; set "
            "smtpd_tls_security_level to encrypt it.")
    else:
        offered = []
        if config.tls_level != "none":
            ports = " and ".join(str(p) for p in settings.smtp_ports if p != SMTPS_PORT)
            required = "required" if config.tls_level == "encrypt" else "optional"
            plural = "s" if " and " in ports else ""
            offered.append(f"STARTTLS on port{plural} {ports} ({required}: "
                           f"smtpd_tls_security_level = {config.tls_level})")
        if SMTPS_PORT in settings.smtp_ports:
            offered.append(f"implicit TLS on port {SMTPS_PORT}")
        protection = (f"TLS ends in the relay, which offers {' and '.join(offered)}: "
                      "a session is encrypted from client to relay once its handshake is "
                      "done (what comes before, such as EHLO, is clear text).")
    return ("NLB access logs are written only for TLS listeners; these listeners pass TCP "
            "through with PROXY v2 and " + protection + " Each session is logged by the "
            "relay with the client address from the PROXY v2 header, and rejected flows "
            "are in the VPC flow logs.")


class RelayService(Construct):
    """NLB, target group, ECS cluster and the autoscaled Fargate relay service."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: EnvironmentSettings,
                 network: Network, environment: dict[str, str], bucket_arn: str,
                 queue: sqs.IQueue, idempotency_table_arn: str,
                 log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        vpc = network.vpc

        # A security group's description cannot change without replacing the group, so
        # deployments without sesrelay_auth_networks keep theirs.
        admitted = ("mynetworks and sesrelay_auth_networks" if settings.auth_networks
                    else "mynetworks")
        self.lb_security_group = ec2.SecurityGroup(
            self, "LoadBalancerSecurityGroup", vpc=vpc, allow_all_outbound=False,
            description=f"sesrelay {settings.name} NLB: SMTP from {admitted} only")
        # Clients in sesrelay_auth_networks reach every SMTP port too; the relay lets them
        # relay only after AUTH (permit_sasl_authenticated), as they are not in mynetworks.
        peers = {f"mynetworks {cidr}": _peer(cidr) for cidr in settings.client_networks}
        peers.update({f"sesrelay_auth_networks {cidr}": _peer(cidr)
                      for cidr in settings.auth_networks})
        for description, peer in peers.items():
            self.lb_security_group.add_ingress_rule(peer, ec2.Port.tcp(SMTP_PORT),
                                                    f"SMTP from {description}")
        self.task_security_group = ec2.SecurityGroup(
            self, "TaskSecurityGroup", vpc=vpc, allow_all_outbound=False,
            description=f"sesrelay {settings.name} relay tasks: SMTP from the NLB only")
        # The tasks talk only to AWS APIs (S3, SQS, DynamoDB, ECR, CloudWatch Logs,
        # Secrets Manager), over HTTPS.
        self.task_security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443),
                                                 "HTTPS to AWS APIs")

        self.load_balancer = elbv2.NetworkLoadBalancer(
            self, "LoadBalancer", vpc=vpc, internet_facing=False,
            vpc_subnets=network.subnets, security_groups=[self.lb_security_group],
            cross_zone_enabled=True,
            # PrivateLink consumers are admitted by the endpoint service's allowed
            # principals; the relay's mynetworks still decides what they may relay.
            enforce_security_group_inbound_rules_on_private_link_traffic=(
                False if settings.endpoint_service else None),
        )
        acknowledge(self.load_balancer, "AwsSolutions-ELB2", access_log_reason(settings))
        # Port 25's target group: also the one the dashboard and the scaling policy watch.
        self.target_group = target_group(self, "Targets", vpc, CONTAINER_PORT,
                                         DEREGISTRATION_DELAY)
        self.load_balancer.add_listener("Smtp", port=SMTP_PORT, protocol=elbv2.Protocol.TCP,
                                        default_target_groups=[self.target_group])
        self.listeners = RelayListeners(
            self, "Listeners", settings=settings, vpc=vpc, load_balancer=self.load_balancer,
            security_group=self.lb_security_group, peers=peers,
            deregistration_delay=DEREGISTRATION_DELAY)

        self.cluster = ecs.Cluster(self, "Cluster", vpc=vpc,
                                   container_insights_v2=ecs.ContainerInsights.ENABLED)
        task = ecs.FargateTaskDefinition(
            self, "Task", cpu=settings.service.cpu,
            memory_limit_mib=settings.service.memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX))
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention,
                                       removal_policy=cdk.RemovalPolicy.DESTROY)
        environment, labels = self._secrets(settings, task, environment, log_retention)
        if network.egress == EGRESS_ENDPOINTS:
            self.endpoints = InterfaceEndpoints(
                self, "Endpoints", vpc=vpc, subnets=network.subnets,
                clients=self.task_security_group,
                services=relay_endpoint_services(bool(self.certificate or self.users)))
        ports = [CONTAINER_PORT] + ([SMTPS_CONTAINER_PORT]
                                    if SMTPS_PORT in settings.smtp_ports else [])
        container = task.add_container(
            "relay",
            image=ecs.ContainerImage.from_asset(
                str(REPO_ROOT), file=DOCKERFILE, exclude=IMAGE_EXCLUDE,
                platform=ecr_assets.Platform.LINUX_ARM64),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="relay", log_group=self.log_group),
            environment={**environment, NAMESPACE_ENV: metrics_namespace(settings.name),
                         SERVICE_ENV: SERVICE_RELAY},
            port_mappings=[ecs.PortMapping(container_port=port, protocol=ecs.Protocol.TCP)
                           for port in ports],
            docker_labels=labels,
            command=serve_arguments(settings.service.cpu),
            user=RELAY_USER,
            readonly_root_filesystem=True,
            stop_timeout=STOP_TIMEOUT,
            health_check=ecs.HealthCheck(command=HEALTH_CHECK_COMMAND,
                                         interval=cdk.Duration.seconds(30),
                                         timeout=cdk.Duration.seconds(5), retries=3,
                                         start_period=cdk.Duration.seconds(30)),
        )
        # The root filesystem is read-only; Python and the relay still need a /tmp.
        task.add_volume(name="tmp")
        container.add_mount_points(ecs.MountPoint(container_path="/tmp", source_volume="tmp",
                                                  read_only=False))
        acknowledge(task, "AwsSolutions-ECS2",
                    "The environment variables are the relay's non-secret configuration "
                    "(Postfix parameters from the configuration model and resource names); "
                    "the TLS certificate and the SMTP AUTH user table are read from Secrets "
                    "Manager by the relay itself with the task role, never passed in the "
                    "environment.")
        task.add_to_task_role_policy(iam.PolicyStatement(
            sid="SpoolMessages", actions=["s3:PutObject"],
            resources=[f"{bucket_arn}/{KEY_PREFIX}*"]))
        task.add_to_task_role_policy(iam.PolicyStatement(
            sid="QueueEnvelopes", actions=["sqs:SendMessage"], resources=[queue.queue_arn]))
        # The commit protocol (sesrelay.commit): when SendMessage's outcome is unknown
        # the relay writes, or reads back, the queue ID's commit record. Only items whose
        # key starts with the commit prefix: never the worker's idempotency records.
        task.add_to_task_role_policy(iam.PolicyStatement(
            sid="CommitRecords", actions=["dynamodb:PutItem", "dynamodb:GetItem"],
            resources=[idempotency_table_arn],
            conditions={"ForAllValues:StringLike": {
                "dynamodb:LeadingKeys": [f"{COMMIT_PREFIX}*"]}}))
        spool_keys = f"{KEY_PREFIX}*"
        acknowledge(task.task_role,
                    f"AwsSolutions-IAM5[Resource::<{logical_id(self, bucket_arn)}.Arn>/"
                    f"{spool_keys}]",
                    "Each spooled message gets its own key under the spool prefix; the relay "
                    "may only put objects there.")
        assert task.execution_role is not None  # created by the image asset and log driver
        acknowledge(task.execution_role, "AwsSolutions-IAM5[Resource::*]",
                    "ecr:GetAuthorizationToken has no resource-level permissions; image "
                    "pulls and log writes are scoped to the asset repository and log group.")

        self.service = ecs.FargateService(
            self, "Service", cluster=self.cluster, task_definition=task,
            desired_count=settings.service.min_tasks,
            min_healthy_percent=100, max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            vpc_subnets=network.subnets, security_groups=[self.task_security_group],
            # In public subnets (egress public) the address is the tasks' way out; the
            # task security group still admits only the NLB.
            assign_public_ip=network.public_tasks,
            availability_zone_rebalancing=ecs.AvailabilityZoneRebalancing.ENABLED,
            health_check_grace_period=HEALTH_CHECK_GRACE,
        )
        self.service.attach_to_network_target_group(self.target_group)
        self.listeners.register(self.service, container.container_name)
        self.load_balancer.connections.allow_to(self.service, ec2.Port.tcp(CONTAINER_PORT),
                                                "SMTP (PROXY v2) and health checks to tasks")
        if SMTPS_PORT in settings.smtp_ports:
            self.load_balancer.connections.allow_to(
                self.service, ec2.Port.tcp(SMTPS_CONTAINER_PORT),
                "SMTPS (PROXY v2, then TLS) and health checks to tasks")
        self._autoscale(settings)

    def _secrets(self, settings: EnvironmentSettings, task: ecs.FargateTaskDefinition,
                 environment: dict[str, str], log_retention: logs.RetentionDays
                 ) -> tuple[dict[str, str], dict[str, str]]:
        """The certificate and the user table, when the relay speaks TLS or offers AUTH:
        (the container's environment, its Docker labels). Only the task role may read
        them; the relay reads them itself (sesrelay.tls_secret, sesrelay.users)."""
        environment = dict(environment)
        labels: dict[str, str] = {}
        self.certificate: RelayCertificate | None = None
        self.users: SmtpUsers | None = None
        if settings.tls_enabled:
            self.certificate = RelayCertificate(
                self, "Certificate", settings=settings,
                load_balancer_dns=self.load_balancer.load_balancer_dns_name,
                log_retention=log_retention)
            self.certificate.secret.grant_read(task.task_role)
            environment |= {ENV_TLS_SECRET: self.certificate.secret_arn,
                            env_name("smtpd_tls_cert_file"): str(CERT_FILE),
                            env_name("smtpd_tls_key_file"): str(KEY_FILE)}
            if self.certificate.fingerprint:
                # A new certificate is a new task definition: the tasks, which read the
                # secret only at start, are replaced and serve it.
                labels["sesrelay.tls-fingerprint-sha256"] = self.certificate.fingerprint
        else:
            for name in ("smtpd_tls_cert_file", "smtpd_tls_key_file"):
                environment.pop(env_name(name), None)
        if settings.auth_enabled:
            self.users = SmtpUsers(self, "SmtpUsers", settings=settings,
                                   task_role=task.task_role)
            environment[env_name("sesrelay_sasl_users")] = (
                SECRETS_MANAGER + self.users.secret.secret_arn)
        else:
            environment.pop(env_name("sesrelay_sasl_users"), None)
        return environment, labels

    def _autoscale(self, settings: EnvironmentSettings) -> None:
        """Scale on CPU, and on concurrent SMTP connections per healthy task."""
        scaling = self.service.auto_scale_task_count(
            min_capacity=settings.service.min_tasks, max_capacity=settings.service.max_tasks)
        scaling.scale_on_cpu_utilization(
            "Cpu", target_utilization_percent=CPU_TARGET_PERCENT,
            scale_in_cooldown=cdk.Duration.minutes(5),
            scale_out_cooldown=cdk.Duration.minutes(1))
        # NLB flow counts have no per-target dimension, and CDK's target tracking takes
        # only plain metrics: the per-task ratio is a metric-math query on the L1 policy.
        target: autoscaling.ScalableTarget = scaling.node.find_child("Target")  # type: ignore[assignment]
        policy = autoscaling.CfnScalingPolicy
        lb_dimension = [policy.TargetTrackingMetricDimensionProperty(
            name="LoadBalancer", value=self.load_balancer.load_balancer_full_name)]
        tg_dimensions = [*lb_dimension, policy.TargetTrackingMetricDimensionProperty(
            name="TargetGroup", value=self.target_group.target_group_full_name)]

        def query(query_id: str, metric_name: str,
                  dimensions: list[policy.TargetTrackingMetricDimensionProperty]
                  ) -> policy.TargetTrackingMetricDataQueryProperty:
            return policy.TargetTrackingMetricDataQueryProperty(
                id=query_id, return_data=False,
                metric_stat=policy.TargetTrackingMetricStatProperty(
                    stat="Average",
                    metric=policy.TargetTrackingMetricProperty(
                        namespace="AWS/NetworkELB", metric_name=metric_name,
                        dimensions=dimensions)))

        per_task = policy.TargetTrackingMetricDataQueryProperty(
            id="flowsPerTask", expression="flows / hosts",
            label="Active SMTP connections per healthy task", return_data=True)
        policy(
            self, "ConnectionScaling",
            policy_name=f"{cdk.Names.unique_id(self)}-connections",
            policy_type="TargetTrackingScaling",
            scaling_target_id=target.scalable_target_id,
            target_tracking_scaling_policy_configuration=(
                policy.TargetTrackingScalingPolicyConfigurationProperty(
                    target_value=settings.service.flows_per_task,
                    scale_in_cooldown=300, scale_out_cooldown=60,
                    customized_metric_specification=policy.CustomizedMetricSpecificationProperty(
                        metrics=[query("flows", "ActiveFlowCount", lb_dimension),
                                 query("hosts", "HealthyHostCount", tg_dimensions),
                                 per_task]))),
        )
