"""`sesrelay outbox`: what the embedded SES emulation has sent."""

from __future__ import annotations

import json
import urllib.request
from email.parser import BytesHeaderParser
from typing import Any


def read_outbox(endpoint: str, timeout: float = 10) -> list[dict[str, Any]]:
    """Messages the emulated SES accepted, oldest first: message_id, mail_from, rcpt_to,
    configuration_set, tags (SES's EmailTags: Name, Value) and raw (8-bit octets that
    are not UTF-8 as surrogate escapes, sesrelay.dev_ses)."""
    with urllib.request.urlopen(f"{endpoint.rstrip('/')}/moto-api/data.json",
                                timeout=timeout) as response:
        data = json.load(response)
    sent = (data.get("ses") or {}).get("RawMessage", [])
    return [{"message_id": m["id"], "mail_from": m["source"],
             "rcpt_to": m["destinations"],
             "configuration_set": m.get("configuration_set", ""),
             "tags": m.get("tags", []),
             "raw": m["raw_data"]} for m in sent]


def format_outbox(messages: list[dict[str, Any]]) -> str:
    """One line per message: SES message ID, sender, recipients and subject."""
    if not messages:
        return "(the outbox is empty)"
    lines = []
    parser = BytesHeaderParser()
    for m in messages:
        subject = parser.parsebytes(m["raw"].encode("utf-8", "surrogateescape"))["Subject"]
        rcpts = ", ".join(m["rcpt_to"][:3]) + (f" (+{len(m['rcpt_to']) - 3})"
                                                if len(m["rcpt_to"]) > 3 else "")
        lines.append(f"{m['message_id'][:24]}  from=<{m['mail_from']}>  to={rcpts}  "
                     f"subject={subject or '(none)'}")
    return "\n".join(lines)
