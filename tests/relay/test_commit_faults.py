"""`sesrelay serve` against an AWS emulation whose answers are slow or lost (a proxy of our
own in between, tests/faults.py): every message a client was told 250 is queued once,
and every message it was not told 250 is never sent. "Queued" is what the worker would
send: an envelope in moto's queue that no commit record refuses."""

from __future__ import annotations

import signal
import smtplib
import threading
import time

from tests.faults import LOSE_ANSWER, SLOW_ANSWER


def send(port: int, subject: str, replies: dict[str, int | str]) -> None:
    """One message; its reply code, or the error that ended the session, in replies."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo("client.example.org")
            client.mail("app@example.com")
            client.rcpt("someone@example.org")
            replies[subject] = client.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())[0]
    except (smtplib.SMTPException, OSError) as exc:
        replies.setdefault(subject, type(exc).__name__)


def assert_no_half_queued(replies: dict[str, int | str],
                          sendable: dict[str, set[str]]) -> None:
    """Every message told 250 is sendable under exactly one queue ID, and nothing else is
    sendable."""
    acknowledged = {s for s, code in replies.items() if code == 250}
    assert set(sendable) == acknowledged, (replies, sendable)
    assert all(len(ids) == 1 for ids in sendable.values()), sendable


def test_a_slow_spool_never_times_the_client_out(faulty_relay) -> None:  # type: ignore[no-untyped-def]
    """smtpd_timeout bounds reads from and writes to the client, not the store."""
    relay = faulty_relay(SESRELAY_SMTPD_TIMEOUT="2s")
    relay.proxy.add("sqs.SendMessage", SLOW_ANSWER, seconds=3.0)
    replies: dict[str, int | str] = {}
    threads = [threading.Thread(target=send, args=(relay.port, f"slow-{n}", replies))
               for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(replies.values()) == {250}
    assert_no_half_queued(replies, relay.sendable())


def test_sigterm_while_stores_are_slow_leaves_nothing_half_queued(faulty_relay) -> None:  # type: ignore[no-untyped-def]
    relay = faulty_relay()
    relay.proxy.add("sqs.SendMessage", SLOW_ANSWER, seconds=2.0)
    replies: dict[str, int | str] = {}
    threads = [threading.Thread(target=send, args=(relay.port, f"term-{n}", replies))
               for n in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # every message is now being stored
    relay.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join()
    assert relay.process.wait(timeout=60) == 0
    assert set(replies.values()) == {250}  # the drain waited for the stores
    assert_no_half_queued(replies, relay.sendable())


def test_lost_sqs_answers_are_refused_never_sent(faulty_relay) -> None:  # type: ignore[no-untyped-def]
    relay = faulty_relay()
    relay.proxy.add("sqs.SendMessage", LOSE_ANSWER)
    replies: dict[str, int | str] = {}
    for n in range(3):
        send(relay.port, f"lost-{n}", replies)
    assert set(replies.values()) == {451}
    attributes = relay.sqs.get_queue_attributes(QueueUrl=relay.queue_url,
                                                AttributeNames=["ApproximateNumberOfMessages"])
    assert int(attributes["Attributes"]["ApproximateNumberOfMessages"]) == 9  # 3 tries each
    assert_no_half_queued(replies, relay.sendable())


def test_some_lost_answers_leave_every_message_acknowledged_or_refused(faulty_relay) -> None:  # type: ignore[no-untyped-def]
    relay = faulty_relay()
    relay.proxy.add("sqs.SendMessage", LOSE_ANSWER, probability=0.4)
    replies: dict[str, int | str] = {}
    for n in range(12):
        send(relay.port, f"some-{n}", replies)
    assert set(replies.values()) <= {250, 451}
    assert_no_half_queued(replies, relay.sendable())
