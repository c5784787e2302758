"""`sesrelay dev` with ``ses_configuration_set`` set: the emulated SES publishes events.

In AWS the configuration set's event destination publishes to an SNS topic, an SQS
queue subscribed to it feeds the events Lambda, and the Lambda writes the trail. Here
the same topic, queue (with its DLQ) and handler run in the emulation, and this module
plays SES's part: moto records neither a send's EmailTags nor its configuration set, so
its SES v2 SendEmail handler is wrapped (in this process only) to see each accepted
request and the MessageId it got, and a publisher thread publishes the events of
``sesrelay.dev_simulator`` to the topic, as SES would, a moment after the send.

Dev only: the wrapper is installed by ``start_events`` and removed by ``stop``.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sesrelay import aws
from sesrelay.dev import LocalWorker
from sesrelay.dev_simulator import AcceptedSend, events_for

log = logging.getLogger("sesrelay.dev")

TOPIC = "sesrelay-dev-ses-events"
QUEUE = "sesrelay-dev-ses-events"
DLQ = "sesrelay-dev-ses-events-dlq"
MAX_RECEIVE_COUNT = 5


@dataclass(frozen=True)
class EventsPipeline:
    """The configuration set's event destination and the queue the handler reads."""

    configuration_set: str
    topic_arn: str
    queue_url: str
    queue_arn: str
    dlq_url: str


def create_pipeline(configuration_set: str) -> EventsPipeline:
    """Create the configuration set, the events topic, and the events queue (with its
    DLQ) subscribed to the topic without raw delivery, as the CDK stack does."""
    aws.client("sesv2").create_configuration_set(ConfigurationSetName=configuration_set)
    sns, sqs = aws.client("sns"), aws.client("sqs")
    topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
    dlq_url = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
    dlq_arn = _queue_arn(sqs, dlq_url)
    queue_url = sqs.create_queue(QueueName=QUEUE, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                     "maxReceiveCount": str(MAX_RECEIVE_COUNT)})})["QueueUrl"]
    queue_arn = _queue_arn(sqs, queue_url)
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return EventsPipeline(configuration_set, topic_arn, queue_url, queue_arn, dlq_url)


def _queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"])


def accepted_send(request: dict[str, Any], message_id: str, account: str,
                  region: str) -> AcceptedSend | None:
    """An SES v2 SendEmail request (its JSON body) that SES accepted, as its events
    need it; None for a request with no configuration set or no raw content (SES
    publishes events only for sends made with a configuration set; sesrelay sends
    only raw messages)."""
    raw = (request.get("Content") or {}).get("Raw")
    if not request.get("ConfigurationSetName") or not raw:
        return None
    destination = request.get("Destination") or {}
    return AcceptedSend(
        message_id=message_id, configuration_set=request["ConfigurationSetName"],
        from_address=request.get("FromEmailAddress") or "",
        destination=tuple(a for kind in ("ToAddresses", "CcAddresses", "BccAddresses")
                          for a in destination.get(kind) or ()),
        tags=tuple((t["Name"], t["Value"]) for t in request.get("EmailTags") or ()),
        raw=base64.b64decode(raw["Data"]), account=account, region=region)


def hook_send_email(on_accepted: Callable[[AcceptedSend], None]) -> Callable[[], None]:
    """Wrap moto's SES v2 SendEmail handler so that on_accepted sees every send it
    accepted; return the function that removes the wrapper. A refused send (moto
    raises) publishes nothing, as in SES."""
    from moto.sesv2.responses import SESV2Response

    original = SESV2Response.send_email

    def send_email(self: SESV2Response) -> str:
        answer = original(self)
        try:
            send = accepted_send(json.loads(self.body), json.loads(answer)["MessageId"],
                                 self.current_account, self.region)
            if send:
                on_accepted(send)
        except Exception:  # the send itself succeeded: never fail it for its events
            log.exception("dev events: no events for a send the emulation accepted")
        return answer

    SESV2Response.send_email = send_email  # type: ignore[method-assign]

    def unhook() -> None:
        SESV2Response.send_email = original  # type: ignore[method-assign]
    return unhook


class EventPublisher(threading.Thread):
    """Publishes the events of each accepted send to the topic, off moto's request
    thread (SES answers SendEmail first and publishes afterwards)."""

    def __init__(self, pipeline: EventsPipeline) -> None:
        super().__init__(name="dev-ses-events", daemon=True)
        self.pipeline = pipeline
        self.sends: queue.Queue[AcceptedSend] = queue.Queue()
        self.stopping = threading.Event()

    def accepted(self, send: AcceptedSend) -> None:
        """Queue the events of a send made with the pipeline's configuration set."""
        if send.configuration_set == self.pipeline.configuration_set:
            self.sends.put(send)

    def run(self) -> None:
        """Publish until stopped."""
        sns = aws.client("sns")
        while not self.stopping.is_set():
            try:
                send = self.sends.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                for record in events_for(send):
                    sns.publish(TopicArn=self.pipeline.topic_arn, Message=json.dumps(record))
            except Exception:
                log.exception("dev events: publishing the events of %s failed",
                              send.message_id)


@dataclass
class DevEvents:
    """The running events pipeline of `sesrelay dev`: SES's publisher and the local
    poller that feeds the events queue to the events handler."""

    pipeline: EventsPipeline
    publisher: EventPublisher
    poller: LocalWorker
    unhook: Callable[[], None]

    def stop(self) -> None:
        """Stop publishing and polling; give moto back its own SendEmail handler."""
        self.unhook()
        self.publisher.stopping.set()
        self.poller.stopping.set()
        self.publisher.join(timeout=5)
        self.poller.join(timeout=5)


def start_events(configuration_set: str,
                 handler: Callable[[dict[str, Any], Any], dict[str, Any]]) -> DevEvents:
    """Create the pipeline, hook the emulated SES, and start publishing events and
    feeding them to handler (the events Lambda's) as Lambda's SQS event source would."""
    pipeline = create_pipeline(configuration_set)
    publisher = EventPublisher(pipeline)
    poller = LocalWorker(pipeline.queue_url, pipeline.queue_arn, handler,
                         name="local-ses-events", function_name="sesrelay-dev-events")
    events = DevEvents(pipeline, publisher, poller, hook_send_email(publisher.accepted))
    publisher.start()
    poller.start()
    return events
