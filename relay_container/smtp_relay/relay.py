"""The relay's decisions for each SMTP command.

RelaySession (the SMTP protocol and the edge checks) asks it about PROXY (trust), MAIL
(sender), RCPT (policy and recipient limit) and DATA (header_checks, Received:, the
durable handoff). Every string it gets from the session has been checked (edge.py).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from aiosmtpd.proxy_protocol import V2_CMD, ProxyData
from aiosmtpd.smtp import SMTP, Envelope, Session

from sesrelay import maillog, ses_headers, telemetry
from sesrelay.config import Config
from sesrelay.config.tls import server_context
from sesrelay.spool import envelope_fits, new_queue_id, object_key, utc_now
from smtp_relay import dsn_params, from_header, replies
from smtp_relay.cleanup import (
    ALIAS_EXPANSION_ERROR,
    UNKNOWN_ALIAS,
    Cleanup,
    ExpansionError,
    Rewritten,
)
from smtp_relay.edge import client_address
from smtp_relay.handoff import Spool, SpoolError
from smtp_relay.headers import (
    Context,
    apply_header_checks,
    drop_headers,
    protocol_name,
    received_count,
    received_header,
)
from smtp_relay.metrics import RelayMetrics
from smtp_relay.sasl import Authenticator, Login, login_of
from smtp_relay.tls import TlsSession
from smtp_relay.verdicts import mail_from_address, recipient_reply, sender_reply

if TYPE_CHECKING:
    from smtp_relay.session import RelaySession

log = logging.getLogger("sesrelay.relay")


def _client(session: Session) -> str:
    return f"unknown[{client_address(session)}]"


def _sender(address: str | None) -> str:
    """The envelope sender as the log writes it: "" for the null sender, which aiosmtpd's
    envelope holds as "<>" (so that from=<> is written, as Postfix writes it)."""
    return "" if address in (None, "<>") else address


def _proto(session: Session) -> str:
    """Postfix's proto= of a session's log lines."""
    return "ESMTP" if session.extended_smtp else "SMTP"


@dataclass
class Transaction:
    """One message being received: what DATA needs to build and spool it."""

    queue_id: str
    received_at: datetime
    session: Session
    envelope: Envelope
    config: Config
    tls: TlsSession | None = None
    # ses_unverified_sender = rewrite applies: the From: header becomes this address.
    from_rewrite: str = ""
    reject: str | None = None
    discard: str | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def rejects_bare_newline(self) -> bool:
        """smtpd_forbid_bare_newline = reject, for a client not excluded from it."""
        return (self.config.smtpd_forbid_bare_newline == "reject"
                and client_address(self.session)
                not in self.config.smtpd_forbid_bare_newline_exclusions)

    @property
    def login(self) -> Login | None:
        """The session's SMTP AUTH login, if any."""
        return login_of(self.session)

    def start_body(self, header_lines: list[bytes], separator: bytes) -> bytearray:
        """Apply header_checks and return the message buffer: Received:, headers, separator.

        The body is appended to this buffer as it arrives, so the message exists in memory
        once, in the form it is stored in S3.
        """
        session, envelope = self.session, self.envelope
        context = Context(_client(session), _sender(envelope.mail_from),
                          envelope.rcpt_tos[0] if envelope.rcpt_tos else "",
                          _proto(session), session.host_name or "")
        checked = apply_header_checks(self.config.header_checks, header_lines,
                                      self.config.soft_bounce, self.queue_id, context)
        self.reject, self.discard = checked.reject, checked.discard
        headers = drop_headers(checked.headers, self.config.message_drop_headers)
        if self.reject is None and self.discard is None and self.from_rewrite:
            headers = self._rewrite_from(headers)
        if self.reject is None and self.discard is None:
            self.reject = self._ses_headers_reply(headers)
        # Postfix's cleanup counts the Received: headers that header_checks kept, and its
        # smtpd's own; the hop count wins over a REJECT (cleanup_stat_detail's order), a
        # DISCARD over both.
        if (self.discard is None
                and 1 + received_count(headers) >= self.config.hopcount_limit):
            log.info("%s: reject: too many hops (hopcount_limit = %d)", self.queue_id,
                     self.config.hopcount_limit)
            self.reject = replies.soften(replies.TOO_MANY_HOPS, self.config.soft_bounce)
        config, login = self.config, self.login
        buffer = bytearray(received_header(
            helo=self.session.host_name or "", client_address=client_address(self.session),
            protocol=protocol_name(bool(self.session.extended_smtp), self.tls is not None,
                                   login is not None, self.envelope.smtp_utf8),
            hostname=config.myhostname, mail_name=config.mail_name, queue_id=self.queue_id,
            recipients=self.envelope.rcpt_tos, when=self.received_at,
            tls_clause=(self.tls.received_clause()
                        if self.tls and config.smtpd_tls_received_header else ""),
            auth_clause=(f"(Authenticated sender: {login.username})"
                         if login and config.smtpd_sasl_authenticated_header else "")))
        for header in headers:
            buffer += header
        buffer += separator
        return buffer

    def _rewrite_from(self, headers: list[bytes]) -> list[bytes]:
        """ses_unverified_sender = rewrite: From: to ses_default_sender, the original to
        Reply-To:; a From: that is not one valid mailbox refuses the message."""
        try:
            done = from_header.rewrite(headers, self.from_rewrite)
        except from_header.FromHeaderError as exc:
            log.info("%s: reject: ses_unverified_sender = rewrite: %s", self.queue_id, exc)
            self.reject = replies.soften(from_header.NOT_ONE_MAILBOX, self.config.soft_bounce)
            return headers
        from_header.log_rewrite(self.queue_id, done, self.from_rewrite)
        return done.headers

    def _ses_headers_reply(self, headers: list[bytes]) -> str | None:
        """The reply refusing X-SES-* headers (after header_checks) that the worker
        could not apply, or None: told now, the client hears why; accepted, the message
        could only bounce."""
        try:
            ses_headers.requested(headers, self.config)
        except ses_headers.SesHeaderError as exc:
            log.info("%s: reject: header %s", self.queue_id, exc)
            return replies.soften(f"550 {exc.status} Error: {exc}", self.config.soft_bounce)
        return None


class Relay:
    """Policy and handoff for every session of one listening process."""

    def __init__(self, config: Config, spool: Spool, metrics: RelayMetrics) -> None:
        self.config = config
        self.spool = spool
        self.metrics = metrics
        self.cleanup = Cleanup(config)
        self.sessions: set[RelaySession] = set()
        self.storing: set[Session] = set()  # sessions whose message is being stored
        self.draining = False
        self.connections: Counter[str] = Counter()  # per client address, this process
        self.authenticator = Authenticator(config) if config.smtpd_sasl_auth_enable else None
        # STARTTLS's context (smtpd_tls_security_level may or encrypt), else None.
        self.starttls_context = (
            server_context(config, mandatory=config.tls_level == "encrypt")
            if config.tls_level != "none" else None)

    def __dir__(self) -> list[str]:
        """Nothing: aiosmtpd scans dir() of the handler for hooks on every connection,
        and RelaySession calls these methods itself (see RelaySession.__dir__)."""
        return []

    def connected(self, client: str) -> int:
        """Count a connection from client; returns how many it now has open."""
        self.connections[client] += 1
        return self.connections[client]

    def disconnected(self, client: str) -> None:
        """A connection from client has ended."""
        self.connections[client] -= 1
        if self.connections[client] <= 0:
            del self.connections[client]

    # --- commands -----------------------------------------------------------------------

    async def handle_PROXY(self, server: SMTP, session: Session, envelope: Envelope,
                           proxy_data: ProxyData) -> bool:
        """Honour a PROXY header only from sesrelay_proxy_networks (the load balancer)."""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        if peer not in self.config.sesrelay_proxy_networks:
            log.warning("reject: PROXY header from untrusted peer [%s]: not in "
                        "sesrelay_proxy_networks", peer)
            return False
        if proxy_data.command == V2_CMD.LOCAL:
            # The load balancer's own health check: no client address, nothing to log.
            session.client_address = peer
            return True
        if proxy_data.src_addr is None:
            log.warning("reject: PROXY header from [%s] without a source address", peer)
            return False
        session.client_address = str(proxy_data.src_addr)
        return True

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        """Accept the sender; a bare name gets @myorigin. The null sender stays "<>" here
        (aiosmtpd treats an empty sender as no MAIL command) and is "" in the spool."""
        address = mail_from_address(self.config, address)
        if not self.config.smtpd_delay_reject:
            reply = sender_reply(self.config, self.cleanup, address)
            if reply:
                self._log_reject(session, "MAIL", reply, _sender(address), "")
                return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.SENDER_OK

    def _log_reject(self, session: Session, stage: str, reply: str, sender: str,
                    recipient: str) -> None:
        """smtpd's NOQUEUE reject line, and the reply's metric."""
        log.info("%s", maillog.reject(stage, _client(session), reply, sender=sender,
                                      recipient=recipient, proto=_proto(session),
                                      helo=session.host_name or ""))
        self.metrics.count(telemetry.DEFERRED if reply.startswith("4")
                           else telemetry.REJECTED)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, dsn: dsn_params.RecipientParameters) -> str:
        """Apply the recipient limit and the relay policy (restrictions, recipient maps);
        keep the recipient's DSN parameters with it."""
        if (len(envelope.rcpt_tos) >= self.config.smtpd_recipient_limit
                or not dsn_params.fits(envelope, address, dsn)):
            return replies.TOO_MANY_RECIPIENTS
        login = login_of(session)
        recipient, reply = recipient_reply(
            self.config, self.cleanup, client_address(session), address,
            login.username if login else None, envelope.mail_from or "<>")
        if reply == replies.BAD_ADDRESS:
            return reply
        if reply:
            self._log_reject(session, "RCPT", reply, _sender(envelope.mail_from), address)
            return reply
        envelope.rcpt_tos.append(recipient.address)
        dsn_params.accept_recipient(envelope, recipient.address, dsn)
        return replies.RECIPIENT_OK

    # --- DATA ---------------------------------------------------------------------------

    def begin_data(self, session: Session, envelope: Envelope,
                   tls: TlsSession | None = None) -> Transaction:
        """A queue ID and timestamp for the message about to be read, and smtpd's
        ``client=`` line, written as Postfix writes it once a message has a queue ID
        (whatever becomes of the message: pflogsumm counts it received)."""
        sender = _sender(envelope.mail_from)
        transaction = Transaction(new_queue_id(), utc_now(), session, envelope, self.config,
                                  tls, self.config.ses_default_sender
                                  if self.cleanup.replaces_sender(sender) else "")
        login = transaction.login
        log.info("%s", maillog.client(transaction.queue_id, client_address(session),
                                      login.method if login else "",
                                      login.username if login else ""),
                 extra={"maillog_program": maillog.SMTPD})
        return transaction

    async def finish_data(self, transaction: Transaction, message: bytearray) -> str:
        """header_checks' verdict, then the durable handoff; returns the reply to DATA."""
        if transaction.reject:
            return transaction.reject
        queue_id = transaction.queue_id
        if transaction.discard:
            return replies.queued(queue_id)
        envelope = transaction.envelope
        session = transaction.session
        try:
            rewritten = self.cleanup.envelope(
                _sender(envelope.mail_from),
                envelope.rcpt_tos)
        except ExpansionError as exc:
            log.warning("%s: %s -- message not accepted, try again later", queue_id, exc)
            return ALIAS_EXPANSION_ERROR
        if not rewritten.recipients:
            return replies.soften(f"550 5.1.1 Error: {UNKNOWN_ALIAS}", self.config.soft_bounce)
        fields: dict[str, object] = {
            "queue_id": queue_id,
            "mail_from": rewritten.mail_from,
            "rcpt_to": rewritten.rcpt_to,
            "size": len(message),
            "client_address": client_address(session),
            "client_helo": session.host_name or "",
            "received_at": transaction.received_at.isoformat(),
            **dsn_params.envelope_fields(envelope, [old for old, _ in rewritten.recipients]),
        }
        if rewritten.changed:
            fields["orig_mail_from"] = rewritten.original_mail_from
            fields["orig_rcpt_to"] = tuple(old for old, _ in rewritten.recipients)
        login = transaction.login
        if login is not None:
            fields["sasl_username"] = login.username
        key = object_key(queue_id, transaction.received_at)
        if not envelope_fits(fields, self.config.sesrelay_spool_bucket, key):
            return replies.soften(replies.TOO_MANY_EXPANDED, self.config.soft_bounce)
        started = time.monotonic()
        self.storing.add(session)
        try:
            spooled = await self.spool.store(fields, message, key)
        except SpoolError as exc:
            log.error("%s: not queued, client told to retry: %s", queue_id, exc)
            return replies.SPOOL_FAILED
        finally:
            self.storing.discard(session)
        self.metrics.spool_latency((time.monotonic() - started) * 1000)
        _log_rewriting(queue_id, rewritten)
        log.info("%s", maillog.queued(queue_id, spooled.mail_from, spooled.size,
                                      len(spooled.rcpt_to)),
                 extra={"maillog_program": maillog.QMGR})
        return replies.queued(queue_id)

    def record_reply(self, transaction: Transaction, reply: str) -> None:
        """Count the message by its reply, and log a rejection that header_checks has not
        already logged (as Postfix's cleanup does, once)."""
        if reply.startswith("2"):
            self.metrics.count(telemetry.ACCEPTED)
            return
        self.metrics.count(telemetry.DEFERRED if reply.startswith("4") else telemetry.REJECTED)
        if reply == transaction.reject:
            return
        log.info("%s: reject: DATA from %s: %s; from=<%s> nrcpt=%d", transaction.queue_id,
                 _client(transaction.session), reply, _sender(transaction.envelope.mail_from),
                 len(transaction.envelope.rcpt_tos))




def _log_rewriting(queue_id: str, rewritten: Rewritten) -> None:
    """cleanup's part of the log: each address that rewriting changed, with its original."""
    if rewritten.mail_from != rewritten.original_mail_from:
        log.info("%s", maillog.rewritten(queue_id, "from", rewritten.original_mail_from,
                                         (rewritten.mail_from,)),
                 extra={"maillog_program": maillog.CLEANUP})
    targets: dict[str, list[str]] = {}
    for old, new in rewritten.recipients:
        targets.setdefault(old, []).append(new)
    for old, new in targets.items():
        if new != [old]:
            log.info("%s", maillog.rewritten(queue_id, "to", old, tuple(new)),
                     extra={"maillog_program": maillog.CLEANUP})
    for old, new in rewritten.unknown:
        log.info("%s", maillog.delivery(queue_id, new, relay="none", delay=0,
                                        delays=(0, 0, 0, 0), dsn="5.1.1", status="bounced",
                                        text=UNKNOWN_ALIAS, original=old),
                 extra={"maillog_program": maillog.CLEANUP})
