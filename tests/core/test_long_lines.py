"""Making every line fit SES's limit without changing what the reader sees
(sesrelay.long_lines), checked against Python's own MIME parser as the reader."""

from __future__ import annotations

import base64
import email
from email.message import Message
from email.policy import compat32

from hypothesis import given, settings
from hypothesis import strategies as st

from sesrelay.long_lines import MAX_LINE, fit_lines, lines_fit, signed_with_long_lines

LONG = b"<p>" + b"x" * 2500 + b" =3D \xc3\xa9 tab\there. " + b"y" * 8000 + b"</p>"


def leaves(raw: bytes) -> list[tuple[str, bytes]]:
    """Each leaf part's type and decoded content, as a mail reader gets them."""
    message = email.message_from_bytes(raw, policy=compat32)
    return [(part.get_content_type(), part.get_payload(decode=True))
            for part in message.walk() if not part.is_multipart()]


def longest(raw: bytes) -> int:
    return max(len(line.rstrip(b"\r\n")) for line in raw.splitlines(keepends=True))


def assert_fits_and_reads_the_same(raw: bytes) -> bytes:
    fitted = fit_lines(raw)
    assert longest(fitted) <= MAX_LINE
    assert leaves(fitted) == leaves(raw)
    return fitted


def mixed(*parts: bytes, kind: bytes = b"multipart/mixed", tail: bytes = b"--BB--\r\n"
          ) -> bytes:
    return (b"From: app@example.com\r\nMIME-Version: 1.0\r\nContent-Type: " + kind
            + b'; boundary="BB"\r\n\r\npreamble\r\n'
            + b"".join(b"--BB\r\n" + part + b"\r\n" for part in parts) + tail)


def test_a_message_whose_lines_fit_is_returned_as_is() -> None:
    raw = b"Subject: short\r\n\r\n" + (b"z" * MAX_LINE + b"\r\n") * 3
    assert fit_lines(raw) is raw


def test_a_plain_message_becomes_quoted_printable_and_mime() -> None:
    raw = b"From: app@example.com\r\nSubject: long\r\n\r\nfirst\r\n" + LONG + b"\r\nend \r\n"
    fitted = assert_fits_and_reads_the_same(raw)
    head = fitted.split(b"\r\n\r\n")[0]
    assert head.endswith(b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable")
    assert head.startswith(b"From: app@example.com\r\nSubject: long\r\n")


def test_only_the_part_with_a_long_line_is_reencoded() -> None:
    short = b"Content-Type: text/plain\r\n\r\nshort line"
    html = b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    raw = mixed(short, html + LONG)
    fitted = assert_fits_and_reads_the_same(raw)
    assert b"--BB\r\n" + short + b"\r\n--BB\r\n" in fitted
    assert b"Content-Transfer-Encoding: 8bit" not in fitted
    assert fitted.count(b"Content-Transfer-Encoding: quoted-printable") == 1
    assert fitted.endswith(b"--BB--\r\n")


def test_base64_with_long_lines_and_binary_parts_become_base64() -> None:
    data = bytes(range(256)) * 40
    one_line_b64 = base64.b64encode(data)
    attachment = (b"Content-Type: application/octet-stream\r\n"
                  b"Content-Transfer-Encoding: base64\r\n\r\n" + one_line_b64)
    binary = b"Content-Type: application/json\r\n\r\n" + b'{"k": "' + b"v" * 3000 + b'"}'
    fitted = assert_fits_and_reads_the_same(mixed(attachment, binary))
    assert fitted.count(b"Content-Transfer-Encoding: base64") == 2


def test_an_attached_message_is_fitted_inside() -> None:
    inner = b"Subject: inner\r\n\r\n" + LONG + b"\r\n"
    raw = mixed(b"Content-Type: message/rfc822\r\n\r\n" + inner)
    fitted = assert_fits_and_reads_the_same(raw)
    attached = email.message_from_bytes(fitted, policy=compat32).get_payload()[0]
    assert attached.get_payload()[0]["Content-Transfer-Encoding"] == "quoted-printable"


def test_multipart_signed_is_never_touched_and_is_detected() -> None:
    signed = mixed(b"Content-Type: text/plain\r\n\r\n" + LONG,
                   b"Content-Type: application/pgp-signature\r\n\r\nsig",
                   kind=b'multipart/signed; protocol="application/pgp-signature"')
    assert signed_with_long_lines(signed)
    assert fit_lines(signed) == signed
    outer = mixed(b"Content-Type: text/plain\r\n\r\n" + LONG,
                  signed.replace(b"BB", b"SS").split(b"\r\n", 1)[1])
    assert signed_with_long_lines(outer)
    fitted = fit_lines(outer)
    assert signed.replace(b"BB", b"SS").split(b"\r\n\r\n", 1)[1] in fitted  # inside: as is
    unsigned = mixed(b"Content-Type: text/plain\r\n\r\n" + LONG)
    assert not signed_with_long_lines(unsigned)
    short_signed = signed.replace(LONG, b"short")
    assert not signed_with_long_lines(short_signed)


def test_a_missing_close_delimiter_and_a_long_preamble() -> None:
    raw = mixed(b"Content-Type: text/plain\r\n\r\n" + LONG, tail=b"")
    raw = raw.replace(b"preamble", b"p" * 3000)
    fitted = assert_fits_and_reads_the_same(raw)
    assert longest(fitted) <= MAX_LINE


def test_long_header_lines_fold_at_whitespace_or_break_as_postfix() -> None:
    words = " ".join(f"word{n}" for n in range(600))
    raw = (b"Subject: " + words.encode() + b"\r\nX-Token: " + b"t" * 2500
           + b"\r\nFrom: app@example.com\r\n\r\nbody\r\n")
    fitted = fit_lines(raw)
    assert longest(fitted) <= MAX_LINE
    message: Message = email.message_from_bytes(fitted, policy=compat32)
    # Folding at whitespace: unfolded, the header is what was sent.
    assert message["Subject"].replace("\r\n", "") == words
    # No whitespace to fold at: broken with <CR><LF><SPACE>, as Postfix does.
    assert message["X-Token"].replace("\r\n ", "") == "t" * 2500
    assert fitted.endswith(b"From: app@example.com\r\n\r\nbody\r\n")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=3000),
                          st.integers(1000, 5000).map(lambda n: b"q" * n)), min_size=1,
                max_size=6),
       st.sampled_from([b"text/plain", b"text/html", b"application/octet-stream"]))
def test_any_content_decodes_to_the_same_octets(lines: list[bytes], kind: bytes) -> None:
    content = b"\r\n".join(lines)
    raw = (b"Subject: property\r\nMIME-Version: 1.0\r\nContent-Type: " + kind
           + b"\r\nContent-Transfer-Encoding: binary\r\n\r\n" + content)
    fitted = fit_lines(raw)
    assert lines_fit(fitted)
    [(_, decoded)] = leaves(fitted)
    assert decoded == content
