"""The dashboard that answers "is mail flowing?" and the alarms that say when it is not."""

from __future__ import annotations

import math

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from sesrelay import telemetry
from stacks.environment import EnvironmentSettings, SettingsError
from stacks.relay_service import HEALTH_CHECK_GRACE, RelayService
from stacks.ses_events import SesEvents
from stacks.spool import Spool
from stacks.worker import Worker

# Thresholds. SES reviews accounts at a 5 % bounce rate and 0.1 % complaint rate
# (its own guidance), so the alarms fire when those are reached.
SES_BOUNCE_RATE = 0.05
SES_COMPLAINT_RATE = 0.001
# One failing invocation can be a fluke; errors in three 5-minute periods in a row are
# a worker that keeps failing (its records would otherwise take days to reach the DLQ).
WORKER_ERROR_PERIODS = 3
# A message older than this means the queue is not draining: a message waiting for its
# first receives, or one deferred again and again (four backoffs at least).
MIN_OLDEST_MESSAGE_AGE = 3600
# CloudWatch evaluates an alarm over at most a day (period times evaluation periods).
MAX_ALARM_SPAN = 86400
# A new task (scale-out, replacement) may fail its health checks for the grace period;
# tasks missing two minutes beyond it are missing for real.
UNHEALTHY_MINUTES = math.ceil(HEALTH_CHECK_GRACE.to_seconds() / 60) + 2
# The service pinned at max_tasks for fifteen minutes needs a higher maximum.
AT_MAXIMUM_MINUTES = 15
# A message still deferred a day after it arrived (or half its queue lifetime, if that is
# shorter) means a problem that retrying alone will not fix.
MAX_UNFINISHED_AGE = 86400
# The maillog lines' "status=... (reason)", as CloudWatch Logs Insights reads them from the
# worker's and the events handler's JSON records.
_REASONS_QUERY = ("fields maillog | filter maillog like /status={status} / "
                  "| parse maillog 'status={status} (*)' as reason "
                  "| stats count(*) as recipients by reason | sort recipients desc | limit 10")


def oldest_message_threshold(settings: EnvironmentSettings) -> int:
    """Seconds of ApproximateAgeOfOldestMessage that raise the alarm."""
    return max(MIN_OLDEST_MESSAGE_AGE, 4 * settings.config.minimal_backoff_time)


def oldest_message_period(settings: EnvironmentSettings) -> int:
    """Seconds per evaluation of the oldest-message alarm: whole minutes, at least five,
    and a minute longer than maximal_backoff_time (the longest a deferred message waits
    between receives, sending paused included; the minute is for the receive and the
    send attempt), so that each period holds a DeferredMessageAge report of every
    message still deferred and the alarm does not drop to OK between two retries."""
    minutes = math.ceil(settings.config.maximal_backoff_time / 60) + 1
    return min(MAX_ALARM_SPAN, 60 * max(5, minutes))


def unfinished_age_threshold(settings: EnvironmentSettings) -> int:
    """Seconds of DeferredMessageAge (the oldest unfinished message) that raise the
    alarm: a day, or half the queue lifetime if that is shorter."""
    return min(MAX_UNFINISHED_AGE, settings.config.maximal_queue_lifetime // 2)


class Monitoring(Construct):
    """SNS alarm topic (encrypted), the alarms, and the per-environment dashboard."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: EnvironmentSettings,
                 relay: RelayService, spool: Spool, worker: Worker,
                 events: SesEvents | None = None) -> None:
        super().__init__(scope, construct_id)
        if (settings.config.ses_region and settings.region
                and settings.config.ses_region != settings.region):
            raise SettingsError(f"{settings.source} ses_region: {settings.config.ses_region} "
                                f"differs from the deployment region {settings.region}; the "
                                "SES bounce and complaint alarms need SES's metrics in the "
                                "deployment region")
        self.settings = settings
        self.relay, self.spool, self.worker = relay, spool, worker
        self.events = events
        self.topic = self._topic()
        self.alarms = self._alarms()
        action = cw_actions.SnsAction(self.topic)
        for alarm in self.alarms:
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
        self.dashboard = self._dashboard()

    def _topic(self) -> sns.Topic:
        key = kms.Key(self, "AlarmTopicKey", enable_key_rotation=True,
                      description=f"sesrelay {self.settings.name}: alarm topic encryption",
                      removal_policy=cdk.RemovalPolicy.DESTROY)
        # CloudWatch publishes alarm notifications to the encrypted topic.
        key.add_to_resource_policy(iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            resources=["*"]))
        topic = sns.Topic(self, "AlarmTopic", master_key=key, enforce_ssl=True,
                          display_name=f"sesrelay {self.settings.name} alarms")
        if self.settings.alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(self.settings.alarm_email))
        return topic

    # Metrics ------------------------------------------------------------------------

    def _emf(self, service: str, name: str) -> cw.Metric:
        """A count the relay or worker emits through powertools' EMF metrics."""
        return cw.Metric(namespace=telemetry.metrics_namespace(self.settings.name),
                         metric_name=name, dimensions_map={"service": service},
                         statistic="Sum", period=cdk.Duration.minutes(5), label=name)

    @staticmethod
    def _ses(name: str, statistic: str = "Sum", label: str | None = None) -> cw.Metric:
        return cw.Metric(namespace="AWS/SES", metric_name=name, statistic=statistic,
                         period=cdk.Duration.minutes(15), label=label or name)

    def _service_count(self, name: str) -> cw.Metric:
        service = self.relay.service
        return cw.Metric(namespace="ECS/ContainerInsights", metric_name=name,
                         dimensions_map={"ClusterName": self.relay.cluster.cluster_name,
                                         "ServiceName": service.service_name},
                         statistic="Maximum", period=cdk.Duration.minutes(1), label=name)

    def _healthy_hosts(self) -> cw.Metric:
        return self.relay.target_group.metrics.healthy_host_count(
            statistic="Minimum", period=cdk.Duration.minutes(1), label="Healthy tasks")

    # Alarms -------------------------------------------------------------------------

    def _alarms(self) -> list[cw.Alarm]:
        spool, worker, settings = self.spool, self.worker, self.settings
        name = f"sesrelay-{settings.name}"
        missing_ok = cw.TreatMissingData.NOT_BREACHING
        alarms = [
            cw.Alarm(
                self, "DeadLetterQueueNotEmpty", alarm_name=f"{name}-dlq-not-empty",
                alarm_description="Envelopes the worker could not handle are in the DLQ: "
                                  "inspect, fix, then redrive them to the queue.",
                metric=spool.dead_letter_queue.metric_approximate_number_of_messages_visible(
                    statistic="Maximum", period=cdk.Duration.minutes(1)),
                threshold=1, evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=missing_ok),
            cw.Alarm(
                self, "OldestMessageTooOld", alarm_name=f"{name}-oldest-message-too-old",
                alarm_description="The queue is not draining: the worker is failing, "
                                  "throttled, or paused, or SES keeps deferring messages.",
                # SQS leaves a message received three times or more out of
                # ApproximateAgeOfOldestMessage (its poison-pill rule), which is every
                # deferred message: their age since arrival comes from the worker, which
                # reports it (DeferredMessageAge, from the envelope) at each deferral.
                metric=cw.MathExpression(
                    expression="MAX([waiting, FILL(deferred, 0)])",
                    using_metrics={
                        "waiting": spool.queue.metric_approximate_age_of_oldest_message(
                            statistic="Maximum"),
                        "deferred": self._emf(telemetry.SERVICE_WORKER,
                                              telemetry.DEFERRED_AGE).with_(
                            statistic="Maximum")},
                    label="Age of the oldest message (s)",
                    period=cdk.Duration.seconds(oldest_message_period(settings))),
                threshold=oldest_message_threshold(settings), evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=missing_ok),
            cw.Alarm(
                self, "HealthyHostsBelowDesired", alarm_name=f"{name}-healthy-below-desired",
                alarm_description="Fewer relay tasks pass the NLB health check than the "
                                  "service wants.",
                metric=cw.MathExpression(
                    expression="desired - FILL(healthy, 0)",
                    using_metrics={"desired": self._service_count("DesiredTaskCount"),
                                   "healthy": self._healthy_hosts()},
                    label="Desired tasks not healthy", period=cdk.Duration.minutes(1)),
                threshold=1, evaluation_periods=UNHEALTHY_MINUTES,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                # No data means Container Insights has not reported the service yet (a
                # fresh deployment), not that tasks are missing: FILL above already
                # counts a target group without healthy hosts as zero while the service
                # wants tasks.
                treat_missing_data=missing_ok),
            cw.Alarm(
                self, "WorkerErrors", alarm_name=f"{name}-worker-errors",
                alarm_description="The worker Lambda keeps failing invocations.",
                metric=worker.function.metric_errors(statistic="Sum",
                                                     period=cdk.Duration.minutes(5)),
                threshold=1, evaluation_periods=WORKER_ERROR_PERIODS,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=missing_ok),
            cw.Alarm(
                self, "ConfigurationError", alarm_name=f"{name}-configuration-error",
                alarm_description="Mail system configuration error (4.3.5): SES or IAM "
                                  "refuses the account or its configuration (access denied, "
                                  "sending paused, an identity not verified, the SES "
                                  "sandbox). Mail is held in the queue, not bounced, and "
                                  "goes out once the cause is fixed; the worker's log says "
                                  "why once a minute.",
                # One-minute periods: the alarm fires within a couple of minutes.
                metric=self._emf(telemetry.SERVICE_WORKER, telemetry.CONFIGURATION_ERROR
                                 ).with_(period=cdk.Duration.minutes(1)),
                threshold=1, evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=missing_ok),
            cw.Alarm(
                self, "SesBounceRate", alarm_name=f"{name}-ses-bounce-rate",
                alarm_description="SES reputation: bounce rate at or above 5 %.",
                metric=self._ses("Reputation.BounceRate", "Maximum"),
                threshold=SES_BOUNCE_RATE, evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=missing_ok),
            cw.Alarm(
                self, "SesComplaintRate", alarm_name=f"{name}-ses-complaint-rate",
                alarm_description="SES reputation: complaint rate at or above 0.1 %.",
                metric=self._ses("Reputation.ComplaintRate", "Maximum"),
                threshold=SES_COMPLAINT_RATE, evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=missing_ok),
            cw.Alarm(
                self, "ServiceAtMaximum", alarm_name=f"{name}-service-at-max-tasks",
                alarm_description="The relay service has run at its maximum task count for "
                                  "15 minutes: raise max_tasks or the task size.",
                metric=self._service_count("DesiredTaskCount").with_(
                    period=cdk.Duration.minutes(5)),
                threshold=settings.service.max_tasks,
                evaluation_periods=AT_MAXIMUM_MINUTES // 5,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=missing_ok),
        ]
        alarms.append(cw.Alarm(
            self, "OldestUnfinishedMessage", alarm_name=f"{name}-oldest-unfinished-message",
            alarm_description="A message is still deferred long after it arrived: retrying "
                              "alone is not fixing it. `sesrelay mailq` lists it with its "
                              "last reason.",
            metric=self._emf(telemetry.SERVICE_WORKER, telemetry.DEFERRED_AGE).with_(
                statistic="Maximum", period=cdk.Duration.hours(1)),
            threshold=unfinished_age_threshold(settings), evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=missing_ok))
        if self.events:
            alarms.append(cw.Alarm(
                self, "EventsDeadLetterQueueNotEmpty",
                alarm_name=f"{name}-events-dlq-not-empty",
                alarm_description="SES events the events handler could not store are in the "
                                  "events DLQ: the trail misses them (and a send in doubt "
                                  "cannot be settled by them). Inspect, fix, then redrive.",
                metric=self.events.dead_letter_queue
                .metric_approximate_number_of_messages_visible(
                    statistic="Maximum", period=cdk.Duration.minutes(1)),
                threshold=1, evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=missing_ok))
        return alarms

    # Dashboard ----------------------------------------------------------------------

    def _dashboard(self) -> cw.Dashboard:
        relay, spool, worker = self.relay, self.spool, self.worker
        relay_service, worker_service = telemetry.SERVICE_RELAY, telemetry.SERVICE_WORKER
        function = worker.function
        dashboard = cw.Dashboard(self, "Dashboard",
                                 dashboard_name=f"sesrelay-{self.settings.name}",
                                 default_interval=cdk.Duration.hours(3))
        dashboard.add_widgets(cw.TextWidget(
            width=24, height=2,
            markdown=(f"# sesrelay {self.settings.name}: is mail flowing?\n"
                      "Mail flows when **Accepted** (relay) is matched by **Sent** (worker), "
                      "the queue stays near zero and the DLQ is empty. See docs/DEPLOY.md.")))
        dashboard.add_widgets(cw.AlarmStatusWidget(
            title="Alarms", width=24, height=3, alarms=self.alarms))
        dashboard.add_widgets(
            cw.GraphWidget(title="Relay: messages by reply", width=12, left=[
                self._emf(relay_service, telemetry.ACCEPTED),
                self._emf(relay_service, telemetry.REJECTED),
                self._emf(relay_service, telemetry.DEFERRED)]),
            cw.GraphWidget(title="Worker: messages by outcome", width=12, left=[
                self._emf(worker_service, telemetry.SENT),
                self._emf(worker_service, telemetry.BOUNCED),
                self._emf(worker_service, telemetry.DEFERRED),
                self._emf(worker_service, telemetry.FAILED)]),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Queue: depth and age of oldest message", width=8,
                left=[spool.queue.metric_approximate_number_of_messages_visible(
                    label="Waiting"),
                    spool.queue.metric_approximate_number_of_messages_not_visible(
                        label="In flight or backing off")],
                right=[spool.queue.metric_approximate_age_of_oldest_message(
                    statistic="Maximum", label="Oldest (s)")]),
            cw.SingleValueWidget(
                title="DLQ depth", width=4, height=6,
                metrics=[spool.dead_letter_queue.metric_approximate_number_of_messages_visible(
                    statistic="Maximum", label="Messages in DLQ")]),
            cw.GraphWidget(
                title="Worker Lambda: errors, throttles, duration", width=12,
                left=[function.metric_errors(statistic="Sum"),
                      function.metric_throttles(statistic="Sum")],
                right=[function.metric_duration(statistic="p99", label="Duration p99"),
                       function.metric_duration(statistic="Average", label="Duration avg")]),
        )
        dashboard.add_widgets(
            cw.GraphWidget(title="SES: sends, bounces, complaints", width=12, left=[
                self._ses("Send", label="Sends"), self._ses("Delivery", label="Deliveries"),
                self._ses("Bounce", label="Bounces"),
                self._ses("Complaint", label="Complaints")],
                right=[self._ses("Reputation.BounceRate", "Maximum", "Bounce rate"),
                       self._ses("Reputation.ComplaintRate", "Maximum", "Complaint rate")]),
            cw.GraphWidget(
                title="NLB: healthy tasks and SMTP connections", width=12,
                left=[self._healthy_hosts(), self._service_count("DesiredTaskCount")],
                right=[relay.load_balancer.metrics.active_flow_count(label="Active connections"),
                       relay.load_balancer.metrics.new_flow_count(statistic="Sum",
                                                                  label="New connections")]),
        )
        dashboard.add_widgets(*self._trail_widgets())
        dashboard.add_widgets(
            cw.GraphWidget(title="Relay: spool latency (ms)", width=12, left=[
                cw.Metric(namespace=telemetry.metrics_namespace(self.settings.name),
                          metric_name=telemetry.SPOOL_LATENCY,
                          dimensions_map={"service": relay_service}, statistic="p99",
                          label="Spool latency p99")]),
            cw.GraphWidget(title="Relay service: CPU", width=12, left=[
                relay.service.metric_cpu_utilization(label="CPU %")]),
        )
        return dashboard

    def _trail_widgets(self) -> list[cw.IWidget]:
        """What happened to this environment's mail, hour by hour, and why mail waits or
        bounces: the worker's outcomes, SES's own verdicts (the events handler), the top
        reasons from the maillog lines, and the age of the oldest unfinished message."""
        hourly = cdk.Duration.hours(1)
        worker = telemetry.SERVICE_WORKER
        per_hour = [self._emf(worker, telemetry.SENT).with_(period=hourly, label="Sent"),
                    self._emf(worker, telemetry.DEFERRED).with_(period=hourly,
                                                                 label="Deferred"),
                    self._emf(worker, telemetry.BOUNCED).with_(period=hourly,
                                                                label="Bounced (DSN)")]
        log_groups = [self.worker.log_group.log_group_name]
        if self.events:
            log_groups.append(self.events.log_group.log_group_name)
            per_hour += [self._emf(telemetry.SERVICE_EVENTS, name).with_(period=hourly,
                                                                        label=name)
                         for name in telemetry.EVENT_METRICS.values()]
        return [
            cw.GraphWidget(title="Mail per hour (recipients; SES's verdicts from its events)",
                           width=12, left=per_hour),
            cw.GraphWidget(
                title="Oldest unfinished message (s) and sends in doubt", width=12,
                left=[self._emf(worker, telemetry.DEFERRED_AGE).with_(
                    statistic="Maximum", period=hourly, label="Oldest deferred message")],
                right=[self._emf(worker, telemetry.SENDS_IN_DOUBT).with_(
                    period=hourly, label="Sends in doubt")]),
            cw.LogQueryWidget(title="Top deferral reasons", width=12, height=6,
                              log_group_names=log_groups,
                              query_string=_REASONS_QUERY.format(status="deferred")),
            cw.LogQueryWidget(title="Top bounce reasons", width=12, height=6,
                              log_group_names=log_groups,
                              query_string=_REASONS_QUERY.format(status="bounced")),
        ]
