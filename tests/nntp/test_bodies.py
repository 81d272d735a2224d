"""nntp.bodies without a server: what sabctools' streaming Decoder reports, the trust
check that turns its responses into ``Article``s, and the ``=yend`` scanner.

The facts the module docstring relies on are pinned here, so a sabctools
upgrade that changes them fails loudly instead of corrupting downloads.
"""

from __future__ import annotations

import os
import zlib

import pytest
import sabctools
from hypothesis import given, settings
from hypothesis import strategies as st

from usenetsync_cli.core.article import decode_yenc_part
from usenetsync_cli.nntp import Article, RawNeeded
from usenetsync_cli.nntp.bodies import YendScanner, article_from_response


def _multi(data: bytes, begin: int, size: int, fcrc: int | None, pcrc: bool = True, name: str = "f.bin") -> bytes:
    enc, crc = sabctools.yenc_encode(data)
    end = begin + len(data) - 1
    yend = b"=yend size=%d part=2" % len(data)
    if pcrc:
        yend += b" pcrc32=%08x" % crc
    if fcrc is not None:
        yend += b" crc32=%08x" % fcrc
    return (
        b"=ybegin part=2 total=3 line=128 size=%d name=%s\r\n=ypart begin=%d end=%d\r\n" % (size, name.encode(), begin, end)
        + enc + b"\r\n" + yend + b"\r\n"
    )


def _single(data: bytes, *, crc: int | None = None, size: int | None = None) -> bytes:
    enc, real = sabctools.yenc_encode(data)
    c = real if crc is None else crc
    return b"=ybegin line=128 size=%d name=one\r\n" % (len(data) if size is None else size) + enc + (
        b"\r\n=yend size=%d crc32=%08x\r\n" % (len(data), c))


def _decode(*bodies: bytes, chunk: int = 1 << 20, scan: bool = False) -> list[tuple[object, dict[str, int] | None]]:
    """Feed 222 replies for ``bodies`` through a Decoder the way the connection does."""
    stream = b"".join(b"222 0 <%d@t>\r\n" % i + b + b".\r\n" for i, b in enumerate(bodies))
    dec = sabctools.Decoder(1 << 20)
    for i in range(len(bodies)):
        dec.expect(i)
    scanner = YendScanner() if scan else None
    out: list[tuple[object, dict[str, int] | None]] = []
    pos = start = 0
    while pos < len(stream):
        with memoryview(dec) as room:
            n = min(len(room), chunk, len(stream) - pos)
            room[:n] = stream[pos : pos + n]
            if scanner is not None:
                scanner.feed(room[:n])
        dec.process(n)
        pos += n
        for resp in dec:
            fields = scanner.take(start, start + resp.bytes_read) if scanner is not None else None
            start += resp.bytes_read
            out.append((resp, fields))
    assert start == len(stream)  # bytes_read accounts for every byte: the bound relies on it
    return out


def test_sabctools_multipart_facts() -> None:
    data = os.urandom(1000)
    fcrc = zlib.crc32(b"the whole file")
    ((resp, _),) = _decode(_multi(data, 1001, 5000, fcrc))
    assert resp.part_begin == 1000 and resp.part_end == 2000 and resp.part_size == 1000  # 0-based begin
    assert resp.file_size == 5000 and resp.file_name == "f.bin"
    assert resp.crc_expected == zlib.crc32(data) and resp.crc == zlib.crc32(data)  # pcrc32, not crc32
    assert bytes(resp.data) == data


def test_sabctools_takes_a_whole_file_crc_for_the_part_crc_without_pcrc32() -> None:
    data = os.urandom(500)
    fcrc = zlib.crc32(b"other")
    ((resp, fields),) = _decode(_multi(data, 1, 2000, fcrc, pcrc=False), scan=True)
    assert resp.crc_expected == fcrc and resp.crc is None  # sabctools alone would call this damaged
    art = article_from_response(resp, 10_000, fields)
    # With the =yend fields the exact rule applies (as decode_yenc_part): no part CRC given.
    assert isinstance(art, Article) and art.expected_crc is None and not art.crc_ok
    assert art.file_crc32 == fcrc and art.crc32 == zlib.crc32(data)


def test_sabctools_non_yenc_body_is_lines() -> None:
    ((resp, _),) = _decode(b"hello\r\n..dot\r\n")
    assert resp.format is None and resp.lines == ["hello", "..dot"] and resp.data is None
    assert isinstance(article_from_response(resp, 10_000, None), RawNeeded)


def test_single_part_article_matches_the_pure_decoder() -> None:
    data = os.urandom(3000)
    body = _single(data)
    ((resp, fields),) = _decode(body, scan=True)
    art = article_from_response(resp, 10_000, fields)
    ref = decode_yenc_part(body)
    assert isinstance(art, Article)
    assert (bytes(art.data), art.name, art.crc_ok, art.begin, art.end, art.file_size, art.crc32, art.expected_crc,
            art.file_crc32) == (ref.payload, ref.name, ref.crc_ok, ref.begin, ref.end, ref.file_size, ref.crc32,
                                ref.expected_crc, ref.file_crc32)
    assert Article.from_part(ref).crc_ok


@pytest.mark.parametrize("scan", [False, True])
def test_multipart_article_matches_the_pure_decoder(scan: bool) -> None:
    data = os.urandom(2000)
    body = _multi(data, 4001, 9000, 0x12345678)
    ((resp, fields),) = _decode(body, scan=scan)
    art = article_from_response(resp, 10_000, fields)
    ref = decode_yenc_part(body)
    assert isinstance(art, Article)
    assert (art.begin, art.end, art.file_size, art.crc_ok, art.expected_crc) == (
        ref.begin, ref.end, ref.file_size, ref.crc_ok, ref.expected_crc)
    # The whole-file CRC is only known from the scanned =yend line.
    assert art.file_crc32 == (0x12345678 if scan else None)


def test_crc_mismatch_is_reported_not_hidden() -> None:
    data = os.urandom(700)
    ((resp, _),) = _decode(_single(data, crc=zlib.crc32(data) ^ 1))
    art = article_from_response(resp, 10_000, None)
    assert isinstance(art, Article) and not art.crc_ok and art.crc32 == zlib.crc32(data)


def test_claims_beyond_the_bound_or_inconsistent_sizes() -> None:
    data = os.urandom(100)
    ((huge, _),) = _decode(_single(data, size=2**31))
    reason = article_from_response(huge, 50_000, None)
    assert isinstance(reason, str) and "2,147,483,648" in reason and "\n" not in reason
    # A size= the data does not fill: not trusted; the exact decoder gets the last word.
    ((short, _),) = _decode(_single(data, size=150))
    assert isinstance(article_from_response(short, 50_000, None), RawNeeded)
    # Even when no =yend size= gives it away.
    enc, crc = sabctools.yenc_encode(data)
    ((quiet, _),) = _decode(b"=ybegin line=128 size=150 name=q\r\n" + enc + b"\r\n=yend crc32=%08x\r\n" % crc)
    assert quiet.bytes_decoded == 100 and quiet.part_size == 150 and quiet.end_size == 0
    assert isinstance(article_from_response(quiet, 50_000, None), RawNeeded)
    # An absurd size= is zeroed by sabctools, the part kept: it ends past the "file".
    absurd = b"=ybegin part=1 total=1 line=128 size=%d name=x\r\n=ypart begin=1 end=100\r\n" % 10**18
    ((zeroed, _),) = _decode(absurd + enc + b"\r\n=yend size=100 part=1 pcrc32=%08x\r\n" % crc)
    assert zeroed.file_size == 0 and zeroed.part_end == 100 and zeroed.bytes_decoded == 100
    assert isinstance(article_from_response(zeroed, 50_000, None), RawNeeded)
    # The data fills the part, but =yend disagrees: the exact decoder calls that tampered.
    ((liar, _),) = _decode(b"=ybegin line=128 size=100 name=l\r\n" + enc + b"\r\n=yend size=99 crc32=%08x\r\n" % crc)
    assert liar.bytes_decoded == 100 and liar.crc is not None
    assert isinstance(article_from_response(liar, 50_000, None), RawNeeded)


def _stream_of(bodies: list[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    replies = [b"222 0 <%d@t>\r\n" % i + b + b".\r\n" for i, b in enumerate(bodies)]
    spans, pos = [], 0
    for r in replies:
        spans.append((pos, pos + len(r)))
        pos += len(r)
    return b"".join(replies), spans


@given(
    st.lists(st.tuples(st.integers(1, 3000), st.booleans(), st.integers(0, 2**32 - 1)), min_size=1, max_size=6),
    st.lists(st.integers(1, 700), min_size=1, max_size=40),
)
@settings(max_examples=150, deadline=None)
def test_yend_scanner_any_chunking(parts: list[tuple[int, bool, int]], cuts: list[int]) -> None:
    bodies = [(_multi(bytes(n), 1, n, f) if multi else _single(bytes(n), crc=f)) for n, multi, f in parts]
    stream, spans = _stream_of(bodies)
    sc = YendScanner()
    pos, i = 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        sc.feed(memoryview(stream)[pos : pos + n])
        pos += n
        i += 1
    for (n, multi, f), (a, b) in zip(parts, spans):
        fields = sc.take(a, b)
        assert fields is not None and fields["crc32"] == f and fields["size"] == n
