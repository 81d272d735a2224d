"""core/index_chunks.py: chunks follow the content, and nothing a reader opens is trusted beyond its bounds."""

from __future__ import annotations

import hashlib
import os

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from usenetsync_cli.core.index_chunks import (
    CHUNK_MAX,
    Chunk,
    TableEntry,
    chunk_stream,
    decompress_table,
    open_chunk,
    open_table_piece,
    parse_table,
    seal_chunk,
    seal_table_piece,
    table_line,
)
from usenetsync_cli.core.manifest import dumps_record
from usenetsync_cli.errors import TamperedError

KEY, LOC = os.urandom(32), os.urandom(32)


def _records(n: int, seed: int = 0) -> list[bytes]:
    return [dumps_record(["F", f"dir/file-{seed}-{i:07d}.jpg", 1000 + i, i, 0o644, "ab" * 32,
                          [[3, i, 0, 1000 + i, "cd" * 32, None, 0]]]) for i in range(n)]


def _ids(lines: list[bytes]) -> list[bytes]:
    return [c.chunk_id for c in chunk_stream(lines)]


def test_chunks_join_back_and_respect_their_bounds() -> None:
    lines = _records(5000) + [b"x" * (CHUNK_MAX * 2 + 5) + b"\n"] + _records(10, 1)
    chunks = list(chunk_stream(lines))
    assert b"".join(c.plain for c in chunks) == b"".join(lines)
    assert all(0 < len(c.plain) <= CHUNK_MAX and c.chunk_id == hashlib.sha256(c.plain).digest() for c in chunks)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 11999), st.sampled_from(["change", "insert", "delete"]))
def test_one_change_alters_at_most_two_chunks(at: int, how: str) -> None:
    base = _records(12000)
    changed = list(base)
    if how == "change":
        changed[at] = dumps_record(["F", "a file that changed", 1, 1, 0o644, "ef" * 32, []])
    elif how == "insert":
        changed.insert(at, dumps_record(["F", "a new file", 1, 1, 0o644, "ef" * 32, []]))
    else:
        del changed[at]
    before, after = set(_ids(base)), _ids(changed)
    assert len(_ids(base)) > 20  # the index is many chunks, so "at most two" says something
    assert len([c for c in after if c not in before]) <= 2


def _entry(chunk: Chunk, sealed: bytes) -> TableEntry:
    return TableEntry(chunk.chunk_id, len(chunk.plain), bytes(16), 0, len(sealed))


def test_a_chunk_opens_only_as_the_chunk_its_table_names() -> None:
    a, b = (next(chunk_stream([dumps_record(["D", name, 0, 0])])) for name in ("a", "b"))
    sealed = seal_chunk(KEY, LOC, a)
    assert open_chunk(KEY, LOC, _entry(a, sealed), sealed) == a.plain
    with pytest.raises(TamperedError, match="authentication"):  # another chunk's place (AAD)
        open_chunk(KEY, LOC, TableEntry(b.chunk_id, len(a.plain), bytes(16), 0, len(sealed)), sealed)
    with pytest.raises(TamperedError, match="authentication"):
        open_chunk(os.urandom(32), LOC, _entry(a, sealed), sealed)
    # Whoever holds the share key can seal other bytes at a's place: only the hash tells.
    nonce = os.urandom(12)
    forged = nonce + AESGCM(KEY).encrypt(nonce, zstandard.ZstdCompressor().compress(b.plain),
                                         b"usenetsync/v2/chunk\x00" + LOC + a.chunk_id)
    with pytest.raises(TamperedError, match="not the one"):
        open_chunk(KEY, LOC, TableEntry(a.chunk_id, len(b.plain), bytes(16), 0, len(forged)), forged)


def test_a_chunk_bomb_stops_at_its_table_length() -> None:
    small = Chunk(hashlib.sha256(b"x").digest(), b"x")
    nonce = os.urandom(12)
    bomb = nonce + AESGCM(KEY).encrypt(nonce, zstandard.ZstdCompressor(level=3).compress(b"\0" * (16 << 20)),
                                       b"usenetsync/v2/chunk\x00" + LOC + small.chunk_id)
    assert len(bomb) < 100_000
    with pytest.raises(TamperedError, match="more than"):
        open_chunk(KEY, LOC, TableEntry(small.chunk_id, 1, bytes(16), 0, len(bomb)), bomb)


def test_the_table_round_trips_and_its_bounds_hold() -> None:
    chunks = list(chunk_stream(_records(2000)))
    entries = [TableEntry(c.chunk_id, len(c.plain), os.urandom(16), 10 * i, 1000) for i, c in enumerate(chunks)]
    table = b"".join(table_line(e) for e in entries)
    total = sum(e.plain_len for e in entries)
    assert parse_table(table, len(entries), total) == entries
    with pytest.raises(TamperedError, match="as many chunks"):
        parse_table(table, len(entries) + 1, total)
    with pytest.raises(TamperedError, match="add up"):
        parse_table(table, len(entries), total + 1)
    for bad in (b'["zz",1,"00",0,100]', table_line(entries[0]).replace(b",1000]", b",9999999]"),
                table_line(entries[0]).replace(b'"' + entries[0].pack_nonce.hex().encode(), b'"00'),
                b'["' + b"a" * 64 + b'",0,"' + b"0" * 32 + b'",0,100]', b"{}", b"[]"):
        with pytest.raises(TamperedError, match="malformed"):
            parse_table(bad, 1, 1)


def test_a_table_bomb_stops_at_its_signed_size() -> None:
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\n" * (16 << 20))
    with pytest.raises(TamperedError, match="more than"):
        decompress_table(bomb, 1000)
    with pytest.raises(TamperedError, match="larger than a reader accepts"):
        decompress_table(bomb, 1 << 40)
    good = zstandard.ZstdCompressor().compress(b"abc")
    assert decompress_table(good, 3) == b"abc"
    with pytest.raises(TamperedError, match="another size"):
        decompress_table(good, 4)


def test_table_pieces_are_bound_to_their_article_and_place() -> None:
    nonce = os.urandom(16)
    sealed = seal_table_piece(KEY, LOC, nonce, 2, b"piece")
    assert open_table_piece(KEY, LOC, nonce, 2, sealed) == b"piece"
    for args in ((KEY, LOC, nonce, 3), (KEY, LOC, os.urandom(16), 2), (KEY, os.urandom(32), nonce, 2)):
        with pytest.raises(TamperedError):
            open_table_piece(*args, sealed)
