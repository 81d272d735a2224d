"""Recovery data against the real INN: create PAR2 groups, lose articles, rebuild, re-post, read back.

Every test uploads with the real pipeline, posts recovery data with
``create_recovery``, removes articles with ``ctlinnd cancel`` and deletes the
source folder, so the only way back is the survivors plus the recovery
articles on the server.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import xxhash

from tests.pipeline.upload_support import SEG, indexed, make_tree, read_back, spec_for
from tests.support.inn import InnServer
from usenetsync_cli.core.article import decode_yenc_article
from usenetsync_cli.pipeline import recovery
from usenetsync_cli.pipeline.recovery import (
    GroupLayout,
    NotRecoverableError,
    create_recovery,
    iter_layouts,
    load_layout,
    rebuild_group,
    rebuild_sealed,
    repost_rebuilt,
)
from usenetsync_cli.pipeline.upload import UploadOptions, folder_context, upload_folder
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State


@pytest.fixture
def state(tmp_path: Path):  # type: ignore[no-untyped-def]
    with State.open(Home.resolve(tmp_path / "home")) as s:
        yield s


def _upload(state: State, tmp_path: Path, inn: InnServer, *, big_segments: int = 12) -> tuple[catalog.Folder, dict[bytes, bytes], Path]:
    """A mixed tree plus one file of ``big_segments`` segments, so one shard holds a sizeable group."""
    src = tmp_path / "src"
    files = make_tree(src, large=1, small=8)
    big = os.urandom(SEG * (big_segments - 1) + 1234)
    (src / "big" / "huge.bin").write_bytes(big)
    files[b"big/huge.bin"] = big
    folder = indexed(state, src)
    s = upload_folder(
        state, folder, UploadOptions(servers=[spec_for(inn.host, inn.port)], segment_size=SEG, check_delay=0)
    )
    assert s.complete, s.errors
    return folder, files, src


def _live(state: State, folder: catalog.Folder) -> int:
    return sum(
        c.execute("SELECT count(*) FROM segments WHERE folder_id=? AND state IN (1,2)", (folder.folder_id,)).fetchall()[0][0]
        for c in state.shards
    )


def _biggest(state: State, folder: catalog.Folder) -> GroupLayout:
    return max(iter_layouts(state, folder), key=lambda g: len(g.members))


def _cancel(inn: InnServer, group: GroupLayout, count: int, *, skip: int = 0) -> list[int]:
    victims = group.members[skip : skip + count]
    for m in victims:
        inn.cancel(m.msgid)
    return [m.seg_id for m in victims]


def test_rebuild_after_source_deleted(state: State, tmp_path: Path, inn: InnServer) -> None:
    folder, files, src = _upload(state, tmp_path, inn)
    spec = spec_for(inn.host, inn.port)
    work = tmp_path / "work"
    s = create_recovery(state, folder, spec, redundancy=10, workdir=work)
    live = _live(state, folder)
    assert s.groups_created == s.groups_total >= 1
    assert s.segments_covered == s.resealed == live and s.fetched == 0 and s.segments_unavailable == 0
    assert not any(work.iterdir())  # temp files are gone
    layouts = list(iter_layouts(state, folder))
    rdb = recovery.open_recovery_db(state)
    try:
        for g in layouts:
            blocks = rdb.execute("SELECT recovery_blocks FROM groups WHERE group_id=?", (g.group_id,)).fetchall()[0][0]
            assert blocks == len(g.recovery) == max(1, math.ceil(len(g.members) * 10 / 100))
            assert g.block_size % 4 == 0 and g.block_size >= max(m.sealed_len for m in g.members)
    finally:
        rdb.close()
    for g in layouts:  # every recovery article arrived
        for _idx, mid in g.recovery_ids(folder_context(folder, ())):
            assert inn.stat(mid) == 223

    big = _biggest(state, folder)
    assert len(big.members) >= 12 and len(big.recovery) == 2
    other = next(g for g in layouts if g.group_id != big.group_id)
    lost = {big.group_id: _cancel(inn, big, 2, skip=3), other.group_id: _cancel(inn, other, 1)}
    shutil.rmtree(src)  # nothing left to re-post from: only PAR2 can bring them back

    for gid, seg_ids in lost.items():
        rb = rebuild_group(state, folder, spec, gid, seg_ids, workdir=work)
        assert set(rb) == set(seg_ids) and not rb.extra_missing and not rb.stale
        assert repost_rebuilt(state, folder, spec, rb) == len(seg_ids)
        rows = state.shards[rb.shard].execute(
            f"SELECT attempt, state, check_result FROM segments WHERE seg_id IN ({','.join(map(str, seg_ids))})"
        ).fetchall()
        assert rows == [(1, 2, 1)] * len(seg_ids)
    assert not any(work.iterdir())
    assert read_back(state, folder) == files

    # More gone than the group has recovery blocks: a typed error naming the group.
    big = _biggest(state, folder)  # fresh Message-IDs after the re-post
    gone = _cancel(inn, big, 3)
    with pytest.raises(NotRecoverableError, match=rf"recovery group {big.group_id} \(shard {big.shard}\): 3 of"):
        rebuild_group(state, folder, spec, big.group_id, gone, workdir=work)
    assert not any(work.iterdir())


def test_null_nonce_fetches_and_25_percent(state: State, tmp_path: Path, inn: InnServer) -> None:
    folder, files, src = _upload(state, tmp_path, inn, big_segments=16)
    spec = spec_for(inn.host, inn.port)
    for c in state.shards:  # as after a 441 435 duplicate: the posted nonce is unknown
        with c:
            c.execute("UPDATE segments SET nonce=NULL WHERE folder_id=?", (folder.folder_id,))
    s = create_recovery(state, folder, spec, redundancy=25, workdir=tmp_path / "work")
    assert s.fetched == s.segments_covered == _live(state, folder) and s.resealed == 0
    big = _biggest(state, folder)
    assert len(big.recovery) == math.ceil(len(big.members) * 25 / 100) >= 4
    k = len(big.recovery)
    seg_ids = _cancel(inn, big, k, skip=1)
    shutil.rmtree(src)
    rb = rebuild_group(state, folder, spec, big.group_id, seg_ids, workdir=tmp_path / "work")
    assert set(rb) == set(seg_ids)
    assert repost_rebuilt(state, folder, spec, rb) == k
    # The nonce of the re-posted bytes is known now, so they can be re-sealed later.
    nonces = state.shards[big.shard].execute(
        f"SELECT nonce FROM segments WHERE seg_id IN ({','.join(map(str, seg_ids))})"
    ).fetchall()
    at = 1 if big.epoch == 0 else 0  # after the version byte of epoch 0; later epochs have none
    assert [n for (n,) in nonces] == [rb[sid][at:at + 12] for sid in sorted(seg_ids)]
    assert read_back(state, folder) == files


def test_incremental_idempotent_and_stale_member(
    state: State, tmp_path: Path, inn: InnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, files, src = _upload(state, tmp_path, inn, big_segments=8)
    spec = spec_for(inn.host, inn.port)
    work = tmp_path / "work"
    first = create_recovery(state, folder, spec, redundancy=20, workdir=work)
    # A run that crashed after reserving a group left a state-0 row: it is dropped, nothing else changes.
    rdb = recovery.open_recovery_db(state)
    with rdb:
        rdb.execute(
            "INSERT INTO groups(folder_id, shard, gnonce, first_seg, last_seg, n_articles, block_size,"
            " recovery_blocks, redundancy, state, created_ns) VALUES(?,0,?,1,1,1,4,1,20,0,0)",
            (folder.folder_id, os.urandom(8)),
        )
    again = create_recovery(state, folder, spec, redundancy=20, workdir=work)
    assert again.groups_created == 0 and again.groups_total == first.groups_total
    assert rdb.execute("SELECT count(*) FROM groups WHERE state=0").fetchall()[0][0] == 0
    rdb.close()

    # New segments get groups of their own.
    (src / "later.bin").write_bytes(os.urandom(SEG * 3))
    files[b"later.bin"] = (src / "later.bin").read_bytes()
    folder = indexed(state, src)
    assert upload_folder(
        state, folder, UploadOptions(servers=[spec], segment_size=SEG, check_delay=0)
    ).complete
    third = create_recovery(state, folder, spec, redundancy=20, workdir=work)
    assert third.groups_created >= 1 and third.segments_covered == 3

    # A member re-sealed since (new nonce, re-posted) is "stale" to PAR2: it costs a block
    # but is not returned, because its current article is fine.
    big = _biggest(state, folder)
    ctx = folder_context(folder, spec.groups)
    stale = big.members[0]
    sealed, _, _ = decode_yenc_article(inn.body(stale.msgid) or b"")
    plain = ctx.open(big.shard, stale.seg_id, big.epoch, sealed)
    fresh = ctx.seal(big.shard, stale.seg_id, big.epoch, plain, os.urandom(12))
    tmp = recovery.Rebuilt(big.shard, big.group_id, {stale.seg_id: fresh})
    assert repost_rebuilt(state, folder, spec, tmp) == 1
    lost = _cancel(inn, big, 1, skip=2)
    shutil.rmtree(src)
    rb = rebuild_group(state, folder, spec, big.group_id, lost, workdir=work)
    assert set(rb) == set(lost) and rb.stale == [stale.seg_id]
    # A reader's layout (e.g. from a share index) has no sealed hashes: par2 finds the
    # re-sealed member itself, and the rebuild fetches the remaining recovery blocks.
    now = load_layout(state, folder, big.group_id)
    reader = dataclasses.replace(now, members=tuple(dataclasses.replace(m, sealed_hash=None) for m in now.members))
    runs: list[str] = []
    real = recovery.run_par2
    monkeypatch.setattr(recovery, "run_par2", lambda args, cwd: runs.append(args[0]) or real(args, cwd))
    assert rebuild_sealed(spec, ctx, reader, lost, workdir=work) == rb
    assert runs == ["r", "r"]  # the first try had one block too few
    repost_rebuilt(state, folder, spec, rb)
    assert read_back(state, folder) == files


def test_recovery_articles_look_ordinary(state: State, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "secretproject"
    make_tree(src, large=1, small=4)
    folder = indexed(state, src)
    spec = spec_for(inn.host, inn.port)
    assert upload_folder(state, folder, UploadOptions(servers=[spec], segment_size=SEG, check_delay=0)).complete
    create_recovery(state, folder, spec, redundancy=10, workdir=tmp_path / "work")
    ctx = folder_context(folder, spec.groups)
    mids = [mid for g in iter_layouts(state, folder) for _i, mid in g.recovery_ids(ctx)]
    assert mids
    with inn.connect() as raw:
        for mid in mids:
            code, _ = raw.command(f"HEAD {mid}")
            assert code == 221
            low = raw.read_block().decode("latin-1").lower()
            for leak in ("usenetsync", "secretproject", "par2", "user-agent", "\nx-"):
                assert leak not in low, leak
            body = raw.body(mid)
            assert body is not None
            name = re.search(rb"name=(\S+)", body).group(1)  # type: ignore[union-attr]
            # Random names may hold "par" by chance (a flake once in a few hundred runs): what would give
            # recovery data away is a PAR2 file name (".par2", ".vol03+04").
            assert re.search(rb"\.(par2|vol\d)", name.lower()) is None, name
            payload, _, crc_ok = decode_yenc_article(body)
            assert crc_ok and b"PAR2\x00PKT" not in payload and b"PAR 2.0" not in payload
        raw.quit()


def test_par2_creation_speed_probe(tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    """Quick probe of the PAR2 step alone: 24 sealed-size sources (~18 MB), 10 %, one block per source."""
    sealed_len = 768_029
    names = []
    for i in range(24):
        name = f"{i:016d}"
        (tmp_path / name).write_bytes(os.urandom(sealed_len - (i % 3) * 1000))
        names.append(name)
    block = recovery._block_size(sealed_len)
    t = time.perf_counter()
    recovery.run_par2(["c", "-q", "-q", f"-s{block}", "-c3", "-n1", "rec.par2", *names], tmp_path)
    dt = time.perf_counter() - t
    critical, slices = recovery.split_par2(tmp_path, 3)
    assert sorted(slices) == [0, 1, 2] and critical.startswith(b"PAR2\x00PKT")
    mbs = 24 * sealed_len / 1e6 / dt
    record_property("par2_create_mb_per_s", round(mbs, 1))
    print(f"\nPAR2 create: {24 * sealed_len / 1e6:.1f} MB in {dt:.3f} s = {mbs:.0f} MB/s")
    assert xxhash.xxh3_64_intdigest(critical) != 0 and mbs > 5


def test_full_only_leaves_tails_for_the_final_pass(state: State, tmp_path: Path, inn: InnServer) -> None:
    """What runs while an upload is still posting makes only complete groups; the final pass takes the rest."""
    folder, _files, _src = _upload(state, tmp_path, inn, big_segments=12)
    spec = spec_for(inn.host, inn.port)
    early = recovery.create_recovery(state, folder, spec, workdir=tmp_path / "w", group_articles=5, full_only=True)
    assert early.groups_created >= 2 and early.segments_covered % 5 == 0
    final = recovery.create_recovery(state, folder, spec, workdir=tmp_path / "w", group_articles=5)
    assert early.segments_covered + final.segments_covered == _live(state, folder)
