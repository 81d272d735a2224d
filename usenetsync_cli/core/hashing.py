"""Content hashes: what proves a byte is the one the publisher read.

Owns the two hashes the state and the share index carry:

- **segment (piece) hash**: BLAKE3-256 of exactly the plaintext that was
  sealed (a whole segment payload; for a file packed with others, its own
  bytes inside the pack: a "piece");
- **file content hash**: BLAKE3-256 over a domain tag, the file size and
  the file's ordered piece hashes::

      content_hash = BLAKE3("usenetsync/file/v1\\0" ‖ u64be(size) ‖ h(piece 0) ‖ h(piece 1) ‖ …)

  A large file's pieces are its segments in order; a packed small file is
  one piece; an empty file has none. Because it is built from piece hashes,
  a reader (or a resumed upload) checks it from the pieces' hashes alone,
  in any arrival order and without reading the file a second time;
- **pack hash** (the segment hash of a pack of small files): BLAKE3-256 over
  a domain tag, the pack length and, in pack order, each included member's
  (offset, length, piece hash)::

      pack_hash = BLAKE3("usenetsync/pack/v1\0" ‖ u64be(length) ‖ (u64be(off) ‖ u64be(len) ‖ h)…)

  Bytes of a pack not covered by a member are zero, so this commits to
  exactly the plaintext sealed (given BLAKE3's collision resistance) while
  hashing each small file's bytes once, not twice.

Why BLAKE3 and not xxh3: a stored AES-GCM nonce is reused only for a
plaintext proven identical (core/crypto.py), and xxh3 is not collision
resistant (two inputs with one xxh3_128 are easy to build; see
tests/core/test_hashing.py). BLAKE3 costs ~0.3 CPU-s/GB here and releases
the GIL for large inputs.

Invariants:
- Pure functions; no I/O.
- ``HASH_SIZE`` bytes everywhere. A stored hash of another length is a
  legacy xxh3 digest (state made before this format): it proves nothing
  and never licenses reusing a nonce (``is_crypto_hash``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import xxhash
from blake3 import blake3

__all__ = ["HASH_SIZE", "file_content_hash", "is_crypto_hash", "pack_hash", "payload_matches", "piece_hash", "segment_hash"]

HASH_SIZE = 32
_FILE_TAG = b"usenetsync/file/v1\x00"
_PACK_TAG = b"usenetsync/pack/v1\x00"
_MEMBER = struct.Struct(">QQ")
_SIZE = struct.Struct(">Q")
# blake3's own threads pay off only for large inputs; a segment is < 1 MB.
_MAX_THREADS = 1


def piece_hash(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of one sealed plaintext (a segment payload or a packed file's bytes)."""
    return blake3(data, max_threads=_MAX_THREADS).digest()


def file_content_hash(size: int, pieces: Iterable[bytes]) -> bytes:
    """The content hash of a file of ``size`` bytes from its ordered piece hashes."""
    h = blake3(_FILE_TAG)
    h.update(_SIZE.pack(size))
    for p in pieces:
        if len(p) != HASH_SIZE:
            raise ValueError("a piece hash must be 32 bytes")
        h.update(p)
    return h.digest()


def pack_hash(length: int, members: Iterable[tuple[int, int, bytes]]) -> bytes:
    """The segment hash of a pack from its included members' (offset, length, piece hash), in offset order."""
    h = blake3(_PACK_TAG)
    h.update(_SIZE.pack(length))
    end = 0
    for off, n, p in members:
        if len(p) != HASH_SIZE or off < end or off + n > length:
            raise ValueError("pack members must be 32-byte hashes of disjoint ranges, in order, inside the pack")
        h.update(_MEMBER.pack(off, n))
        h.update(p)
        end = off + n
    return h.digest()


def is_crypto_hash(stored: bytes | None) -> bool:
    """True if ``stored`` is a BLAKE3 piece hash (not a legacy xxh3 digest or nothing)."""
    return stored is not None and len(stored) == HASH_SIZE


def segment_hash(payload: bytes | bytearray | memoryview, members: Iterable[tuple[int, int]] | None = None) -> bytes:
    """The segment hash of a whole payload: its piece hash, or for a pack (``members``: included
    (offset, length) in order) its pack hash."""
    if members is None:
        return piece_hash(payload)
    view = memoryview(payload)
    return pack_hash(len(view), [(off, n, piece_hash(view[off : off + n])) for off, n in members])


def payload_matches(
    stored: bytes | None, payload: bytes | bytearray | memoryview, members: Iterable[tuple[int, int]] | None = None
) -> bool:
    """Does ``payload`` have the stored segment hash? None (unknown) matches.

    A 16-byte stored value is a legacy xxh3_128 of the whole payload: it is
    still compared (it catches accidents), but it is no proof against a
    crafted input, so it never licenses reusing a nonce (``is_crypto_hash``).
    """
    if stored is None:
        return True
    if len(stored) == 16:
        return xxhash.xxh3_128_digest(payload) == stored
    return segment_hash(payload, members) == stored
