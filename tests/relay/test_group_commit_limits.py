"""Group commit never builds a SendMessageBatch larger than SQS accepts (256 KiB of bodies):
envelopes with many recipients are large."""

from __future__ import annotations

import json

from smtp_relay import handoff
from tests.relay.conftest import SpoolAccount
from tests.relay.test_group_commit import on_sqs, send_together, wide_window

__all__ = ["wide_window"]  # the autouse fixture applies here too


def test_large_envelopes_are_split_across_calls(start_relay, spool_account: SpoolAccount,
                                                monkeypatch) -> None:
    relay = start_relay(smtpd_recipient_limit=1000)
    calls: list[int] = []

    def body_sizes(params, **kwargs):  # type: ignore[no-untyped-def]
        entries = params.get("Entries") or [params]
        calls.append(sum(len(e["MessageBody"]) for e in entries))

    on_sqs(relay, "provide-client-params.sqs.SendMessageBatch", body_sizes)
    on_sqs(relay, "provide-client-params.sqs.SendMessage", body_sizes)

    long_local = "a-rather-long-mailbox-name-for-this-test-" * 2
    clients = [f"c{n}@example.org" for n in range(4)]
    recipients = {c: [f"{long_local}{i}@{c.split('@')[0]}.example.org" for i in range(999)]
                  for c in clients}
    replies = send_together(relay, clients, extra_recipients=recipients)

    assert all(code == 250 for code, _ in replies.values()), replies
    queued = spool_account.queued()
    assert sorted(len(s.envelope.rcpt_to) for s in queued) == [1000] * 4
    assert len(calls) >= 2  # four ~90 KB envelopes cannot share one call
    assert max(calls) <= handoff.MAX_BATCH_BYTES
    assert json.loads(queued[0].envelope.to_json())["version"] == 2
