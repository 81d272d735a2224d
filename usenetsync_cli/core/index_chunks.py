"""The share index as content-defined chunks: a new version posts what changed, not the whole folder.

Owns the cutting of the record stream (core/manifest.py lines) into chunks,
the sealing of chunks and of the chunk table, and every bound a reader
checks. Wire and key context: core/share_root.py.

Chunks. The record stream is cut where the content says (so an insertion or
a change only alters the chunks around it; the others come out identical and
are not posted again)::

    cut after a line when the chunk holds >= CHUNK_MIN bytes and
        xxh64(line) % CUT_MODULUS == 0;
    cut anyway at CHUNK_MAX bytes (inside a line if one is that long: a
        reader joins chunks before splitting lines).

    chunk_id     = SHA-256(plain chunk)
    sealed chunk = nonce(12) || AES-256-GCM(share_key, nonce, zstd(plain),
                            AAD = b"usenetsync/v2/chunk\\0" || locator_key || chunk_id)

Packs. New chunks are packed, sealed one after another, into pack articles
(payload: sealed chunks || random padding of 0..PART_PAD-1 bytes, at most
``PACK_BYTES``), posted under ``part_message_id(locator, pack_nonce, 0)``.
A version reuses the chunks it shares with earlier versions where they are;
the publisher re-posts the live chunks of a pack that is less than half
live (so readers never fetch mostly dead bytes) or missing.

Table. One line per chunk, in stream order::

    [chunk_id_hex, plain_len, pack_nonce_hex, offset, sealed_len]

zstd-compressed, cut into pieces of at most ``PART_CHUNK`` bytes, each
sealed (AAD = b"usenetsync/v2/table\\0" || locator || pack_nonce || u32 i)
and posted in its own article each version; the signed root lists the
pieces (pack nonce, sealed length, SHA-256 of the sealed piece) and the
totals. So a version costs its changed chunks plus about 1/500 of the
index (the table), and a reader with the previous version's chunks fetches
the same.

Invariants:
- A reader trusts a chunk only after GCM opens it at its chunk_id and
  SHA-256 of its decompressed bytes equals that id; the id comes from a
  table piece whose SHA-256 the signed root names.
- Every length is bounded before anything is allocated from it: chunks
  decompress to at most their table length (<= CHUNK_MAX), the table to
  at most ``MAX_TABLE_BYTES``, a table names at most ``MAX_CHUNKS`` chunks.
- Pure, except the EDGE ``seal_*`` functions (nonces and padding).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import xxhash
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from usenetsync_cli.errors import TamperedError

__all__ = [
    "CHUNK_MAX",
    "PACK_BYTES",
    "Chunk",
    "TableEntry",
    "chunk_stream",
    "open_chunk",
    "open_table_piece",
    "parse_table",
    "seal_chunk",
    "seal_table_piece",
    "table_line",
]

CHUNK_MIN = 16 << 10
CHUNK_MAX = 256 << 10
CUT_MODULUS = 256
PACK_BYTES = 752_000  # a padded index article is no bigger than a full segment
MAX_CHUNKS = 1 << 22  # 4 million chunks: ~1 TB of records
MAX_TABLE_BYTES = 1 << 30
_NONCE = 12
_TAG = 16
_U32 = struct.Struct(">I")
_CHUNK_AAD = b"usenetsync/v2/chunk\x00"
_TABLE_AAD = b"usenetsync/v2/table\x00"


@dataclass(frozen=True)
class Chunk:
    chunk_id: bytes
    plain: bytes


def chunk_stream(lines: Iterable[bytes]) -> Iterator[Chunk]:
    """Content-defined chunks of a stream of newline-terminated lines (see the module docstring)."""
    buf = bytearray()
    for line in lines:
        view = memoryview(line)
        while len(buf) + len(view) > CHUNK_MAX:
            take = CHUNK_MAX - len(buf)
            buf += view[:take]
            view = view[take:]
            yield _chunk(buf)
            buf = bytearray()
        buf += view
        if len(buf) >= CHUNK_MIN and xxhash.xxh64_intdigest(line) % CUT_MODULUS == 0:
            yield _chunk(buf)
            buf = bytearray()
    if buf:
        yield _chunk(buf)


def _chunk(buf: bytearray) -> Chunk:
    plain = bytes(buf)
    return Chunk(hashlib.sha256(plain).digest(), plain)


def _chunk_aad(locator_key: bytes, chunk_id: bytes) -> bytes:
    return _CHUNK_AAD + locator_key + chunk_id


def seal_chunk(share_key: bytes, locator_key: bytes, chunk: Chunk) -> bytes:
    """EDGE (nonce from the OS CSPRNG)."""
    nonce = os.urandom(_NONCE)
    packed = zstandard.ZstdCompressor(level=3).compress(chunk.plain)
    return nonce + AESGCM(share_key).encrypt(nonce, packed, _chunk_aad(locator_key, chunk.chunk_id))


def _bounded_decompress(data: bytes, limit: int, what: str) -> bytes:
    try:
        reader = zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(io.BytesIO(data),
                                                                                   read_across_frames=True)
        out = reader.read(limit + 1)
    except zstandard.ZstdError:
        raise TamperedError(f"{what} is damaged (bad compression)") from None
    if len(out) > limit:
        raise TamperedError(f"{what} decompresses to more than its signed length")
    return out


def open_chunk(share_key: bytes, locator_key: bytes, entry: TableEntry, sealed: bytes) -> bytes:
    """The plain bytes of one chunk; TamperedError unless it is exactly the chunk the table names."""
    if len(sealed) != entry.sealed_len or len(sealed) < _NONCE + _TAG:
        raise TamperedError("a share index chunk has the wrong length")
    try:
        packed = AESGCM(share_key).decrypt(sealed[:_NONCE], sealed[_NONCE:], _chunk_aad(locator_key, entry.chunk_id))
    except InvalidTag:
        raise TamperedError("a share index chunk failed authentication (altered, moved, or another key)") from None
    plain = _bounded_decompress(packed, entry.plain_len, "a share index chunk")
    if len(plain) != entry.plain_len or hashlib.sha256(plain).digest() != entry.chunk_id:
        raise TamperedError("a share index chunk is not the one its table names")
    return plain


def is_int(v: Any) -> bool:
    """A JSON integer, not a bool (which JSON decoding would also let through as an int)."""
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class TableEntry:
    chunk_id: bytes
    plain_len: int
    pack_nonce: bytes
    offset: int
    sealed_len: int


def table_line(e: TableEntry) -> bytes:
    return json.dumps([e.chunk_id.hex(), e.plain_len, e.pack_nonce.hex(), e.offset, e.sealed_len],
                      separators=(",", ":")).encode("ascii") + b"\n"


def _entry(line: bytes) -> TableEntry:
    try:
        v = json.loads(line)
        e = TableEntry(bytes.fromhex(v[0]), v[1], bytes.fromhex(v[2]), v[3], v[4])
        if (len(v) != 5 or len(e.chunk_id) != 32 or len(e.pack_nonce) != 16
                or not all(is_int(i) for i in (e.plain_len, e.offset, e.sealed_len))
                or not 1 <= e.plain_len <= CHUNK_MAX or not 0 <= e.offset < PACK_BYTES
                or not _NONCE + _TAG < e.sealed_len <= PACK_BYTES - e.offset):
            raise ValueError("bounds")
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        raise TamperedError("the share index table is malformed") from None
    return e


def parse_table(plain: bytes, chunks: int, plain_bytes: int) -> list[TableEntry]:
    """The table's entries; TamperedError unless it names exactly ``chunks`` chunks of ``plain_bytes`` in all."""
    lines = plain.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) != chunks:
        raise TamperedError("the share index table does not name as many chunks as its root says")
    entries = [_entry(line) for line in lines]
    if sum(e.plain_len for e in entries) != plain_bytes:
        raise TamperedError("the share index table does not add up to the size its root says")
    return entries


def _table_aad(locator_key: bytes, pack_nonce: bytes, piece: int) -> bytes:
    # Not the version: a root can move to the next version (taken slots) after the table is posted;
    # the signed root names each piece by its SHA-256, which binds it to the version.
    return _TABLE_AAD + locator_key + pack_nonce + _U32.pack(piece)


def seal_table_piece(share_key: bytes, locator_key: bytes, pack_nonce: bytes, piece: int, data: bytes) -> bytes:
    """EDGE (nonce from the OS CSPRNG): one piece of the compressed table."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(share_key).encrypt(nonce, data, _table_aad(locator_key, pack_nonce, piece))


def open_table_piece(share_key: bytes, locator_key: bytes, pack_nonce: bytes, piece: int, sealed: bytes) -> bytes:
    if len(sealed) < _NONCE + _TAG:
        raise TamperedError("a share index table piece is truncated")
    try:
        return AESGCM(share_key).decrypt(sealed[:_NONCE], sealed[_NONCE:], _table_aad(locator_key, pack_nonce, piece))
    except InvalidTag:
        raise TamperedError("a share index table piece failed authentication") from None


def decompress_table(compressed: bytes, table_bytes: int) -> bytes:
    if not 0 <= table_bytes <= MAX_TABLE_BYTES:
        raise TamperedError("the share index table is larger than a reader accepts")
    out = _bounded_decompress(compressed, table_bytes, "the share index table")
    if len(out) != table_bytes:
        raise TamperedError("the share index table decompresses to another size than its root says")
    return out
