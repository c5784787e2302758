"""`sesrelay dev` with ses_configuration_set: the emulated SES publishes the events a
configuration set would, and the events handler puts them in the trail within seconds,
as a user sees with the mailbox simulator's addresses."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from sesrelay import trail
from sesrelay.dev import DEV_REGION, TRAIL_TABLE
from tests.conftest import DevRelay, running_dev

SIMULATOR = "simulator.amazonses.com"
# "Within a second or two" in the emulation; the margin is for a loaded test machine.
EVENTS_WITHIN = 10.0


@dataclass
class DevWithEvents(DevRelay):
    """A running `sesrelay dev` with a configuration set."""

    def trail(self) -> trail.TrailReader:
        """A reader of the emulation's trail table."""
        dynamodb = boto3.client("dynamodb", endpoint_url=self.endpoint, region_name=DEV_REGION,
                                aws_access_key_id="test", aws_secret_access_key="test")
        return trail.TrailReader(dynamodb, TRAIL_TABLE)


@pytest.fixture
def dev_events(tmp_path: Path) -> Iterator[DevWithEvents]:
    """`sesrelay dev` on free loopback ports with ses_configuration_set set."""
    with running_dev(tmp_path, main_cf="ses_configuration_set = sesrelay-dev\n") as dev:
        yield DevWithEvents(dev.smtp_port, dev.endpoint, dev.output)


def send(port: int, *recipients: str) -> str:
    """Send one message with swaks; its queue ID."""
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{port}", "--from", "app@example.com",
         "--to", ",".join(recipients)], capture_output=True, text=True, timeout=60)
    match = re.search(r"250 2\.0\.0 Ok: queued as (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    return match.group(1)


def events_of(reader: trail.TrailReader, queue_id: str) -> list[dict[str, Any]]:
    return [i for i in reader.history(queue_id) if i["kind"] == trail.EVENT]


def test_simulator_addresses_produce_their_events_in_the_trail(
        dev_events: DevWithEvents) -> None:
    started = time.monotonic()
    delivered = send(dev_events.smtp_port, "someone@example.org", f"success@{SIMULATOR}")
    bounced = send(dev_events.smtp_port, f"bounce@{SIMULATOR}")
    complained = send(dev_events.smtp_port, f"complaint@{SIMULATOR}")
    expected = {
        # One Send per SendEmail call; then one event per recipient's fate.
        delivered: ["SEND", "DELIVERY", "DELIVERY"],
        bounced: ["SEND", "BOUNCE"],  # and no Delivery
        complained: ["SEND", "DELIVERY", "COMPLAINT"],
    }
    reader = dev_events.trail()
    while True:
        found = {q: [e["event_type"] for e in events_of(reader, q)] for q in expected}
        if found == expected:
            break
        assert time.monotonic() - started < EVENTS_WITHIN, found
        time.sleep(0.2)

    # Every event names the send it belongs to: the SES MessageId the outbox shows.
    outbox = {tuple(m["rcpt_to"]): m["message_id"] for m in dev_events.outbox()}
    by_message_id = {
        delivered: outbox[("someone@example.org", f"success@{SIMULATOR}")],
        bounced: outbox[(f"bounce@{SIMULATOR}",)],
        complained: outbox[(f"complaint@{SIMULATOR}",)]}
    for queue_id, message_id in by_message_id.items():
        assert {e["ses_message_id"] for e in events_of(reader, queue_id)} == {message_id}
        assert reader.queue_ids_by_message_id(message_id) == [queue_id]

    send_event, *deliveries = events_of(reader, delivered)
    assert [r["address"] for r in send_event["recipients"]] == [
        "someone@example.org", f"success@{SIMULATOR}"]
    assert sorted(r["address"] for d in deliveries for r in d["recipients"]) == [
        "someone@example.org", f"success@{SIMULATOR}"]
    assert {d["detail"] for d in deliveries} == {"250 2.6.0 Message received"}
    bounce = events_of(reader, bounced)[1]
    assert (bounce["bounce_type"], bounce["bounce_subtype"]) == ("Permanent", "General")
    assert bounce["recipients"] == [{"address": f"bounce@{SIMULATOR}", "action": "failed",
                                     "status": "5.1.1",
                                     "diagnostic": "smtp; 550 5.1.1 user unknown"}]
    complaint = events_of(reader, complained)[2]
    assert complaint["detail"] == "abuse"
    assert complaint["recipients"] == [{"address": f"complaint@{SIMULATOR}"}]

    # The bounce SES learned of after the send is a maillog line, once; nothing else is.
    log = dev_events.output.read_text()
    bounced_lines = re.findall(r'"maillog":"([^"]*status=bounced[^"]*)"', log)
    assert len(bounced_lines) == 1
    assert re.fullmatch(
        rf"{bounced}: to=<bounce@{SIMULATOR}>, relay=email\.{DEV_REGION}\.amazonaws\.com, "
        r"delay=[0-9.]+, delays=0/0/0/0, dsn=5\.1\.1, status=bounced "
        r"\(smtp; 550 5\.1\.1 user unknown\)", bounced_lines[0])
