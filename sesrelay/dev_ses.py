"""`sesrelay dev`'s SES: moto's SES v2 SendEmail, made to take what SES takes and to
remember what the outbox shows.

moto decodes raw content as UTF-8 and fails on any other octet, while SES sends 8-bit
content (a Latin-1 body under 8BITMIME) as it is; moto also adds the addresses of the
message's To:, Cc: and Bcc: headers to the recipients (and fails with a 500 on a header
address with a UTF-8 domain), while SES v2 sends a raw message to its Destination only;
and moto keeps neither the configuration set nor the EmailTags of a send. The handler
installed here keeps the raw octets (undecodable ones as surrogate escapes, so the text
round-trips to the same bytes with ``encode("utf-8", "surrogateescape")``), sends to the
Destination only, and records the configuration set and the tags on the stored message,
where ``sesrelay outbox`` finds them. Dev only: installed by ``install`` in the process
that runs the emulation.
"""

from __future__ import annotations

import base64
import email
import json
from collections.abc import Callable
from email.utils import parseaddr
from typing import Any


def raw_text(data: bytes) -> str:
    """Raw message octets as moto stores them: UTF-8 where they are, surrogate escapes
    for the other octets (8-bit content in another charset)."""
    return data.decode("utf-8", "surrogateescape")


def _send_raw(response: Any, params: dict[str, Any]) -> str:
    """SendEmail with Content.Raw as SES does it: the sender must be a verified identity,
    the recipients are the Destination's, the octets are kept as they are; the
    configuration set and the tags are recorded on the stored message."""
    from moto.ses.exceptions import MessageRejectedError
    from moto.ses.models import RECIPIENT_LIMIT, RawMessage
    from moto.ses.utils import get_random_message_id

    backend = response.sesv2_backend.core_backend
    destination = params.get("Destination") or {}
    recipients = [address for kind in ("ToAddresses", "CcAddresses", "BccAddresses")
                  for address in destination.get(kind) or ()]
    raw = raw_text(base64.b64decode(params["Content"]["Raw"]["Data"]))
    source = params.get("FromEmailAddress") or parseaddr(
        email.message_from_string(raw).get("From", ""))[1]
    if not source:
        raise MessageRejectedError("Source not specified")
    if not backend._is_verified_address(parseaddr(source)[1]):
        raise MessageRejectedError(f"Did not have authority to send from email {source}")
    if not recipients or len(recipients) > RECIPIENT_LIMIT:
        raise MessageRejectedError("Too many recipients." if recipients
                                   else "No recipients")
    backend.__process_sns_feedback__(source, recipients)
    backend.sent_message_count += len(recipients)
    message = RawMessage(get_random_message_id(), source, recipients, raw)
    backend.sent_messages.append(message)
    # Public attributes of a stored message appear in moto-api's data.json.
    message.configuration_set = params.get("ConfigurationSetName") or ""
    message.tags = [{"Name": t["Name"], "Value": t["Value"]}
                    for t in params.get("EmailTags") or ()]
    return json.dumps({"MessageId": message.id})


def handler(original: Callable[[Any], str]) -> Callable[[Any], str]:
    """moto's SES v2 SendEmail handler (original) made 8-bit clean: raw content goes to
    _send_raw, the other kinds of content to original."""
    def send_email(self: Any) -> str:
        params = json.loads(self.body)
        if "Raw" in (params.get("Content") or {}):
            return _send_raw(self, params)
        return original(self)
    return send_email


def install() -> None:
    """Replace moto's SES v2 SendEmail handler in this process."""
    from moto.sesv2.responses import SESV2Response

    SESV2Response.send_email = handler(SESV2Response.send_email)  # type: ignore[method-assign]
