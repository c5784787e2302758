"""Group commit never builds a SendMessageBatch larger than SQS accepts (256 KiB of bodies):
envelopes with many recipients are large. The relay runs with each spool client, behind
the fault proxy, which sees each call's bodies."""

from __future__ import annotations

import json

from smtp_relay import handoff
from tests.faults import PASS, Request
from tests.relay.conftest import SpoolAccount
from tests.relay.test_group_commit import entries, send_together, wide_window

__all__ = ["wide_window"]  # the autouse fixture applies here too


def test_large_envelopes_are_split_across_calls(start_proxied_relay,
                                                proxied_account: SpoolAccount) -> None:
    relay = start_proxied_relay(smtpd_recipient_limit=1000)
    calls: list[int] = []

    def body_sizes(request: Request) -> None:
        calls.append(sum(len(e["MessageBody"]) for e in entries(request)))

    for operation in ("sqs.SendMessage", "sqs.SendMessageBatch"):
        relay.proxy.add(operation, PASS, call=body_sizes)

    long_local = "a-rather-long-mailbox-name-for-this-test-" * 2
    clients = [f"c{n}@example.org" for n in range(4)]
    recipients = {c: [f"{long_local}{i}@{c.split('@')[0]}.example.org" for i in range(999)]
                  for c in clients}
    replies = send_together(relay, clients, extra_recipients=recipients)

    assert all(code == 250 for code, _ in replies.values()), replies
    queued = proxied_account.queued()
    assert sorted(len(s.envelope.rcpt_to) for s in queued) == [1000] * 4
    assert len(calls) >= 2  # four ~90 KB envelopes cannot share one call
    assert max(calls) <= handoff.MAX_BATCH_BYTES
    assert json.loads(queued[0].envelope.to_json())["version"] == 2
