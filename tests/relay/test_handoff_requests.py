"""What the relay asks of S3: an ordinary message goes out in one request, without waiting
for "100 Continue" first; a large one still asks S3 before sending megabytes, with either
spool client."""

from __future__ import annotations

import smtplib

from smtp_relay import spool_client
from tests.faults import PASS
from tests.relay.conftest import SpoolAccount


def test_expect_continue_only_for_large_messages(start_proxied_relay,
                                                 proxied_account: SpoolAccount) -> None:
    relay = start_proxied_relay()
    expect: list[str | None] = []
    relay.proxy.add("s3.PutObject", PASS,
                    call=lambda request: expect.append(request.headers.get("expect")))
    line = b"y" * 76 + b"\r\n"
    with smtplib.SMTP(relay.host, relay.port, timeout=60) as client:
        # Both too large to travel inside the envelope: they go to S3.
        for size in (300 * 1024, spool_client.EXPECT_CONTINUE_MIN + 1024):
            body = b"Subject: size\r\n\r\n" + line * (size // len(line))
            assert client.sendmail("app@example.com", ["someone@example.org"], body) == {}
    assert sorted(len(s.raw) > spool_client.EXPECT_CONTINUE_MIN
                  for s in proxied_account.queued()) == [False, True]
    assert expect == [None, "100-continue"]  # in the order sent: 300 KB, then over 2 MiB
