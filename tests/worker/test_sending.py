"""The happy path: spooled messages go out through SES v2 as the envelope says."""

from __future__ import annotations

import email
import re
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sesrelay.spool import TAG_SES_MESSAGE_ID, object_key
from tests.worker.conftest import BUCKET, Spool, emf_metrics, message, sent_messages, sesv2


def test_message_is_sent_as_spooled(spool: Spool, capsys: pytest.CaptureFixture[str],
                                    worker_logs: Callable[[], list[dict[str, Any]]]) -> None:
    raw = message(subject="quarterly report")
    envelope = spool.put(raw, ["alice@example.org", "bob@example.org"], in_s3=True)

    failed = spool.invoke(spool.receive())

    assert failed == set()
    [sent] = sent_messages()
    assert sent.source == "sender@example.com"
    assert sorted(sent.destinations) == ["alice@example.org", "bob@example.org"]
    assert sent.raw_data.encode() == raw  # byte for byte: Received: header and body intact
    # Retention 0 (the default): the spool object is gone once SES has the message.
    with pytest.raises(ClientError, match="NoSuchKey"):
        spool.s3.get_object(Bucket=BUCKET, Key=envelope.key)
    assert spool.waiting() == spool.hidden() == 0
    metrics = emf_metrics(capsys.readouterr().out)
    assert metrics["Sent"] == [1]
    assert len(metrics["SesLatency"]) == 1
    lines = [line for line in worker_logs() if sent.id in line["message"]]
    assert {line["queue_id"] for line in lines} == {envelope.queue_id}
    # Postfix's delivery line per recipient, then "removed", in the maillog field.
    maillog = [line["maillog"] for line in worker_logs() if "maillog" in line]
    queue_id = envelope.queue_id
    assert [m.split(",")[0] for m in maillog[:2]] == [
        f"{queue_id}: to=<alice@example.org>", f"{queue_id}: to=<bob@example.org>"]
    assert all(f"dsn=2.0.0, status=sent (250 Ok {sent.id})" in m for m in maillog[:2])
    assert maillog[-1] == f"{envelope.queue_id}: removed"


def test_retention_keeps_object_tagged_with_ses_message_id(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESRELAY_SPOOL_RETENTION", "7d")
    envelope = spool.put(message(), ["alice@example.org"], in_s3=True)

    spool.invoke(spool.receive())

    [sent] = sent_messages()
    tags = spool.s3.get_object_tagging(Bucket=BUCKET, Key=envelope.key)["TagSet"]
    assert tags == [{"Key": TAG_SES_MESSAGE_ID, "Value": sent.id}]


def test_retention_keeps_an_inline_message_in_s3_too(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message that travelled inside its envelope is kept as if it had been spooled to
    S3, so sesrelay_spool_retention means the same for every message."""
    monkeypatch.setenv("SESRELAY_SPOOL_RETENTION", "7d")
    raw = message()
    envelope = spool.put(raw, ["alice@example.org"])
    assert envelope.inline

    spool.invoke(spool.receive())

    [sent] = sent_messages()
    key = object_key(envelope.queue_id, envelope.received)
    assert spool.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == raw
    tags = spool.s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
    assert tags == [{"Key": TAG_SES_MESSAGE_ID, "Value": sent.id}]


def test_bcc_header_is_removed_and_nothing_else(spool: Spool) -> None:
    raw = message(extra_headers="Bcc: hidden@example.org,\r\n  other@example.org\r\n"
                                "To: alice@example.org\r\n")
    spool.put(raw, ["alice@example.org", "hidden@example.org", "other@example.org"])

    spool.invoke(spool.receive())

    [sent] = sent_messages()
    parsed = email.message_from_string(sent.raw_data)
    assert parsed["Bcc"] is None
    assert sent.raw_data.encode() == raw.replace(
        b"Bcc: hidden@example.org,\r\n  other@example.org\r\n", b"")


def test_120_recipients_take_three_calls_each_recipient_once(spool: Spool) -> None:
    recipients = [f"user{i:03}@example.org" for i in range(120)]
    spool.put(message(), recipients)

    assert spool.invoke(spool.receive()) == set()

    sends = sent_messages()
    assert len(sends) == 3
    assert all(len(s.destinations) <= 50 for s in sends)
    delivered = [d for s in sends for d in s.destinations]
    assert sorted(delivered) == recipients


def test_configured_tags_set_and_identity_reach_ses(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESRELAY_SES_EMAIL_TAGS", "app=billing")
    monkeypatch.setenv("SESRELAY_SES_CONFIGURATION_SET", "outbound")
    arn = "arn:aws:ses:us-east-1:123456789012:identity/example.com"
    monkeypatch.setenv("SESRELAY_SES_IDENTITY_ARN", arn)
    requests: list[dict] = []
    envelope = spool.put(message(), ["alice@example.org"])
    sesv2().meta.events.register("before-parameter-build.sesv2.SendEmail",
                                 lambda params, **_: requests.append(params))

    spool.invoke(spool.receive())

    [request] = requests
    assert request["ConfigurationSetName"] == "outbound"
    assert request["FromEmailAddressIdentityArn"] == arn
    app, queue_id, attempt = request["EmailTags"]
    assert app == {"Name": "app", "Value": "billing"}
    assert queue_id == {"Name": "sesrelay-queue-id", "Value": envelope.queue_id}
    # A tag unique to this one SendEmail: SES's events about it name it.
    assert attempt["Name"] == "sesrelay-attempt" and len(attempt["Value"]) == 16


def test_x_ses_headers_become_request_parameters_and_are_removed(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """As SES's SMTP interface does: the configuration set, tags and identity ARNs of
    the X-SES-* headers apply, and the recipients never see the headers."""
    arn = "arn:aws:ses:us-east-1:123456789012:identity/example.com"
    monkeypatch.setenv("SESRELAY_SES_EMAIL_TAGS", "app=billing")
    monkeypatch.setenv("SESRELAY_SES_CONFIGURATION_SET", "outbound")
    monkeypatch.setenv("SESRELAY_SES_IDENTITY_ARN", arn)
    requests: list[dict] = []
    raw = message(extra_headers=("X-SES-CONFIGURATION-SET: outbound\r\n"
                                 "x-ses-message-tags: campaign=spring,\r\n\tteam=web\r\n"
                                 f"X-SES-FROM-ARN: {arn}\r\n"))
    envelope = spool.put(raw, ["alice@example.org"])
    sesv2().meta.events.register("before-parameter-build.sesv2.SendEmail",
                                 lambda params, **_: requests.append(params))

    assert spool.invoke(spool.receive()) == set()

    [request] = requests
    assert request["ConfigurationSetName"] == "outbound"
    assert request["FromEmailAddressIdentityArn"] == arn
    assert [(t["Name"], t["Value"]) for t in request["EmailTags"][:4]] == [
        ("app", "billing"), ("campaign", "spring"), ("team", "web"),
        ("sesrelay-queue-id", envelope.queue_id)]
    [sent] = sent_messages()
    assert "x-ses" not in sent.raw_data.lower()
    assert sent.raw_data.encode() == raw.replace(
        b"X-SES-CONFIGURATION-SET: outbound\r\nx-ses-message-tags: campaign=spring,\r\n"
        b"\tteam=web\r\n" + f"X-SES-FROM-ARN: {arn}\r\n".encode(), b"")


def test_an_x_ses_header_not_allowed_here_bounces(spool: Spool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay refuses it at DATA; a message spooled before the environment changed
    bounces, never sent without what the header asked."""
    monkeypatch.setenv("SESRELAY_SES_CONFIGURATION_SET", "outbound")
    spool.put(message(extra_headers="X-SES-CONFIGURATION-SET: marketing\r\n"),
              ["alice@example.org"])

    assert spool.invoke(spool.receive()) == set()

    [dsn_sent] = sent_messages()
    assert set(dsn_sent.destinations) == {"sender@example.com"}
    report = re.sub(r"\r\n[ \t]+", " ", dsn_sent.raw_data)  # unfolded
    assert "Status: 5.7.1" in report
    assert ("Diagnostic-Code: X-SES; SesHeaders: X-SES-CONFIGURATION-SET header: "
            "configuration set 'marketing' not allowed") in report
