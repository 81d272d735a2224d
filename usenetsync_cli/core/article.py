"""Article framing: headers + yEnc 1.3 body out, yEnc body in.

Owns: the exact bytes of an article we post (minus NNTP dot-stuffing and the
terminator, which belong to the NNTP layer) and the decoding of yEnc bodies,
ours or other posters' (single- or multi-part, e.g. Nyuu).

Wire shape of ``build_article`` (every line ends CRLF)::

    buffer 0, the header block (ends with the empty line):
        From: <poster>
        Newsgroups: <g1>,<g2>
        Subject: <subject>
        Message-ID: <message_id>
        Date: <date>
        [extra headers, only if configured]
        <empty line>
    buffer 1, the body (ends with CRLF):
        =ybegin part=1 total=1 line=128 size=N name=NAME
        =ypart begin=1 end=N
        <sabctools yEnc lines, 128 (or 129 when an escape straddles) columns>
        =yend size=N part=1 pcrc32=XXXXXXXX crc32=XXXXXXXX

The NNTP layer sends ``buffers`` then ``ARTICLE_TERMINATOR`` (b".\\r\\n").

Invariants:
- Only the five headers above (plus explicitly configured extras); no
  User-Agent, no X- header, nothing naming the tool.
- No line of a built article starts with '.': header lines start with a
  header name, yEnc control lines with '=', and sabctools escapes a leading
  '.' of every data line (proven in tests/core/test_article.py). Dot-stuffing
  is therefore a no-op for our articles; the NNTP layer still stuffs
  defensively.
- A built article is at most ``MAX_ARTICLE_BYTES`` on the wire (checked on
  the exact encoded size). For ciphertext (all we post) the yEnc overhead is
  ~3.2 %, so a 768,029-byte sealed segment gives a ~792.7 KB article.
  Arbitrary data can double (every byte escaped: 768,029 -> 1,560,058);
  ``MAX_SAFE_PAYLOAD_ANY`` (491,215) is the largest payload that fits even
  then. Ciphertext cannot be steered there: each byte is critical with
  probability ~4/256, so passing 1 MB would need ~230k escapes where ~12k
  +/- 110 are expected; the exact check is the guard all the same.
- Decoding never returns bytes whose length disagrees with the yEnc headers;
  malformed input raises ``ProtocolError`` (not yEnc / bad headers) or
  ``TamperedError`` (truncated / wrong size), never IndexError. A CRC
  mismatch is reported (``crc_ok=False``), not raised: the caller decides
  between another server and repair.
- Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import email.utils
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import sabctools

from usenetsync_cli.core.msgid import is_valid_message_id
from usenetsync_cli.errors import ConfigError, ProtocolError, TamperedError

__all__ = [
    "ARTICLE_TERMINATOR",
    "HEADER_ALLOWANCE",
    "MAX_ARTICLE_BYTES",
    "MAX_SAFE_PAYLOAD_ANY",
    "YENC_LINE_LENGTH",
    "DecodedPart",
    "article_size",
    "build_article",
    "decode_yenc_article",
    "decode_yenc_data",
    "decode_yenc_part",
    "estimate_article_size",
    "format_date",
    "max_article_size",
    "max_safe_payload",
    "yenc_encoded_size_max",
]

MAX_ARTICLE_BYTES = 1_000_000
YENC_LINE_LENGTH = 128  # fixed by sabctools.yenc_encode
ARTICLE_TERMINATOR = b".\r\n"
# Room reserved for the header block and yEnc control lines when sizing
# payloads ahead of time; our real headers are ~250-350 bytes.
HEADER_ALLOWANCE = 2048
_MAX_HEADER_LINE = 998  # RFC 5322 §2.1.1; INN rejects much longer lines

_NEWSGROUP_RE = re.compile(r"[a-z0-9+_-]+(?:\.[a-z0-9+_-]+)*", re.ASCII)
_HEADER_NAME_RE = re.compile(r"[!-9;-~]+", re.ASCII)  # RFC 5322 ftext
_PRINTABLE_RE = re.compile(r"[\x20-\x7e]*", re.ASCII)
_STANDARD_HEADERS = frozenset({"from", "newsgroups", "subject", "message-id", "date"})
# Headers that would name the tool or break framing; refused even as extras.
_FORBIDDEN_EXTRA = frozenset({"content-length", "lines", "bytes", "path", "xref"})


# --- sizes --------------------------------------------------------------------------------------


def yenc_encoded_size_max(payload_len: int) -> int:
    """Worst-case bytes of sabctools' yEnc data lines for ``payload_len`` bytes.

    Every byte escaped (2 characters) and a CRLF after each full line; lines
    break once they reach 128 columns, so there are at most
    floor((2n - 1) / 128) breaks. Exact for all-critical input (measured:
    768,029 bytes -> 1,560,058).
    """
    if payload_len <= 0:
        return 0
    chars = 2 * payload_len
    return chars + 2 * ((chars - 1) // YENC_LINE_LENGTH)


def _framing_size(payload_len: int, name_len: int) -> int:
    # =ybegin/=ypart/=yend lines with the widest digits they can carry.
    digits = len(str(payload_len))
    ybegin = len("=ybegin part=1 total=1 line=128 size= name=\r\n") + digits + name_len
    ypart = len("=ypart begin=1 end=\r\n") + digits
    yend = len("\r\n=yend size= part=1 pcrc32=00000000 crc32=00000000\r\n") + digits
    return ybegin + ypart + yend


def max_article_size(payload_len: int, header_len: int = HEADER_ALLOWANCE, name_len: int = 32) -> int:
    """Worst-case wire bytes (incl. terminator) for any payload of this length."""
    return (
        header_len + _framing_size(payload_len, name_len) + yenc_encoded_size_max(payload_len) + len(ARTICLE_TERMINATOR)
    )


def estimate_article_size(payload_len: int, header_len: int = 320, name_len: int = 24) -> int:
    """Typical wire bytes for random (encrypted) data: ~3.2 % yEnc overhead.

    Escapes: 4 of 256 byte values are critical (NUL, LF, CR, '=') plus the
    occasional leading/trailing space, tab or '.'; line breaks: 2 per ~128.
    Measured: 768,029 random bytes -> 792,4xx encoded (+/- ~250).
    """
    escapes = payload_len * 4 // 256
    chars = payload_len + escapes
    return header_len + _framing_size(payload_len, name_len) + chars + 2 * (chars // YENC_LINE_LENGTH) + 3


def max_safe_payload(limit: int = MAX_ARTICLE_BYTES, header_len: int = HEADER_ALLOWANCE, name_len: int = 32) -> int:
    """Largest payload whose worst-case article still fits in ``limit`` bytes."""
    lo, hi = 0, limit
    while lo < hi:  # max_article_size is monotonic in payload_len
        mid = (lo + hi + 1) // 2
        if max_article_size(mid, header_len, name_len) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


MAX_SAFE_PAYLOAD_ANY = max_safe_payload()  # 491,215 bytes for arbitrary data


def article_size(buffers: Sequence[bytes | bytearray | memoryview]) -> int:
    """Exact wire bytes of a built article including the terminator.

    Exact because our articles need no dot-stuffing (see module invariants).
    """
    return sum(len(b) for b in buffers) + len(ARTICLE_TERMINATOR)


# --- building -----------------------------------------------------------------------------------


def format_date(timestamp: float) -> str:
    """An RFC 5322 Date value in GMT for a Unix time (the caller reads the clock)."""
    return email.utils.formatdate(timestamp, usegmt=True)


def _check_value(name: str, value: str, error: type[Exception] = ValueError) -> bytes:
    if not value or _PRINTABLE_RE.fullmatch(value) is None:
        raise error(f"header {name} must be non-empty printable ASCII without line breaks")
    if len(name) + 2 + len(value) > _MAX_HEADER_LINE:
        raise error(f"header {name} is longer than {_MAX_HEADER_LINE} characters")
    return value.encode("ascii")


def _header_block(
    message_id: str,
    subject: str,
    poster: str,
    newsgroups: Sequence[str],
    date: str,
    extra_headers: Sequence[tuple[str, str]],
) -> bytes:
    if isinstance(newsgroups, str):
        raise ConfigError("newsgroups must be a list of group names, not one string")
    if not newsgroups:
        raise ConfigError("no newsgroup configured to post to")
    for group in newsgroups:
        if _NEWSGROUP_RE.fullmatch(group) is None:
            raise ConfigError(f"not a valid newsgroup name: {group!r}")
    if not is_valid_message_id(message_id):
        raise ValueError(f"not an RFC 5536 Message-ID: {message_id!r}")
    lines = [
        b"From: " + _check_value("From", poster),
        b"Newsgroups: " + _check_value("Newsgroups", ",".join(newsgroups), ConfigError),
        b"Subject: " + _check_value("Subject", subject),
        b"Message-ID: " + message_id.encode("ascii"),
        b"Date: " + _check_value("Date", date),
    ]
    seen: set[str] = set()
    for name, value in extra_headers:
        key = name.lower()
        if _HEADER_NAME_RE.fullmatch(name) is None:
            raise ConfigError(f"not a valid header name: {name!r}")
        if key in _STANDARD_HEADERS or key in _FORBIDDEN_EXTRA or key in seen:
            raise ConfigError(f"header {name} cannot be set as an extra header")
        seen.add(key)
        lines.append(name.encode("ascii") + b": " + _check_value(name, value, ConfigError))
    lines.append(b"")
    lines.append(b"")
    return b"\r\n".join(lines)


def article_parts(
    *,
    message_id: str,
    subject: str,
    poster: str,
    newsgroups: Sequence[str],
    date: str,
    payload: bytes | bytearray | memoryview,
    yenc_name: str,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> list[bytes]:
    """The wire buffers ``[header_block, ybegin/ypart lines, encoded data, yend line]`` of one article.

    Four pieces so the 800 KB encoded data is sent as sabctools made it, never
    copied into a joined body.

    Not dot-stuffed (nothing needs it) and without the terminator; the body
    ends with CRLF, so the NNTP layer appends ``ARTICLE_TERMINATOR``.
    ``payload`` should be ``bytes``: sabctools only encodes ``bytes``, so any
    other buffer is copied once.

    Raises ``ConfigError`` for bad newsgroups/extra headers or when the
    article would exceed ``MAX_ARTICLE_BYTES`` (segment size set too large);
    ``ValueError`` for malformed generated values (a bug in the caller).
    """
    header = _header_block(message_id, subject, poster, newsgroups, date, extra_headers)
    name = _check_value("yEnc name", yenc_name)
    if name != name.strip():
        raise ValueError("yEnc name must not start or end with a space")
    data = payload if type(payload) is bytes else bytes(payload)
    size = len(data)
    if size == 0:
        raise ValueError("an article needs a non-empty payload")
    encoded, crc = sabctools.yenc_encode(data)
    head = b"=ybegin part=1 total=1 line=%d size=%d name=%s\r\n=ypart begin=1 end=%d\r\n" % (
        YENC_LINE_LENGTH,
        size,
        name,
        size,
    )
    # sabctools' output has no trailing CRLF; the =yend line supplies both.
    tail = b"\r\n=yend size=%d part=1 pcrc32=%08x crc32=%08x\r\n" % (size, crc, crc)
    total = len(header) + len(head) + len(encoded) + len(tail) + len(ARTICLE_TERMINATOR)
    if total > MAX_ARTICLE_BYTES:
        raise ConfigError(
            f"a {size:,}-byte segment makes a {total:,}-byte article, over the "
            f"{MAX_ARTICLE_BYTES:,}-byte limit of news servers",
            hint="lower the segment size (768,000 bytes is the default and always fits)",
        )
    return [header, head, encoded, tail]


def build_article(**fields: Any) -> list[bytes]:
    """``[header_block, yenc_body]``: ``article_parts`` with the body joined (one copy)."""
    header, head, encoded, tail = article_parts(**fields)
    return [header, b"".join((head, encoded, tail))]


# --- decoding -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodedPart:
    """One decoded yEnc part with what its headers said.

    ``begin``/``end`` are the 1-based inclusive offsets of this part in the
    whole file (yEnc convention); ``file_size`` is the whole file's size.
    ``expected_crc`` is the part CRC (``pcrc32``, or ``crc32`` of a
    single-part body), None if the poster gave none; ``crc_ok`` is True only
    when it was given and matches. ``file_crc32`` is the whole-file CRC a
    multi-part poster may add to every part (not checkable on one part).
    """

    payload: bytes
    name: str
    crc_ok: bool
    part: int | None
    total: int | None
    begin: int
    end: int
    file_size: int
    crc32: int
    expected_crc: int | None
    file_crc32: int | None


_DEC_TABLE = bytes((i - 42) % 256 for i in range(256))
_ESC_TABLE = bytes((i - 106) % 256 for i in range(256))  # after '=': subtract 64 + 42
_ESCAPED_EQUALS = (ord("=") - 106) % 256


def decode_yenc_data(encoded: bytes | bytearray | memoryview) -> bytes:
    """Pure-Python yEnc decoding of data lines (no control lines).

    The fallback for bodies sabctools' Decoder cannot take as-is (LF-only
    line ends, lines that start with an unstuffed '.'), and the test oracle.
    CR and LF are never data in yEnc, so both are dropped before decoding;
    that also joins an '=' left at a line end with the next line's character.
    """
    flat = bytes(encoded).translate(None, b"\r\n")
    pieces = flat.split(b"=")
    out = bytearray(pieces[0].translate(_DEC_TABLE))
    i, n = 1, len(pieces)
    while i < n:
        piece = pieces[i]
        if piece:
            out += piece[:1].translate(_ESC_TABLE)
            out += piece[1:].translate(_DEC_TABLE)
            i += 1
        elif i + 1 < n:
            # "==": the second '=' is itself the escaped character.
            out.append(_ESCAPED_EQUALS)
            out += pieces[i + 1].translate(_DEC_TABLE)
            i += 2
        else:
            i += 1  # a dangling '=' at the very end escapes nothing
    return bytes(out)


_YENC_HINT = "the article is not a yEnc binary or is damaged; try another server or repair"


def _kv(fields: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for token in fields.split():
        key, sep, value = token.partition(b"=")
        if not sep:
            continue  # tolerate stray words, as other decoders do
        out[key.decode("ascii", "replace").lower()] = value.decode("ascii", "replace")
    return out


def _int(fields: dict[str, str], key: str, where: str, *, base: int = 10) -> int | None:
    raw = fields.get(key)
    if raw is None:
        return None
    text = raw[2:] if base == 16 and raw[:2].lower() == "0x" else raw
    try:
        value = int(text, base)
    except ValueError:
        raise ProtocolError(f"yEnc {where} line has a malformed {key}={raw!r}", hint=_YENC_HINT) from None
    if value < 0:
        raise ProtocolError(f"yEnc {where} line has a negative {key}", hint=_YENC_HINT)
    return value


def _line_end(body: bytes, start: int) -> tuple[int, int]:
    """(end of line content, start of next line) for the line at ``start``."""
    nl = body.find(b"\n", start)
    if nl < 0:
        return len(body), len(body)
    end = nl - 1 if nl > start and body[nl - 1] == 0x0D else nl
    return end, nl + 1


def _find_line(body: bytes, marker: bytes, *, last: bool = False, start: int = 0) -> int:
    """Offset of the first (or last) line at or after ``start`` that starts with ``marker``, or -1."""
    # Control lines sit at the very start / end of a body, so find/rfind stop
    # after a few bytes in practice; a scan of the whole body only happens
    # for malformed input.
    pos = body.rfind(marker, start) if last else body.find(marker, start)
    while pos >= 0:
        if pos == 0 or body[pos - 1] == 0x0A:
            return pos
        pos = body.rfind(marker, start, pos + len(marker) - 1) if last else body.find(marker, pos + 1)
    return -1


_STATUS_LINE = b"222 0 <decode@local> body\r\n"


def _sabctools_decode(body: memoryview, ends_crlf: bool) -> sabctools.NNTPResponse | None:
    """Decode via sabctools.Decoder, fed as if it were a BODY response.

    Returns None when the fast path cannot be trusted for this input (it never
    completed, or ended early at an unstuffed '.' line); the caller then uses
    the pure-Python decoder, which handles such bodies exactly.
    """
    decoder = sabctools.Decoder(1 << 20)
    decoder.expect(None)
    terminator = ARTICLE_TERMINATOR if ends_crlf else b"\r\n" + ARTICLE_TERMINATOR
    fed = 0
    responses: list[sabctools.NNTPResponse] = []
    try:
        for chunk in (memoryview(_STATUS_LINE), body, memoryview(terminator)):
            pos, size = 0, len(chunk)
            while pos < size:
                with memoryview(decoder) as room:
                    n = min(len(room), size - pos)
                    if n == 0:
                        return None
                    room[:n] = chunk[pos : pos + n]
                decoder.process(n)
                responses.extend(decoder)
                pos += n
                fed += n
    except Exception:  # any decoder complaint means "use the exact fallback"
        return None
    if len(responses) != 1 or responses[0].bytes_read != fed or responses[0].data is None:
        return None
    return responses[0]


def decode_yenc_part(body: bytes | bytearray | memoryview) -> DecodedPart:
    """Decode one yEnc article body (after NNTP dot-unstuffing; CRLF or LF lines).

    Handles yEnc 1.1 single-part (``=ybegin`` + ``=yend crc32=``) and 1.2/1.3
    single- and multi-part (``=ypart``, ``pcrc32``) bodies.
    """
    raw = body if type(body) is bytes else bytes(body)
    ybegin = _find_line(raw, b"=ybegin ")
    if ybegin < 0:
        raise ProtocolError("article body is not yEnc: no =ybegin line", hint=_YENC_HINT)
    line_end, cursor = _line_end(raw, ybegin)
    begin_line = raw[ybegin + len(b"=ybegin ") : line_end]
    name_at = begin_line.find(b" name=")
    if begin_line.startswith(b"name="):
        fields_raw, name_raw = b"", begin_line[len(b"name=") :]
    elif name_at >= 0:
        fields_raw, name_raw = begin_line[:name_at], begin_line[name_at + len(b" name=") :]
    else:
        fields_raw, name_raw = begin_line, b""
    fields = _kv(fields_raw)
    file_size = _int(fields, "size", "=ybegin")
    if file_size is None:
        raise ProtocolError("yEnc =ybegin line has no size", hint=_YENC_HINT)
    part = _int(fields, "part", "=ybegin")
    total = _int(fields, "total", "=ybegin")
    name = name_raw.strip().decode("utf-8", "replace")

    begin, end = 1, file_size
    if raw.startswith(b"=ypart ", cursor):
        part_end, next_cursor = _line_end(raw, cursor)
        pfields = _kv(raw[cursor + len(b"=ypart ") : part_end])
        p_begin = _int(pfields, "begin", "=ypart")
        p_end = _int(pfields, "end", "=ypart")
        if p_begin is None or p_end is None:
            raise ProtocolError("yEnc =ypart line lacks begin or end", hint=_YENC_HINT)
        begin, end = p_begin, p_end
        cursor = next_cursor
    elif part is not None and (total or 0) > 1:
        raise ProtocolError("multi-part yEnc body has no =ypart line", hint=_YENC_HINT)
    if not 1 <= begin <= end + 1 or end > file_size:
        raise ProtocolError(f"yEnc part range {begin}-{end} does not fit a {file_size}-byte file", hint=_YENC_HINT)
    part_size = end - begin + 1

    yend = _find_line(raw, b"=yend", last=True, start=cursor)
    if yend < 0:
        raise TamperedError("yEnc body is truncated: no =yend line")
    yend_end, _ = _line_end(raw, yend)
    efields = _kv(raw[yend + len(b"=yend") : yend_end])
    end_size = _int(efields, "size", "=yend")
    if end_size is not None and end_size != part_size:
        raise TamperedError(f"yEnc =yend says {end_size} bytes but the part headers say {part_size}")
    pcrc = _int(efields, "pcrc32", "=yend", base=16)
    fcrc = _int(efields, "crc32", "=yend", base=16)
    multipart = (total or 1) > 1 or begin != 1 or end != file_size
    expected = pcrc if pcrc is not None else (None if multipart else fcrc)

    payload: bytes | None = None
    computed: int | None = None
    response = _sabctools_decode(memoryview(raw), raw.endswith(b"\n"))
    if response is not None and response.bytes_decoded == part_size:
        payload = bytes(response.data)  # type: ignore[arg-type]
        # Its CRC is fused into decoding; reuse it when it checked ours.
        if expected is not None and response.crc is not None and response.crc == expected:
            computed = expected
    if payload is None:
        # Data ends at the line break before =yend (which belongs to that line).
        payload = decode_yenc_data(memoryview(raw)[cursor:yend])
    if len(payload) != part_size:
        raise TamperedError(f"yEnc part decoded to {len(payload)} bytes, its headers say {part_size}")
    if computed is None:
        computed = zlib.crc32(payload)
    return DecodedPart(
        payload=payload,
        name=name,
        crc_ok=expected is not None and computed == expected,
        part=part,
        total=total,
        begin=begin,
        end=end,
        file_size=file_size,
        crc32=computed,
        expected_crc=expected,
        file_crc32=fcrc if multipart else None,
    )


def decode_yenc_article(body: bytes | bytearray | memoryview) -> tuple[bytes, str, bool]:
    """``(payload, yEnc name, crc_ok)`` of one yEnc body; see ``decode_yenc_part``."""
    decoded = decode_yenc_part(body)
    return decoded.payload, decoded.name, decoded.crc_ok
