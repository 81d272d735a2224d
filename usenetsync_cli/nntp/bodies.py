"""Decoded BODY replies: what sabctools made of one article, checked before use.

Owns: ``Article`` (one decoded yEnc article: payload, CRCs, name, offsets),
``RawNeeded`` (a reply sabctools cannot be trusted with, to be fetched again
and decoded by the exact pure-Python decoder), ``article_from_response``
(the trust check) and ``YendScanner`` (the ``=yend`` fields sabctools does not
expose: the whole-file ``crc32=`` of a multi-part post).

Facts about ``sabctools.Decoder`` (9.7, checked by tests/nntp/test_bodies.py):
- ``part_begin`` is 0-based, ``part_end`` 1-based inclusive; a single-part
  article (no ``=ypart``) reports ``part_begin=0, part_end=part_size=size``.
- ``crc_expected`` is the first of ``pcrc32=``/``crc32=`` on the ``=yend``
  line, so a multi-part post without ``pcrc32`` would have its whole-file CRC
  taken for the part's; ``crc`` is None unless it matches ``crc_expected``.
- A body that is not yEnc comes back with ``format`` None and its lines as a
  Python list (``lines``): unbounded unless the caller bounds the reply.
- A ``size=`` beyond its maximum becomes 0 while the ``=ypart`` range stays.
- Decoded data grows to ~10 MB at most, then ``process`` raises BufferError.
- A line that does not end within its buffer leaves no room to receive into.

Invariants:
- An ``Article`` is only made from a reply whose decoded length equals the
  part size its headers claim and whose claims fit the caller's byte bound;
  anything else is ``RawNeeded`` (or, for claims beyond the bound, a failure
  reason), never a silently short or padded payload.
- No copy of the payload: ``Article.data`` is sabctools' own bytearray.
- Pure: no sockets here.
"""

from __future__ import annotations

import re
import zlib
from collections import deque
from typing import Any

import sabctools

__all__ = ["Article", "RawNeeded", "YendScanner", "article_from_response"]

_YENC = sabctools.EncodingFormat.YENC
# An =yend line is short; anything longer is not one we trust to parse.
_YEND_MAX = 256
_YEND_RE = re.compile(rb"\r\n=yend([^\r\n]{0,%d})\r\n" % _YEND_MAX)
_FIELD_RE = re.compile(rb"(?:^|\s)(pcrc32|crc32|size|part)=([0-9A-Fa-fx]{1,20})")
_MAX_SEEN = 64  # =yend lines remembered between replies; more is a hostile server


class Article:
    """One decoded yEnc article (the fields of ``core.article.DecodedPart``).

    ``data`` is the decoded payload (sabctools' bytearray, or bytes from the
    pure decoder). ``begin``/``end`` are 1-based inclusive offsets in the
    whole file and ``file_size`` its size (yEnc ``size=``). ``expected_crc``
    is the part CRC the poster gave (``pcrc32``, or ``crc32`` of a
    single-part article), None if none; ``crc_ok`` is True only when it was
    given and matches. ``file_crc32``: the whole-file CRC a multi-part poster
    may add (None unless the reader asked for it and it was there).
    ``crc32`` is the CRC of ``data``, computed on first use when the poster's
    did not already prove it.
    """

    __slots__ = ("data", "name", "crc_ok", "begin", "end", "file_size", "expected_crc", "file_crc32", "_crc32")

    def __init__(
        self,
        data: bytes | bytearray,
        *,
        name: str,
        crc_ok: bool,
        begin: int,
        end: int,
        file_size: int,
        expected_crc: int | None,
        file_crc32: int | None = None,
        crc32: int | None = None,
    ) -> None:
        self.data = data
        self.name = name
        self.crc_ok = crc_ok
        self.begin = begin
        self.end = end
        self.file_size = file_size
        self.expected_crc = expected_crc
        self.file_crc32 = file_crc32
        self._crc32 = crc32

    @property
    def payload(self) -> bytes | bytearray:
        """``data`` under ``DecodedPart``'s name."""
        return self.data

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def crc32(self) -> int:
        if self._crc32 is None:
            self._crc32 = zlib.crc32(self.data)
        return self._crc32

    def __repr__(self) -> str:
        return (
            f"<Article {self.name!r} {self.begin}-{self.end}/{self.file_size} "
            f"{len(self.data):,} bytes crc {'ok' if self.crc_ok else 'bad'}>"
        )

    @classmethod
    def from_part(cls, part: Any) -> Article:
        """From a ``core.article.DecodedPart`` (the pure decoder's result)."""
        return cls(
            part.payload, name=part.name, crc_ok=part.crc_ok, begin=part.begin, end=part.end,
            file_size=part.file_size, expected_crc=part.expected_crc, file_crc32=part.file_crc32, crc32=part.crc32,
        )


class RawNeeded:
    """A 222 reply sabctools' result cannot be trusted for; ``why`` says what was off."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return f"<RawNeeded {self.why}>"


def _fields(line: bytes) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in _FIELD_RE.findall(line):
        k = key.decode()
        text = value.decode()
        try:
            if k in ("pcrc32", "crc32"):
                out[k] = int(text[2:] if text[:2].lower() == "0x" else text, 16) & 0xFFFFFFFF
            else:
                out[k] = int(text)
        except ValueError:
            continue
    return out


class YendScanner:
    """Finds ``=yend`` lines in the byte stream before the decoder consumes it.

    ``feed(view)`` is called with every received chunk, in order, before the
    decoder processes it (the decoder may move bytes within its buffer).
    ``take(start, end)`` returns the fields of the last ``=yend`` line that
    lies in stream bytes ``[start, end)`` — one reply — and forgets older ones.
    A line split across two chunks is found through a small carry of the
    previous chunk's tail. Cost: one C-level regex scan per chunk.
    """

    __slots__ = ("_pos", "_carry", "_seen")

    def __init__(self) -> None:
        self._pos = 0  # stream offset of the next byte fed
        self._carry = b""  # the last bytes fed, at most _YEND_MAX + 16
        self._seen: deque[tuple[int, bytes]] = deque()

    def feed(self, view: memoryview) -> None:
        n = len(view)
        carry = self._carry
        if carry:
            # Lines that start in the carry and end in this chunk.
            joined = carry + bytes(view[: _YEND_MAX + 16])
            base = self._pos - len(carry)
            for m in _YEND_RE.finditer(joined):
                if m.start() < len(carry) < m.end():
                    self._note(base + m.start(), m.group(1))
        for m in _YEND_RE.finditer(view):
            self._note(self._pos + m.start(), m.group(1))
        keep = _YEND_MAX + 16
        self._carry = (carry + bytes(view[-keep:]))[-keep:] if n < keep else bytes(view[-keep:])
        self._pos += n

    def _note(self, offset: int, line: bytes) -> None:
        self._seen.append((offset, line))
        if len(self._seen) > _MAX_SEEN:
            self._seen.popleft()

    def take(self, start: int, end: int) -> dict[str, int] | None:
        seen = self._seen
        found: bytes | None = None
        while seen and seen[0][0] < end:
            offset, line = seen.popleft()
            if offset >= start:
                found = line
        return _fields(found) if found is not None else None

    def reset(self) -> None:
        self._pos = 0
        self._carry = b""
        self._seen.clear()


def article_from_response(resp: Any, limit: int, yend: dict[str, int] | None) -> Article | RawNeeded | str:
    """An ``Article`` from a 222 sabctools response, ``RawNeeded``, or a failure reason.

    ``limit`` is the caller's bound for the whole reply on the wire: a part
    that claims more decoded bytes than that cannot be genuine. ``yend``: the
    reply's ``=yend`` fields when the reader scanned for them (gives the
    whole-file CRC and the exact ``pcrc32``/``crc32`` rule), else None.
    """
    file_size = resp.file_size
    part_size = resp.part_size
    if part_size > limit:
        return f"yEnc part claims {part_size:,} bytes, more than the {limit:,}-byte bound of its article"
    decoded = resp.bytes_decoded
    data = resp.data
    # Not yEnc (text, UU) leaves part_size 0; a short or padded payload must never pass as the part.
    if part_size <= 0 or decoded != part_size or data is None or len(data) != decoded:
        if resp.format != _YENC:
            return RawNeeded("not yEnc as sabctools reads it")
        return RawNeeded(f"decoded {decoded:,} bytes, headers say {part_size:,}")
    begin, end = resp.part_begin + 1, resp.part_end  # sabctools: part_size == end - begin + 1
    if end > file_size:
        # sabctools zeroes an absurd size= (beyond its maximum) but keeps the =ypart.
        return RawNeeded(f"yEnc part ends at {end:,}, past the file size {file_size:,}")
    if resp.end_size and resp.end_size != part_size:
        return RawNeeded(f"=yend says {resp.end_size:,} bytes, the part headers {part_size:,}")
    actual = resp.crc  # the payload's CRC, given only when it matched crc_expected
    expected = resp.crc_expected
    file_crc32: int | None = None
    if yend is not None:
        multipart = begin != 1 or end != file_size
        pcrc, fcrc = yend.get("pcrc32"), yend.get("crc32")
        expected = pcrc if pcrc is not None else (None if multipart else fcrc)
        file_crc32 = fcrc if multipart else None
        if actual is None and expected is not None and expected != resp.crc_expected:
            actual = zlib.crc32(data)  # sabctools compared it with the other field
    name = resp.file_name
    return Article(
        data,
        name=name.strip() if isinstance(name, str) else "",
        crc_ok=expected is not None and actual == expected,
        begin=begin,
        end=end,
        file_size=file_size,
        expected_crc=expected,
        file_crc32=file_crc32,
        crc32=actual,
    )
