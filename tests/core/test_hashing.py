"""core/hashing.py: BLAKE3 piece, pack and file content hashes, and why xxh3 is not enough."""

from __future__ import annotations

import random
import struct

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from usenetsync_cli.core.hashing import (
    HASH_SIZE,
    file_content_hash,
    is_crypto_hash,
    pack_hash,
    payload_matches,
    piece_hash,
    segment_hash,
)

# XXH3's default secret (kSecret in xxhash.h), the first 192 bytes.
_XXH3_SECRET = bytes.fromhex(
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f"
    "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c"
    "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
    "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364"
    "eac5ac8334d3ebc3c581a0fffa1363eb170ddd51b7f0da49d316552629d4689e"
    "2b16be587d47a1fc8ff8b8d17ad031ce45cb3a8f95160428afd7fbcabb4b407e"
)


def xxh3_collision(size: int = 768_000, seed: int = 7) -> tuple[bytes, bytes]:
    """Two different ``size``-byte inputs with the same xxh3_128 (and xxh3_64).

    XXH3's long-input loop adds each 8-byte lane ``v`` to a neighbouring
    accumulator and multiplies the halves of ``v ^ secret`` into its own: when
    the low half of ``v ^ secret`` is zero the product vanishes, so only ``v``
    itself is added. Changing lane 0 of stripe 0 by ``+d`` and lane 0 of
    stripe 1 by ``-d`` (both keeping a zero low half, which any ``d`` with a
    zero low half does) leaves every accumulator unchanged.
    """
    base = bytearray(random.Random(seed).randbytes(size))
    k1 = struct.unpack_from("<Q", _XXH3_SECRET, 0)[0]  # stripe 0, lane 0
    k2 = struct.unpack_from("<Q", _XXH3_SECRET, 8)[0]  # stripe 1 (secret advances 8 bytes), lane 0
    v1, v1b = k1 ^ (0x12345678 << 32), k1 ^ (0x9ABCDEF0 << 32)
    d = (v1b - v1) % 2**64
    v2 = k2 ^ (0x0BADF00D << 32)
    v2b = (v2 - d) % 2**64
    a, b = bytearray(base), bytearray(base)
    struct.pack_into("<Q", a, 0, v1)
    struct.pack_into("<Q", a, 64, v2)
    struct.pack_into("<Q", b, 0, v1b)
    struct.pack_into("<Q", b, 64, v2b)
    return bytes(a), bytes(b)


def test_xxh3_collision_construction_collides_and_blake3_does_not() -> None:
    a, b = xxh3_collision()
    assert a != b and len(a) == len(b) == 768_000
    assert xxhash.xxh3_128_digest(a) == xxhash.xxh3_128_digest(b)
    assert piece_hash(a) != piece_hash(b)
    # A legacy (xxh3) stored hash is fooled by the pair; a BLAKE3 one is not.
    assert payload_matches(xxhash.xxh3_128_digest(a), b)
    assert not payload_matches(piece_hash(a), b)
    assert not is_crypto_hash(xxhash.xxh3_128_digest(a)) and is_crypto_hash(piece_hash(a))


def test_piece_hash_is_blake3_256() -> None:
    from blake3 import blake3

    assert piece_hash(b"abc") == blake3(b"abc").digest() and len(piece_hash(b"")) == HASH_SIZE


@given(st.lists(st.binary(min_size=0, max_size=64), min_size=0, max_size=6), st.integers(0, 2**40))
def test_file_content_hash_binds_size_and_order(chunks: list[bytes], size: int) -> None:
    pieces = [piece_hash(c) for c in chunks]
    h = file_content_hash(size, pieces)
    assert h == file_content_hash(size, iter(pieces))
    assert h != file_content_hash(size + 1, pieces)
    if pieces != pieces[::-1]:
        assert h != file_content_hash(size, pieces[::-1])
    assert h != file_content_hash(size, pieces + [piece_hash(b"extra")])


def test_file_content_hash_rejects_short_piece_hashes() -> None:
    with pytest.raises(ValueError):
        file_content_hash(3, [b"\0" * 16])


@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=5), st.integers(0, 30))
def test_pack_hash_commits_to_the_plaintext(members: list[bytes], gap: int) -> None:
    layout, off, buf = [], 0, bytearray()
    for m in members:
        buf += m + bytes(gap)
        layout.append((off, len(m)))
        off += len(m) + gap
    payload = bytes(buf)
    h = segment_hash(payload, layout)
    assert h == pack_hash(len(payload), [(o, n, piece_hash(payload[o : o + n])) for o, n in layout])
    assert payload_matches(h, payload, layout)
    flipped = bytearray(payload)
    flipped[layout[-1][0]] ^= 1
    assert not payload_matches(h, bytes(flipped), layout)
    # Leaving a member out (its bytes zero) is another plaintext, another hash.
    if len(layout) > 1:
        assert segment_hash(payload, layout[:-1]) != h


def test_pack_hash_refuses_overlapping_or_outside_members() -> None:
    h = piece_hash(b"x")
    with pytest.raises(ValueError):
        pack_hash(10, [(0, 5, h), (4, 2, h)])
    with pytest.raises(ValueError):
        pack_hash(10, [(8, 5, h)])


def test_unknown_hash_matches_anything() -> None:
    assert payload_matches(None, b"whatever")
