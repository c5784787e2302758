"""`sesrelay dev`: the whole pipeline on one machine.

One process tree holds the relay, an embedded AWS emulation (moto's server on
127.0.0.1:4566) with the spool bucket, queue, DLQ, idempotency and trail tables and
verified SES identities, and a local worker loop that feeds SQS messages to the Lambda
handler the way Lambda's SQS event source does: batches of up to 10, the partial-batch
response honoured. With ``ses_configuration_set`` set, the emulated SES also publishes
the events a configuration set would, and a second loop feeds them to the SES events
handler (``sesrelay.dev_events``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sesrelay import aws, trail
from sesrelay.certificates import CertificateFiles, fingerprint, self_signed
from sesrelay.config import Config, env_name, load_config
from sesrelay.timeouts import VISIBILITY_PER_TIMEOUT, WORKER_TIMEOUT

log = logging.getLogger("sesrelay.dev")

DEV_REGION = "us-east-1"
DEV_ACCOUNT = "123456789012"  # moto's default account
DEV_AWS_PORT = 4566
BUCKET = "sesrelay-dev-spool"
QUEUE = "sesrelay-dev-spool"
DLQ = "sesrelay-dev-dlq"
TABLE = "sesrelay-dev-idempotency"
TRAIL_TABLE = "sesrelay-dev-trail"
# Lambda's SQS event source: up to 10 records a batch; the DLQ after this many receives.
BATCH_SIZE = 10
MAX_RECEIVE_COUNT = 5
VISIBILITY_TIMEOUT = WORKER_TIMEOUT * VISIBILITY_PER_TIMEOUT


def emulation_endpoint(port: int = DEV_AWS_PORT) -> str:
    """The URL of the embedded AWS emulation."""
    return f"http://127.0.0.1:{port}"


def point_at_emulation(port: int) -> None:
    """Send every boto3 client of this process (and its children) to the emulation."""
    os.environ.update({
        "AWS_ENDPOINT_URL": emulation_endpoint(port),
        "AWS_ACCESS_KEY_ID": "sesrelay-dev",
        "AWS_SECRET_ACCESS_KEY": "sesrelay-dev",
        "AWS_DEFAULT_REGION": DEV_REGION,
        "AWS_REGION": DEV_REGION,
    })
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    aws.reset_clients()


def start_emulation(port: int) -> Any:
    """Start moto's server in this process, on loopback only, with dev's SES
    (sesrelay.dev_ses: 8-bit raw content, configuration set and tags recorded) and
    DynamoDB's conditional writes made atomic (serialise_dynamodb)."""
    from moto.server import ThreadedMotoServer

    from sesrelay import dev_ses

    dev_ses.install()
    serialise_dynamodb()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


_DYNAMODB_LOCK = threading.Lock()


def serialise_dynamodb() -> None:
    """Answer moto's DynamoDB requests one at a time. moto's server answers each request
    on a thread of its own and its backends are not thread-safe: two conditional writes
    to one item at once can both succeed, which DynamoDB never allows, and the commit
    record and the send ledger rely on it (two copies of one message, each allowed to
    send). Other services stay concurrent: an SQS long poll holds its request for
    seconds."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    if getattr(DomainDispatcherApplication, "_sesrelay_serialised", False):
        return
    answer = DomainDispatcherApplication.__call__

    def one_dynamodb_request_at_a_time(self: Any, environ: dict[str, Any],
                                       start_response: Any) -> Any:
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            with _DYNAMODB_LOCK:
                return answer(self, environ, start_response)
        return answer(self, environ, start_response)

    DomainDispatcherApplication.__call__ = one_dynamodb_request_at_a_time
    DomainDispatcherApplication._sesrelay_serialised = True


@dataclass(frozen=True)
class DevResources:
    """What start-up created in the emulation."""

    bucket: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    table: str
    trail_table: str
    identities: tuple[str, ...]

    def settings(self) -> dict[str, str]:
        """The spool parameters that point the relay and the worker at these resources."""
        return {
            "sesrelay_spool_bucket": self.bucket,
            "sesrelay_spool_queue_url": self.queue_url,
            "sesrelay_idempotency_table": self.table,
            "sesrelay_trail_table": self.trail_table,
        }


def dev_identities(config: Config) -> tuple[str, ...]:
    """SES identities to verify: the configured ones, this host's names (swaks' default
    sender is user@hostname), mydomain and myorigin, and the bounce sender's domain.
    Recipients need none (the mailbox simulator's simulator.amazonses.com included)."""
    names = [*config.ses_identities, socket.gethostname(), socket.getfqdn(),
             config.mydomain, config.myorigin, config.ses_bounce_sender.rpartition("@")[2]]
    return tuple(dict.fromkeys(n for n in names if n))


def create_resources(config: Config) -> DevResources:
    """Create the bucket, queue with its DLQ, idempotency and trail tables and SES
    identities."""
    s3, sqs = aws.client("s3"), aws.client("sqs")
    s3.create_bucket(Bucket=BUCKET)
    dlq_url = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(QueueName=QUEUE, Attributes={
        "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                     "maxReceiveCount": str(MAX_RECEIVE_COUNT)}),
    })["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    dynamodb = aws.client("dynamodb")
    dynamodb.create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": "expiration"})
    dynamodb.create_table(TableName=TRAIL_TABLE, **trail.table_definition())
    dynamodb.update_time_to_live(TableName=TRAIL_TABLE, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": trail.TTL_ATTRIBUTE})
    ses = aws.client("ses")
    identities = dev_identities(config)
    for identity in identities:
        if "@" in identity:
            ses.verify_email_identity(EmailAddress=identity)
        else:
            ses.verify_domain_identity(Domain=identity)
    return DevResources(BUCKET, queue_url, queue_arn, dlq_url, TABLE, TRAIL_TABLE, identities)


@dataclass
class LocalLambdaContext:
    """The attributes of Lambda's context object that the handler and powertools read."""

    function_name: str = "sesrelay-dev-worker"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    timeout_ms: int = WORKER_TIMEOUT * 1000
    aws_request_id: str = ""
    invoked_function_arn: str = ""  # from function_name
    log_group_name: str = ""  # from function_name
    log_stream_name: str = "local"

    def __post_init__(self) -> None:
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())
        self.invoked_function_arn = self.invoked_function_arn or (
            f"arn:aws:lambda:{DEV_REGION}:{DEV_ACCOUNT}:function:{self.function_name}")
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"
        self._deadline = time.monotonic() + self.timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before this invocation would time out."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def sqs_event(messages: list[Mapping[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source builds from received messages."""
    return {"Records": [{
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": m.get("Attributes", {}),
        "messageAttributes": {
            name: {"stringValue": a.get("StringValue"), "binaryValue": a.get("BinaryValue"),
                   "stringListValues": [], "binaryListValues": [],
                   "dataType": a["DataType"]}
            for name, a in m.get("MessageAttributes", {}).items()},
        "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": DEV_REGION,
    } for m in messages]}


class LocalWorker(threading.Thread):
    """Polls a queue and invokes a Lambda handler as Lambda's event source mapping does
    (the worker on the spool queue; the events handler on the SES events queue)."""

    def __init__(self, queue_url: str, queue_arn: str,
                 handler: Callable[[dict[str, Any], Any], dict[str, Any]],
                 name: str = "local-worker", function_name: str = "sesrelay-dev-worker",
                 sqs: Any = None) -> None:
        """sqs: the client to poll with (default: sesrelay.aws's); the event source
        mapping's calls are AWS's own, under none of sesrelay's budgets."""
        super().__init__(name=name, daemon=True)
        self.queue_url, self.queue_arn = queue_url, queue_arn
        self.handler = handler
        self.function_name = function_name
        self.sqs = sqs
        self.stopping = threading.Event()

    def run(self) -> None:
        """Poll until stopped."""
        sqs = self.sqs or aws.client("sqs")
        while not self.stopping.is_set():
            try:
                self.poll_once(sqs)
            except Exception:
                log.exception("%s: poll failed; retrying", self.name)
                self.stopping.wait(1)

    def poll_once(self, sqs: Any) -> int:
        """Receive one batch, invoke the handler, delete what it did not report failed."""
        received = sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=BATCH_SIZE,
            WaitTimeSeconds=1, AttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            return 0
        try:
            response = self.handler(sqs_event(received, self.queue_arn),
                                    LocalLambdaContext(function_name=self.function_name))
        except Exception:
            # As in Lambda: an invocation error returns the whole batch to the queue.
            log.exception("%s: handler failed; the batch will be retried", self.name)
            return 0
        failed = {f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])}
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(received) if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=done)
        return len(received)


def dev_environment(resources: DevResources, config_file: str | None) -> dict[str, str]:
    """Environment variables that give the relay and the worker the dev configuration."""
    env = {env_name(name): value for name, value in resources.settings().items()}
    if config_file:
        env["SESRELAY_CONFIG"] = os.path.abspath(config_file)
    # EMF metric lines are for CloudWatch; locally they would bury the log.
    env.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    return env


@dataclass(frozen=True)
class DevTls:
    """`sesrelay dev --tls` and `--users`: the settings they add, and what to print."""

    settings: dict[str, str]
    certificate: CertificateFiles | None


def dev_tls(config: Config, state: Path, tls: bool, users: str | None) -> DevTls:
    """STARTTLS with a self-signed certificate (made once in state, for localhost,
    127.0.0.1 and myhostname) unless main.cf names one; AUTH with the users table."""
    settings: dict[str, str] = {}
    certificate = None
    if tls:
        if config.tls_level == "none":
            settings["smtpd_tls_security_level"] = "may"
        if not config.smtpd_tls_cert_file:
            directory = state / "dev-tls"
            if (directory / "cert.pem").exists() and (directory / "key.pem").exists():
                pem = (directory / "cert.pem").read_bytes()
                certificate = CertificateFiles(directory / "cert.pem", directory / "key.pem",
                                               fingerprint(pem))
            else:
                certificate = self_signed(directory, list(dict.fromkeys(
                    ["localhost", "127.0.0.1", config.myhostname])))
            settings["smtpd_tls_cert_file"] = str(certificate.cert_file)
            settings["smtpd_tls_key_file"] = str(certificate.key_file)
    if users:
        settings["smtpd_sasl_auth_enable"] = "yes"
        settings["sesrelay_sasl_users"] = users
    return DevTls(settings, certificate)


def run_dev(config_file: str | None, listen: str, aws_port: int, tls: bool = False,
            users: str | None = None, state: Path | None = None) -> None:
    """Run the relay, the emulation and the local worker until interrupted."""
    from smtp_relay import eventloop
    from smtp_relay.server import Listener, check_port_free, parse_listen, run, smtps_listeners

    address = parse_listen(listen)
    check_port_free(address)
    check_port_free(Listener("127.0.0.1", aws_port))
    point_at_emulation(aws_port)
    config = load_config(config_file)
    security = dev_tls(config, state or Path("."), tls, users)
    emulation = start_emulation(aws_port)
    try:
        resources = create_resources(config)
        os.environ.update(dev_environment(resources, config_file))
        config = load_config(config_file, overrides=security.settings,
                             overrides_source="sesrelay dev")
        events = None
        if config.ses_configuration_set:  # before the first send: SES publishes its events
            from ses_events.handler import handler as events_handler
            from sesrelay.dev_events import start_events

            events = start_events(config.ses_configuration_set, events_handler)
        from ses_worker.handler import handler

        worker = LocalWorker(resources.queue_url, resources.queue_arn, handler)
        worker.start()

        def ready(bound: list[tuple[str, int]]) -> None:
            host, port = bound[0]
            starttls = " --tls" if config.tls_level != "none" else ""
            print(f"sesrelay dev: SMTP relay on {host}:{port}, AWS emulation on "
                  f"{emulation_endpoint(aws_port)}\n"
                  + "".join(f"  implicit TLS on {h}:{p}\n" for h, p in bound[1:])
                  + (f"  TLS certificate {security.certificate.cert_file} (self-signed), "
                     f"SHA-256 fingerprint {security.certificate.fingerprint}\n"
                     if security.certificate else "")
                  + (f"  SMTP AUTH users in {config.sesrelay_sasl_users}\n"
                     if config.smtpd_sasl_auth_enable else "")
                  + f"  try:  swaks --server {host}:{port}{starttls} --to someone@example.com\n"
                  f"  then: sesrelay outbox\n"
                  f"  verified SES identities: {', '.join(resources.identities)}\n"
                  "  state (queue, outbox, trail) is in memory: gone when dev stops"
                  + (f"\n  SES events of configuration set {config.ses_configuration_set}"
                     f" go to the trail table {resources.trail_table}" if events else ""),
                  flush=True)

        addresses = [Listener(address.host, address.port, config.smtpd_tls_wrappermode),
                     *smtps_listeners(config, [address.host])]
        eventloop.run(run(config, addresses, drain_timeout=5, on_ready=ready))
        worker.stopping.set()  # each loop ends within a poll (1 s): stop them together
        if events:
            events.stop()
        worker.join(timeout=5)
        _say_what_is_discarded(resources)
    finally:
        emulation.stop()


def _say_what_is_discarded(resources: DevResources) -> None:
    """The emulation keeps its state in memory: name the messages that end with it."""
    sqs = aws.client("sqs")
    names = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed")
    counts = [sum(int(v) for v in sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=list(names))["Attributes"].values())
        for url in (resources.queue_url, resources.dlq_url)]
    if any(counts):
        log.warning("sesrelay dev keeps no state: %d queued message(s) and %d in the "
                    "dead-letter queue are discarded", *counts)
