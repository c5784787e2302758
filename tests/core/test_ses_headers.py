"""The X-SES-* headers of SES's SMTP interface: what each asks, and what this
environment allows (sesrelay.ses_headers)."""

from __future__ import annotations

import pytest

from sesrelay.config import load_config
from sesrelay.config.values import EmailTag
from sesrelay.ses_headers import NO_REQUEST, SesHeaderError, requested

ARN = "arn:aws:ses:us-east-1:123456789012:identity/example.com"
CONFIG = load_config(environ={}, overrides={
    "ses_configuration_set": "outbound", "ses_identity_arn": ARN,
    "ses_email_tags": "env=prod"})


def fields(*lines: str) -> list[bytes]:
    return [f"{line}\r\n".encode() for line in lines]


def refusal(*lines: str, config=CONFIG) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(SesHeaderError) as caught:
        requested(fields(*lines), config)
    return caught.value.status, str(caught.value)


def test_the_environments_own_values_are_accepted_and_tags_parsed() -> None:
    request = requested(fields(
        "Subject: hello",
        "x-ses-configuration-set: outbound",
        "X-SES-MESSAGE-TAGS: campaign=spring-2026,\r\n team=web_1",
        f"X-SES-SOURCE-ARN: {ARN}", f"X-SES-FROM-ARN: {ARN}",
        f"X-SES-RETURN-PATH-ARN: {ARN}"), CONFIG)
    assert request.tags == (EmailTag("campaign", "spring-2026"), EmailTag("team", "web_1"))
    assert requested(fields("Subject: none"), CONFIG) is NO_REQUEST


def test_another_configuration_set_is_refused() -> None:
    assert refusal("X-SES-CONFIGURATION-SET: marketing") == (
        "5.7.1", "X-SES-CONFIGURATION-SET header: configuration set 'marketing' not "
        "allowed: this relay sends with 'outbound' only")
    without = load_config(environ={}, overrides={})
    status, text = refusal("X-SES-CONFIGURATION-SET: outbound", config=without)
    assert status == "5.7.1" and "ses_configuration_set is empty" in text


def test_another_identity_is_refused() -> None:
    other = "arn:aws:ses:us-east-1:999999999999:identity/other.example"
    for header in ("X-SES-SOURCE-ARN", "X-SES-FROM-ARN", "X-SES-RETURN-PATH-ARN"):
        status, text = refusal(f"{header}: {other}")
        assert status == "5.7.1" and text.startswith(f"{header} header: identity ")
    status, text = refusal(f"X-SES-FROM-ARN: {ARN}",
                           config=load_config(environ={}, overrides={}))
    assert "ses_identity_arn is empty" in text


@pytest.mark.parametrize(("value", "status", "says"), [
    ("campaign", "5.6.0", "bad tag 'campaign'"),
    ("campaign=spring sale", "5.6.0", "bad tag"),
    ("a=b, a=c", "5.6.0", "tag 'a' appears twice"),
    ("env=test", "5.7.1", "tag 'env' is set by the relay itself"),
    ("sesrelay-queue-id=X", "5.7.1", "tag 'sesrelay-queue-id' is set by the relay itself"),
    (", ".join(f"t{i}=v" for i in range(48)), "5.7.1", "48 tags: at most 47 here"),
])
def test_bad_tags_are_refused(value: str, status: str, says: str) -> None:
    got_status, text = refusal(f"X-SES-MESSAGE-TAGS: {value}")
    assert got_status == status and says in text


def test_a_repeated_or_non_ascii_header_is_refused() -> None:
    assert refusal("X-SES-MESSAGE-TAGS: a=b", "X-Ses-Message-Tags: c=d")[0] == "5.6.0"
    with pytest.raises(SesHeaderError, match="not ASCII"):
        requested(["X-SES-MESSAGE-TAGS: caf\xe9=1\r\n".encode("latin-1")], CONFIG)
