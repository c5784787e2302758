"""`sesrelay smoke`: prove that an environment works end to end, after every deploy.

From a machine in ``mynetworks``, send one message through the relay to each of SES's
mailbox simulator addresses (``success@`` and ``bounce@simulator.amazonses.com``), then
follow each by the queue ID of its ``250`` reply through the trail: the worker received
it, SES accepted the worker's send, and, when the environment has a configuration set,
SES's events say delivered and bounced. First it asks SES about the account: a sandbox
account is reported, and one whose sending is disabled fails the run. Each step is
printed as a checklist line; the first that fails ends the run (exit 1) and names the
component to look at. Every wait is bounded by ``--wait``.
"""

from __future__ import annotations

import argparse
import email.utils
import re
import smtplib
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from ses_worker.account import describe, read_account
from sesrelay import deployment, trail
from sesrelay.cli import trace, where
from sesrelay.cli.common import trail_reader

SIMULATOR_SUCCESS = "success@simulator.amazonses.com"
SIMULATOR_BOUNCE = "bounce@simulator.amazonses.com"
# The SES event that settles each simulator address, and what trace calls that state.
EXPECTED = {SIMULATOR_SUCCESS: (trail.EVENT_DELIVERY, "delivered"),
            SIMULATOR_BOUNCE: (trail.EVENT_BOUNCE, "bounced")}
# The NLB always listens on 25 (stacks/environment.py SMTP_PORT); plain SMTP there needs
# neither a certificate to trust nor a user.
DEPLOYED_SMTP_PORT = 25
DEV_SMTP = "127.0.0.1:2525"  # `sesrelay dev`'s default --listen
QUEUED_AS = re.compile(r"queued as ([0-9A-Za-z]+)")
POLL_SECONDS = 1.0
SENT_OUTCOMES = (trail.SENT, trail.SETTLED_SENT, trail.ASSUMED_SENT)


class SmokeFailure(Exception):
    """A step failed: what happened, and which component to look at."""

    def __init__(self, what: str, look_at: str) -> None:
        super().__init__(what)
        self.what, self.look_at = what, look_at


@dataclass
class Checklist:
    """Prints each step as it passes, fails or is skipped."""

    passed: int = 0

    def ok(self, text: str) -> None:
        """A step that passed."""
        self.passed += 1
        print(f"  ok    {text}", flush=True)

    def skip(self, text: str) -> None:
        """A step this environment cannot check."""
        print(f"  skip  {text}", flush=True)

    def warn(self, text: str) -> None:
        """Something that does not fail the run but needs the operator."""
        print(f"  WARN  {text}", flush=True)

    def fail(self, failure: SmokeFailure) -> None:
        """The step that failed, and where to look."""
        print(f"  FAIL  {failure.what}\n        look at: {failure.look_at}", flush=True)


@dataclass(frozen=True)
class Components:
    """Where to look when a step fails: the network path to the relay, and where each
    component logs."""

    network: str
    relay: str
    worker: str
    events: str

    @classmethod
    def of(cls, location: where.Location) -> Components:
        """The load balancer and log groups of a deployed environment; dev's output."""
        if not location.deployed:
            logs = "the output of `sesrelay dev` and `sesrelay maillog`"
            return cls("is `sesrelay dev` running and listening there (--listen)?", logs,
                       logs, logs)
        outputs = location.outputs

        def group(name: str) -> str:
            return f"log group {outputs[name]}" if outputs.get(name) else "its log group"
        return cls("is this machine in mynetworks (the load balancer's security group "
                   "admits only mynetworks)? Does the relay service have healthy tasks "
                   f"(alarm healthy-below-desired)? The relay's "
                   f"{group(deployment.OUTPUT_RELAY_LOG_GROUP)}",
                   group(deployment.OUTPUT_RELAY_LOG_GROUP),
                   group(deployment.OUTPUT_WORKER_LOG_GROUP),
                   group(deployment.OUTPUT_EVENTS_LOG_GROUP))


def check_account(ses: Any, checklist: Checklist) -> None:
    """SES's word on the account (GetAccount): sending disabled fails the run; the
    sandbox is a warning (the mailbox simulator still receives, real recipients do not
    until production access is granted); an account SES cannot describe is skipped."""
    answer = read_account(ses)
    if isinstance(answer, str):
        checklist.skip(f"the SES account's state: GetAccount unavailable ({answer})")
    elif not answer.sending_enabled:
        raise SmokeFailure(describe(answer), "the SES console's account dashboard: "
                           "sending was paused by AWS or by an operator")
    elif answer.production_access:
        checklist.ok(describe(answer))
    else:
        checklist.warn(describe(answer) + "; request production access before real mail")


def relay_address(args: argparse.Namespace, location: where.Location) -> tuple[str, int]:
    """The relay to send through: --server, else the stack's RelayHost on port 25, else
    `sesrelay dev`'s default listener."""
    text = args.server or (f"{location.output(deployment.OUTPUT_RELAY_HOST)}:"
                           f"{DEPLOYED_SMTP_PORT}" if location.deployed else DEV_SMTP)
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise where.WhereError(f"--server {text}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def configuration_set(location: where.Location) -> str:
    """The configuration set whose events reach the trail ("" when there is none): the
    stack's output, or the one `sesrelay dev` created for ses_configuration_set."""
    if location.deployed:
        return location.outputs.get(deployment.OUTPUT_CONFIGURATION_SET, "")
    found = location.client("sesv2").list_configuration_sets().get("ConfigurationSets", [])
    return str(found[0]) if found else ""


def smoke_message(sender: str, recipient: str) -> EmailMessage:
    """A small message that says what it is."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = "sesrelay smoke test"
    message["Date"] = email.utils.formatdate()
    message["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content("A test message from `sesrelay smoke` to SES's mailbox simulator.\n")
    return message


def send(server: tuple[str, int], sender: str, recipient: str, components: Components,
         timeout: float) -> str:
    """Send one message through the relay; the queue ID its 250 reply names."""
    host, port = server
    relay = (f"the relay's configuration (mynetworks, relay_domains, ses_identities and "
             f"ses_unverified_sender), and {components.relay}")
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            smtp.ehlo()
            code, reply = smtp.mail(sender)
            if code != 250:
                raise SmokeFailure(f"the relay refused the sender <{sender}>: {code} "
                                   f"{reply.decode(errors='replace')}", relay)
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                raise SmokeFailure(f"the relay refused <{recipient}>: {code} "
                                   f"{reply.decode(errors='replace')}", relay)
            code, reply = smtp.data(smoke_message(sender, recipient).as_bytes())
    except (OSError, smtplib.SMTPException) as exc:
        raise SmokeFailure(
            f"cannot talk SMTP to {host}:{port}: {exc or type(exc).__name__}",
            f"the network path to the relay: {components.network}") from None
    text = reply.decode(errors="replace")
    match = QUEUED_AS.search(text)
    if code != 250 or not match:
        raise SmokeFailure(f"the relay did not queue the message to <{recipient}>: {code} "
                           f"{text}", f"the spool (S3, SQS) and {components.relay}"
                           if 400 <= code < 500 else relay)
    return match.group(1)


class Follower:
    """Reads one message's story from the trail until a step is reached or time is up."""

    def __init__(self, location: where.Location, deadline: float) -> None:
        self.reader = trail_reader(location)
        self.deadline = deadline

    def until(self, queue_id: str, reached: Callable[[trace.Story], bool]) -> trace.Story:
        """Poll the story until reached(story) is true; the story then, or the last one
        read when the deadline passed (the caller says what is missing)."""
        while True:
            story = trace.load(self.reader, queue_id)
            if reached(story) or time.monotonic() >= self.deadline:
                return story
            time.sleep(POLL_SECONDS)


def _items(story: trace.Story, kind: str) -> list[dict[str, object]]:
    return [i for i in story.history if i.get("kind") == kind]


def _message_attempts(story: trace.Story) -> list[dict[str, object]]:
    return [i for i in _items(story, trail.ATTEMPT) if i.get("purpose") != trail.PURPOSE_DSN]


def _worker_done(story: trace.Story) -> bool:
    """The worker's send has an outcome that decides this step."""
    attempts = _message_attempts(story)
    return (any(a.get("outcome") in SENT_OUTCOMES for a in attempts)
            or any(a.get("outcome") in (trail.FAILED, trail.SETTLED_REJECTED)
                   for a in attempts)
            or bool(_items(story, trail.DROPPED)))


def follow(follower: Follower, queue_id: str, recipient: str, events: str,
           components: Components, checklist: Checklist, wait: float) -> None:
    """The worker's receipt and send, then SES's verdict, of one message."""
    worker = (f"the worker Lambda (its SQS event source on the spool queue; `sesrelay "
              f"mailq`) and {components.worker}")
    story = follower.until(queue_id, lambda s: bool(_items(s, trail.RECEIVED)))
    if not _items(story, trail.RECEIVED):
        raise SmokeFailure(f"{queue_id}: the worker has not received it within {wait:g} s",
                           worker)
    checklist.ok(f"{queue_id}: the worker received it from the queue")

    story = follower.until(queue_id, _worker_done)
    sent = [a for a in _message_attempts(story) if a.get("outcome") in SENT_OUTCOMES]
    if not sent:
        reasons = [str(i.get("reason")) for i in story.history if i.get("reason")]
        what = (f"SES refused the worker's send: {reasons[-1]}" if reasons
                else f"no send within {wait:g} s")
        raise SmokeFailure(
            f"{queue_id}: {what}",
            "SES (is the sender a verified identity? is the account out of the sandbox? "
            f"is sending paused?) and {worker}" if reasons else worker)
    checklist.ok(f"{queue_id}: SES accepted the worker's send (SES MessageId "
                 f"{sent[-1].get('ses_message_id', '?')})")

    if not events:
        checklist.skip(f"{queue_id}: SES's events: the environment has no configuration "
                       "set (ses_configuration_set), so none reach the trail")
        return
    event, state = EXPECTED[recipient]
    verdicts = (trail.EVENT_DELIVERY, trail.EVENT_BOUNCE, trail.EVENT_REJECT)
    story = follower.until(queue_id, lambda s: any(
        i.get("event_type") in verdicts for i in _items(s, trail.EVENT)))
    _address, found, detail = story.recipients.get(recipient, (recipient, "queued", ""))
    seen = [str(i.get("event_type")) for i in _items(story, trail.EVENT)]
    if found != state:
        raise SmokeFailure(
            f"{queue_id}: <{recipient}> is {found}" + (f" ({detail})" if detail else "")
            + f", not {state}; SES events seen: {', '.join(seen) or 'none'}"
            + ("" if seen else f" within {wait:g} s"),
            f"the SES events pipeline (configuration set {events}, its SNS topic, the "
            f"events queue and its DLQ) and the events Lambda: {components.events}")
    checklist.ok(f"{queue_id}: SES event {event}: <{recipient}> {state}"
                 + (f" ({detail})" if detail else ""))


def cmd_smoke(args: argparse.Namespace) -> int:
    """Send to the mailbox simulator through the relay and follow each message."""
    location = where.resolve(args)
    server = relay_address(args, location)
    components = Components.of(location)
    events = configuration_set(location)
    print(f"sesrelay smoke: {location.label}, relay {server[0]}:{server[1]}, sender "
          f"<{args.sender}>", flush=True)
    checklist = Checklist()
    try:
        check_account(location.client("sesv2"), checklist)
        sent = []
        for recipient in (SIMULATOR_SUCCESS, SIMULATOR_BOUNCE):
            queue_id = send(server, args.sender, recipient, components, args.wait)
            checklist.ok(f"the relay queued the message to <{recipient}> as {queue_id}")
            sent.append((queue_id, recipient))
        follower = Follower(location, time.monotonic() + args.wait)
        for queue_id, recipient in sent:
            follow(follower, queue_id, recipient, events, components, checklist, args.wait)
    except SmokeFailure as failure:
        checklist.fail(failure)
        print(f"sesrelay smoke: FAILED after {checklist.passed} passed check(s)",
              file=sys.stderr)
        return 1
    print(f"sesrelay smoke: passed ({checklist.passed} checks)")
    return 0


def _default_sender() -> str:
    return f"sesrelay-smoke@{socket.getfqdn()}"


def register(commands: argparse._SubParsersAction) -> None:
    """Add `smoke`."""
    smoke = commands.add_parser(
        "smoke", help="after a deploy: send to SES's mailbox simulator through the relay "
        "and follow each message to SES's verdict",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    smoke.add_argument("--server", metavar="HOST:PORT",
                       help="the relay to send through (default: the stack's RelayHost "
                       f"on port {DEPLOYED_SMTP_PORT} with --env, else {DEV_SMTP})")
    smoke.add_argument("--from", dest="sender", default=_default_sender(),
                       help="envelope and header sender; SES must have it verified "
                       "(default sesrelay-smoke@<this host's name>)")
    smoke.add_argument("--wait", type=float, default=120, metavar="SECONDS",
                       help="how long to wait for the worker and SES's events, in all "
                       "(default %(default)g)")
    where.add_arguments(smoke)
    smoke.set_defaults(func=cmd_smoke)

