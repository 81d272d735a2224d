"""Properties of folder keys and segment sealing (usenetsync_cli.core.crypto)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usenetsync_cli.core.crypto import (
    AAD_SIZE,
    NONCE_SIZE,
    SEAL_OVERHEAD,
    FolderKeys,
    new_folder_key,
    new_nonce,
    open_segment,
    place_aad,
    seal_segment,
    sealed_size,
)
from usenetsync_cli.errors import CryptoError, ProtocolError, TamperedError

KEYS = FolderKeys.derive(bytes(range(32)))
UID = bytes(range(100, 116))
AAD = place_aad(UID, 3, 42)

keys32 = st.binary(min_size=32, max_size=32)
uids = st.binary(min_size=16, max_size=16)
shards = st.integers(0, 2**32 - 1)
seg_ids = st.integers(0, 2**64 - 1)
payloads = st.binary(max_size=4096)
nonces = st.binary(min_size=NONCE_SIZE, max_size=NONCE_SIZE)


def _hkdf_reference(ikm: bytes, info: bytes) -> bytes:
    # RFC 5869 by hand: salt absent = 32 zero bytes; one output block.
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_derive_matches_rfc5869_with_the_documented_labels() -> None:
    # Pins the key schedule: changing it would orphan every existing upload.
    folder_key = bytes(range(32))
    keys = FolderKeys.derive(folder_key)
    assert keys.enc_key == _hkdf_reference(folder_key, b"usenetsync/v1/segment")
    assert keys.msgid_key == _hkdf_reference(folder_key, b"usenetsync/v1/msgid")
    assert keys.names_key == _hkdf_reference(folder_key, b"usenetsync/v1/names")
    assert keys.domain_key == _hkdf_reference(folder_key, b"usenetsync/v1/domains")


@given(keys32)
def test_subkeys_are_distinct_and_deterministic(folder_key: bytes) -> None:
    a, b = FolderKeys.derive(folder_key), FolderKeys.derive(bytearray(folder_key))
    assert a == b
    subkeys = {a.enc_key, a.msgid_key, a.names_key, a.domain_key, folder_key}
    assert len(subkeys) == 5


def test_repr_shows_no_key_material() -> None:
    text = repr(KEYS)
    for key in (KEYS.enc_key, KEYS.msgid_key, KEYS.names_key, KEYS.domain_key):
        assert key.hex() not in text
        assert repr(key) not in text


def test_derive_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        FolderKeys.derive(b"short")


def test_edges_give_fresh_random_values() -> None:
    assert len(new_folder_key()) == 32
    assert new_folder_key() != new_folder_key()
    assert len(new_nonce()) == NONCE_SIZE
    assert new_nonce() != new_nonce()


@given(payloads, nonces)
def test_seal_open_round_trip_and_layout(plaintext: bytes, nonce: bytes) -> None:
    sealed = seal_segment(KEYS.aesgcm, AAD, plaintext, nonce)
    assert isinstance(sealed, bytes)
    assert len(sealed) == sealed_size(len(plaintext)) == len(plaintext) + SEAL_OVERHEAD == len(plaintext) + 29
    assert sealed[0] == 1
    assert sealed[1:13] == nonce
    assert open_segment(KEYS.aesgcm, AAD, sealed) == plaintext
    # Buffers other than bytes work without the caller copying.
    assert open_segment(KEYS.aesgcm, AAD, memoryview(sealed)) == plaintext
    assert open_segment(KEYS.aesgcm, AAD, bytearray(sealed)) == plaintext


@given(payloads)
def test_seal_accepts_memoryview_slices(data: bytes) -> None:
    backing = b"head" + data + b"tail"
    view = memoryview(backing)[4 : 4 + len(data)]
    sealed = seal_segment(KEYS.aesgcm, AAD, view, new_nonce())
    assert open_segment(KEYS.aesgcm, AAD, sealed) == data


@settings(max_examples=300)
@given(st.binary(min_size=0, max_size=64), st.data())
def test_any_single_flipped_bit_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    sealed = bytearray(seal_segment(KEYS.aesgcm, AAD, plaintext, new_nonce()))
    bit = data.draw(st.integers(0, len(sealed) * 8 - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    # The version byte has its own, explicit error; every other bit is an
    # authentication failure.
    expected = ProtocolError if bit < 8 else TamperedError
    with pytest.raises(expected):
        open_segment(KEYS.aesgcm, AAD, bytes(sealed))


def test_flipped_bits_in_a_full_segment() -> None:
    plaintext = bytes(range(256)) * 3000  # 768,000 bytes
    sealed = seal_segment(KEYS.aesgcm, AAD, plaintext, new_nonce())
    for position in (1, 12, 13, 1000, 384_000, len(sealed) - 17, len(sealed) - 16, len(sealed) - 1):
        damaged = bytearray(sealed)
        damaged[position] ^= 0x80
        with pytest.raises(TamperedError, match="failed authentication"):
            open_segment(KEYS.aesgcm, AAD, damaged)


@given(payloads, uids, shards, seg_ids, uids, shards, seg_ids)
def test_segment_moved_to_another_place_fails(
    plaintext: bytes, uid1: bytes, shard1: int, seg1: int, uid2: bytes, shard2: int, seg2: int
) -> None:
    here, there = place_aad(uid1, shard1, seg1), place_aad(uid2, shard2, seg2)
    sealed = seal_segment(KEYS.aesgcm, here, plaintext, new_nonce())
    if (uid1, shard1, seg1) == (uid2, shard2, seg2):
        assert open_segment(KEYS.aesgcm, there, sealed) == plaintext
    else:
        with pytest.raises(TamperedError):
            open_segment(KEYS.aesgcm, there, sealed)


def test_neighbouring_places_are_not_interchangeable() -> None:
    sealed = seal_segment(KEYS.aesgcm, place_aad(UID, 3, 42), b"payload", new_nonce())
    for uid, shard, seg in ((UID, 3, 43), (UID, 3, 41), (UID, 4, 42), (UID, 2, 42), (bytes(16), 3, 42)):
        with pytest.raises(TamperedError):
            open_segment(KEYS.aesgcm, place_aad(uid, shard, seg), sealed)


def test_wrong_key_fails() -> None:
    other = FolderKeys.derive(bytes(32))
    sealed = seal_segment(KEYS.aesgcm, AAD, b"secret", new_nonce())
    with pytest.raises(TamperedError):
        open_segment(other.aesgcm, AAD, sealed)


@given(st.integers(0, SEAL_OVERHEAD + 10))
def test_truncated_sealed_segment_fails(cut: int) -> None:
    sealed = seal_segment(KEYS.aesgcm, AAD, b"0123456789", new_nonce())
    with pytest.raises(CryptoError):
        open_segment(KEYS.aesgcm, AAD, sealed[:cut] if cut < len(sealed) - 1 else sealed[:-1])


def test_unknown_version_is_a_protocol_error() -> None:
    sealed = bytearray(seal_segment(KEYS.aesgcm, AAD, b"x", new_nonce()))
    sealed[0] = 2
    with pytest.raises(ProtocolError, match="version 2"):
        open_segment(KEYS.aesgcm, AAD, sealed)


@given(uids, shards, seg_ids, uids, shards, seg_ids)
def test_place_aad_is_fixed_width_and_injective(
    uid1: bytes, shard1: int, seg1: int, uid2: bytes, shard2: int, seg2: int
) -> None:
    a, b = place_aad(uid1, shard1, seg1), place_aad(uid2, shard2, seg2)
    assert len(a) == len(b) == AAD_SIZE
    assert a.startswith(b"usenetsync/v1/seg")
    assert (a == b) == ((uid1, shard1, seg1) == (uid2, shard2, seg2))


@pytest.mark.parametrize(
    ("uid", "shard", "seg"),
    [
        (b"x" * 15, 0, 0),
        (b"x" * 17, 0, 0),
        (b"x" * 16, -1, 0),
        (b"x" * 16, 2**32, 0),
        (b"x" * 16, 0, -1),
        (b"x" * 16, 0, 2**64),
    ],
)
def test_place_aad_rejects_out_of_range(uid: bytes, shard: int, seg: int) -> None:
    with pytest.raises(ValueError):
        place_aad(uid, shard, seg)


def test_seal_rejects_bad_nonce_length() -> None:
    with pytest.raises(ValueError):
        seal_segment(KEYS.aesgcm, AAD, b"x", b"\x00" * 8)


def test_random_nonces_make_distinct_ciphertexts() -> None:
    a = seal_segment(KEYS.aesgcm, AAD, b"same", new_nonce())
    b = seal_segment(KEYS.aesgcm, AAD, b"same", new_nonce())
    assert a != b
