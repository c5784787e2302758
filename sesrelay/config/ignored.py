"""Why a Postfix parameter that sesrelay does not use is ignored, in one line."""

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
    (r"relayhost|smtp_.*|lmtp_.*|default_transport|relay_transport|transport_maps|"
     r"sender_dependent_.*|fallback_relay|fallback_transport|smtp_fallback_relay",
     "outbound delivery is SES's SendEmail API, not an SMTP client"),
    (r"local_.*|alias_.*|mailbox_.*|home_mailbox|luser_relay|forward_path|"
     r"allow_mail_to_.*|mail_spool_directory|unknown_local_recipient_reject_code|"
     r"biff|propagate_unmatched_extensions|prepend_delivered_header|command_.*",
     "there is no local delivery"),
    (r"virtual_.*", "there are no virtual mailboxes; use relay_domains"),
    (r"debug_peer_.*|debugger_command", "Postfix debugging hook; sesrelay logs to stdout"),
    (r"mynetworks_style",
     "sesrelay never derives trust from interfaces: mynetworks is explicit "
     "(default 127.0.0.0/8 [::1]/128)"),
    (r"proxy_interfaces", "the NLB forwards the client address with PROXY protocol"),
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
