"""Alarms that say what they claim, read from the synthesized templates: the oldest-message
alarm sees deferred messages (which SQS's own age metric leaves out), the healthy-hosts
alarm is quiet after a deployment yet fires on a real loss of tasks, and the health-check
grace period lets a cold task start."""

from __future__ import annotations

import json
from typing import Any

from sesrelay import telemetry
from stacks.monitoring import oldest_message_threshold
from stacks.relay_service import HEALTH_CHECK_GRACE
from tests.cdk.synth import Deployment

COLD_START_BEFORE_CHECKS = 90 + 150


def _alarm(deployment: Deployment, suffix: str) -> dict[str, Any]:
    [alarm] = [r["Properties"] for r in deployment.resources("AWS::CloudWatch::Alarm").values()
               if r["Properties"]["AlarmName"] == f"sesrelay-{deployment.name}-{suffix}"]
    return alarm


def _queries(alarm: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """The alarm's math expression and its metrics by id."""
    [expression] = [q["Expression"] for q in alarm["Metrics"] if "Expression" in q]
    metrics = {q["Id"]: q["MetricStat"] for q in alarm["Metrics"] if "MetricStat" in q}
    return expression, metrics


def test_oldest_message_alarm_counts_deferred_messages_by_their_arrival(
        deployments: dict[str, Deployment]) -> None:
    for name, deployment in deployments.items():
        config = deployment.settings.config
        alarm = _alarm(deployment, "oldest-message-too-old")
        expression, metrics = _queries(alarm)
        assert expression == "MAX([waiting, FILL(deferred, 0)])", name
        waiting, deferred = metrics["waiting"], metrics["deferred"]
        assert waiting["Metric"]["MetricName"] == "ApproximateAgeOfOldestMessage"
        queue_id = deployment.logical_id("AWS::SQS::Queue", "SpoolQueue")
        assert json.dumps(waiting["Metric"]["Dimensions"]).count(queue_id) == 1
        # The worker's own report of a deferred message's age since the relay took it.
        assert deferred["Metric"]["MetricName"] == telemetry.DEFERRED_AGE
        assert deferred["Metric"]["Dimensions"] == [
            {"Name": "service", "Value": telemetry.SERVICE_WORKER}]
        assert waiting["Stat"] == deferred["Stat"] == "Maximum"
        # Every still-deferred message is tried, and reported, within each period.
        period = deferred["Period"]
        assert period == waiting["Period"] and period % 60 == 0
        assert period >= config.maximal_backoff_time + 60, name
        assert alarm["Threshold"] == oldest_message_threshold(deployment.settings)
        assert alarm["TreatMissingData"] == "notBreaching"


def test_healthy_hosts_alarm_is_quiet_without_data_but_counts_no_healthy_host_as_zero(
        deployments: dict[str, Deployment]) -> None:
    for name, deployment in deployments.items():
        alarm = _alarm(deployment, "healthy-below-desired")
        expression, metrics = _queries(alarm)
        # No data (a fresh deployment, before Container Insights reports): not an outage.
        assert alarm["TreatMissingData"] == "notBreaching", name
        # A service that wants tasks while no host is healthy is still data: it breaches.
        assert expression == "desired - FILL(healthy, 0)"
        assert metrics["desired"]["Metric"]["MetricName"] == "DesiredTaskCount"
        assert metrics["healthy"]["Metric"]["MetricName"] == "HealthyHostCount"
        assert alarm["Threshold"] == 1
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        # A new task may fail its checks for the grace period; the alarm waits longer.
        window = alarm["EvaluationPeriods"] * metrics["desired"]["Period"]
        assert window > HEALTH_CHECK_GRACE.to_seconds(), name


def test_grace_period_outlasts_the_nlb_marking_a_new_target_healthy(
        deployments: dict[str, Deployment]) -> None:
    for name, deployment in deployments.items():
        service = deployment.one("AWS::ECS::Service")
        grace = service["HealthCheckGracePeriodSeconds"]
        assert grace == HEALTH_CHECK_GRACE.to_seconds(), name
        for group in deployment.resources("AWS::ElasticLoadBalancingV2::TargetGroup").values():
            props = group["Properties"]
            checks = props["HealthCheckIntervalSeconds"] * props["HealthyThresholdCount"]
            # Before the passing checks: pulling the image onto a Fargate host without a
            # cache (up to 90 s) and the NLB registering the target (up to 150 s), which
            # the former 60 s did not leave room for.
            assert grace >= COLD_START_BEFORE_CHECKS + checks, name
