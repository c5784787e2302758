"""`sesrelay dev`'s SES: moto's SES v2 SendEmail, made to take what SES takes and to
remember what the outbox shows.

moto decodes raw content as UTF-8 and fails on any other octet, while SES sends 8-bit
content (a Latin-1 body under 8BITMIME) as it is; and moto keeps neither the
configuration set nor the EmailTags of a send. The handler installed here keeps the raw
octets (undecodable ones as surrogate escapes, so the text round-trips to the same
bytes with ``encode("utf-8", "surrogateescape")``) and records both on the stored
message, where ``sesrelay outbox`` finds them. Dev only: installed by ``install`` in the
process that runs the emulation.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any


def raw_text(data: bytes) -> str:
    """Raw message octets as moto stores them: UTF-8 where they are, surrogate escapes
    for the other octets (8-bit content in another charset)."""
    return data.decode("utf-8", "surrogateescape")


def _send_raw(response: Any, params: dict[str, Any]) -> str:
    """SendEmail with Content.Raw, as moto's handler does, but 8-bit clean, recording
    the configuration set and the tags on the message."""
    destination = params.get("Destination") or {}
    recipients = [address for kind in ("ToAddresses", "CcAddresses", "BccAddresses")
                  for address in destination.get(kind) or ()]
    message = response.sesv2_backend.send_raw_email(
        source=params.get("FromEmailAddress"), destinations=recipients,
        raw_data=raw_text(base64.b64decode(params["Content"]["Raw"]["Data"])))
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
