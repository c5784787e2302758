"""curl as an SMTP client (issue 23: what real clients send): it uploads a file written on
Unix as it is, lines ending in a bare LF, and ends DATA with CRLF.CRLF. Through
`sesrelay dev`, SES gets the message with CRLF line ends and the same content."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import DevRelay


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_uploads_a_unix_file(dev_relay: DevRelay, tmp_path: Path) -> None:
    subject = f"curl {uuid.uuid4().hex}"
    # No line starts with a dot: curl stuffs dots only after CRLF, so without --crlf a
    # leading dot after a bare LF is taken as stuffing and removed, here as by Postfix.
    body = "line one\n\n\tindented\nlast line\n"
    message = tmp_path / "message.txt"
    message.write_text(f"From: app@example.com\nTo: someone@example.org\n"
                       f"Subject: {subject}\n\n{body}")
    result = subprocess.run(
        ["curl", "--silent", "--show-error", f"smtp://127.0.0.1:{dev_relay.smtp_port}",
         "--mail-from", "app@example.com", "--mail-rcpt", "someone@example.org",
         "--upload-file", str(message)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

    sends = dev_relay.wait_for_outbox(
        lambda sends: any(f"Subject: {subject}" in s["raw"] for s in sends))
    [raw] = [s["raw"] for s in sends if f"Subject: {subject}" in s["raw"]]
    assert "\n" not in raw.replace("\r\n", "")  # no bare LF left
    # curl ends the upload with CRLF.CRLF after the file's last LF: one empty line more.
    assert raw.split("\r\n\r\n", 1)[1] == body.replace("\n", "\r\n") + "\r\n"
