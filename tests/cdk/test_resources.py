"""What each deployment contains: the properties issue 4 asks for, checked with
aws_cdk.assertions on the synthesized templates."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from aws_cdk.assertions import Match, Template

from sesrelay import telemetry
from sesrelay.commit import COMMIT_PREFIX
from sesrelay.config import env_name, to_environment
from sesrelay.send_rate import CONCURRENCY_ENV
from sesrelay.spool import KEY_PREFIX
from sesrelay.timeouts import worker_timing
from stacks.environment import CONTAINER_PORT, SMTP_PORT, SMTPS_CONTAINER_PORT, SMTPS_PORT
from stacks.monitoring import SES_BOUNCE_RATE, SES_COMPLAINT_RATE
from tests.cdk.conftest import CONSUMER_ACCOUNT, IMPORTED_CIDRS
from tests.cdk.synth import Deployment

DAY = 86400


def _template(deployment: Deployment) -> Template:
    return Template.from_json(deployment.template)


def _container(deployment: Deployment) -> dict[str, Any]:
    [container] = deployment.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    return container


def _container_env(deployment: Deployment) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in _container(deployment)["Environment"]}


def _lambda_env(deployment: Deployment, prefix: str = "Worker") -> dict[str, Any]:
    return deployment.one("AWS::Lambda::Function", prefix)["Environment"]["Variables"]


def _task_subnet_cidrs(deployment: Deployment) -> list[str]:
    """The CIDRs of the subnets the relay tasks and the NLB share (private, isolated or
    public, by egress)."""
    service = deployment.one("AWS::ECS::Service")
    return [deployment.template["Resources"][subnet["Ref"]]["Properties"]["CidrBlock"]
            for subnet in service["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"]]


# Network and service -------------------------------------------------------------------

def test_nlb_is_internal_and_admits_smtp_only_from_mynetworks(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        lb = deployment.one("AWS::ElasticLoadBalancingV2::LoadBalancer")
        assert lb["Scheme"] == "internal" and lb["Type"] == "network"
        [sg_ref] = lb["SecurityGroups"]
        sg_id = sg_ref["Fn::GetAtt"][0]
        ingress = deployment.template["Resources"][sg_id]["Properties"]["SecurityGroupIngress"]
        ports = deployment.settings.smtp_ports
        for port in ports:
            assert sorted(r["CidrIp"] for r in ingress if r["FromPort"] == port) == sorted(
                deployment.settings.client_networks + deployment.settings.auth_networks)
        assert {(r["FromPort"], r["ToPort"], r["IpProtocol"]) for r in ingress} == {
            (port, port, "tcp") for port in ports}
        _template(deployment).has_resource_properties("AWS::ElasticLoadBalancingV2::Listener", {
            "Port": SMTP_PORT, "Protocol": "TCP"})
        # The NLB's only way out is to the tasks, on the container port.
        _template(deployment).has_resource_properties("AWS::EC2::SecurityGroupEgress", {
            "GroupId": {"Fn::GetAtt": [sg_id, "GroupId"]},
            "FromPort": CONTAINER_PORT, "ToPort": CONTAINER_PORT,
            "DestinationSecurityGroupId": Match.any_value()})


def test_tasks_admit_only_the_nlb(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        service = deployment.one("AWS::ECS::Service")
        [task_sg] = service["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"]
        task_sg_id = task_sg["Fn::GetAtt"][0]
        assert "SecurityGroupIngress" not in \
            deployment.template["Resources"][task_sg_id]["Properties"]
        rules = [r["Properties"] for r in
                 deployment.resources("AWS::EC2::SecurityGroupIngress").values()
                 if r["Properties"]["GroupId"] == {"Fn::GetAtt": [task_sg_id, "GroupId"]}]
        lb_sg = deployment.one("AWS::ElasticLoadBalancingV2::LoadBalancer")["SecurityGroups"][0]
        ports = [CONTAINER_PORT] + ([SMTPS_CONTAINER_PORT]
                                    if SMTPS_PORT in deployment.settings.smtp_ports else [])
        assert sorted((r["SourceSecurityGroupId"]["Fn::GetAtt"][0], r["FromPort"], r["ToPort"])
                      for r in rules) == [(lb_sg["Fn::GetAtt"][0], port, port) for port in ports]


def test_target_group_uses_proxy_v2_tcp_health_checks_and_short_draining(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        group = deployment.one("AWS::ElasticLoadBalancingV2::TargetGroup", "RelayTargets")
        attributes = {a["Key"]: a["Value"] for a in group["TargetGroupAttributes"]}
        assert attributes["proxy_protocol_v2.enabled"] == "true"
        assert group["HealthCheckProtocol"] == "TCP"
        assert group["Port"] == CONTAINER_PORT and group["TargetType"] == "ip"
        stop_timeout = _container(deployment)["StopTimeout"]
        assert int(attributes["deregistration_delay.timeout_seconds"]) <= stop_timeout


def test_fargate_service_runs_arm64_non_root_read_only_with_health_check(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        task = deployment.one("AWS::ECS::TaskDefinition")
        assert task["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
        assert task["RequiresCompatibilities"] == ["FARGATE"]
        container = _container(deployment)
        assert container["User"] not in ("", "0", "root") and not \
            container["User"].startswith(("0:", "root:"))
        assert container["ReadonlyRootFilesystem"] is True
        assert container["HealthCheck"]["Command"] == ["CMD", "sesrelay", "healthcheck"]
        # One relay process per vCPU (the imported variant has 2), each on its own CPU.
        vcpus = max(1, int(task["Cpu"]) // 1024)
        assert container["Command"] == ["--processes", str(vcpus), "--cpu-affinity"]
        assert container["PortMappings"][0]["ContainerPort"] == CONTAINER_PORT
        log_group_id = container["LogConfiguration"]["Options"]["awslogs-group"]["Ref"]
        log_group = deployment.template["Resources"][log_group_id]["Properties"]
        assert log_group["RetentionInDays"] == deployment.settings.log_retention_days


def test_service_has_circuit_breaker_with_rollback(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        _template(deployment).has_resource_properties("AWS::ECS::Service", {
            "LaunchType": "FARGATE",
            "DeploymentConfiguration": Match.object_like({
                "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True}}),
        })


def test_prod_runs_at_least_two_tasks_across_availability_zones(prod: Deployment) -> None:
    service = prod.one("AWS::ECS::Service")
    assert service["DesiredCount"] >= 2
    subnets = service["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"]
    zones = {json.dumps(prod.template["Resources"][s["Ref"]]["Properties"]["AvailabilityZone"])
             for s in subnets}
    assert len(zones) >= 2
    assert service["AvailabilityZoneRebalancing"] == "ENABLED"
    assert prod.one("AWS::ApplicationAutoScaling::ScalableTarget")["MinCapacity"] >= 2


def test_service_autoscales_on_cpu_and_connections(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        target = deployment.one("AWS::ApplicationAutoScaling::ScalableTarget")
        assert (target["MinCapacity"], target["MaxCapacity"]) == (
            deployment.settings.service.min_tasks, deployment.settings.service.max_tasks)
        policies = [p["Properties"]["TargetTrackingScalingPolicyConfiguration"] for p in
                    deployment.resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()]
        assert {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"} in [
            p.get("PredefinedMetricSpecification") for p in policies]
        [connections] = [p for p in policies if "CustomizedMetricSpecification" in p]
        metrics = json.dumps(connections["CustomizedMetricSpecification"])
        assert "ActiveFlowCount" in metrics and "HealthyHostCount" in metrics
        assert connections["TargetValue"] == deployment.settings.service.flows_per_task


def test_relay_configuration_comes_from_the_model(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        environment = _container_env(deployment)
        proxy_networks = (IMPORTED_CIDRS if deployment.name == "imported"
                          else _task_subnet_cidrs(deployment))
        expected = to_environment(deployment.settings.relay_config(proxy_networks))
        # The files and the user table the configuration was checked with at synthesis
        # are replaced by the task's own (tests/cdk/test_tls_and_auth.py).
        for name in ("smtpd_tls_cert_file", "smtpd_tls_key_file", "sesrelay_sasl_users"):
            del expected[env_name(name)]
        assert {k: environment[k] for k in expected} == expected
        assert environment[env_name("smtpd_upstream_proxy_protocol")] == "haproxy"
        assert environment[env_name("sesrelay_listen_port")] == str(CONTAINER_PORT)
        assert environment[env_name("sesrelay_proxy_networks")] == ", ".join(proxy_networks)
        assert "Ref" in environment[env_name("sesrelay_spool_bucket")]
        assert "Ref" in environment[env_name("sesrelay_spool_queue_url")]
        assert environment[telemetry.NAMESPACE_ENV] == telemetry.metrics_namespace(
            deployment.name)
        assert environment[telemetry.SERVICE_ENV] == telemetry.SERVICE_RELAY


# Spool ---------------------------------------------------------------------------------

def _spool_bucket(deployment: Deployment) -> dict[str, Any]:
    [bucket] = [r["Properties"] for r in deployment.resources("AWS::S3::Bucket").values()
                if "LifecycleConfiguration" in r["Properties"]
                and r["Properties"].get("LoggingConfiguration")]
    return bucket


def test_spool_bucket_is_private_encrypted_ssl_only(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        bucket = _spool_bucket(deployment)
        assert bucket["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True,
            "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
        assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        policies = json.dumps([p["Properties"]["PolicyDocument"] for p in
                               deployment.resources("AWS::S3::BucketPolicy").values()])
        assert '"aws:SecureTransport": "false"' in policies


def test_spool_lifecycle_outlives_queue_lifetime_retention_and_dlq(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        config = deployment.settings.config
        [rule] = _spool_bucket(deployment)["LifecycleConfiguration"]["Rules"]
        assert rule["Prefix"] == KEY_PREFIX and rule["Status"] == "Enabled"
        days = rule["ExpirationInDays"]
        # Objects survive a message's whole queue life plus its retention after sending,
        # and the 14 days an envelope may wait in the DLQ for a redrive.
        assert days * DAY >= config.maximal_queue_lifetime + config.sesrelay_spool_retention
        assert days >= 14
        # ...but the bucket does not keep mail for much longer than that.
        assert days <= math.ceil(max(14 * DAY, config.maximal_queue_lifetime
                                     + config.sesrelay_spool_retention) / DAY) + 1


def test_queues_are_encrypted_and_ssl_only(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        queues = deployment.resources("AWS::SQS::Queue")
        # The spool queue and its DLQ; the SES events queue and its DLQ.
        assert len(queues) == (4 if deployment.has_events else 2)
        for queue in queues.values():
            assert queue["Properties"]["SqsManagedSseEnabled"] is True
        policies = [json.dumps(p["Properties"]) for p in
                    deployment.resources("AWS::SQS::QueuePolicy").values()]
        assert len(policies) == len(queues)
        assert all('"aws:SecureTransport": "false"' in p for p in policies)


def _main_queue(deployment: Deployment) -> dict[str, Any]:
    return deployment.one("AWS::SQS::Queue", "SpoolQueue")


def test_visibility_timeout_is_six_times_the_lambda_timeout(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        timeout = deployment.one("AWS::Lambda::Function", "Worker")["Timeout"]
        assert _main_queue(deployment)["VisibilityTimeout"] >= 6 * timeout


def test_dlq_is_reached_only_after_the_backoff_schedule_spans_the_queue_lifetime(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        config = deployment.settings.config
        receives = _main_queue(deployment)["RedrivePolicy"]["maxReceiveCount"]
        # The worker's shortest schedule: minimal_backoff_time doubling up to
        # maximal_backoff_time, each delay up to 10 % short (jitter), never under minimal.
        shortest = [max(config.minimal_backoff_time, 0.9 * min(
            config.minimal_backoff_time * 2 ** k, config.maximal_backoff_time))
            for k in range(receives - 1)]
        assert sum(shortest) >= config.maximal_queue_lifetime
        assert receives <= 1000


# Worker --------------------------------------------------------------------------------

def test_worker_lambda_runs_arm64_python_312_or_newer(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        function = deployment.one("AWS::Lambda::Function", "Worker")
        assert function["Architectures"] == ["arm64"]
        major, minor = function["Runtime"].removeprefix("python").split(".")
        assert (int(major), int(minor)) >= (3, 12)
        assert function["Handler"] == "ses_worker.handler.handler"
        # Powertools and boto3 come with the code (tests/cdk/test_lambda_asset.py).
        assert "Layers" not in function
        environment = _lambda_env(deployment)
        assert environment[telemetry.NAMESPACE_ENV] == telemetry.metrics_namespace(
            deployment.name)
        assert environment[telemetry.SERVICE_ENV] == telemetry.SERVICE_WORKER
        assert "Ref" in environment[env_name("sesrelay_idempotency_table")]


def test_worker_code_asset_holds_handler_and_core_package(dev: Deployment) -> None:
    function = dev.one("AWS::Lambda::Function", "Worker")
    asset = function["Code"]["S3Key"].removesuffix(".zip")
    directory = Path(dev.assembly.directory) / f"asset.{asset}"
    assert {p.name for p in directory.iterdir()} >= {"ses_worker", "sesrelay"}
    assert (directory / "sesrelay" / "spool.py").is_file()


def test_event_source_batches_ten_reports_item_failures_and_caps_concurrency(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        mapping = deployment.one("AWS::Lambda::EventSourceMapping", "Worker")
        assert mapping["BatchSize"] == 10
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        concurrency = mapping["ScalingConfig"]["MaximumConcurrency"]
        assert concurrency >= 2
        rate = deployment.settings.config.ses_max_send_rate
        # Never more concurrent workers than the SES sending rate can keep busy.
        assert rate > 0 and concurrency <= max(2, math.ceil(rate))


def test_idempotency_table_has_ttl_pitr_and_on_demand(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        table = deployment.one("AWS::DynamoDB::GlobalTable", "Worker")
        assert table["BillingMode"] == "PAY_PER_REQUEST"
        assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration",
                                                    "Enabled": True}
        assert table["Replicas"][0]["PointInTimeRecoverySpecification"] == {
            "PointInTimeRecoveryEnabled": True}


def _role_statements(deployment: Deployment, role_fragment: str) -> list[dict[str, Any]]:
    statements = []
    for policy in deployment.resources("AWS::IAM::Policy").values():
        roles = json.dumps(policy["Properties"]["Roles"])
        if role_fragment in roles:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else actions


def test_worker_iam_is_least_privilege(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        statements = _role_statements(deployment, "WorkerRole")
        config = deployment.settings.config
        for statement in statements:
            assert statement["Effect"] == "Allow"
            # GetAccount has no resource type: IAM takes it only on "*".
            assert statement["Resource"] != "*" or _actions(statement) == ["ses:GetAccount"]
            assert not any(a.endswith("*") for a in _actions(statement))
        [ses] = [s for s in statements if "ses:SendRawEmail" in _actions(s)]
        resources = json.dumps(ses["Resource"])
        for identity in config.ses_identities:
            assert f":identity/{identity}" in resources
        if config.ses_configuration_set:
            assert f":configuration-set/{config.ses_configuration_set}" in resources
        [s3] = [s for s in statements if "s3:GetObject" in _actions(s)]
        assert set(_actions(s3)) <= {"s3:GetObject", "s3:GetObjectTagging",
                                     "s3:PutObjectTagging", "s3:DeleteObject", "s3:PutObject"}
        assert f"/{KEY_PREFIX}*" in json.dumps(s3["Resource"])
        # Deferred copies go back on the spool queue, and nowhere else.
        [send] = [s for s in statements if "sqs:SendMessage" in _actions(s)]
        assert send["Resource"] == _main_queue_arn(deployment)


def _main_queue_arn(deployment: Deployment) -> dict[str, Any]:
    return {"Fn::GetAtt": [deployment.logical_id("AWS::SQS::Queue", "SpoolQueue"), "Arn"]}


def test_worker_may_read_the_account_and_check_the_bounce_sender(
        deployments: dict[str, Deployment]) -> None:
    """At a cold start the worker reads GetAccount (rate, sandbox) and asks whether
    ses_bounce_sender's address or its domain is verified, and nothing more."""
    for deployment in deployments.values():
        statements = _role_statements(deployment, "WorkerRole")
        [check] = [s for s in statements if "ses:GetEmailIdentity" in _actions(s)]
        assert _actions(check) == ["ses:GetEmailIdentity"]
        sender = deployment.settings.config.ses_bounce_sender
        resources = json.dumps(check["Resource"])
        assert resources.count(":identity/") == 2
        assert f":identity/{sender}\"" in resources
        assert f":identity/{sender.rpartition('@')[2]}\"" in resources
        assert any(_actions(s) == ["ses:GetAccount"] for s in statements)


def test_each_worker_knows_its_share_of_the_account_rate(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        mapping = deployment.one("AWS::Lambda::EventSourceMapping", "Worker")
        concurrency = mapping["ScalingConfig"]["MaximumConcurrency"]
        assert _lambda_env(deployment)[CONCURRENCY_ENV] == str(concurrency)
        timeout = deployment.one("AWS::Lambda::Function", "Worker")["Timeout"]
        assert _main_queue(deployment)["VisibilityTimeout"] == worker_timing(
            timeout, deployment.settings.config.message_size_limit,
            deployment.settings.config.ses_max_send_rate, concurrency).visibility_timeout


def test_relay_task_role_may_only_spool_and_write_commit_records(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        # Reading the TLS and AUTH secrets: tests/cdk/test_tls_and_auth.py.
        statements = [s for s in _role_statements(deployment, "RelayTaskTaskRole")
                      if not any(a.startswith("secretsmanager:") for a in _actions(s))]
        # Never s3:DeleteObject: the relay does not withdraw what it spooled.
        assert sorted(a for s in statements for a in _actions(s)) == [
            "dynamodb:GetItem", "dynamodb:PutItem", "s3:PutObject", "sqs:SendMessage"]
        [s3] = [s for s in statements if _actions(s) == ["s3:PutObject"]]
        assert f"/{KEY_PREFIX}*" in json.dumps(s3["Resource"])
        # Commit records only: items of the idempotency table whose key has the prefix.
        [commit] = [s for s in statements if "dynamodb:PutItem" in _actions(s)]
        table = deployment.logical_id("AWS::DynamoDB::GlobalTable", "WorkerIdempotencyTable")
        assert commit["Resource"] == {"Fn::GetAtt": [table, "Arn"]}
        assert commit["Condition"] == {"ForAllValues:StringLike": {
            "dynamodb:LeadingKeys": [f"{COMMIT_PREFIX}*"]}}


# Monitoring ----------------------------------------------------------------------------

def test_dashboard_shows_the_metrics_that_say_mail_is_flowing(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        dashboard = deployment.one("AWS::CloudWatch::Dashboard")
        assert dashboard["DashboardName"] == f"sesrelay-{deployment.name}"
        body = json.dumps(dashboard["DashboardBody"])
        assert telemetry.metrics_namespace(deployment.name) in body
        for metric in (telemetry.ACCEPTED, telemetry.REJECTED, telemetry.DEFERRED,
                       telemetry.SENT, telemetry.BOUNCED, telemetry.FAILED,
                       "ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage",
                       "Errors", "Throttles", "Duration", "AWS/SES", "Send", "Bounce",
                       "Complaint", "HealthyHostCount", "ActiveFlowCount"):
            assert f'\\"{metric}\\"' in body, metric


def _alarms(deployment: Deployment) -> dict[str, dict[str, Any]]:
    return {r["Properties"]["AlarmName"].removeprefix(f"sesrelay-{deployment.name}-"):
            r["Properties"] for r in deployment.resources("AWS::CloudWatch::Alarm").values()}


def test_alarms_notify_the_encrypted_topic(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        alarms = _alarms(deployment)
        assert set(alarms) == {"dlq-not-empty", "oldest-message-too-old",
                               "healthy-below-desired", "worker-errors",
                               "configuration-error", "ses-bounce-rate",
                               "ses-complaint-rate", "service-at-max-tasks",
                               "oldest-unfinished-message"} | (
            {"events-dlq-not-empty"} if deployment.has_events else set())
        topic_id = deployment.logical_id("AWS::SNS::Topic", "Monitoring")
        assert "KmsMasterKeyId" in deployment.template["Resources"][topic_id]["Properties"]
        for alarm in alarms.values():
            assert alarm["AlarmActions"] == [{"Ref": topic_id}]
        assert alarms["ses-bounce-rate"]["Threshold"] == SES_BOUNCE_RATE == 0.05
        assert alarms["ses-complaint-rate"]["Threshold"] == SES_COMPLAINT_RATE == 0.001
        assert alarms["dlq-not-empty"]["Threshold"] == 1
        configuration = alarms["configuration-error"]
        [query] = configuration["Metrics"]  # labelled: a metric query
        stat = query["MetricStat"]
        assert stat["Metric"]["MetricName"] == telemetry.CONFIGURATION_ERROR
        assert stat["Metric"]["Dimensions"] == [{"Name": "service",
                                                 "Value": telemetry.SERVICE_WORKER}]
        # Fires within five minutes: one one-minute period at or above 1.
        assert stat["Period"] * configuration["EvaluationPeriods"] <= 300
        assert (stat["Stat"], configuration["Threshold"]) == ("Sum", 1)
        assert alarms["service-at-max-tasks"]["Threshold"] == \
            deployment.settings.service.max_tasks
        unfinished = alarms["oldest-unfinished-message"]
        # A labelled metric is rendered as a metric query.
        [query] = unfinished["Metrics"]
        stat = query["MetricStat"]
        assert stat["Metric"]["MetricName"] == telemetry.DEFERRED_AGE
        assert (stat["Stat"], stat["Period"]) == ("Maximum", 3600)
        assert unfinished["Threshold"] == min(
            86400, deployment.settings.config.maximal_queue_lifetime // 2)


def test_dashboard_tells_the_trail_hour_by_hour_with_the_top_reasons(
        deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        body = json.dumps(deployment.one("AWS::CloudWatch::Dashboard")["DashboardBody"])
        # SES's verdicts for this environment (its events), not the account's.
        verdicts = list(telemetry.EVENT_METRICS.values()) if deployment.has_events else []
        for metric in (telemetry.DEFERRED_AGE, telemetry.SENDS_IN_DOUBT, *verdicts):
            assert f'\\"{metric}\\"' in body, metric
        assert '\\"period\\":3600' in body  # per hour
        # Logs Insights over the maillog lines: the top deferral and bounce reasons.
        for status in ("deferred", "bounced"):
            assert f"parse maillog 'status={status} (*)' as reason" in body, status
        assert body.count("SOURCE '") >= 2


def test_alarm_email_is_subscribed_where_configured(prod: Deployment, dev: Deployment) -> None:
    _template(prod).has_resource_properties("AWS::SNS::Subscription", {
        "Protocol": "email", "Endpoint": prod.settings.alarm_email})
    _template(dev).resource_count_is("AWS::SNS::Subscription", 0)


# Optional parts ------------------------------------------------------------------------

def test_private_dns_record_points_at_the_nlb(prod: Deployment, imported: Deployment) -> None:
    dns = prod.settings.private_dns
    assert dns is not None
    _template(prod).has_resource_properties("AWS::Route53::HostedZone", {
        "Name": f"{dns.zone_name}.", "VPCs": Match.any_value()})
    for deployment in (prod, imported):
        assert deployment.settings.private_dns is not None
        _template(deployment).has_resource_properties("AWS::Route53::RecordSet", {
            "Name": f"{deployment.settings.private_dns.fqdn}.", "Type": "A",
            "AliasTarget": Match.object_like({"DNSName": Match.any_value()})})
    _template(imported).resource_count_is("AWS::Route53::HostedZone", 0)


def test_imported_vpc_and_privatelink_endpoint_service(imported: Deployment) -> None:
    template = _template(imported)
    template.resource_count_is("AWS::EC2::VPC", 0)
    template.has_resource_properties("AWS::EC2::VPCEndpointService", {
        "AcceptanceRequired": True})
    template.has_resource_properties("AWS::EC2::VPCEndpointServicePermissions", {
        "AllowedPrincipals": [CONSUMER_ACCOUNT]})
    assert _container_env(imported)[env_name("sesrelay_proxy_networks")] == \
        ", ".join(IMPORTED_CIDRS)
