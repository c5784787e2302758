"""How sesrelay treats each Postfix parameter it does not implement: refused (an error
naming the file and line when set to anything that turns it on), or ignored with a
one-line reason. docs/PARAMETERS.md lists every Postfix parameter name with its class
(``classify``); tests/config/test_classification.py checks that table against this module.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_REASONS: tuple[tuple[str, str], ...] = (
    (r"queue_directory|command_directory|daemon_directory|data_directory|mail_owner|"
     r"setgid_group|default_privs|sendmail_path|newaliases_path|mailq_path|"
     r"html_directory|manpage_directory|sample_directory|readme_directory|"
     r"meta_directory|shlib_directory|config_directory|process_.*|import_environment|"
     r"export_environment|syslog_.*|maillog_file.*",
     "describes a Postfix installation; sesrelay runs as a container"),
    (r"relayhost|smtp_.*|lmtp_.*|default_transport|relay_transport|fallback_relay|"
     r"fallback_transport|smtp_fallback_relay",
     "outbound delivery is SES's SendEmail API, not an SMTP client"),
    (r"local_.*|alias_.*|mailbox_.*|home_mailbox|luser_relay|forward_path|"
     r"allow_mail_to_.*|mail_spool_directory|unknown_local_recipient_reject_code|"
     r"biff|prepend_delivered_header|command_.*",
     "there is no local delivery"),
    (r"virtual_.*", "there is no virtual mailbox delivery (virtual(8))"),
    (r"smtputf8_enable|strict_smtputf8|smtputf8_autodetect_classes",
     "SMTPUTF8 is always offered and never required: UTF-8 domains become A-labels "
     "for SES, and UTF-8 local parts, which SES cannot take, get 553 5.6.7"),
    (r"debug_peer_.*|debugger_command", "Postfix debugging hook; sesrelay logs to stdout"),
    (r"tlsproxy_.*", "there is no tlsproxy(8): the relay ends TLS itself (smtpd_tls_*)"),
    (r"postscreen_.*",
     "there is no postscreen(8): every client comes through the NLB from mynetworks; "
     "the relay's own smtpd limits apply"),
    (r"(bsmtp|error|ifmail|maildrop|mailman|relay|retry|scalemail-backend|uucp|default)_"
     r"(delivery_slot_cost|delivery_slot_discount|delivery_slot_loan|extra_recipient_limit|"
     r"minimum_delivery_slots|recipient_limit|recipient_refill_delay|"
     r"recipient_refill_limit|time_limit)",
     "queue manager scheduling of a delivery transport; the worker sends through SES"),
    (r"address_verify_.*|unverified_(sender|recipient)_.*",
     "there is no address verification (reject_unverified_sender/recipient are refused)"),
    (r"milter_.*",
     "milter settings; milters themselves (smtpd_milters) are refused"),
    (r"multi_instance_.*|postmulti_.*|alternate_config_directories",
     "Postfix multi-instance management; one sesrelay deployment per environment"),
    (r".*_service_name|service_throttle_time|master_service_disable|ipc_.*|"
     r"max_idle|max_use|daemon_timeout|daemon_table_open_error_is_fatal|trigger_timeout|"
     r"fork_attempts|fork_delay|stale_lock_time|deliver_lock_.*|known_tcp_ports|"
     r"postlogd_watchdog_timeout|application_event_drain_time|anvil_.*|"
     r"connection_cache_.*|tcp_windowsize|stress|hash_queue_.*|queue_minfree|"
     r"queue_file_attribute_count_limit|berkeley_db_.*|lmdb_map_size|"
     r"default_database_type|enable_long_queue_ids|duplicate_filter_limit|"
     r"confirm_delay_cleared|helpful_warnings|mail_release_date|openssl_path|"
     r"proxy_read_maps|proxy_write_maps|qmqpd_.*|authorized_(flush|mailq|submit)_users|"
     r"sun_mailtool_compatibility|backwards_bounce_logfile_compatibility|"
     r"dnssec_probe|dns_ncache_ttl_fix_enable|dnsblog_reply_delay|respectful_logging|"
     r"info_log_address_format|smtpd_history_flush_threshold|smtpd_client_port_logging",
     "Postfix daemon, IPC or queue-file plumbing that sesrelay's processes do not have"),
    (r"mynetworks_style",
     "sesrelay never derives trust from interfaces: mynetworks is explicit "
     "(default 127.0.0.0/8 [::1]/128)"),
    (r"in_flow_delay|qmgr_.*|.*_destination_.*|default_process_limit|.*_process_limit|"
     r"initial_destination_concurrency|.*_concurrency_.*|.*_rate_delay",
     "delivery pace is set by ses_max_send_rate and Lambda concurrency"),
    (r"smtpd_tls_CAfile|smtpd_tls_CApath|smtpd_tls_ccert_verifydepth|"
     r"smtpd_tls_fingerprint_digest",
     "client certificates are never requested (smtpd_tls_ask_ccert is not supported)"),
    (r"smtpd_tls_session_cache_.*|smtpd_tls_always_issue_session_ids",
     "there is no TLS session cache; OpenSSL's session tickets apply"),
    (r"smtpd_tls_dh1024_param_file|smtpd_tls_dh512_param_file|smtpd_tls_eecdh_grade",
     "key exchange uses OpenSSL's built-in groups"),
    (r"tls_.*", "Postfix's TLS library settings; sesrelay uses OpenSSL's defaults"),
    (r"smtpd_sasl_type|smtpd_sasl_path|smtpd_sasl_service|cyrus_sasl_config_path",
     "passwords are checked against sesrelay's own user table (sesrelay_sasl_users)"),
    (r"smtpd_sasl_mechanism_filter",
     "sesrelay offers PLAIN and LOGIN only (smtpd_sasl_security_options restricts them)"),
    (r"smtpd_sasl_response_limit", "an AUTH response is limited like a command line"),
    (r"smtpd_sasl_exceptions_networks",
     "AUTH is offered to every client (credentials only ever widen what a client may do)"),
    (r"smtpd_client_new_tls_session_rate_limit|smtpd_client_auth_rate_limit",
     "no anvil rate limits; failed AUTH is limited by sesrelay_auth_failure_limit"),
    (r"bounce_.*|2bounce_.*|delay_.*|notify_classes|.*_notice_recipient|"
     r"double_bounce_sender|bounce_template_file",
     "bounces are sent by the worker (ses_bounce_sender)"),
    (r"fast_flush_.*|smtpd_etrn_.*", "there is no ETRN: the queue is SQS, retried by the worker"),
    (r"compatibility_level|mail_version|inet_protocols_.*", "version compatibility knob"),
)


# Refused: each changes what is delivered, to whom, or how safely, and sesrelay does not
# implement it. Ignoring one would silently downgrade delivery or security.
REFUSED: tuple[tuple[str, str], ...] = (
    # Inbound TLS and SASL settings sesrelay does not implement, and whose silent ignoring
    # would weaken security or change whom the relay trusts.
    (r"smtpd_tls_ask_ccert|smtpd_tls_req_ccert",
     "ignoring it would accept clients without the certificate it asks for (client "
     "certificates are not supported)"),
    (r"smtpd_tls_chain_files|smtpd_tls_eccert_file|smtpd_tls_eckey_file|"
     r"smtpd_tls_dcert_file|smtpd_tls_dkey_file",
     "ignoring it would serve another certificate than the one configured (one chain "
     "only: smtpd_tls_cert_file and smtpd_tls_key_file)"),
    (r"smtpd_sasl_local_domain",
     "ignoring it would match user names other than those the table holds (names are "
     "matched exactly as clients send them)"),
    # Delivery routing and copies.
    (r"transport_maps|relocated_maps|sender_dependent_relayhost_maps|"
     r"sender_dependent_default_transport_maps|smtp_generic_maps|always_bcc|"
     r"sender_bcc_maps|recipient_bcc_maps|virtual_mailbox_domains|virtual_mailbox_maps|"
     r"receive_override_options|always_add_missing_headers",
     "ignoring it would change what is delivered, where or to whom"),
    # Content checks at delivery other than smtp_header_checks.
    (r"smtp_mime_header_checks|smtp_nested_header_checks|smtp_body_checks",
     "ignoring it would send mail to SES without the outbound rewriting it asks for"),
    # Restrictions and filters that only ever reject or divert mail.
    (r"smtpd_client_restrictions|smtpd_helo_restrictions|smtpd_sender_restrictions|"
     r"smtpd_data_restrictions|smtpd_end_of_data_restrictions|body_checks|"
     r"mime_header_checks|nested_header_checks|smtpd_milters|non_smtpd_milters|"
     r"content_filter|smtpd_proxy_filter|smtpd_milter_maps|smtpd_restriction_classes|"
     r"smtpd_reject_unlisted_sender|smtpd_client_connection_rate_limit|"
     r"smtpd_client_message_rate_limit|smtpd_client_recipient_rate_limit|"
     r"permit_mx_backup_networks",
     "ignoring it would let through mail that Postfix rejects: remove it, or express it "
     "with smtpd_relay_restrictions, smtpd_recipient_restrictions or header_checks"),
)
# Values that leave a refused parameter off, so that it may stay in a main.cf.
OFF_VALUES = frozenset({"", "no", "none", "0"})

IMPLEMENTED, IGNORED, REFUSED_CLASS = "implemented", "ignored", "refused"


def reason_refused(name: str) -> str | None:
    """Why setting this Postfix parameter is an error, or None when it is not refused."""
    for pattern, reason in REFUSED:
        if re.fullmatch(pattern, name):
            return reason
    return None


@cache
def postfix_parameter_names() -> frozenset[str]:
    """Every parameter name Postfix 3.7 knows (from postconf -d)."""
    text = resources.files("sesrelay.config").joinpath("postfix_parameters.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


def reason_ignored(name: str) -> str:
    """One line saying why this Postfix parameter has no effect in sesrelay."""
    for pattern, reason in _REASONS:
        if re.fullmatch(pattern, name):
            return reason
    return "no equivalent in sesrelay"


def classify(name: str) -> tuple[str, str]:
    """(implemented | ignored | refused, reason) for a parameter name; implemented ones
    are those of the configuration model (sesrelay.config.parameters)."""
    from sesrelay.config.parameters import PARAMETERS  # parameters imports tables only

    if name in PARAMETERS:
        return IMPLEMENTED, PARAMETERS[name].doc
    refused = reason_refused(name)
    if refused is not None:
        return REFUSED_CLASS, refused
    return IGNORED, reason_ignored(name)


def classification_table() -> str:
    """docs/PARAMETERS.md's counts and table: every Postfix parameter and sesrelay's own,
    with its class and reason (`sesrelay config parameters` prints it)."""
    from sesrelay.config.parameters import PARAMETERS

    names = sorted(postfix_parameter_names() | set(PARAMETERS))
    rows = [(name, *classify(name)) for name in names]
    counts = {kind: sum(1 for _, k, _ in rows if k == kind)
              for kind in (IMPLEMENTED, REFUSED_CLASS, IGNORED)}
    lines = [f"Counts: {counts[IMPLEMENTED]} implemented, {counts[REFUSED_CLASS]} refused, "
             f"{counts[IGNORED]} ignored.", "",
             "| parameter | class | reason or meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {kind} | {reason} |" for name, kind, reason in rows]
    return "\n".join(lines) + "\n"
