"""``FolderContext.open_into`` (core/epochs.py, core/crypto.py ``open_segment_into``): the download's
buffer-reusing ``FolderContext.open``.

It must accept exactly what ``ctx.open`` accepts and give the same bytes, and
refuse everything ``ctx.open`` refuses (a flipped bit, another place, another
epoch's key, a wrong version byte, non-zero padding, a truncated seal), on
both of its AES-GCM backends (core/gcm_nogil.py and cryptography's).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usenetsync_cli.core.crypto import new_nonce, seal_segment
from usenetsync_cli.core.epochs import FolderContext
from usenetsync_cli.errors import ProtocolError, TamperedError, UsenetSyncError


def open_into(ctx: FolderContext, shard: int, seg_id: int, epoch: int, sealed: bytes, out: bytearray) -> memoryview:
    return ctx.open_into(shard, seg_id, epoch, sealed, out)


@pytest.fixture(autouse=True, params=["nogil", "cryptography"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on both decryptors: OpenSSL through ctypes (GIL released) and cryptography's."""
    from usenetsync_cli.core import gcm_nogil

    if request.param == "nogil":
        if not gcm_nogil.AVAILABLE:
            pytest.skip("no usable libcrypto here")
    else:
        monkeypatch.setattr(gcm_nogil, "AVAILABLE", False)
    return str(request.param)


UID = bytes(range(16))
KEYS = {0: b"\x00" * 32, 1: b"\x01" * 32, 2: b"\x02" * 32}


def _ctx() -> FolderContext:
    return FolderContext.from_keys(UID, KEYS, 2, ())


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2), st.integers(0, 15), st.integers(0, 1 << 40), st.binary(max_size=3000))
def test_same_bytes_as_ctx_open_into_a_reused_dirty_buffer(epoch: int, shard: int, seg_id: int, data: bytes) -> None:
    ctx = _ctx()
    sealed = bytearray(ctx.seal(shard, seg_id, epoch, data, new_nonce()))
    buf = bytearray(b"\xa5" * (len(sealed) + 7))  # a buffer left dirty by an earlier, longer article
    got = open_into(ctx, shard, seg_id, epoch, sealed, buf)
    assert bytes(got) == ctx.open(shard, seg_id, epoch, bytes(sealed)) == data


@pytest.mark.parametrize("epoch", [0, 1])
def test_refuses_what_ctx_open_refuses(epoch: int) -> None:
    ctx = _ctx()
    data = b"payload " * 100
    seg = next(n for n in range(100) if ctx.at(1).pad_len(0, n) > 0)
    sealed = ctx.seal(0, seg, epoch, data, new_nonce())
    buf = bytearray(len(sealed))
    for i in (0 if epoch else 1, len(sealed) // 2, len(sealed) - 1):  # nonce, ciphertext, tag
        bad = bytearray(sealed)
        bad[i] ^= 1
        with pytest.raises(TamperedError):
            ctx.open(0, seg, epoch, bytes(bad))
        with pytest.raises(TamperedError):
            open_into(ctx, 0, seg, epoch, bad, buf)
    with pytest.raises(TamperedError):
        open_into(ctx, 0, seg + 1, epoch, sealed, buf)  # another place
    with pytest.raises(UsenetSyncError):
        open_into(ctx, 0, seg, 2, sealed, buf)  # another epoch's key
    with pytest.raises(TamperedError):
        open_into(ctx, 0, seg, epoch, sealed[:20], buf)  # truncated below a nonce and a tag
    with pytest.raises(TamperedError):
        open_into(ctx, 0, seg, epoch, sealed[:-1], buf)
    with pytest.raises(TamperedError):
        open_into(ctx, 0, seg, epoch, b"", buf)  # nothing at all: not even a version byte to read


def test_wrong_version_byte_is_a_protocol_error() -> None:
    ctx = _ctx()
    sealed = bytearray(ctx.seal(0, 1, 0, b"x" * 50, new_nonce()))
    sealed[0] = 2
    with pytest.raises(ProtocolError):
        open_into(ctx, 0, 1, 0, sealed, bytearray(len(sealed)))


def test_nonzero_padding_is_refused_even_when_authentic() -> None:
    ctx = _ctx()
    seg = next(n for n in range(100) if ctx.at(1).pad_len(0, n) > 0)
    pad = ctx.at(1).pad_len(0, seg)
    forged = seal_segment(ctx.aesgcm(1), ctx.aad(0, seg, 1), b"x" * 10 + b"\x01" * pad, new_nonce(), versioned=False)
    with pytest.raises(TamperedError, match="padding"):
        open_into(ctx, 0, seg, 1, forged, bytearray(len(forged)))
    # The same padding all zero opens: the refusal above is about the padding, nothing else.
    good = seal_segment(ctx.aesgcm(1), ctx.aad(0, seg, 1), b"x" * 10 + bytes(pad), new_nonce(), versioned=False)
    assert bytes(open_into(ctx, 0, seg, 1, good, bytearray(len(good)))) == b"x" * 10


def test_nogil_backend_is_the_one_in_use_here() -> None:
    """The download uses the GIL-free decryptor on this machine kind (a lost libcrypto would go unnoticed)."""
    from usenetsync_cli.core import gcm_nogil

    assert gcm_nogil._LIBS is not None  # not AVAILABLE: the backend fixture switches that off


def test_nogil_decrypt_refuses_a_bad_tag_and_bad_sizes() -> None:
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from usenetsync_cli.core import gcm_nogil

    if gcm_nogil._LIBS is None:
        pytest.skip("no usable libcrypto here")
    key, nonce = os.urandom(32), os.urandom(12)
    for size in (0, 1, 16, 4099):
        data = os.urandom(size)
        sealed = bytearray(AESGCM(key).encrypt(nonce, data, b"aad"))
        out = bytearray(size)
        assert gcm_nogil.decrypt_into(key, nonce, memoryview(sealed), b"aad", memoryview(out))
        assert bytes(out) == data
        assert gcm_nogil.decrypt_into(key, nonce, memoryview(bytes(sealed)), b"aad", memoryview(out))  # read-only in
        for i in range(len(sealed)):  # every byte of ciphertext and tag is covered
            bad = bytearray(sealed)
            bad[i] ^= 0x80
            assert not gcm_nogil.decrypt_into(key, nonce, memoryview(bad), b"aad", memoryview(out))
        assert not gcm_nogil.decrypt_into(key, nonce, memoryview(sealed), b"aaD", memoryview(out))
        assert not gcm_nogil.decrypt_into(key, os.urandom(12), memoryview(sealed), b"aad", memoryview(out))
    with pytest.raises(ValueError):
        gcm_nogil.decrypt_into(key, nonce, memoryview(bytearray(40)), b"", memoryview(bytearray(23)))
    with pytest.raises(ValueError):
        gcm_nogil.decrypt_into(key[:16], nonce, memoryview(bytearray(40)), b"", memoryview(bytearray(24)))
