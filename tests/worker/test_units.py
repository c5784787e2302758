"""The worker's pure parts: backoff schedule, rate limiter, header edits, error classes."""

from __future__ import annotations

import random
import threading

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from ses_worker.backoff import MAX_DELAY, paused_delay, retry_delay
from ses_worker.errors import ErrorClass, classify, effective_class, systemic
from ses_worker.message import strip_blind_headers
from ses_worker.ratelimit import RecipientRateLimiter
from ses_worker.sending import recipient_chunks, tag_value
from sesrelay.send_rate import worker_share


@pytest.mark.parametrize(("receive_count", "base"), [
    (1, 300), (2, 600), (3, 1200), (4, 2400), (5, 4000), (6, 4000), (100, 4000)])
def test_retry_delay_doubles_from_minimal_to_maximal_backoff(receive_count: int,
                                                             base: int) -> None:
    rng = random.Random(7)
    delays = {retry_delay(receive_count, 300, 4000, rng) for _ in range(200)}
    assert min(delays) >= max(300, base * 0.9)
    assert max(delays) <= min(4000, base * 1.1)
    assert len(delays) > 1  # jittered


def test_retry_delay_never_exceeds_the_sqs_visibility_limit() -> None:
    assert retry_delay(30, 3600, 7 * 86400) == MAX_DELAY
    assert MAX_DELAY < 12 * 3600


def test_paused_delay_is_the_longest_backoff() -> None:
    rng = random.Random(1)
    assert all(3600 <= paused_delay(300, 4000, rng) <= 4000 for _ in range(100))


class FakeClock:
    """Time that passes only when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_rate_limiter_starts_empty_then_holds_one_second_and_paces_by_recipients() -> None:
    clock = FakeClock()
    limiter = RecipientRateLimiter(14, clock=clock.time, sleep=clock.sleep)
    assert limiter.acquire(7) == pytest.approx(0.5)  # a new environment bursts nothing
    clock.now += 10  # idle: the bucket fills to one second's worth, no more
    assert limiter.acquire(14) == 0
    assert limiter.acquire(7) == pytest.approx(0.5)
    assert limiter.acquire(50) == pytest.approx(50 / 14)  # larger than the bucket: debt


def test_rate_limiter_refuses_a_wait_longer_than_the_budget_and_books_nothing() -> None:
    clock = FakeClock()
    limiter = RecipientRateLimiter(10, clock=clock.time, sleep=clock.sleep)
    assert limiter.acquire(50, budget=4.9) is None
    assert clock.now == 0
    assert limiter.acquire(10, budget=1.0) == pytest.approx(1.0)  # nothing was booked


def test_rate_limiter_takes_a_new_rate_and_keeps_its_balance() -> None:
    clock = FakeClock()
    limiter = RecipientRateLimiter(0, clock=clock.time, sleep=clock.sleep)
    assert limiter.acquire(1000) == 0
    limiter.set_rate(14 / 3)
    assert limiter.acquire(14) == pytest.approx(3.0)


def test_rate_limiter_holds_the_rate_across_threads() -> None:
    clock = FakeClock()
    limiter = RecipientRateLimiter(10, clock=clock.time, sleep=lambda _: None)
    waits: list[float] = []
    threads = [threading.Thread(target=lambda: waits.append(limiter.acquire(5)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 40 recipients at 10/s from an empty bucket: the last waits 4 s, each its own slot.
    assert sorted(waits) == pytest.approx([0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4])


def test_rate_limit_zero_means_unlimited() -> None:
    assert RecipientRateLimiter(0).acquire(10_000) == 0


def test_strip_blind_headers_edits_only_the_header_block() -> None:
    raw = (b"From: a@example.com\r\nBCC: x@example.org,\r\n\ty@example.org\r\n"
           b"Resent-Bcc: z@example.org\r\nSubject: s\r\n\r\nBcc: stays in the body\r\n")
    assert strip_blind_headers(raw) == (
        b"From: a@example.com\r\nSubject: s\r\n\r\nBcc: stays in the body\r\n")


def test_strip_blind_headers_returns_the_same_bytes_when_none() -> None:
    raw = b"From: a@example.com\nSubject: s\n\nbody\n"
    assert strip_blind_headers(raw) is raw


def _client_error(code: str, message: str = "", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "SendEmail")


@pytest.mark.parametrize(("code", "message", "kind", "status"), [
    ("TooManyRequestsException", "Maximum sending rate exceeded.", ErrorClass.THROTTLED, None),
    ("Throttling", "Daily message quota exceeded.", ErrorClass.THROTTLED, None),
    ("LimitExceededException", "", ErrorClass.THROTTLED, None),
    ("InternalServiceErrorException", "", ErrorClass.TRANSIENT, None),
    ("AccessDeniedException", "User: arn:aws:sts::123456789012:assumed-role/w/f is not "
     "authorized to perform: ses:SendEmail on resource: arn:aws:ses:us-east-1:"
     "123456789012:identity/example.com", ErrorClass.CONFIGURATION, "4.3.5"),
    ("AccessDenied", "", ErrorClass.CONFIGURATION, "4.3.5"),
    ("SendingPausedException", "", ErrorClass.CONFIGURATION, "4.3.5"),
    ("AccountSuspendedException", "", ErrorClass.CONFIGURATION, "4.3.5"),
    ("MailFromDomainNotVerifiedException", "", ErrorClass.CONFIGURATION, "4.3.5"),
    ("MessageRejected", "Email address is not verified.", ErrorClass.UNVERIFIED, "5.7.1"),
    ("MessageRejected", "Illegal header", ErrorClass.PERMANENT, "5.7.1"),
    ("BadRequestException", "Illegal address", ErrorClass.PERMANENT, "5.5.4"),
    ("NotFoundException", "configuration set does not exist", ErrorClass.PERMANENT, "5.3.0"),
])
def test_ses_errors_are_classified(code: str, message: str, kind: ErrorClass,
                                   status: str | None) -> None:
    failure = classify(_client_error(code, message))
    assert failure.kind is kind
    assert failure.diagnostic == f"{code}: {message}"
    if status:
        assert failure.status == status


def test_network_errors_defer() -> None:
    failure = classify(EndpointConnectionError(endpoint_url="https://email.example"))
    assert failure.kind is ErrorClass.TRANSIENT


def test_unverified_identity_bounces_from_the_third_receive() -> None:
    failure = classify(_client_error("MessageRejected", "Email address is not verified."))
    assert [effective_class(failure, n).defers for n in (1, 2, 3, 4)] == [
        True, True, False, False]


SES_UNVERIFIED = ("Email address is not verified. The following identities failed the "
                  "check in region US-EAST-1: {}")


@pytest.mark.parametrize(("named", "sender", "dsn", "kind"), [
    # The account is in the sandbox: a recipient is not verified.
    ("Bob@Example.org", "app@example.com", False, ErrorClass.CONFIGURATION),
    # ses_identities says example.com is verified; SES does not agree.
    ("app@example.com", "app@example.com", False, ErrorClass.CONFIGURATION),
    # ses_bounce_sender cannot send.
    ("mailer-daemon@relay.example.net", "MAILER-DAEMON@relay.example.net", True,
     ErrorClass.CONFIGURATION),
    # A sender ses_identities does not cover: the sender's mistake, bounced in the end.
    ("app@elsewhere.example", "app@elsewhere.example", False, ErrorClass.UNVERIFIED),
])
def test_unverified_identities_of_the_system_are_configuration_errors(
        named: str, sender: str, dsn: bool, kind: ErrorClass) -> None:
    failure = systemic(classify(_client_error("MessageRejected", SES_UNVERIFIED.format(named))),
                       sender, ["bob@example.org"], ("example.com",), dsn=dsn)
    assert failure.kind is kind
    assert failure.status == ("4.3.5" if kind is ErrorClass.CONFIGURATION else "5.7.1")


@pytest.mark.parametrize(("configured", "account", "concurrency", "share"), [
    (14, 14, 3, 14 / 3),
    (0, 14, 3, 14 / 3),  # no configured rate: the account's
    (5, 14, 1, 5),  # the configured rate is an upper bound
    (100, 14, 2, 7),  # and never raises the account's
    (14, None, 2, 7),  # GetAccount unavailable: the configured rate
    (0, None, 3, 0),  # neither: no limit
])
def test_the_account_rate_is_shared_by_the_environments(
        configured: float, account: float | None, concurrency: int, share: float) -> None:
    assert worker_share(configured, account, concurrency) == pytest.approx(share)


def test_chunks_hold_each_recipient_once() -> None:
    recipients = (*(f"u{i}@example.org" for i in range(101)), "u0@example.org")
    chunks = recipient_chunks(recipients)
    assert [len(c) for c in chunks] == [50, 50, 1]
    assert sorted(r for c in chunks for r in c) == sorted(set(recipients))


def test_tag_values_use_only_the_ses_charset() -> None:
    assert tag_value("5X4P GD/é.q") == "5X4P_GD___q"
    assert len(tag_value("x" * 300)) == 256
