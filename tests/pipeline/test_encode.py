"""pipeline/encode.py: one consistent read per segment, BLAKE3 hashes, and nonce reuse only for identical plaintext."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xxhash

from tests.core.test_hashing import xxh3_collision
from usenetsync_cli.core.article import decode_yenc_article
from usenetsync_cli.core.crypto import new_folder_key, open_segment, place_aad
from usenetsync_cli.core.hashing import pack_hash, piece_hash
from usenetsync_cli.core.names import WireNames
from usenetsync_cli.errors import TamperedError, UsenetSyncError
from usenetsync_cli.pipeline.encode import FolderContext, Source, Work, encode

UID = b"u" * 16


def _ctx() -> FolderContext:
    return FolderContext.from_keys(UID, {0: new_folder_key(), 1: new_folder_key()}, 0, ("alt.binaries.test",))


def _source(path: Path, length: int | None = None, offset: int = 0, pack_offset: int = 0, file_id: int = 1) -> Source:
    st = os.stat(path)
    n = st.st_size if length is None else length
    return Source(file_id, os.fsencode(path), offset, n, pack_offset, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _sealed(work: Work) -> bytes:
    return decode_yenc_article(b"".join(work.buffers[1:]))[0]


def _nonce(work: Work) -> bytes:
    return _sealed(work)[1:13]


def test_segment_hash_is_blake3_of_the_plaintext_sealed(tmp_path: Path) -> None:
    ctx = _ctx()
    f = tmp_path / "f"
    f.write_bytes(os.urandom(50_000))
    w = encode(Work(0, 1, 0, 50_000, False, [_source(f)]), ctx, WireNames.fresh())
    assert not w.changed and w.hash == piece_hash(f.read_bytes())
    plain = open_segment(ctx.keys.aesgcm, place_aad(UID, 0, 1), _sealed(w))
    assert plain == f.read_bytes()


def test_pack_hash_and_member_piece_hashes(tmp_path: Path) -> None:
    ctx = _ctx()
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"alpha" * 10)
    b.write_bytes(b"beta" * 7)
    srcs = [_source(a, file_id=1), _source(b, pack_offset=50, file_id=2)]
    w = encode(Work(0, 9, 0, 78, True, srcs), ctx, WireNames.fresh())
    assert dict(w.member_hashes) == {1: piece_hash(a.read_bytes()), 2: piece_hash(b.read_bytes())}
    assert w.hash == pack_hash(78, [(0, 50, piece_hash(a.read_bytes())), (50, 28, piece_hash(b.read_bytes()))])


def test_a_rewrite_with_the_mtime_set_back_is_seen(tmp_path: Path) -> None:
    """Size and mtime equal, content not: ctime (which nobody can set back) gives it away."""
    ctx = _ctx()
    f = tmp_path / "f"
    f.write_bytes(b"A" * 40_000)
    src = _source(f)
    st = os.stat(f)
    with open(f, "r+b") as fh:
        fh.write(b"B" * 40_000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(f).st_mtime_ns == src.mtime_ns and os.stat(f).st_size == src.size
    assert os.stat(f).st_ctime_ns != src.ctime_ns
    w = encode(Work(0, 1, 0, 40_000, False, [src]), ctx, WireNames.fresh())
    assert w.changed and not w.buffers


def test_a_stored_nonce_is_reused_only_for_the_identical_plaintext(tmp_path: Path) -> None:
    ctx = _ctx()
    f = tmp_path / "f"
    data = os.urandom(30_000)
    f.write_bytes(data)
    first = encode(Work(0, 5, 0, 30_000, False, [_source(f)]), ctx, WireNames.fresh())
    again = encode(Work(0, 5, 1, 30_000, False, [_source(f)], expect_hash=first.hash, nonce=first.nonce),
                   ctx, WireNames.fresh())
    assert again.nonce == first.nonce and _sealed(again) == _sealed(first)  # reproducible bytes (PAR2)


def test_xxh3_collision_pair_is_never_sealed_under_one_nonce(tmp_path: Path) -> None:
    """Two 768,000-byte plaintexts with one xxh3_128: a legacy (xxh3) record never lends its nonce."""
    ctx = _ctx()
    a, b = xxh3_collision()
    f = tmp_path / "f"
    f.write_bytes(a)
    first = encode(Work(0, 5, 0, len(a), False, [_source(f)]), ctx, WireNames.fresh())
    f.write_bytes(b)  # the attacker's file, same size, same xxh3_128
    src = _source(f)
    # A state made before BLAKE3 stored xxh3_128(a) with the nonce: the pair fools that check...
    legacy = encode(
        Work(0, 5, 1, len(b), False, [src], expect_hash=xxhash.xxh3_128_digest(a), nonce=first.nonce),
        ctx, WireNames.fresh(),
    )
    assert not legacy.changed
    # ...but the stored nonce is not reused: b is sealed under a fresh one.
    assert _nonce(legacy) != _nonce(first) and legacy.nonce != first.nonce
    # With the BLAKE3 record the pair is told apart: nothing is sealed at all.
    crypto = encode(Work(0, 5, 1, len(b), False, [src], expect_hash=first.hash, nonce=first.nonce),
                    ctx, WireNames.fresh())
    assert crypto.changed and not crypto.buffers


def test_pack_member_that_changed_is_left_out_and_its_range_zero(tmp_path: Path) -> None:
    ctx = _ctx()
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"a" * 100)
    b.write_bytes(b"b" * 100)
    srcs = [_source(a, file_id=1), _source(b, pack_offset=100, file_id=2)]
    b.write_bytes(b"c" * 100)  # changes after planning
    w = encode(Work(3, 2, 0, 200, True, srcs), ctx, WireNames.fresh())
    assert w.dropped == [2] and [fid for fid, _ in w.member_hashes] == [1]
    plain = open_segment(ctx.keys.aesgcm, place_aad(UID, 3, 2), _sealed(w))
    assert plain == b"a" * 100 + bytes(100)
    assert w.hash == pack_hash(200, [(0, 100, piece_hash(b"a" * 100))])


def test_epoch_one_segment_has_no_version_byte_is_padded_and_opens_only_in_its_epoch(tmp_path: Path) -> None:
    f = tmp_path / "a"
    f.write_bytes(os.urandom(5000))
    ctx = _ctx()
    w = encode(Work(0, 7, 0, 5000, False, [_source(f)], epoch=1), ctx, WireNames.fresh())
    sealed = _sealed(w)
    pad = ctx.at(1).pad_len(0, 7)
    assert len(sealed) == ctx.sealed_len(0, 7, 1, 5000) == 5000 + 28 + pad
    assert ctx.open(0, 7, 1, sealed) == f.read_bytes()
    assert w.msgid == ctx.message_id(0, 7, 0, 1) != ctx.message_id(0, 7, 0, 0)
    with pytest.raises(UsenetSyncError):
        ctx.open(0, 7, 0, sealed)  # epoch 0's key
    with pytest.raises(TamperedError):
        ctx.open(0, 8, 1, sealed)  # another place


def test_a_reused_scratch_never_leaks_an_earlier_segment_into_a_pack(tmp_path: Path) -> None:
    """Posting threads reuse one plaintext buffer: a pack's gaps, a dropped member's range and the
    epoch padding must be zero however full of other bytes the buffer was."""
    from usenetsync_cli.pipeline.encode import Scratch

    ctx = FolderContext.from_keys(UID, {1: new_folder_key()}, 1, ("alt.binaries.test",))
    scratch = Scratch()
    big = tmp_path / "big"
    big.write_bytes(b"\xff" * 90_000)
    w0 = encode(Work(0, 1, 0, 90_000, False, [_source(big)], epoch=1), ctx, WireNames.fresh(), scratch)
    assert not w0.changed
    a, b, gone = tmp_path / "a", tmp_path / "b", tmp_path / "gone"
    a.write_bytes(b"alpha" * 10)
    gone.write_bytes(b"g" * 30)
    b.write_bytes(b"beta" * 7)
    srcs = [_source(a, file_id=1), _source(gone, pack_offset=60, file_id=3), _source(b, pack_offset=100, file_id=2)]
    gone.unlink()
    w = encode(Work(0, 9, 0, 140, True, srcs, epoch=1), ctx, WireNames.fresh(), scratch)
    assert w.dropped == [3]
    plain = ctx.open(0, 9, 1, _sealed(w))  # padding checked as zero by open()
    assert plain == b"alpha" * 10 + bytes(10) + bytes(30) + bytes(10) + b"beta" * 7 + bytes(12)


def test_seal_into_equals_seal_with_and_without_libcrypto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from usenetsync_cli.core import gcm_nogil

    ctx = _ctx()
    for epoch in (0, 1):
        for n in (1, 1000, 768_000):
            data = os.urandom(n)
            plain = bytearray(n + 9000)
            plain[:n] = data
            plain[n:] = b"\x01" * 9000  # stale bytes where the padding goes
            nonce = os.urandom(12)
            want = ctx.seal(0, 5, epoch, data, nonce)
            for nogil in (True, False):
                monkeypatch.setattr(gcm_nogil, "AVAILABLE", nogil)
                out = bytearray(n + 9100)
                m = ctx.seal_into(0, 5, epoch, plain, n, nonce, out)
                assert bytes(out[:m]) == want, (epoch, n, nogil)
