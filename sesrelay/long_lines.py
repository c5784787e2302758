"""Lines longer than SMTP allows, made to fit without changing what the reader sees.

Postfix accepts body lines of any length (line_length_limit is only the size of the
pieces it reads them in) and, when it relays, breaks each line longer than
smtp_line_length_limit (998) by inserting <CR><LF><SPACE>, which changes the content.
SES refuses any raw message with a line over 1,000 characters. So the worker makes every
line fit just before SendEmail, and keeps the content:

- a MIME leaf part with a long line is re-encoded: text parts as quoted-printable, others
  as base64. Decoded, it is byte for byte what the client sent;
- a header line longer than 998 octets is folded before the whitespace nearest the limit
  (RFC 5322 folding: unfolded, the header is unchanged); only a run of 998 octets
  without whitespace is broken as Postfix breaks it, with <CR><LF><SPACE>;
- the inside of multipart/signed is never touched: re-encoding it would break its
  signature. The relay refuses such a message at DATA (``signed_with_long_lines``).

Only messages that need it are changed; any re-encoding breaks a DKIM signature made
over the body before the relay (SES signs again for domains with Easy DKIM).
"""

from __future__ import annotations

import base64
import binascii
import re
from email.parser import BytesHeaderParser
from email.policy import compat32

# RFC 5321 4.5.3.1.6: 1,000 octets per line with its <CR><LF>.
MAX_LINE = 998
# Wider than any header this module adds: a MIME structure deeper than this is left as is.
_MAX_DEPTH = 50
_CTE = re.compile(rb"^content-transfer-encoding[ \t]*:", re.IGNORECASE)
_MIME_VERSION = re.compile(rb"^mime-version[ \t]*:", re.IGNORECASE | re.MULTILINE)
_IDENTITY = {"", "7bit", "8bit", "binary"}


def lines_fit(data: bytes | bytearray, limit: int = MAX_LINE) -> bool:
    """True when no line of data has more than limit octets before its line end. A few
    C searches per kilobyte: each step jumps to the last LF within reach."""
    start, size = 0, len(data)
    while size - start > limit + 2:
        end = data.rfind(b"\n", start, start + limit + 2)
        if end < 0:
            return False
        start = end + 1
    return True


def fit_lines(message: bytes) -> bytes:
    """The message with every line at most 998 octets, its content unchanged (see the
    module's docstring); the same object when every line already fits."""
    if lines_fit(message):
        return message
    return _fit_entity(message, top=True, depth=0)


def signed_with_long_lines(message: bytes | bytearray) -> bool:
    """True when a multipart/signed entity of the message has a line longer than 998
    octets: it cannot be relayed through SES without breaking its signature."""
    if lines_fit(message):
        return False
    return _signed_long(bytes(message), depth=0)


# --- the MIME walk -----------------------------------------------------------------------


def _split_entity(entity: bytes) -> tuple[bytes, bytes, bytes]:
    """Header section (with its last line end), the empty separator line, and the body."""
    if entity.startswith((b"\r\n", b"\n")):
        return b"", entity[:entity.index(b"\n") + 1], entity[entity.index(b"\n") + 1:]
    found = re.search(rb"\r?\n(\r?\n)", entity)
    if found is None:
        return entity, b"", b""
    return entity[:found.start(1)], found.group(1), entity[found.end(1):]


def _content_type(header: bytes) -> tuple[str, str | None, str]:
    """The entity's media type (lower case), multipart boundary, and transfer encoding."""
    parsed = BytesHeaderParser(policy=compat32).parsebytes(header + b"\r\n")
    boundary = parsed.get_boundary()
    cte = str(parsed.get("Content-Transfer-Encoding", "")).strip().lower()
    return parsed.get_content_type(), boundary, cte


def _parts(body: bytes, boundary: str
           ) -> tuple[bytes, list[tuple[bytes, bytes]], bytes] | None:
    """A multipart body cut at its delimiter lines: the preamble (with the first
    delimiter line), each part's content with the delimiter that ends it (the line end
    before a delimiter belongs to it, RFC 2046 5.1.1), and the epilogue. None when the
    body has no opening delimiter."""
    delimiter = re.escape(b"--" + boundary.encode("ascii", "surrogateescape"))
    found = list(re.finditer(rb"(?:^|(?<=\n))" + delimiter + rb"(--)?[ \t]*(?:\r?\n|$)",
                             body))
    if not found or found[0].group(1):
        return None
    pieces: list[tuple[bytes, bytes]] = []
    start = found[0].end()
    for line in found[1:]:
        end = line.start()
        cut = max(start, end - len(_line_end_before(body, end)))
        pieces.append((body[start:cut], body[cut:line.end()]))
        start = line.end()
        if line.group(1):
            return body[:found[0].end()], pieces, body[start:]
    pieces.append((body[start:], b""))
    return body[:found[0].end()], pieces, b""


def _line_end_before(data: bytes, at: int) -> bytes:
    for end in (b"\r\n", b"\n"):
        if data[max(0, at - len(end)):at] == end:
            return end
    return b""


def _fit_entity(entity: bytes, top: bool, depth: int) -> bytes:
    header, separator, body = _split_entity(entity)
    header = _fold_header(header)
    kind, boundary, cte = _content_type(header)
    if depth > _MAX_DEPTH or lines_fit(body) or kind == "multipart/signed":
        return header + separator + body
    if kind.startswith("multipart/") and boundary:
        split = _parts(body, boundary)
        if split is not None:
            preamble, pieces, epilogue = split
            fitted = b"".join(_fit_entity(content, top=False, depth=depth + 1) + delimiter
                              for content, delimiter in pieces)
            return (header + separator + _break_lines(preamble) + fitted
                    + _break_lines(epilogue))
    if kind in ("message/rfc822", "message/global") and cte in _IDENTITY:
        return header + separator + _fit_entity(body, top=True, depth=depth + 1)
    return _reencode(header, separator, body, kind, cte, top)


def _reencode(header: bytes, separator: bytes, body: bytes, kind: str, cte: str,
              top: bool) -> bytes:
    """A leaf entity whose body has a long line, re-encoded so that it decodes to the
    same octets. An encoding the walk cannot decode is broken as Postfix breaks it."""
    try:
        if cte in _IDENTITY:
            content = body
        elif cte == "quoted-printable":
            content = binascii.a2b_qp(body)
        elif cte == "base64":
            content = base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body))
        else:
            return header + separator + _break_lines(body)
    except (binascii.Error, ValueError):
        return header + separator + _break_lines(body)
    if kind.startswith("text/") or not kind:
        encoding, encoded = "quoted-printable", _quoted_printable(content)
    else:
        encoding, encoded = "base64", base64.encodebytes(content).replace(b"\n", b"\r\n")
    kept = [line for line in _header_fields(header) if not _CTE.match(line)]
    if top and not any(_MIME_VERSION.match(line) for line in kept):
        kept.append(b"MIME-Version: 1.0\r\n")
    kept.append(f"Content-Transfer-Encoding: {encoding}\r\n".encode())
    return b"".join(kept) + (separator or b"\r\n") + encoded


def _quoted_printable(content: bytes) -> bytes:
    """Quoted-printable with <CR><LF> line ends, decoding to content exactly: each line
    end of the content is a hard line break, any other <CR> or <LF> is encoded."""
    lines = content.split(b"\r\n")
    encoded = [binascii.b2a_qp(line, quotetabs=False, istext=False) for line in lines]
    return b"\r\n".join(e.replace(b"\n", b"\r\n") for e in encoded)


def _header_fields(header: bytes) -> list[bytes]:
    """The header section as fields, each with its continuation lines and line ends."""
    fields: list[bytes] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    if fields and not fields[-1].endswith(b"\n"):
        fields[-1] += b"\r\n"
    return fields


def _fold_header(header: bytes) -> bytes:
    """Every header line of at most 998 octets: folded before whitespace where there is
    some, else broken with <CR><LF><SPACE> (Postfix's smtp_line_length_limit)."""
    if lines_fit(header):
        return header
    out = []
    for line in header.splitlines(keepends=True):
        text = line.rstrip(b"\r\n")
        end = line[len(text):]
        while len(text) > MAX_LINE:
            cut = max(text.rfind(b" ", 1, MAX_LINE + 1), text.rfind(b"\t", 1, MAX_LINE + 1))
            if cut > 0 and text[:cut].strip(b" \t"):
                out.append(text[:cut] + b"\r\n")
                text = text[cut:]
            else:
                out.append(text[:MAX_LINE] + b"\r\n")
                text = b" " + text[MAX_LINE:]
        out.append(text + end)
    return b"".join(out)


def _break_lines(text: bytes) -> bytes:
    """Every line of at most 998 octets, broken as Postfix breaks them (for text no
    reader shows: a multipart's preamble and epilogue)."""
    if lines_fit(text):
        return text
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip(b"\r\n")
        while len(body) > MAX_LINE:
            out.append(body[:MAX_LINE] + b"\r\n")
            body = b" " + body[MAX_LINE:]
        out.append(body + line[len(line.rstrip(b"\r\n")):])
    return b"".join(out)


def _signed_long(entity: bytes, depth: int) -> bool:
    header, _, body = _split_entity(entity)
    if depth > _MAX_DEPTH or lines_fit(body):
        return False
    kind, boundary, cte = _content_type(header)
    if kind == "multipart/signed":
        return True
    if kind.startswith("multipart/") and boundary:
        split = _parts(body, boundary)
        return split is not None and any(_signed_long(content, depth + 1)
                                         for content, _ in split[1])
    if kind in ("message/rfc822", "message/global") and cte in _IDENTITY:
        return _signed_long(body, depth + 1)
    return False
