"""Upgrades and rollbacks: this worker reads the envelopes of the relays deployed before
it (version 1, always in S3; version 2 without the optional fields added since), and
keeps an envelope of a newer version on the queue, unsent, with a clear error, for the
worker that reads it (docs/DEPLOY.md, Upgrades and rollbacks)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from sesrelay.config import load_config
from sesrelay.spool import CONTRACT_VERSION, object_key, utc_now
from tests.worker.conftest import (
    BUCKET,
    SENDER_DOMAIN,
    Spool,
    emf_metrics,
    make_visible,
    message,
    sent_messages,
)

QUEUE_ID = "0000000001BCDFGH"
Logs = Callable[[], list[dict[str, Any]]]


def envelope_json(version: int, raw: bytes, inline: bool, spool: Spool,
                  **later_fields: Any) -> str:
    """An envelope exactly as a relay of that version wrote it: only the fields that
    version knew (every later field optional), the message inline or in S3."""
    received = utc_now()
    key = object_key(QUEUE_ID, received)
    data: dict[str, Any] = {
        "queue_id": QUEUE_ID, "mail_from": f"sender@{SENDER_DOMAIN}",
        "rcpt_to": ["alice@example.org"], "bucket": "", "key": "", "size": len(raw),
        "client_address": "192.0.2.10", "client_helo": "client.example.com",
        "received_at": received.isoformat(), "version": version, **later_fields}
    if inline:
        data["body"] = base64.b64encode(raw).decode("ascii")
    else:
        spool.s3.put_object(Bucket=BUCKET, Key=key, Body=raw)
        data.update(bucket=BUCKET, key=key)
    return json.dumps(data)


@pytest.mark.parametrize(("version", "inline"), [(1, False), (2, False), (2, True)])
def test_envelopes_of_earlier_relays_are_sent(spool: Spool, version: int,
                                              inline: bool) -> None:
    raw = message(subject=f"from a version {version} relay")
    spool.sqs.send_message(QueueUrl=spool.queue_url,
                           MessageBody=envelope_json(version, raw, inline, spool))

    assert spool.invoke(spool.receive()) == set()

    [sent] = sent_messages()
    assert sent.destinations == ["alice@example.org"]
    assert f"from a version {version} relay" in sent.raw_data
    assert spool.waiting() == spool.hidden() == 0


def test_an_envelope_of_a_newer_relay_is_kept_unsent_with_a_clear_error(
        spool: Spool, worker_logs: Logs, capsys: pytest.CaptureFixture[str]) -> None:
    newer = CONTRACT_VERSION + 1
    # A field this worker does not know could change the meaning of the others.
    body = envelope_json(newer, message(), inline=True, spool=spool,
                         deliver_after="2099-01-01T00:00:00+00:00")
    spool.sqs.send_message(QueueUrl=spool.queue_url, MessageBody=body)
    spool.put(message(subject="a neighbour"), ["bob@example.org"])

    event = spool.receive()
    [kept] = [r["messageId"] for r in event["Records"] if r["body"] == body]
    assert spool.invoke(event) == {kept}

    [neighbour] = sent_messages()  # the neighbour went out; the newer one did not
    assert neighbour.destinations == ["bob@example.org"]
    assert spool.hidden() == 1 and spool.waiting() == 0  # on the queue, waiting
    [error] = [line for line in worker_logs() if line["level"] == "ERROR"]
    assert error["message"].startswith(
        f"envelope version {newer} is newer than this worker reads (versions 1, 2): "
        "kept in the queue, not sent; retry in ")
    assert error["queue_id"] == QUEUE_ID
    # The first retry of the usual schedule: the new worker may be live by then.
    minimal = load_config().minimal_backoff_time
    assert minimal <= error["retry_delay"] <= 1.1 * minimal
    metrics = emf_metrics(capsys.readouterr().out)
    assert "Failed" not in metrics and metrics["Deferred"] == [1]

    # Still this worker at the retry: still kept, still unsent, the body unchanged.
    make_visible(spool, {"Records": [r for r in event["Records"] if r["messageId"] == kept]})
    retry = spool.receive()
    assert [r["body"] for r in retry["Records"]] == [body]
    assert spool.invoke(retry) == {kept}
    assert len(sent_messages()) == 1
