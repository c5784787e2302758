"""The configuration model: every parameter sesrelay supports, its default and meaning.

This is the one definition of sesrelay's configuration. The relay, the worker, the CLI
and the CDK stacks read a ``Config``; the README's configuration reference is checked
against ``PARAMETERS``. Defaults are written in main.cf syntax and may use ``$name``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from sesrelay.config import tables, values
from sesrelay.config.maincf import Assignment, ConfigWarning

# SES v2 SendEmail accepts up to 40 MB per message, so no larger message is ever accepted.
SES_MAX_MESSAGE_SIZE = 40 * 1024 * 1024


def _param(parse: Callable[[str, str], Any], default: str, doc: str, group: str) -> Any:
    return field(metadata={"parse": parse, "default": default, "doc": doc, "group": group})


def _domains(subdomains: bool) -> Callable[[str, str], tables.DomainList]:
    return functools.partial(tables.parse_domain_list, subdomains=subdomains)


IDENTITY, RELAY, REWRITE, LIMITS, SESSION, PROXY, TLS, SASL, QUEUE, SES, SPOOL = (
    "Identity and listener", "Relay rules", "Address rewriting", "Limits and replies",
    "SMTP sessions", "Load balancer (PROXY protocol)", "TLS (STARTTLS and implicit TLS)",
    "SMTP AUTH (SASL)", "Queue and retries", "Amazon SES", "Spool")
ADDRESS_CLASSES = ("envelope_sender", "envelope_recipient", "header_sender",
                   "header_recipient")


@dataclass(frozen=True)
class Config:
    """The effective configuration: parsed, validated values, one attribute per parameter."""

    # Identity and listener
    myhostname: str = _param(values.parse_text, "$sesrelay_host_fqdn",
                             "Host name in the banner, EHLO reply and Received: header.",
                             IDENTITY)
    mydomain: str = _param(values.parse_text, "$sesrelay_host_domain",
                           "Local domain; defaults to $myhostname minus its first label.",
                           IDENTITY)
    myorigin: str = _param(values.parse_text, "$myhostname",
                           "Domain appended to addresses that have none.", IDENTITY)
    mail_name: str = _param(values.parse_text, "sesrelay",
                            "Product name used in smtpd_banner and the Received: header.",
                            IDENTITY)
    smtpd_banner: str = _param(values.parse_text, "$myhostname ESMTP $mail_name",
                               "Text after 220 in the greeting.", IDENTITY)
    inet_interfaces: tuple[str, ...] = _param(
        values.parse_interfaces, "all",
        "Addresses to listen on: all, loopback-only, localhost, or addresses.", IDENTITY)
    inet_protocols: tuple[str, ...] = _param(values.parse_protocols, "all",
                                             "ipv4, ipv6 or all.", IDENTITY)
    sesrelay_listen_port: int = _param(values.parse_int, "25",
                                       "TCP port of the SMTP listener (master.cf's smtp "
                                       "service in Postfix).", IDENTITY)

    # Relay rules
    mynetworks: tables.NetworkList = _param(
        tables.parse_network_list, "127.0.0.0/8 [::1]/128",
        "Trusted clients, which may relay to any destination (CIDRs, /file, cidr: tables).",
        RELAY)
    sesrelay_auth_networks: tables.NetworkList = _param(
        tables.parse_network_list, "",
        "Clients outside mynetworks that may reach the relay only to authenticate: the "
        "deployment's security group admits them on every SMTP port, and they relay only "
        "after AUTH (permit_sasl_authenticated). Needs smtpd_sasl_auth_enable = yes.",
        RELAY)
    mydestination: tables.DomainList = _param(
        _domains(False), "",
        "Domains this host is final destination for; there is no local delivery, so they "
        "are relayed through SES like relay_domains.", RELAY)
    relay_domains: tables.DomainList = _param(
        _domains(True), "",
        "Domains (and their subdomains) that untrusted clients may send to.", RELAY)
    relay_recipient_maps: tables.RecipientTable = _param(
        tables.parse_recipient_tables, "",
        "Tables of valid recipients in relay_domains; unknown ones are rejected at RCPT.",
        RELAY)
    smtpd_relay_restrictions: tuple[str, ...] = _param(
        values.parse_restrictions,
        "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
        "Relay-control restrictions, evaluated at RCPT TO.", RELAY)
    smtpd_recipient_restrictions: tuple[str, ...] = _param(
        values.parse_restrictions, "",
        "Further recipient restrictions, evaluated after smtpd_relay_restrictions.", RELAY)
    smtpd_delay_reject: bool = _param(
        values.parse_bool, "yes",
        "Give the sender's verdict (ses_unverified_sender) at RCPT TO, as Postfix delays "
        "its sender restrictions; no: at MAIL FROM.", RELAY)
    header_checks: tables.RegexpTable = _param(
        tables.parse_regexp_tables, "",
        "regexp:/pcre: tables applied to each message header at receipt: REJECT, "
        "DISCARD, IGNORE, STRIP, WARN, INFO, PREPEND, REPLACE, DUNNO, OK.", RELAY)
    message_drop_headers: tuple[str, ...] = _param(
        values.parse_header_names, "bcc, content-length, resent-bcc, return-path",
        "Header names removed at receipt, after header_checks (case-insensitive). Bcc: "
        "and Resent-Bcc: are removed before SES even when not listed.", RELAY)
    smtp_header_checks: tables.RegexpTable = _param(
        tables.header_checks_parser("smtp_header_checks", tables.SMTP_HEADER_ACTIONS), "",
        "regexp:/pcre: tables applied by the worker to each message header just before "
        "SES (also to bounces): IGNORE, STRIP, WARN, INFO, PREPEND, REPLACE, DUNNO, OK.",
        RELAY)

    # Address rewriting (Postfix's cleanup, once, before the spool; see cleanup.py)
    recipient_delimiter: str = _param(
        values.parse_text, "",
        "Characters that start an address extension (user+ext@domain), for table lookups.",
        REWRITE)
    propagate_unmatched_extensions: tuple[str, ...] = _param(
        values.words_parser("canonical", "virtual", "alias", "forward", "include",
                            "generic"), "canonical, virtual",
        "Where an extension that a lookup did not match is carried over to the result "
        "(canonical, virtual; the others name local delivery and have no effect).", REWRITE)
    append_at_myorigin: bool = _param(values.parse_bool, "yes",
                                      "Append @$myorigin to envelope addresses without a "
                                      "domain.", REWRITE)
    append_dot_mydomain: bool = _param(values.parse_bool, "no",
                                       "Append .$mydomain to envelope domains without a dot.",
                                       REWRITE)
    swap_bangpath: bool = _param(values.parse_bool, "yes",
                                 "Rewrite an envelope address site!user without @ to "
                                 "user@site (before @$myorigin is appended).", REWRITE)
    allow_percent_hack: bool = _param(values.parse_bool, "yes",
                                      "Rewrite an envelope address user%domain without @ to "
                                      "user@domain (the last %).", REWRITE)
    proxy_interfaces: tuple[str, ...] = _param(
        values.parse_words, "",
        "Addresses the relay is reached at through a proxy: user@[address] there is local "
        "for the bare user lookups of canonical and virtual maps.", REWRITE)
    canonical_maps: tables.AddressMaps = _param(
        tables.parse_address_maps, "",
        "Address maps for senders and recipients (canonical(5)).", REWRITE)
    sender_canonical_maps: tables.AddressMaps = _param(
        tables.parse_address_maps, "", "Address maps for senders, before canonical_maps.",
        REWRITE)
    recipient_canonical_maps: tables.AddressMaps = _param(
        tables.parse_address_maps, "",
        "Address maps for recipients, before canonical_maps.", REWRITE)
    canonical_classes: tuple[str, ...] = _param(
        values.words_parser(*ADDRESS_CLASSES),
        "envelope_sender, envelope_recipient, header_sender, header_recipient",
        "Addresses canonical_maps applies to.", REWRITE)
    sender_canonical_classes: tuple[str, ...] = _param(
        values.words_parser(*ADDRESS_CLASSES), "envelope_sender, header_sender",
        "Addresses sender_canonical_maps applies to.", REWRITE)
    recipient_canonical_classes: tuple[str, ...] = _param(
        values.words_parser(*ADDRESS_CLASSES), "envelope_recipient, header_recipient",
        "Addresses recipient_canonical_maps applies to.", REWRITE)
    masquerade_domains: tuple[str, ...] = _param(
        values.parse_words, "",
        "Domains whose subdomains are hidden: user@host.example.com becomes "
        "user@example.com; !domain excludes.", REWRITE)
    masquerade_exceptions: tuple[str, ...] = _param(
        values.parse_words, "", "Local parts never masqueraded (such as root).", REWRITE)
    masquerade_classes: tuple[str, ...] = _param(
        values.words_parser(*ADDRESS_CLASSES),
        "envelope_sender, header_sender, header_recipient",
        "Addresses masquerade_domains applies to.", REWRITE)
    virtual_alias_maps: tables.AddressMaps = _param(
        tables.parse_address_maps, "",
        "Aliases: one recipient to one or more addresses, recursively (virtual(5)).", REWRITE)
    virtual_alias_domains: tables.DomainList = _param(
        tables.parse_alias_domains, "$virtual_alias_maps",
        "Domains whose every address must be a virtual alias: they are accepted from any "
        "client, and an unknown recipient there is rejected at RCPT.", REWRITE)
    virtual_alias_expansion_limit: int = _param(
        values.parse_int, "1000",
        "Most addresses one original recipient may expand to; more defers the message.",
        REWRITE)
    virtual_alias_recursion_limit: int = _param(
        values.parse_int, "1000", "Deepest nesting of virtual alias expansion.", REWRITE)
    unknown_virtual_alias_reject_code: int = _param(
        values.parse_reply_code, "550",
        "Reply code for unknown recipients in virtual_alias_domains.", REWRITE)
    local_header_rewrite_clients: tuple[str, ...] = _param(
        values.parse_local_header_rewrite_clients, "permit_inet_interfaces",
        "Clients whose header addresses are rewritten: none here (every client reaches the "
        "relay from another host); other values are refused.", REWRITE)
    remote_header_rewrite_domain: str = _param(
        values.parse_remote_header_rewrite_domain, "",
        "Must stay empty: header address rewriting for remote clients is not implemented.",
        REWRITE)

    # Limits and replies
    message_size_limit: int = _param(values.parse_int, "10240000",
                                     "Largest message in bytes, advertised in EHLO SIZE; at "
                                     "most SES's 40 MB.", LIMITS)
    smtpd_recipient_limit: int = _param(
        values.parse_int, "1000",
        "Most recipients accepted in one message (at most 1000, so that the envelope fits "
        "one SQS message).", LIMITS)
    header_size_limit: int = _param(
        values.parse_int, "102400",
        "Longest header in bytes (with its continuation lines); the excess is discarded "
        "and logged, as Postfix's cleanup does. Header lines over 998 octets are folded "
        "before sending.", LIMITS)
    hopcount_limit: int = _param(
        values.parse_int, "50",
        "Most Received: headers a message may have, the relay's own included (a mail "
        "loop); more: 554 5.4.0 Error: too many hops at the end of DATA.", LIMITS)
    soft_bounce: bool = _param(values.parse_bool, "no",
                               "Turn 5xx rejections into 4xx, and defer instead of bouncing.",
                               LIMITS)
    unknown_relay_recipient_reject_code: int = _param(
        values.parse_reply_code, "550",
        "Reply code for recipients not in relay_recipient_maps.", LIMITS)
    relay_domains_reject_code: int = _param(
        values.parse_reply_code, "554",
        "Reply code of reject_unauth_destination (Relay access denied).", LIMITS)

    # SMTP sessions: what a slow, broken or hostile client may do (Postfix's smtpd limits)
    smtpd_timeout: int = _param(
        values.time_parser("s"), "300s",
        "Limit on each read from and each write to the client (not on a whole upload, nor "
        "on the time the relay spends storing a message); then 421 4.4.2 and hang up.",
        SESSION)
    smtpd_hard_error_limit: int = _param(
        values.parse_int, "20",
        "Errors a client may make in one session before 421 4.7.0 too many errors and "
        "hang-up.", SESSION)
    smtpd_soft_error_limit: int = _param(
        values.parse_int, "10",
        "Errors after which each reply waits smtpd_error_sleep_time.", SESSION)
    smtpd_error_sleep_time: int = _param(
        values.time_parser("s"), "1s",
        "Wait before each reply once smtpd_soft_error_limit is reached.", SESSION)
    smtpd_junk_command_limit: int = _param(
        values.parse_int, "100",
        "NOOP, RSET, VRFY, ETRN, HELO and EHLO commands allowed before each counts as an "
        "error (until a message is accepted).", SESSION)
    smtpd_client_connection_count_limit: int = _param(
        values.parse_int, "50",
        "Simultaneous connections from one client address to one relay process (0: no "
        "limit); more get 421 4.7.0 too many connections.", SESSION)
    smtpd_client_event_limit_exceptions: tables.NetworkList = _param(
        tables.parse_network_list, "",
        "Clients exempt from smtpd_client_connection_count_limit. Unlike Postfix, not "
        "$mynetworks by default: here every client is in mynetworks.", SESSION)

    smtpd_helo_required: bool = _param(
        values.parse_bool, "no",
        "Require HELO or EHLO before MAIL FROM (503 5.5.1 Error: send HELO/EHLO first).",
        SESSION)
    smtpd_forbid_bare_newline: str = _param(
        values.choice_parser("normalize", "yes", "reject", "no"), "normalize",
        "Lines ending in a bare <LF>: normalize (or yes) takes them as <CR><LF>; reject "
        "refuses the message (smtpd_forbid_bare_newline_reject_code); no is normalize here. "
        "DATA ends only at <CR><LF>.<CR><LF>, in every mode (Postfix 3.9's default).",
        SESSION)
    smtpd_forbid_bare_newline_exclusions: tables.NetworkList = _param(
        tables.parse_network_list, "$mynetworks",
        "Clients that smtpd_forbid_bare_newline = reject does not apply to.", SESSION)
    smtpd_forbid_bare_newline_reject_code: int = _param(
        values.parse_reply_code, "550",
        "Reply code for a bare <LF> under smtpd_forbid_bare_newline = reject.", SESSION)

    # Load balancer (PROXY protocol)
    smtpd_upstream_proxy_protocol: str = _param(
        values.parse_proxy_protocol, "",
        "haproxy: every connection starts with a PROXY v1/v2 header (from the NLB).", PROXY)
    smtpd_upstream_proxy_timeout: int = _param(values.time_parser("s"), "5s",
                                               "Time allowed for the PROXY header.", PROXY)
    sesrelay_proxy_networks: tables.NetworkList = _param(
        tables.parse_network_list, "",
        "Peers allowed to send a PROXY header (the NLB's subnets); others are dropped.",
        PROXY)

    # TLS (STARTTLS and implicit TLS): Postfix's smtpd_tls_* parameters
    smtpd_tls_security_level: str = _param(
        values.choice_parser("", "none", "may", "encrypt"), "",
        "none: no TLS; may: offer STARTTLS; encrypt: MAIL and AUTH only after STARTTLS (530 "
        "5.7.0 Must issue a STARTTLS command first). Empty: from smtpd_enforce_tls and "
        "smtpd_use_tls, as in Postfix.", TLS)
    smtpd_use_tls: bool = _param(values.parse_bool, "no",
                                 "Obsolete form of smtpd_tls_security_level = may.", TLS)
    smtpd_enforce_tls: bool = _param(values.parse_bool, "no",
                                     "Obsolete form of smtpd_tls_security_level = encrypt.",
                                     TLS)
    smtpd_tls_cert_file: str = _param(
        values.parse_text, "",
        "PEM file with the server certificate, then any intermediate certificates (the "
        "chain); it may hold the private key too.", TLS)
    smtpd_tls_key_file: str = _param(values.parse_text, "$smtpd_tls_cert_file",
                                     "PEM file with the private key.", TLS)
    smtpd_tls_protocols: values.TlsProtocols = _param(
        values.parse_tls_protocols, ">=TLSv1.2",
        "TLS versions offered with smtpd_tls_security_level = may (>=TLSv1.2, <=TLSv1.3, "
        "!TLSv1.1 or a list). Postfix's default is >=TLSv1.", TLS)
    smtpd_tls_mandatory_protocols: values.TlsProtocols = _param(
        values.parse_tls_protocols, ">=TLSv1.2",
        "TLS versions accepted with smtpd_tls_security_level = encrypt. Postfix's default "
        "is >=TLSv1.", TLS)
    smtpd_tls_ciphers: str = _param(
        values.choice_parser("medium", "high"), "medium",
        "TLS 1.2 cipher grade with may: medium (OpenSSL's defaults) or high.", TLS)
    smtpd_tls_mandatory_ciphers: str = _param(
        values.choice_parser("medium", "high"), "medium",
        "TLS 1.2 cipher grade with encrypt: medium or high.", TLS)
    smtpd_tls_exclude_ciphers: tuple[str, ...] = _param(
        values.parse_words, "", "OpenSSL cipher names or classes never used.", TLS)
    smtpd_tls_mandatory_exclude_ciphers: tuple[str, ...] = _param(
        values.parse_words, "", "Further ciphers never used with encrypt.", TLS)
    smtpd_tls_auth_only: bool = _param(
        values.parse_bool, "yes",
        "AUTH only after STARTTLS. Postfix's default is no; here a password never crosses "
        "the network in clear text unless this is set to no.", TLS)
    smtpd_tls_received_header: bool = _param(
        values.parse_bool, "no",
        "Note the TLS version and cipher in the Received: header.", TLS)
    smtpd_tls_loglevel: int = _param(
        values.parse_int, "0",
        "0: no TLS log lines; 1 or more: one line per TLS session (version and cipher).", TLS)
    smtpd_tls_wrappermode: bool = _param(
        values.parse_bool, "no",
        "The main listener speaks TLS from the first byte (implicit TLS, as on port 465).",
        TLS)
    smtpd_starttls_timeout: int = _param(values.time_parser("s"), "300s",
                                         "Time allowed for a TLS handshake.", TLS)
    sesrelay_smtps_port: int = _param(
        values.parse_int, "0",
        "TCP port of a second listener with implicit TLS (master.cf's smtps service with "
        "smtpd_tls_wrappermode = yes), such as 465; 0: none.", TLS)

    # SMTP AUTH (SASL): Postfix's smtpd_sasl_* parameters, with sesrelay's own user table
    smtpd_sasl_auth_enable: bool = _param(
        values.parse_bool, "no", "Offer SMTP AUTH (PLAIN and LOGIN) to clients.", SASL)
    smtpd_sasl_security_options: tuple[str, ...] = _param(
        values.parse_sasl_options, "noanonymous",
        "SASL restrictions outside TLS: noplaintext (or noactive, nodictionary, "
        "mutual_auth, forward_secrecy) removes PLAIN and LOGIN.", SASL)
    smtpd_sasl_tls_security_options: tuple[str, ...] = _param(
        values.parse_sasl_options, "$smtpd_sasl_security_options",
        "SASL restrictions inside TLS.", SASL)
    broken_sasl_auth_clients: bool = _param(
        values.parse_bool, "no", "Also announce AUTH=PLAIN LOGIN (for old Outlook).", SASL)
    smtpd_sasl_authenticated_header: bool = _param(
        values.parse_bool, "no",
        "Name the authenticated user in the Received: header.", SASL)
    smtpd_sender_login_maps: tables.SenderLoginTable = _param(
        tables.parse_sender_login_tables, "",
        "Tables of envelope senders and the SASL users that own them, for "
        "reject_sender_login_mismatch.", SASL)
    sesrelay_sasl_users: str = _param(
        values.parse_text, "",
        "The user table (hashed passwords, managed with sesrelay users): a file, or "
        "secretsmanager:NAME.", SASL)
    sesrelay_sasl_users_refresh: int = _param(
        values.time_parser("s"), "5m", "How often the relay rereads the user table.", SASL)
    sesrelay_auth_failure_delay: int = _param(
        values.time_parser("s"), "1s",
        "A failed AUTH is answered after this delay times the client's recent failures "
        "(at most 10 times).", SASL)
    sesrelay_auth_failure_limit: int = _param(
        values.parse_int, "10",
        "Failed AUTH commands after which a client is refused AUTH for "
        "sesrelay_auth_lockout_time (counted per relay process).", SASL)
    sesrelay_auth_lockout_time: int = _param(
        values.time_parser("s"), "10m",
        "How long a client that reached sesrelay_auth_failure_limit is refused AUTH.", SASL)

    # Queue and retries (the worker)
    maximal_queue_lifetime: int = _param(values.time_parser("d"), "5d",
                                         "How long the worker retries before it bounces.",
                                         QUEUE)
    minimal_backoff_time: int = _param(values.time_parser("s"), "300s",
                                       "Shortest retry delay.", QUEUE)
    maximal_backoff_time: int = _param(values.time_parser("s"), "4000s",
                                       "Longest retry delay.", QUEUE)

    # Amazon SES
    ses_region: str = _param(values.parse_text, "",
                             "SES region; empty means the AWS default region.", SES)
    ses_configuration_set: str = _param(
        values.parse_text, "", "SES configuration set for every send; the only one an "
        "X-SES-CONFIGURATION-SET header may name.", SES)
    ses_identity_arn: str = _param(
        values.parse_text, "", "FromEmailAddressIdentityArn for sending authorization; the "
        "only identity an X-SES-*-ARN header may name.", SES)
    ses_identities: tuple[str, ...] = _param(
        values.parse_address_list, "",
        "Verified SES identities (domains or addresses) the worker may send as.", SES)
    ses_unverified_sender: str = _param(
        values.choice_parser("reject", "rewrite", "accept"), "reject",
        "An envelope sender (after address rewriting) that ses_identities does not cover: "
        "reject (553 5.7.1 at RCPT TO, or at MAIL FROM with smtpd_delay_reject = no), "
        "rewrite (the envelope sender and the From: header become ses_default_sender, the "
        "original From: address goes to Reply-To: unless there is one) or accept (SES "
        "decides when the worker sends). No effect while ses_identities is empty; the null "
        "sender is never checked.", SES)
    ses_default_sender: str = _param(
        values.parse_address, "",
        "The verified address (covered by ses_identities) that ses_unverified_sender = "
        "rewrite sends as; required with rewrite.", SES)
    ses_max_send_rate: float = _param(values.parse_float, "14",
                                      "Recipients per second, as SES counts them, for all "
                                      "workers together: an upper bound on the account's "
                                      "MaxSendRate, which the worker reads from SES (0: the "
                                      "account's rate alone).", SES)
    ses_bounce_sender: str = _param(values.parse_text, "MAILER-DAEMON@$mydomain",
                                    "From address of delivery status notifications.", SES)
    ses_email_tags: tuple[values.EmailTag, ...] = _param(
        values.parse_email_tags, "", "Extra SES message tags, name=value.", SES)
    ses_unknown_outcome: str = _param(
        values.choice_parser("resend", "assume_sent"), "resend",
        "A send whose answer was lost and that SES's events do not settle: resend (at "
        "least once, as Postfix does: a recipient may get two copies) or assume_sent (at "
        "most once: a recipient may get none).", SES)
    ses_unknown_outcome_wait: int = _param(
        values.time_parser("s"), "15m",
        "How long the worker waits for SES's events to settle a send whose answer was lost "
        "before it applies ses_unknown_outcome (only with ses_configuration_set and the "
        "trail).", SES)
    ses_unknown_outcome_dsn: str = _param(
        values.choice_parser("notice", "none"), "notice",
        "A message that fails after a send whose outcome was unknown: notice (the bounce "
        "says SES may have delivered it) or none (no bounce).", SES)

    # Spool
    sesrelay_spool_bucket: str = _param(values.parse_text, "",
                                        "S3 bucket that holds spooled messages.", SPOOL)
    sesrelay_spool_queue_url: str = _param(values.parse_text, "",
                                           "SQS queue URL that carries envelopes.", SPOOL)
    sesrelay_idempotency_table: str = _param(values.parse_text, "",
                                             "DynamoDB table of the worker's idempotency "
                                             "records.", SPOOL)
    sesrelay_spool_client: str = _param(
        values.choice_parser("botocore", "lean"), "lean",
        "The relay's client for its S3 and SQS writes: lean (requests signed by the relay "
        "on its own event loop's connections: half to two thirds of botocore's CPU per "
        "message, docs/BENCHMARKS.md) or botocore (in a thread pool).", SPOOL)
    sesrelay_spool_retention: int = _param(values.parse_retention, "0",
                                           "How long a sent message is kept in S3 (0: "
                                           "deleted once sent).", SPOOL)
    sesrelay_trail_table: str = _param(values.parse_text, "",
                                       "DynamoDB table of the message trail (what happened "
                                       "to each message; SES's events).", SPOOL)
    sesrelay_trail_retention: int = _param(values.parse_retention, "30d",
                                           "How long the trail of a message is kept.", SPOOL)

    # Not parameters: what the loader learned on the way.
    settings: dict[str, Assignment] = field(default_factory=dict, compare=False, repr=False)
    ignored: tuple[tuple[Assignment, str], ...] = field(default=(), compare=False, repr=False)
    warnings: tuple[ConfigWarning, ...] = field(default=(), compare=False, repr=False)

    @property
    def authorized_destinations(self) -> tuple[tables.DomainList, ...]:
        """Domains untrusted clients may send to: relay_domains, mydestination and
        virtual_alias_domains."""
        return (self.relay_domains, self.mydestination, self.virtual_alias_domains)

    @property
    def tls_level(self) -> str:
        """The effective smtpd_tls_security_level: none, may or encrypt."""
        if self.smtpd_tls_security_level:
            return self.smtpd_tls_security_level
        if self.smtpd_enforce_tls:
            return "encrypt"
        return "may" if self.smtpd_use_tls else "none"

    @property
    def reject_code_class(self) -> str:
        """'4' when soft_bounce turns rejections into deferrals, else '5'."""
        return "4" if self.soft_bounce else "5"


@dataclass(frozen=True)
class ParameterInfo:
    """Documentation of one supported parameter, for the reference and `config show`."""

    name: str
    default: str
    doc: str
    group: str
    parse: Callable[[str, str], Any]


PARAMETERS: dict[str, ParameterInfo] = {
    f.name: ParameterInfo(f.name, f.metadata["default"], f.metadata["doc"], f.metadata["group"],
                          f.metadata["parse"])
    for f in fields(Config)
    if "parse" in f.metadata
}
