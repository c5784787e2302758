"""Environment settings: what one entry of cdk.json's ``environments`` may say, validated.

An environment looks like this (every key but ``relay`` is optional)::

    "prod": {
      "account": "123456789012", "region": "eu-west-1",
      "vpc": {"cidr": "10.80.0.0/16", "max_azs": 2, "egress": "nat", "nat_gateways": 2},
      "relay": {"mynetworks": ["10.0.0.0/8"], "myhostname": "smtp.example.internal",
                "ses_identities": ["example.com"]},
      "service": {"cpu": 512, "memory_mib": 1024, "min_tasks": 2, "max_tasks": 10},
      "worker": {"timeout_seconds": 60, "max_concurrency": 4},
      "alarm_email": "ops@example.com",
      "private_dns": {"zone_name": "example.internal", "record_name": "smtp"},
      "endpoint_service": {"allowed_principals": ["arn:aws:iam::210987654321:root"]},
      "events": {"configuration_set_exists": false},
      "smtp_ports": [25, 587, 465],
      "tls": {"certificate_secret": "sesrelay/prod/smtp-tls"}
    }

``relay`` holds Postfix and ``ses_`` parameters and is validated by the configuration
model the relay itself uses, so a value the relay would refuse fails synthesis with the
model's message. With ``relay.ses_configuration_set`` the stack creates that SES
configuration set and captures its events in the trail; ``events.configuration_set_exists``
says the set exists already (made outside this stack), so only its event destination is
added. ``smtp_ports`` lists the load balancer's listeners (25 by default; 587 is
submission with STARTTLS, 465 implicit TLS); with TLS asked for, ``tls.certificate_secret``
names the operator's certificate secret, or without it the stack generates a self-signed
certificate at deploy time (stacks/certificate.py). ``vpc`` either describes a VPC to
create or, with ``vpc_id``, one to import; an imported VPC is described in full (subnet
IDs and CIDRs) so that synthesis needs no AWS credentials. A created VPC's ``egress``
says how the relay tasks reach AWS's APIs (EGRESS_OPTIONS; docs/COST.md prices each);
an imported VPC brings its own egress.
"""

from __future__ import annotations

import atexit
import functools
import ipaddress
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import aws_logs as logs

from sesrelay import ses_identities
from sesrelay.certificates import self_signed
from sesrelay.config import Config, config_from_mapping
from sesrelay.config.tls import tls_wanted
from sesrelay.timeouts import WORKER_TIMEOUT, worker_timeout_needed

# TLS and SMTP AUTH: the certificate files and the user table are the deployment's (from
# Secrets Manager); which listeners speak implicit TLS follows smtp_ports.
TLS_STACK_PARAMETERS = (
    "smtpd_tls_cert_file",
    "smtpd_tls_key_file",
    "smtpd_tls_wrappermode",
    "sesrelay_smtps_port",
    "sesrelay_sasl_users",
)

# Parameters whose values come from the deployment itself (resource names, the
# container's port, the NLB's subnets): an environment may not set them.
STACK_PARAMETERS = (
    "sesrelay_spool_bucket",
    "sesrelay_spool_queue_url",
    "sesrelay_idempotency_table",
    "sesrelay_trail_table",
    "sesrelay_listen_port",
    "smtpd_upstream_proxy_protocol",
    "sesrelay_proxy_networks",
    *TLS_STACK_PARAMETERS,
)

# The SMTP port applications connect to on the load balancer, and the port the
# non-root relay listens on in its container (ports below 1024 would need root).
SMTP_PORT = 25
CONTAINER_PORT = 2525
# Submission with STARTTLS (what applications configured for SES's SMTP interface use):
# the same relay listener as port 25, behind a listener of its own.
SUBMISSION_PORT = 587
# Implicit TLS (Postfix's smtps service, smtpd_tls_wrappermode) and its container port.
SMTPS_PORT = 465
SMTPS_CONTAINER_PORT = 4465
SMTP_PORTS = (SMTP_PORT, SUBMISSION_PORT, SMTPS_PORT)


# The user table the configuration is checked with at synthesis; the relay task gets the
# secret the stack creates instead.
USERS_PLACEHOLDER = "secretsmanager:sesrelay-users-created-by-the-stack"


@functools.cache
def _validation_certificate() -> tuple[str, str]:
    """A throwaway certificate and key, made at synthesis only so that the configuration
    model can check the TLS parameters with real files (it opens them). They are never
    deployed: the task gets its certificate from Secrets Manager at start."""
    directory = Path(tempfile.mkdtemp(prefix="sesrelay-synth-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    files = self_signed(directory, ["sesrelay-synthesis.invalid"], days=1)
    return str(files.cert_file), str(files.key_file)


def deployment_parameters(smtp_ports: tuple[int, ...]) -> dict[str, object]:
    """The TLS and AUTH parameters the deployment fixes, as the configuration is checked
    at synthesis (the relay task's own values replace the files and the user table)."""
    cert_file, key_file = _validation_certificate()
    return {
        "smtpd_tls_cert_file": cert_file,
        "smtpd_tls_key_file": key_file,
        "sesrelay_sasl_users": USERS_PLACEHOLDER,
        "sesrelay_smtps_port": SMTPS_CONTAINER_PORT if SMTPS_PORT in smtp_ports else 0,
    }


class SettingsError(ValueError):
    """A cdk.json environment setting that cannot be deployed, with where it was made."""


# How the relay tasks of a created VPC reach AWS's APIs. S3 and DynamoDB always go
# through gateway endpoints (free).
EGRESS_NAT = "nat"  # private subnets, NAT gateways
EGRESS_ENDPOINTS = "endpoints"  # isolated subnets, an interface endpoint per service
EGRESS_PUBLIC = "public"  # public subnets, a public IPv4 address per task
EGRESS_OPTIONS = (EGRESS_NAT, EGRESS_ENDPOINTS, EGRESS_PUBLIC)


@dataclass(frozen=True)
class CreatedVpc:
    """A VPC the stack creates, with the tasks' egress (EGRESS_OPTIONS); nat_gateways
    counts only for NAT egress (0 otherwise)."""

    cidr: str = "10.80.0.0/16"
    max_azs: int = 2
    nat_gateways: int = 1
    egress: str = EGRESS_NAT


@dataclass(frozen=True)
class ImportedVpc:
    """An existing VPC, described by its attributes (no lookup, so no credentials)."""

    vpc_id: str
    availability_zones: tuple[str, ...]
    private_subnet_ids: tuple[str, ...]
    private_subnet_cidrs: tuple[str, ...]


@dataclass(frozen=True)
class ServiceSize:
    """Size and scaling range of the Fargate relay service."""

    cpu: int = 512
    memory_mib: int = 1024
    min_tasks: int = 2
    max_tasks: int = 6
    # Target of the connection-load scaling policy: concurrent SMTP connections per task.
    flows_per_task: int = 200


@dataclass(frozen=True)
class WorkerSize:
    """Lambda worker settings; max_concurrency None derives it from ses_max_send_rate."""

    timeout_seconds: int = WORKER_TIMEOUT
    memory_mib: int = 512
    max_concurrency: int | None = None


@dataclass(frozen=True)
class PrivateDns:
    """A Route 53 private record for the NLB: record_name.zone_name.

    With zone_id the zone exists already and is imported; without, a private hosted
    zone is created and associated with the VPC."""

    zone_name: str
    record_name: str
    zone_id: str | None = None

    @property
    def fqdn(self) -> str:
        """The name applications use as their relayhost."""
        return f"{self.record_name}.{self.zone_name}"


@dataclass(frozen=True)
class EndpointService:
    """A PrivateLink endpoint service in front of the NLB, for other VPCs or accounts."""

    allowed_principals: tuple[str, ...]
    acceptance_required: bool = True


@dataclass(frozen=True)
class EventsSettings:
    """SES event capture (only with relay.ses_configuration_set)."""

    # The configuration set exists already: add the event destination to it, do not
    # create (or, on stack deletion, delete) the set itself.
    configuration_set_exists: bool = False


@dataclass(frozen=True)
class TlsSettings:
    """Where the relay's certificate comes from: the operator's secret (name or ARN; JSON
    with certificate and private_key, sesrelay.tls_secret), or, without one, a
    self-signed certificate the deployment generates for the relay's names."""

    certificate_secret: str | None = None


@dataclass(frozen=True)
class EnvironmentSettings:
    """One deployment, as cdk.json describes it."""

    name: str
    account: str | None
    region: str | None
    vpc: CreatedVpc | ImportedVpc
    relay: dict[str, object]
    config: Config
    service: ServiceSize
    worker: WorkerSize
    alarm_email: str | None
    private_dns: PrivateDns | None
    endpoint_service: EndpointService | None
    log_retention_days: int
    events: EventsSettings = EventsSettings()
    smtp_ports: tuple[int, ...] = (SMTP_PORT,)
    tls: TlsSettings | None = None

    @property
    def tls_enabled(self) -> bool:
        """Whether the relay speaks TLS (and the deployment provides a certificate)."""
        return tls_wanted(self.config)

    @property
    def auth_enabled(self) -> bool:
        """Whether the relay offers SMTP AUTH (and the deployment creates the user table)."""
        return self.config.smtpd_sasl_auth_enable

    @property
    def log_retention(self) -> logs.RetentionDays:
        """log_retention_days as CloudWatch Logs' retention setting."""
        return RETENTION[self.log_retention_days]

    @property
    def source(self) -> str:
        """Where the relay parameters come from, as configuration errors name it."""
        return f"cdk.json environments.{self.name}.relay"

    def relay_config(self, proxy_networks: list[str]) -> Config:
        """The relay's configuration in this deployment: the environment's parameters
        plus those the deployment fixes (PROXY v2 from the NLB's subnets, the port)."""
        return config_from_mapping(
            {
                **self.relay,
                **deployment_parameters(self.smtp_ports),
                "smtpd_upstream_proxy_protocol": "haproxy",
                "sesrelay_proxy_networks": proxy_networks,
                "sesrelay_listen_port": CONTAINER_PORT,
            },
            source=self.source,
        )

    @property
    def client_networks(self) -> list[str]:
        """The CIDRs the load balancer admits: mynetworks without loopback."""
        return [net for net in self.config.mynetworks.networks
                if not ipaddress.ip_network(net).is_loopback]

    @property
    def auth_networks(self) -> list[str]:
        """The further CIDRs the load balancer admits, whose clients relay only after AUTH:
        sesrelay_auth_networks without loopback and without what mynetworks admits."""
        return [net for net in self.config.sesrelay_auth_networks.networks
                if not ipaddress.ip_network(net).is_loopback
                and net not in self.client_networks]


class _Reader:
    """Reads one mapping of settings, naming the setting in every error."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise SettingsError(f"{where}: expected an object, got {data!r}")
        self.data: Mapping[str, Any] = data
        self.where = where

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.data) - allowed)
        if unknown:
            raise SettingsError(f"{self.where}: unknown setting(s) {', '.join(unknown)} "
                                f"(known: {', '.join(sorted(allowed))})")

    def _get(self, key: str, kind: type | tuple[type, ...], default: object) -> Any:
        value = self.data.get(key, default)
        # bool is an int in Python; a JSON true is never a count.
        if value is not None and (not isinstance(value, kind) or (
                isinstance(value, bool) and kind is int)):
            raise SettingsError(f"{self.where}.{key}: expected {getattr(kind, '__name__', kind)}"
                                f", got {value!r}")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self._get(key, str, None)
        if value is not None and not value.strip():
            raise SettingsError(f"{self.where}.{key}: must not be empty")
        return value

    def text(self, key: str, default: str | None = None) -> str:
        value = self.optional_text(key) or default
        if value is None:
            raise SettingsError(f"{self.where}.{key}: required")
        return value

    def optional_integer(self, key: str, low: int, high: int) -> int | None:
        value = self._get(key, int, None)
        if value is not None and not low <= value <= high:
            raise SettingsError(f"{self.where}.{key}: {value} is outside {low}..{high}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.optional_integer(key, low, high)
        return default if value is None else value

    def boolean(self, key: str, default: bool) -> bool:
        return self._get(key, bool, default)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key, list, [])
        if not value or not all(isinstance(v, str) and v for v in value):
            raise SettingsError(f"{self.where}.{key}: expected a non-empty list of strings")
        return tuple(value)

    def child(self, key: str) -> _Reader | None:
        if self.data.get(key) is None:
            return None
        return _Reader(self.data[key], f"{self.where}.{key}")


# CloudWatch Logs accepts only these retention periods (days), in RetentionDays' order.
_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                   1827, 2192, 2557, 2922, 3288, 3653)
RETENTION = dict(zip(_RETENTION_DAYS, list(logs.RetentionDays)[:len(_RETENTION_DAYS)],
                     strict=True))


def environment_names(context: Mapping[str, Any]) -> list[str]:
    """The environments cdk.json defines."""
    environments = context.get("environments")
    if not isinstance(environments, Mapping) or not environments:
        raise SettingsError("cdk.json context has no 'environments' object")
    return list(environments)


def load_environment(context: Mapping[str, Any], name: str) -> EnvironmentSettings:
    """Read and validate environment name from the CDK context (cdk.json's ``context``
    plus ``-c`` overrides). Raises SettingsError, or the configuration model's
    ConfigError for a relay parameter, each naming the setting at fault."""
    names = environment_names(context)
    if name not in names:
        raise SettingsError(f"no environment {name!r} in cdk.json (defined: "
                            f"{', '.join(names)}); choose one with -c env=NAME")
    env = _Reader(context["environments"][name], f"cdk.json environments.{name}")
    env.check_keys({"account", "region", "vpc", "relay", "service", "worker", "alarm_email",
                    "private_dns", "endpoint_service", "log_retention_days", "events",
                    "smtp_ports", "tls"})

    relay_reader = env.child("relay")
    if relay_reader is None:
        raise SettingsError(f"{env.where}.relay: the relay parameters are required "
                            "(at least mynetworks)")
    relay = dict(relay_reader.data)
    fixed = sorted(set(relay) & set(STACK_PARAMETERS))
    if fixed:
        raise SettingsError(f"{relay_reader.where}: {', '.join(fixed)} cannot be set here: "
                            "the deployment sets them from the resources it creates")
    smtp_ports = _smtp_ports(env)
    config = config_from_mapping({**relay, **deployment_parameters(smtp_ports)},
                                 source=relay_reader.where)
    tls = _tls(env.child("tls"), config, smtp_ports, env.where)

    retention = env.integer("log_retention_days", 90, 1, 3653)
    if retention not in _RETENTION_DAYS:
        raise SettingsError(f"{env.where}.log_retention_days: {retention} is not a "
                            f"CloudWatch Logs retention ({', '.join(map(str, _RETENTION_DAYS))})")

    settings = EnvironmentSettings(
        name=name,
        account=env.optional_text("account"),
        region=env.optional_text("region"),
        vpc=_vpc(env.child("vpc")),
        relay=relay,
        config=config,
        service=_service(env.child("service")),
        worker=_worker(env.child("worker")),
        alarm_email=env.optional_text("alarm_email"),
        private_dns=_private_dns(env.child("private_dns")),
        endpoint_service=_endpoint_service(env.child("endpoint_service")),
        log_retention_days=retention,
        events=_events(env.child("events"), config),
        smtp_ports=smtp_ports,
        tls=tls,
    )
    _check_networks(settings, relay_reader.where)
    _check_worker_timeout(settings, env.where)
    _check_bounce_sender(settings, relay_reader.where)
    return settings


def _check_bounce_sender(settings: EnvironmentSettings, where: str) -> None:
    """Delivery status notifications are sent from ses_bounce_sender, so SES must accept
    that address: a verified identity has to cover it (as sesrelay.ses_identities
    matches them), or every bounce would fail and wait out maximal_queue_lifetime.

    With ses_identity_arn (sending authorization) every send names that identity, so it
    alone must cover the address. Without any identity the worker refuses to synthesize
    with its own message (stacks/worker.py)."""
    config = settings.config
    if config.ses_identity_arn:
        identities: tuple[str, ...] = (config.ses_identity_arn.rpartition("identity/")[2],)
        named = f"the identity of ses_identity_arn ({config.ses_identity_arn})"
    else:
        identities = config.ses_identities
        named = f"ses_identities ({', '.join(identities)})"
    if identities and not ses_identities.covers(identities, config.ses_bounce_sender):
        raise SettingsError(
            f"{where}.ses_bounce_sender: {config.ses_bounce_sender} is not covered by "
            f"{named} of environment {settings.name!r}: SES would refuse every bounce "
            "(and the worker's role may not send as it). Set ses_bounce_sender to an "
            "address of a verified domain or address listed there (for example "
            "MAILER-DAEMON@<domain>), or verify its domain in SES and add it to "
            "ses_identities")


def _check_worker_timeout(settings: EnvironmentSettings, where: str) -> None:
    """The worker must be able to start a send of the largest message it may get in a
    fresh invocation: it never starts one that Lambda's timeout could cut off (whose
    outcome would then be unknown)."""
    needed = worker_timeout_needed(settings.config.message_size_limit)
    if settings.worker.timeout_seconds < needed:
        raise SettingsError(
            f"{where}.worker.timeout_seconds: {settings.worker.timeout_seconds} s is too "
            f"short to send a message of message_size_limit "
            f"({settings.config.message_size_limit} bytes), which may take {needed:.0f} s "
            "(sesrelay.timeouts); raise it or lower message_size_limit")


def _check_networks(settings: EnvironmentSettings, where: str) -> None:
    networks = settings.client_networks
    if not networks:
        raise SettingsError(f"{where}.mynetworks: lists no client network the load balancer "
                            "could admit (loopback only); name the CIDRs of the applications")
    for net in networks:
        if ipaddress.ip_network(net).prefixlen == 0:
            raise SettingsError(f"{where}.mynetworks: {net} would admit the whole Internet to "
                                "the load balancer and make an open relay")
    for net in settings.auth_networks:
        if ipaddress.ip_network(net).prefixlen == 0:
            raise SettingsError(f"{where}.sesrelay_auth_networks: {net} would admit the whole "
                                "Internet to the load balancer to try passwords")


def _smtp_ports(env: _Reader) -> tuple[int, ...]:
    value = env.data.get("smtp_ports", [SMTP_PORT])
    if (not isinstance(value, list) or not value or len(set(value)) != len(value)
            or any(port not in SMTP_PORTS for port in value) or SMTP_PORT not in value):
        # Port 25's target group is the one the scaling policy and the dashboard watch.
        raise SettingsError(f"{env.where}.smtp_ports: expected a list of distinct ports "
                            f"from {', '.join(map(str, SMTP_PORTS))}, 25 among them, "
                            f"got {value!r}")
    return tuple(sorted(value))


def _tls(reader: _Reader | None, config: Config, smtp_ports: tuple[int, ...],
         where: str) -> TlsSettings | None:
    """The certificate's origin when the relay speaks TLS; errors for TLS asked half-way."""
    if SUBMISSION_PORT in smtp_ports and config.tls_level == "none":
        raise SettingsError(f"{where}.smtp_ports: {SUBMISSION_PORT} is submission with "
                            "STARTTLS: set relay.smtpd_tls_security_level (may or encrypt)")
    if not tls_wanted(config):
        if reader is not None:
            raise SettingsError(f"{where}.tls: the relay does not speak TLS: set "
                                "relay.smtpd_tls_security_level, or list 465 in smtp_ports")
        return None
    if reader is None:
        return TlsSettings()
    reader.check_keys({"certificate_secret"})
    return TlsSettings(certificate_secret=reader.optional_text("certificate_secret"))


def _vpc(reader: _Reader | None) -> CreatedVpc | ImportedVpc:
    if reader is None:
        return CreatedVpc()
    if "vpc_id" in reader.data:
        if "egress" in reader.data:
            raise SettingsError(f"{reader.where}.egress: an imported VPC (vpc_id) brings its "
                                "own egress: its private subnets must already reach AWS's "
                                "APIs; remove egress")
        reader.check_keys({"vpc_id", "availability_zones", "private_subnet_ids",
                           "private_subnet_cidrs"})
        imported = ImportedVpc(
            vpc_id=reader.text("vpc_id"),
            availability_zones=reader.strings("availability_zones"),
            private_subnet_ids=reader.strings("private_subnet_ids"),
            private_subnet_cidrs=reader.strings("private_subnet_cidrs"),
        )
        if not (len(imported.availability_zones) == len(imported.private_subnet_ids)
                == len(imported.private_subnet_cidrs)):
            raise SettingsError(f"{reader.where}: availability_zones, private_subnet_ids and "
                                "private_subnet_cidrs must list one entry per subnet, in order")
        for cidr in imported.private_subnet_cidrs:
            _cidr(cidr, f"{reader.where}.private_subnet_cidrs")
        return imported
    reader.check_keys({"cidr", "max_azs", "nat_gateways", "egress"})
    egress = reader.text("egress", EGRESS_NAT)
    if egress not in EGRESS_OPTIONS:
        raise SettingsError(f"{reader.where}.egress: {egress!r} is not one of "
                            f"{', '.join(EGRESS_OPTIONS)}")
    if egress != EGRESS_NAT and "nat_gateways" in reader.data:
        raise SettingsError(f"{reader.where}.nat_gateways: egress {egress!r} creates no NAT "
                            "gateway; remove nat_gateways or choose egress 'nat'")
    created = CreatedVpc(
        cidr=reader.text("cidr", CreatedVpc.cidr),
        max_azs=reader.integer("max_azs", CreatedVpc.max_azs, 1, 6),
        nat_gateways=(reader.integer("nat_gateways", CreatedVpc.nat_gateways, 1, 6)
                      if egress == EGRESS_NAT else 0),
        egress=egress,
    )
    _cidr(created.cidr, f"{reader.where}.cidr")
    return created


def _cidr(value: str, where: str) -> None:
    try:
        ipaddress.IPv4Network(value)
    except ValueError as exc:
        raise SettingsError(f"{where}: {value!r} is not an IPv4 CIDR ({exc})") from None


def _service(reader: _Reader | None) -> ServiceSize:
    if reader is None:
        return ServiceSize()
    reader.check_keys({"cpu", "memory_mib", "min_tasks", "max_tasks", "flows_per_task"})
    size = ServiceSize(
        cpu=reader.integer("cpu", ServiceSize.cpu, 256, 16384),
        memory_mib=reader.integer("memory_mib", ServiceSize.memory_mib, 512, 122880),
        min_tasks=reader.integer("min_tasks", ServiceSize.min_tasks, 1, 1000),
        max_tasks=reader.integer("max_tasks", ServiceSize.max_tasks, 1, 1000),
        flows_per_task=reader.integer("flows_per_task", ServiceSize.flows_per_task,
                                      1, 100_000),
    )
    if size.max_tasks < size.min_tasks:
        raise SettingsError(f"{reader.where}: max_tasks ({size.max_tasks}) is below "
                            f"min_tasks ({size.min_tasks})")
    return size


def _worker(reader: _Reader | None) -> WorkerSize:
    if reader is None:
        return WorkerSize()
    reader.check_keys({"timeout_seconds", "memory_mib", "max_concurrency"})
    return WorkerSize(
        timeout_seconds=reader.integer("timeout_seconds", WorkerSize.timeout_seconds, 10, 900),
        memory_mib=reader.integer("memory_mib", WorkerSize.memory_mib, 128, 10240),
        # SQS event sources accept a maximum concurrency of 2 to 1000.
        max_concurrency=reader.optional_integer("max_concurrency", 2, 1000),
    )


def _events(reader: _Reader | None, config: Config) -> EventsSettings:
    if reader is None:
        return EventsSettings()
    reader.check_keys({"configuration_set_exists"})
    if not config.ses_configuration_set:
        raise SettingsError(f"{reader.where}: SES events are captured only for a "
                            "configuration set: set relay.ses_configuration_set")
    return EventsSettings(configuration_set_exists=reader.boolean(
        "configuration_set_exists", EventsSettings.configuration_set_exists))


def _private_dns(reader: _Reader | None) -> PrivateDns | None:
    if reader is None:
        return None
    reader.check_keys({"zone_name", "record_name", "zone_id"})
    return PrivateDns(zone_name=reader.text("zone_name").rstrip("."),
                      record_name=reader.text("record_name", "smtp"),
                      zone_id=reader.optional_text("zone_id"))


def _endpoint_service(reader: _Reader | None) -> EndpointService | None:
    if reader is None:
        return None
    reader.check_keys({"allowed_principals", "acceptance_required"})
    return EndpointService(allowed_principals=reader.strings("allowed_principals"),
                           acceptance_required=reader.boolean("acceptance_required", True))
