"""What a synthesized sesrelay CloudFormation template holds that AWS bills: counted from
the template's resources and properties alone, so the cost model (sesrelay.cost) prices
exactly what a deployment of that template creates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sesrelay import telemetry

# What each service emits as EMF metrics (one custom metric each, by the service
# dimension): the names sesrelay.telemetry defines.
EMF_METRICS = {
    telemetry.SERVICE_RELAY: (telemetry.ACCEPTED, telemetry.REJECTED, telemetry.DEFERRED,
                              telemetry.SPOOL_LATENCY),
    telemetry.SERVICE_WORKER: (telemetry.SENT, telemetry.BOUNCED, telemetry.FAILED,
                               telemetry.DEFERRED, telemetry.SES_LATENCY,
                               telemetry.CONFIGURATION_ERROR, telemetry.SENDS_IN_DOUBT,
                               telemetry.DEFERRED_AGE),
    telemetry.SERVICE_EVENTS: tuple(telemetry.EVENT_METRICS.values()),
}


@dataclass(frozen=True)
class Tasks:
    """One Fargate service at its desired count (the autoscaling minimum)."""

    count: int
    vcpu: float
    memory_gb: float
    architecture: str  # arm64 or x86_64
    public_ip: bool


@dataclass(frozen=True)
class Function:
    """A Lambda function: memory, architecture and its SQS batch size."""

    memory_gb: float
    architecture: str
    batch_size: int


@dataclass(frozen=True)
class Billable:
    """The billed resources of one template."""

    load_balancers: int
    tasks: tuple[Tasks, ...]
    nat_gateways: int
    elastic_ips: int
    interface_endpoints: dict[str, int]  # service -> AZs (network interfaces)
    gateway_endpoints: int
    kms_keys: int
    secrets: int
    hosted_zones: int
    alarm_metrics: int
    dashboards: int
    log_retention_days: int  # the longest of the template's log groups
    functions: dict[str, Function]  # by POWERTOOLS_SERVICE_NAME (worker, events)
    queue_pollers: int  # SQS event source mappings
    emf_metrics: int

    @property
    def public_ips(self) -> int:
        """Public IPv4 addresses: the Elastic IPs (of NAT gateways) and one per task
        that gets one."""
        return self.elastic_ips + sum(t.count for t in self.tasks if t.public_ip)


def _of_type(template: Mapping[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: resource.get("Properties", {})
            for name, resource in template.get("Resources", {}).items()
            if resource.get("Type") == kind}


def _service_name(environment: Mapping[str, Any] | list[Any] | None) -> str | None:
    if isinstance(environment, list):  # a container's [{"Name": ..., "Value": ...}]
        environment = {e.get("Name"): e.get("Value") for e in environment}
    value = (environment or {}).get(telemetry.SERVICE_ENV)
    return value if isinstance(value, str) else None


def _tasks(template: Mapping[str, Any]) -> tuple[Tasks, ...]:
    definitions = _of_type(template, "AWS::ECS::TaskDefinition")
    result = []
    for service in _of_type(template, "AWS::ECS::Service").values():
        definition = definitions[service["TaskDefinition"]["Ref"]]
        network = service.get("NetworkConfiguration", {}).get("AwsvpcConfiguration", {})
        platform = definition.get("RuntimePlatform", {})
        result.append(Tasks(
            count=int(service.get("DesiredCount", 1)),
            vcpu=int(definition["Cpu"]) / 1024,
            memory_gb=int(definition["Memory"]) / 1024,
            architecture=("arm64" if platform.get("CpuArchitecture") == "ARM64"
                          else "x86_64"),
            public_ip=network.get("AssignPublicIp") == "ENABLED"))
    return tuple(result)


def _functions(template: Mapping[str, Any]) -> dict[str, Function]:
    batch_sizes = {_ref(m.get("FunctionName")): int(m.get("BatchSize", 10))
                   for m in _of_type(template, "AWS::Lambda::EventSourceMapping").values()}
    result = {}
    for name, function in _of_type(template, "AWS::Lambda::Function").items():
        service = _service_name(function.get("Environment", {}).get("Variables"))
        if service is None:
            continue  # custom resources run at deploy time only
        result[service] = Function(
            memory_gb=int(function.get("MemorySize", 128)) / 1024,
            architecture=(function.get("Architectures") or ["x86_64"])[0],
            batch_size=batch_sizes.get(name, 1))
    return result


def _ref(value: Any) -> str | None:
    """The logical ID a {"Ref": ...} names, or None."""
    return value.get("Ref") if isinstance(value, Mapping) else None


def _alarm_metrics(alarm: Mapping[str, Any]) -> int:
    """CloudWatch bills an alarm per metric it reads: a metric-math alarm's expression
    is free, each of its metrics is not."""
    metrics = alarm.get("Metrics")
    if not metrics:
        return 1
    return sum(1 for m in metrics if "MetricStat" in m)


def _emf_services(template: Mapping[str, Any]) -> set[str]:
    services = set()
    for function in _of_type(template, "AWS::Lambda::Function").values():
        services.add(_service_name(function.get("Environment", {}).get("Variables")))
    for definition in _of_type(template, "AWS::ECS::TaskDefinition").values():
        for container in definition.get("ContainerDefinitions", []):
            services.add(_service_name(container.get("Environment")))
    return {s for s in services if s in EMF_METRICS}


def billable(template: Mapping[str, Any]) -> Billable:
    """Count what template (a synthesized template, as JSON) creates that is billed."""
    endpoints = _of_type(template, "AWS::EC2::VPCEndpoint").values()
    interface = {_endpoint_service(e["ServiceName"]): len(e.get("SubnetIds", []))
                 for e in endpoints if e.get("VpcEndpointType") == "Interface"}
    retention = [int(g.get("RetentionInDays", 3653))
                 for g in _of_type(template, "AWS::Logs::LogGroup").values()]
    services = _emf_services(template)
    return Billable(
        load_balancers=sum(1 for lb in _of_type(
            template, "AWS::ElasticLoadBalancingV2::LoadBalancer").values()
            if lb.get("Type") == "network"),
        tasks=_tasks(template),
        nat_gateways=len(_of_type(template, "AWS::EC2::NatGateway")),
        elastic_ips=len(_of_type(template, "AWS::EC2::EIP")),
        interface_endpoints=interface,
        gateway_endpoints=sum(1 for e in endpoints if e.get("VpcEndpointType") == "Gateway"),
        kms_keys=len(_of_type(template, "AWS::KMS::Key")),
        # The generated TLS certificate is a secret its custom resource writes.
        secrets=len(_of_type(template, "AWS::SecretsManager::Secret"))
        + len(_of_type(template, "Custom::RelayCertificate")),
        hosted_zones=len(_of_type(template, "AWS::Route53::HostedZone")),
        alarm_metrics=sum(_alarm_metrics(a)
                          for a in _of_type(template, "AWS::CloudWatch::Alarm").values()),
        dashboards=len(_of_type(template, "AWS::CloudWatch::Dashboard")),
        log_retention_days=max(retention, default=0),
        functions=_functions(template),
        queue_pollers=len(_of_type(template, "AWS::Lambda::EventSourceMapping")),
        emf_metrics=sum(len(set(EMF_METRICS[s])) for s in services),
    )


def _endpoint_service(name: Any) -> str:
    """An endpoint's service without its prefix: ``sqs``, ``ecr.dkr``, ``logs``."""
    if isinstance(name, Mapping) and "Fn::Join" in name:
        # CDK writes "com.amazonaws.", {"Ref": "AWS::Region"}, ".ecr.dkr"
        last = name["Fn::Join"][1][-1]
        return last.lstrip(".") if isinstance(last, str) else str(last)
    parts = str(name).split(".")
    return ".".join(parts[3:]) if str(name).startswith("com.amazonaws.") else str(name)
