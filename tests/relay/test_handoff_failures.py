"""The durable handoff: 250 only after S3 and SQS both answered; otherwise 451 and nothing
queued that the worker would send, and the client's next attempt succeeds."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

from sesrelay import aws
from tests.relay.conftest import SpoolAccount

MESSAGE = b"From: app@example.com\r\nSubject: retry me\r\n\r\nbody\r\n"


class _EmptyBody:
    def stream(self, **kwargs: object) -> Iterator[bytes]:
        yield b""


def service_unavailable(**kwargs: object) -> AWSResponse:
    """What a struggling endpoint answers: HTTP 503 (botocore retries it, then gives up)."""
    return AWSResponse("https://example.invalid", 503, {}, _EmptyBody())


def read_timeout(**kwargs: object) -> AWSResponse:
    """A request whose answer never came in time."""
    raise ReadTimeoutError(endpoint_url="https://example.invalid")


@pytest.fixture
def inject() -> Iterator[Callable[[str, Callable[..., AWSResponse]], None]]:
    """Register a fault on the relay's own boto3 client for one event, until the test ends
    or `inject(event, None)` is called."""
    registered: dict[str, Callable[..., AWSResponse]] = {}

    def set_fault(event: str, fault: Callable[..., AWSResponse] | None) -> None:
        events = aws.client(event.split(".")[1]).meta.events
        if event in registered:
            events.unregister(event, registered.pop(event))
        if fault is not None:
            registered[event] = fault
            events.register(event, fault)

    yield set_fault
    for event in list(registered):
        set_fault(event, None)


def send(relay) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    with smtplib.SMTP(relay.host, relay.port, timeout=60) as client:
        client.ehlo("client.example.org")
        client.mail("app@example.com")
        client.rcpt("someone@example.org")
        return client.data(MESSAGE)


@pytest.mark.parametrize("event", ["before-send.s3.PutObject", "before-send.sqs.SendMessage"])
@pytest.mark.parametrize("fault", [service_unavailable, read_timeout])
def test_store_failure_gives_451_and_the_retry_succeeds(start_relay, inject, event: str,
                                                        fault, spool_account: SpoolAccount
                                                        ) -> None:
    relay = start_relay()
    inject(event, fault)
    assert send(relay) == (451, b"4.3.0 Error: queue file write error")
    assert spool_account.queued() == []
    assert spool_account.objects() == []  # no orphan object either
    inject(event, None)
    code, text = send(relay)
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as")
    [spooled] = spool_account.queued()
    assert spooled.raw.endswith(MESSAGE)
    assert relay.metrics["Deferred"] == 1 and relay.metrics["Accepted"] == 1


def test_sqs_failure_after_s3_withdraws_the_object(start_relay, inject, spool_account) -> None:
    relay = start_relay()
    puts: list[str] = []
    inject("after-call.s3.PutObject", lambda **kw: puts.append("put"))
    inject("before-send.sqs.SendMessage", service_unavailable)
    assert send(relay)[0] == 451
    assert puts == ["put"]  # the object was written ...
    assert spool_account.objects() == []  # ... and deleted again
