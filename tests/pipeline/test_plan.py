"""Tests of upload planning: layout rows, packing per shard, and re-planning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from usenetsync_cli.pipeline.index import index_folder
from usenetsync_cli.pipeline.plan import plan_folder
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

SEG = 10_000


@pytest.fixture
def state(tmp_path: Path):  # type: ignore[no-untyped-def]
    with State.open(Home.resolve(tmp_path / "home")) as s:
        yield s


def _coverage(state: State, folder_id: int) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """(shard, file_id) -> [(offset, length)] of every live segment or pack member covering it."""
    cov: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for sh, conn in enumerate(state.shards):
        for file_id, off, length in conn.execute(
            "SELECT file_id, offset, length FROM segments WHERE folder_id=? AND file_id IS NOT NULL AND state<>4",
            (folder_id,),
        ):
            cov.setdefault((sh, file_id), []).append((off, length))
        for file_id, length, seglen in conn.execute(
            "SELECT m.file_id, m.length, s.length FROM pack_members m JOIN segments s USING(seg_id) WHERE s.state<>4"
        ):
            assert length <= seglen
            cov.setdefault((sh, file_id), []).append((0, length))
    return cov


def test_every_byte_planned_once(state: State, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sizes = [0, 1, 100, SEG // 2 - 1, SEG // 2, SEG, SEG + 1, 3 * SEG + 7] + [200] * 50
    for i, n in enumerate(sizes):
        (src / f"f{i}").write_bytes(os.urandom(n))
    index_folder(state, src)
    folder = catalog.get_folder(state.catalog, os.fsencode(src.resolve()))
    assert folder is not None
    p = plan_folder(state, folder, SEG)
    assert p.files_planned == len(sizes) and p.bytes == sum(sizes)
    cov = _coverage(state, folder.folder_id)
    sizes_by_id = {
        (sh, fid): size for sh, c in enumerate(state.shards) for fid, size in c.execute("SELECT file_id, size FROM files")
    }
    for fid, size in sizes_by_id.items():
        spans = sorted(cov.get(fid, []))
        assert sum(length for _, length in spans) == size
        pos = 0
        for off, length in spans:
            assert off == pos
            pos += length
    # small files are packed: far fewer segments than files
    assert p.packs < 50 and p.segments < len(sizes)
    assert plan_folder(state, folder, SEG).segments == 0  # nothing new to plan


def test_changed_file_supersedes_its_old_segments(state: State, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(3 * SEG))
    (src / "small").write_bytes(b"x" * 10)
    index_folder(state, src)
    folder = catalog.get_folder(state.catalog, os.fsencode(src.resolve()))
    assert folder is not None
    plan_folder(state, folder, SEG)
    (src / "big").write_bytes(os.urandom(2 * SEG))
    (src / "small").write_bytes(b"y" * 20)
    index_folder(state, src)
    p = plan_folder(state, folder, SEG)
    assert p.files_replanned == 2 and p.segments == 3  # 2 for big, one new pack for small
    superseded = sum(c.execute("SELECT count(*) FROM segments WHERE state=4").fetchall()[0][0] for c in state.shards)
    assert superseded == 4  # the 3 old segments of big, and the pack small left empty
    cov = _coverage(state, folder.folder_id)
    assert sorted(sum(length for _, length in v) for v in cov.values()) == [20, 2 * SEG]


def test_planning_a_huge_layout_keeps_transactions_and_the_wal_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """400,000 segments of sparse files: each shard's WAL stays near its limit (it was the size of the whole
    plan, one transaction per shard), and every file is still planned whole, in one transaction."""
    from usenetsync_cli.pipeline import plan
    from usenetsync_cli.store import db

    monkeypatch.setattr(db, "WAL_AUTOCHECKPOINT_PAGES", 100)
    monkeypatch.setattr(db, "JOURNAL_SIZE_LIMIT", 512 << 10)
    monkeypatch.setattr(plan, "TXN_SEGMENTS", 2_000)
    seg = 16_384
    src = tmp_path / "src"
    src.mkdir()
    for i in range(159):
        with open(src / f"f{i:03d}", "wb") as f:
            f.truncate(2_500 * seg)  # sparse: nothing on disk
    with open(src / "big", "wb") as f:
        f.truncate(2_500 * seg + 7_500 * seg)  # one file of 10,000 segments: more than a transaction's bound
    (src / "small").write_bytes(b"x" * 100)
    home = Home.resolve(tmp_path / "home")
    with State.open(home) as st:
        index_folder(st, src)
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        summary = plan_folder(st, folder, seg)
        assert summary.segments == 159 * 2_500 + 10_000 + 1
        wal = {p.name: p.stat().st_size for p in home.shards_dir.glob("*.db-wal")}
        # A WAL grown by one large transaction is cut back when it restarts, not kept at its high-water mark.
        assert all(c.execute("PRAGMA journal_size_limit").fetchall()[0][0] == 512 << 10 for c in st.shards)
        assert max(wal.values()) < 1_500_000, wal  # one file's transaction (big: ~1.1 MB); without the bounds: >3 MB
        per_file: dict[tuple[int, int], list[int]] = {}
        for sh, conn in enumerate(st.shards):
            for file_id, idx in conn.execute("SELECT file_id, idx FROM segments WHERE file_id IS NOT NULL"):
                per_file.setdefault((sh, file_id), []).append(idx)
        assert sorted(len(v) for v in per_file.values()) == [2_500] * 159 + [10_000]
        assert all(sorted(v) == list(range(len(v))) for v in per_file.values())


def test_settling_in_parts_bounded_by_segments_gives_the_same_content_hashes(
    state: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """settle cuts a page of files into parts of at most PART_SEGMENTS segments (a page of a hundred 10 GB files
    held 1.6M segment rows); the hashes must be those of the whole files, whatever the cut."""
    from tests.pipeline.upload_support import fabricate_posted
    from usenetsync_cli.core.hashing import file_content_hash, piece_hash
    from usenetsync_cli.pipeline import settle

    src = tmp_path / "src"
    src.mkdir()
    sizes = [SEG * 3 + 5, SEG * 2, 200, 300, SEG * 4, 0, SEG + 1]
    for i, n in enumerate(sizes):
        with open(src / f"f{i}", "wb") as f:
            f.truncate(n)  # zeros: what fabricate_posted's hashes describe
    index_folder(state, src)
    folder = catalog.get_folder(state.catalog, os.fsencode(src.resolve()))
    assert folder is not None
    seen: list[int] = []
    parts = settle._parts

    def record(rows, seg_size):  # type: ignore[no-untyped-def]
        out = parts(rows, seg_size)
        seen.extend(len(p) for p in out)
        return out

    monkeypatch.setattr(settle, "PART_SEGMENTS", 3)
    monkeypatch.setattr(settle, "_parts", record)
    fabricate_posted(state, folder, SEG)
    assert max(seen) < len(sizes) and len(seen) > 2  # the pages really were cut
    for conn in state.shards:
        for name, size, done, gen, content in conn.execute(
                "SELECT name, size, done_gen, gen, content_hash FROM files WHERE folder_id=?", (folder.folder_id,)):
            pieces = [piece_hash(bytes(min(SEG, size - off))) for off in range(0, size, SEG)] if size >= SEG // 2 \
                else ([piece_hash(bytes(size))] if size else [])
            assert (done, content) == (gen, file_content_hash(size, pieces)), name
