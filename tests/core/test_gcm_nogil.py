"""core/gcm_nogil.py: the GIL-free AES-256-GCM is cryptography's AESGCM, byte for byte, and refuses a bad tag."""

from __future__ import annotations

import os
import threading

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from usenetsync_cli.core import gcm_nogil

pytestmark = pytest.mark.skipif(not gcm_nogil.AVAILABLE, reason="no libcrypto 3 / 1.1 on this machine")


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000), aad=st.binary(max_size=64), writable=st.booleans())
def test_encrypt_and_decrypt_match_cryptography(data: bytes, aad: bytes, writable: bool) -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    want = AESGCM(key).encrypt(nonce, data, aad)
    out = bytearray(len(data) + 16)
    gcm_nogil.encrypt_into(key, nonce, bytearray(data) if writable else data, aad, memoryview(out))
    assert bytes(out) == want
    plain = bytearray(len(data))
    assert gcm_nogil.decrypt_into(key, nonce, want, aad, memoryview(plain)) and bytes(plain) == data


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=1, max_size=2000), where=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_flipped_bit_fails_authentication(data: bytes, where: int, bit: int) -> None:
    key, nonce, aad = os.urandom(32), os.urandom(12), b"place"
    sealed = bytearray(AESGCM(key).encrypt(nonce, data, aad))
    sealed[where % len(sealed)] ^= 1 << bit
    assert not gcm_nogil.decrypt_into(key, nonce, bytes(sealed), aad, memoryview(bytearray(len(data))))
    assert not gcm_nogil.decrypt_into(key, nonce, AESGCM(key).encrypt(nonce, data, aad), b"other place",
                                      memoryview(bytearray(len(data))))


def test_bad_sizes_are_refused() -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    with pytest.raises(ValueError):
        gcm_nogil.encrypt_into(key, nonce, b"abc", b"", memoryview(bytearray(18)))
    with pytest.raises(ValueError):
        gcm_nogil.encrypt_into(key[:16], nonce, b"abc", b"", memoryview(bytearray(19)))
    with pytest.raises(ValueError):
        gcm_nogil.decrypt_into(key, nonce, b"short", b"", memoryview(bytearray(0)))


def test_threads_each_get_their_own_context() -> None:
    key = os.urandom(32)
    data = [os.urandom(200_000) for _ in range(4)]
    errors: list[int] = []

    def run(i: int) -> None:
        for _ in range(20):
            nonce = os.urandom(12)
            out = bytearray(len(data[i]) + 16)
            gcm_nogil.encrypt_into(key, nonce, data[i], b"a", memoryview(out))
            if bytes(out) != AESGCM(key).encrypt(nonce, data[i], b"a"):
                errors.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
