"""The X-SES-* headers of SES's SMTP interface: what a message asks of SES, and whether
this environment allows it.

Applications written for SES's SMTP endpoint (or SendRawEmail) name a configuration set,
message tags and sending-authorization identities in headers; SES applies them and
removes them before sending. SES v2's SendEmail takes these as request parameters, so
sesrelay reads the headers once (the relay, to refuse at DATA what the worker could not
send; the worker, to build the request and remove them) with the rules here:

- X-SES-CONFIGURATION-SET: only the environment's ses_configuration_set. Another set
  would send the message's events somewhere the trail never sees (the worker settles
  sends in doubt with them), and the worker's IAM role may use no other set.
- X-SES-MESSAGE-TAGS: ``name=value, name=value``, each of SES's tag characters (letters,
  digits, '_', '-'; at most 255), no name twice, none of the names the environment sets
  itself (ses_email_tags, the queue ID and attempt tags), and at most MAX_TAGS tags in
  all. They are sent with the environment's tags in one EmailTags list: SES would
  otherwise use only the request's tags and drop the header's.
- X-SES-SOURCE-ARN, X-SES-FROM-ARN, X-SES-RETURN-PATH-ARN: only the environment's
  ses_identity_arn. SES v2 has one FromEmailAddressIdentityArn, which overrides these
  headers; the environment, not a client, decides which identity (possibly of another
  account) the relay sends as.

A header that appears twice, is not ASCII, or asks for something else is refused whole:
sending without it would silently drop what the application meant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sesrelay.config import Config
from sesrelay.config.values import EmailTag
from sesrelay.trail import ATTEMPT_TAG, QUEUE_ID_TAG

CONFIGURATION_SET = "x-ses-configuration-set"
MESSAGE_TAGS = "x-ses-message-tags"
SOURCE_ARN = "x-ses-source-arn"
FROM_ARN = "x-ses-from-arn"
RETURN_PATH_ARN = "x-ses-return-path-arn"
IDENTITY_ARNS = (SOURCE_ARN, FROM_ARN, RETURN_PATH_ARN)
NAMES = frozenset({CONFIGURATION_SET, MESSAGE_TAGS, *IDENTITY_ARNS})
# Tags every send carries whatever the message asks (sesrelay.trail).
RESERVED_TAGS = (QUEUE_ID_TAG, ATTEMPT_TAG)
# sesrelay's cap on one send's EmailTags, the environment's and the queue ID and
# attempt tags included; SES's documentation gives a tag's form, not a count.
MAX_TAGS = 50
_TAG_TEXT = re.compile(r"[A-Za-z0-9_-]{1,255}")
_UNFOLD = re.compile(rb"\r?\n(?=[ \t])")
# RFC 3463: 5.7.1 delivery not authorized (an identity or set not allowed here);
# 5.6.0 other media error (a header SES could not read either).
NOT_ALLOWED = "5.7.1"
MALFORMED = "5.6.0"


class SesHeaderError(ValueError):
    """An X-SES-* header this environment cannot apply, with the RFC 3463 status."""

    def __init__(self, header: str, text: str, status: str) -> None:
        super().__init__(f"{header.upper()} header: {text}")
        self.status = status


@dataclass(frozen=True)
class SesRequest:
    """What a message's X-SES-* headers ask of SES beyond what every send of this
    environment has: its own tags, in header order. (A configuration set or identity
    ARN a header may name is the environment's own, which every send uses.)"""

    tags: tuple[EmailTag, ...] = ()


NO_REQUEST = SesRequest()


def field_name(field: bytes) -> str:
    """The lower-case name of a header field ('Name: value...'), or '' if it has none."""
    name, colon, _ = field.partition(b":")
    return name.strip().decode("latin-1").lower() if colon else ""


def is_ses_header(field: bytes) -> bool:
    """True if the header field is one of the X-SES-* headers applied here."""
    return field_name(field) in NAMES


def requested(fields: Iterable[bytes], config: Config) -> SesRequest:
    """The SesRequest of a message's X-SES-* header fields (whole fields, each with its
    continuation lines; other fields are ignored). Raises SesHeaderError for a header
    the environment cannot apply."""
    values: dict[str, str] = {}
    for field in fields:
        name = field_name(field)
        if name not in NAMES:
            continue
        if name in values:
            raise SesHeaderError(name, "appears more than once", MALFORMED)
        values[name] = _value(name, field)
    if CONFIGURATION_SET in values:
        _check_configuration_set(values[CONFIGURATION_SET], config)
    for name in IDENTITY_ARNS:
        if name in values:
            _check_identity(name, values[name], config)
    if MESSAGE_TAGS in values:
        return SesRequest(_tags(values[MESSAGE_TAGS], config))
    return NO_REQUEST


def _value(name: str, field: bytes) -> str:
    raw = _UNFOLD.sub(b"", field.partition(b":")[2]).strip()
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise SesHeaderError(name, "not ASCII", MALFORMED) from None


def _check_configuration_set(value: str, config: Config) -> None:
    allowed = config.ses_configuration_set
    if not allowed:
        raise SesHeaderError(CONFIGURATION_SET, f"configuration set {_shown(value)} not allowed: "
                             "this relay sends without one (ses_configuration_set is "
                             "empty)", NOT_ALLOWED)
    if value != allowed:
        raise SesHeaderError(CONFIGURATION_SET, f"configuration set {_shown(value)} not allowed: "
                             f"this relay sends with {allowed!r} only", NOT_ALLOWED)


def _tags(value: str, config: Config) -> tuple[EmailTag, ...]:
    own = {tag.name for tag in config.ses_email_tags} | set(RESERVED_TAGS)
    tags: list[EmailTag] = []
    for item in (part.strip() for part in value.split(",")):
        name, equals, tag_value = item.partition("=")
        name, tag_value = name.strip(), tag_value.strip()
        if not equals or not _TAG_TEXT.fullmatch(name) or not _TAG_TEXT.fullmatch(tag_value):
            raise SesHeaderError(MESSAGE_TAGS, f"bad tag {_shown(item)}: expected name=value "
                                 "of letters, digits, '_' and '-' (at most 255 each)",
                                 MALFORMED)
        if name in own:
            raise SesHeaderError(MESSAGE_TAGS, f"tag {name!r} is set by the relay itself",
                                 NOT_ALLOWED)
        if any(tag.name == name for tag in tags):
            raise SesHeaderError(MESSAGE_TAGS, f"tag {name!r} appears twice", MALFORMED)
        tags.append(EmailTag(name, tag_value))
    room = MAX_TAGS - len(config.ses_email_tags) - len(RESERVED_TAGS)
    if len(tags) > room:
        raise SesHeaderError(MESSAGE_TAGS, f"{len(tags)} tags: at most {room} here "
                             f"({MAX_TAGS} in all, with the relay's own)", NOT_ALLOWED)
    return tuple(tags)


def _check_identity(name: str, value: str, config: Config) -> None:
    allowed = config.ses_identity_arn
    if not allowed:
        raise SesHeaderError(name, f"identity {_shown(value)} not allowed: this relay sends as "
                             "its own identities (ses_identity_arn is empty)", NOT_ALLOWED)
    if value != allowed:
        raise SesHeaderError(name, f"identity {_shown(value)} not allowed: this relay sends "
                             f"as {allowed!r} only", NOT_ALLOWED)


def _shown(text: str) -> str:
    """A client's value as quoted in a reply or log line: printable (repr), and short."""
    return repr(text[:80])
