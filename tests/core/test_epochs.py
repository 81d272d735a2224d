"""core/epochs.py: which key seals, names and binds a segment, per epoch."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usenetsync_cli.core.crypto import SEAL_OVERHEAD, new_nonce
from usenetsync_cli.core.epochs import PAD_SPREAD, EpochKeys, FolderContext, sealed_overhead
from usenetsync_cli.errors import TamperedError, UsenetSyncError

UID = bytes(range(16))
KEYS = {0: b"\x00" * 32, 1: b"\x01" * 32, 2: b"\x02" * 32}


def _ctx() -> FolderContext:
    return FolderContext.from_keys(UID, KEYS, 2, ())


def test_epoch_zero_keeps_the_v1_layout_and_ids() -> None:
    from usenetsync_cli.core.crypto import FolderKeys, open_segment, place_aad
    from usenetsync_cli.core.msgid import folder_domains, segment_message_id

    ctx = _ctx()
    old = FolderKeys.derive(KEYS[0])
    assert ctx.message_id(3, 9, 1, 0) == segment_message_id(old.msgid_key, folder_domains(old.domain_key), 3, 9, 1)
    sealed = ctx.seal(3, 9, 0, b"data", new_nonce())
    assert sealed[0] == 1 and len(sealed) == 4 + SEAL_OVERHEAD
    assert open_segment(old.aesgcm, place_aad(UID, 3, 9), sealed) == b"data"


@given(st.integers(0, 15), st.integers(0, 1 << 40), st.binary(max_size=300))
def test_padding_is_keyed_deterministic_and_stripped(shard: int, seg_id: int, data: bytes) -> None:
    ctx = _ctx()
    pad = ctx.at(1).pad_len(shard, seg_id)
    assert 0 <= pad < PAD_SPREAD and pad == ctx.at(1).pad_len(shard, seg_id)
    nonce = new_nonce()
    sealed = ctx.seal(shard, seg_id, 1, data, nonce)
    assert sealed == ctx.seal(shard, seg_id, 1, data, nonce)  # a re-seal reproduces what PAR2 covers
    assert len(sealed) == ctx.sealed_len(shard, seg_id, 1, len(data)) == len(data) + sealed_overhead(1) + pad
    assert ctx.open(shard, seg_id, 1, sealed) == data


def test_pad_lengths_spread() -> None:
    ctx = _ctx()
    pads = {ctx.at(1).pad_len(0, n) for n in range(200)}
    assert len(pads) > 150  # not one size= for every full segment
    assert {ctx.at(1).pad_len(0, n) for n in range(50)} != {ctx.at(2).pad_len(0, n) for n in range(50)}


def test_nonzero_padding_is_refused_even_when_authentic() -> None:
    from usenetsync_cli.core.crypto import seal_segment

    ctx = _ctx()
    seg = next(n for n in range(100) if ctx.at(1).pad_len(0, n) > 0)
    pad = ctx.at(1).pad_len(0, seg)
    forged = seal_segment(ctx.aesgcm(1), ctx.aad(0, seg, 1), b"x" * 10 + b"\x01" * pad, new_nonce(), versioned=False)
    with pytest.raises(TamperedError, match="padding"):
        ctx.open(0, seg, 1, forged)


def test_epochs_do_not_open_each_other() -> None:
    ctx = _ctx()
    sealed = ctx.seal(0, 1, 2, b"secret", new_nonce())
    for e in (0, 1):
        with pytest.raises(UsenetSyncError):  # epoch 0 reads a version byte first: ProtocolError or TamperedError
            ctx.open(0, 1, e, sealed)
    assert len({ctx.message_id(0, 1, 0, e) for e in (0, 1, 2)}) == 3


def test_a_reader_gets_only_the_epochs_given_and_no_epoch_key() -> None:
    ctx = _ctx()
    doc = ctx.at(1).reader_doc()
    assert KEYS[1].hex() not in repr(doc)
    reader = FolderContext.for_reader(UID, {1: EpochKeys.from_reader_doc(1, doc)})
    sealed = ctx.seal(4, 5, 1, b"abc", new_nonce())
    assert reader.open(4, 5, 1, sealed) == b"abc"
    assert reader.message_id(4, 5, 0, 1) == ctx.message_id(4, 5, 0, 1)
    with pytest.raises(TamperedError, match="epoch 2"):
        reader.message_id(4, 6, 0, 2)


@pytest.mark.parametrize("doc", [None, {}, {"enc": "zz", "msgid": "00", "domains": ["a.com"]},
                                 {"enc": "00" * 32, "msgid": "00" * 32, "domains": []},
                                 {"enc": "00" * 32, "msgid": "00" * 32, "domains": ["a.com"] * 65}])
def test_malformed_reader_docs_are_refused(doc: object) -> None:  # epoch 0's doc carries its domains
    with pytest.raises(TamperedError):
        EpochKeys.from_reader_doc(0, doc)


@pytest.mark.parametrize("doc", [None, {"enc": "00" * 31, "msgid": "00" * 32}, {"enc": "00" * 32}])
def test_malformed_later_epoch_docs_are_refused(doc: object) -> None:
    with pytest.raises(TamperedError):
        EpochKeys.from_reader_doc(1, doc)


def test_later_epochs_name_each_article_with_its_own_domain() -> None:
    ctx = _ctx()
    assert "domains" not in ctx.at(1).reader_doc() and "domains" in ctx.at(0).reader_doc()
    domains = {ctx.message_id(0, seg, 0, 1).split("@")[1] for seg in range(200)}
    assert len(domains) > 190  # per article, not a per-folder set of 4-8
    assert len({ctx.message_id(0, seg, 0, 0).split("@")[1] for seg in range(200)}) <= 8  # epoch 0 as it was


def test_random_keys_give_distinct_ids() -> None:
    a = FolderContext.from_keys(UID, {1: os.urandom(32)}, 1, ())
    b = FolderContext.from_keys(UID, {1: os.urandom(32)}, 1, ())
    assert a.message_id(0, 1, 0, 1) != b.message_id(0, 1, 0, 1)
