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
     r"biff|prepend_delivered_header|command_.*|"
     r"expand_owner_alias|reset_owner_alias|require_home_directory|strict_mailbox_ownership|"
     r"frozen_delivered_to|forward_expansion_filter|execution_directory_expansion_filter|"
     r"empty_address_recipient|empty_address_local_login_sender_maps_lookup_key|"
     r"header_from_format|sendmail_fix_line_endings",
     "there is no local delivery"),
    (r"virtual_.*|unknown_virtual_mailbox_reject_code",
     "there is no virtual mailbox delivery (virtual(8))"),
    (r"smtputf8_enable|strict_smtputf8|smtputf8_autodetect_classes",
     "SMTPUTF8 is always offered and never required: UTF-8 domains become A-labels "
     "for SES, and UTF-8 local parts, which SES cannot take, get 553 5.6.7"),
    (r"debug_peer_.*|debugger_command|fault_injection_code|dont_remove",
     "Postfix debugging hook; sesrelay logs to stdout"),
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
     r"info_log_address_format|smtpd_history_flush_threshold|smtpd_client_port_logging|"
     r"service_name|smtpd_delay_open_until_valid_rcpt",
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
     r"double_bounce_sender|bounce_template_file|enable_threaded_bounces",
     "bounces are sent by the worker (ses_bounce_sender)"),
    (r"fast_flush_.*|smtpd_etrn_.*", "there is no ETRN: the queue is SQS, retried by the worker"),
    (r"access_map_(defer|reject)_code|smtpd_null_access_lookup_key|"
     r"smtpd_log_access_permit_actions|default_rbl_reply|rbl_reply_maps|maps_rbl_domains|"
     r"maps_rbl_reject_code|smtpd_expansion_filter|smtpd_dns_reply_filter|"
     r"smtpd_policy_service_.*|relay_clientcerts|invalid_hostname_reject_code|"
     r"multi_recipient_bounce_reject_code|non_fqdn_reject_code|plaintext_reject_code|"
     r"unknown_(address|client|hostname)_reject_code|"
     r"unknown_(address|helo_hostname)_tempfail_action|reject_tempfail_action",
     "tunes restrictions sesrelay does not have (check_*_access, RBLs, policy services, "
     "permit_tls_clientcerts, reject_unknown_*, reject_non_fqdn_*...), which the "
     "restriction lists refuse; those it has look up local tables only and never fail "
     "temporarily"),
    (r"smtpd_authorized_(verp_clients|xclient_hosts|xforward_hosts)|default_verp_delimiters|"
     r"disable_verp_bounces|verp_delimiter_filter",
     "XCLIENT, XFORWARD and XVERP are not offered to any client: stricter than Postfix "
     "either way"),
    (r"smtpd_proxy_(ehlo|options|timeout)",
     "there is no before-queue proxy filter (smtpd_proxy_filter is refused)"),
    (r"body_checks_size_limit|mime_boundary_length_limit|mime_nesting_limit|"
     r"header_address_token_limit|detect_8bit_encoding_header|"
     r"disable_mime_input_processing|disable_mime_output_conversion",
     "the feature it tunes does not exist here: sesrelay neither parses nor converts MIME "
     "nor rewrites header addresses (body_checks, mime_header_checks and "
     "nested_header_checks are refused); the body goes to SES as received"),
    (r"best_mx_transport|ignore_mx_lookup_error|disable_dns_lookups|defer_transports|"
     r"fallback_transport_maps|default_filter_nexthop|transport_retry_time|"
     r"queue_run_delay|(default|pipe)_delivery_status_filter|internal_mail_filter_classes|"
     r"empty_address_(default_transport|relayhost)_maps_lookup_key|send_cyrus_sasl_authzid",
     "tunes Postfix's queue manager or delivery agents: the queue is SQS, retried after "
     "minimal_backoff_time/maximal_backoff_time, and every message goes to SES's API "
     "(content_filter, transport_maps and sender_dependent_relayhost_maps are refused)"),
    (r"allow_untrusted_routing",
     "sesrelay behaves as the default (no): a recipient with sender-specified routing "
     "(user%host@, user!host@, \"user@host\"@) is never an authorized destination; "
     "stricter than Postfix with yes"),
    (r"allow_min_user",
     "what it guards against (an address taken for a command-line option by a local "
     "delivery program) cannot happen: addresses go only to SES's API"),
    (r"resolve_dequoted_address|resolve_null_domain|resolve_numeric_domain",
     "Postfix's address resolver (trivial-rewrite) routes mail; sesrelay routes nothing "
     "itself (every recipient goes to SES, which refuses malformed domains); % and ! in a "
     "local part before @ count as sender-specified routing for the relay rule"),
    (r"cleanup_replace_stray_cr_lf",
     "it prevents outbound SMTP smuggling by Postfix's SMTP client; sesrelay has none "
     "(SES's API delivers), a bare <LF> in DATA is taken as <CR><LF> "
     "(smtpd_forbid_bare_newline) and a bare <CR> in a header refuses the message"),
    (r"enable_original_recipient",
     "sesrelay behaves as the default (yes): the original recipient of a rewritten address "
     "is kept for DSNs and the log"),
    (r"smtpd_reject_unlisted_recipient",
     "sesrelay behaves as the default (yes): unknown recipients in relay_recipient_maps "
     "and virtual_alias_domains get 550 at RCPT; with no, Postfix accepts them only to "
     "bounce them"),
    (r"disable_vrfy_command",
     "VRFY is always refused here (502 5.5.1, as with yes): stricter than Postfix's default"),
    (r"line_length_limit",
     "sesrelay behaves as the default (2048): command lines are cut at 2048 octets; "
     "message lines of any length are kept whole and folded only in headers over 998"),
    (r"smtpd_peername_lookup",
     "sesrelay does no reverse DNS: client names are unknown (as with no), and no "
     "restriction it has uses them"),
    (r"smtpd_recipient_overshoot_limit",
     "changes error counting only: each recipient over smtpd_recipient_limit gets 452 "
     "either way"),
    (r"smtpd_reject_footer|smtpd_reject_footer_maps",
     "adds text to reject replies only; reply codes and decisions are unchanged"),
    (r"smtpd_min_data_rate",
     "it applies only with smtpd_per_request_deadline = yes, which is refused"),
    (r"show_user_unknown_table_name",
     "reply text only: sesrelay names the table as with the default (yes)"),
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
    # SMTP session rules stricter than sesrelay's.
    (r"smtpd_forbid_unauth_pipelining|smtpd_per_request_deadline|strict_rfc821_envelopes|"
     r"smtpd_forbidden_commands|smtpd_discard_ehlo_keywords|"
     r"smtpd_discard_ehlo_keyword_address_maps|smtpd_command_filter|smtpd_noop_commands",
     "ignoring it would speak SMTP otherwise than Postfix: accept or answer what Postfix "
     "refuses, rewrites or hides (sesrelay does its default)"),
    # Content checks and edits at receipt.
    (r"message_reject_characters|message_strip_characters|strict_7bit_headers|"
     r"strict_8bitmime|strict_8bitmime_body|strict_mime_encoding_domain|"
     r"undisclosed_recipients_header",
     "ignoring it would deliver a message that Postfix rejects or changes"),
    # Address matching and resolution, and reply codes, that sesrelay does as the default.
    (r"parent_domain_matches_subdomains|owner_request_special|enable_idna2003_compatibility|"
     r"smtpd_relay_before_recipient_restrictions|reject_code|defer_code",
     "ignoring another value would match, resolve or answer addresses otherwise than "
     "Postfix (sesrelay does its default)"),
)
# Values that leave a refused parameter off, so that it may stay in a main.cf.
OFF_VALUES = frozenset({"", "no", "none", "0"})
# Refused parameters whose Postfix default (as postconf -d prints it, or the default of
# Postfix < 3.7 where noted) is what sesrelay does: a main.cf copied from postconf -n or
# -d may hold it. Compared without case, with commas and spaces alike.
DEFAULT_VALUES: dict[str, frozenset[str]] = {
    "smtpd_forbidden_commands": frozenset({
        "connect get post regexp:{{/^[^a-z]/ bogus}}",
        "connect get post"}),  # < 3.7; sesrelay hangs up on the 3.7 list, stricter
    "smtpd_per_request_deadline": frozenset({
        "${smtpd_per_record_deadline?{$smtpd_per_record_deadline}:{${stress?{yes}:{no}}}}"}),
    "parent_domain_matches_subdomains": frozenset({
        "debug_peer_list fast_flush_domains mynetworks permit_mx_backup_networks "
        "qmqpd_authorized_clients relay_domains smtpd_access_maps"}),
    "owner_request_special": frozenset({"yes"}),
    "smtpd_relay_before_recipient_restrictions": frozenset({
        "yes", "${{$compatibility_level} <level {3.6} ? {no} : {yes}}"}),
    "reject_code": frozenset({"554"}),
    "defer_code": frozenset({"450"}),
}

IMPLEMENTED, IGNORED, REFUSED_CLASS = "implemented", "ignored", "refused"


def reason_refused(name: str) -> str | None:
    """Why setting this Postfix parameter is an error, or None when it is not refused."""
    for pattern, reason in REFUSED:
        if re.fullmatch(pattern, name):
            return reason
    return None


def refused_setting(name: str, value: str) -> str | None:
    """Why setting this Postfix parameter to value is an error, or None: not refused, off
    (OFF_VALUES), or its Postfix default where that is what sesrelay does."""
    refused = reason_refused(name)
    normalized = " ".join(value.lower().replace(",", " ").split())
    if (refused is None or normalized in OFF_VALUES
            or normalized in DEFAULT_VALUES.get(name, ())):
        return None
    return refused


@cache
def postfix_parameter_names() -> frozenset[str]:
    """Every parameter name Postfix 3.7 knows (from postconf -d)."""
    text = resources.files("sesrelay.config").joinpath("postfix_parameters.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


def reason_ignored(name: str) -> str:
    """One line saying why this Postfix parameter has no effect in sesrelay."""
    if reason_refused(name) is not None:  # set to what refused_setting lets through
        return "off, or Postfix's default, which is what sesrelay does"
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
