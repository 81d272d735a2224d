"""Incremental indexing: merge a scan of a folder into its shards.

Owns: deciding, per file, whether it is new, changed, deleted or unchanged
since the last index, and writing exactly those differences.

How: the scanner yields one directory at a time; directories are merged in
small batches, whose stored rows are read from the shards their
``shard_mask`` names (one indexed query per shard per batch), compared by (kind, size, mtime_ns, ctime_ns,
inode, mode, target), and only differences are written. Unchanged files cost
no write. Directories not seen in this run are swept at the end and their
files marked deleted. Memory holds one batch of directories' rows at a time.

Commit point: ``BatchWriter.flush()`` (see store/batch.py). A crash loses at
most the open batch; re-running ``index`` redoes exactly that work, because
every decision is recomputed from the disk and the committed rows. Folder
totals and the run's summary are written only after the last flush.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from operator import itemgetter
from typing import Any

from usenetsync_cli.errors import InputPathError
from usenetsync_cli.pipeline.scan import DirListing, ScanCounters, scan_tree
from usenetsync_cli.store import catalog
from usenetsync_cli.store.batch import BatchWriter
from usenetsync_cli.store.state import State, iter_mask, shard_of

# New files are upserted: a row may exist for a file that was deleted and came back.
_INSERT = (
    "INSERT INTO files(folder_id, dir_id, name, kind, size, mtime_ns, ctime_ns, inode, mode, target, nlink, xattrs,"
    " present, changed_run) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,1,?)"
    " ON CONFLICT(folder_id, dir_id, name) DO UPDATE SET kind=excluded.kind, size=excluded.size,"
    " mtime_ns=excluded.mtime_ns, ctime_ns=excluded.ctime_ns, inode=excluded.inode, mode=excluded.mode,"
    " target=excluded.target, nlink=excluded.nlink, xattrs=excluded.xattrs, present=1, changed_run=excluded.changed_run"
)
_UPDATE = (
    "UPDATE files SET kind=?, size=?, mtime_ns=?, ctime_ns=?, inode=?, mode=?, target=?, nlink=?, xattrs=?,"
    " changed_run=?"
    " WHERE folder_id=? AND dir_id=? AND name=?"
)
_DELETE = "UPDATE files SET present=0, changed_run=? WHERE folder_id=? AND dir_id=? AND name=?"
# Columns after dir_id mirror scan.FileEntry, so a stored row compares to a
# scanned entry with one tuple comparison. Only present files are read.
_SELECT_DIRS = (
    "SELECT dir_id, name, kind, size, mtime_ns, ctime_ns, inode, mode, target, nlink, xattrs"
    " FROM files WHERE folder_id=? AND dir_id IN ({}) AND present=1"
)


@dataclass
class IndexSummary:
    folder: str
    folder_id: int
    new: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    files: int = 0
    bytes: int = 0
    new_bytes: int = 0
    changed_bytes: int = 0
    symlinks: int = 0
    dirs: int = 0
    dirs_changed: int = 0  # folders new, gone, or with another mode or mtime (a share version carries them)
    special_skipped: int = 0
    special_samples: list[str] = field(default_factory=list)
    vanished: int = 0
    warnings: int = 0
    warning_samples: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def files_per_s(self) -> float:
        return self.files / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files_per_s"] = round(self.files_per_s, 1)
        d["elapsed_s"] = round(self.elapsed_s, 3)
        return d


@dataclass(frozen=True)
class IndexProgress:
    files: int
    bytes: int
    dirs: int
    elapsed_s: float


ProgressFn = Callable[[IndexProgress], None]


def resolve_folder(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputPathError(f"{p} does not exist")
    if not p.is_dir():
        raise InputPathError(f"{p} is not a folder", hint="index takes a folder; put the file in one")
    if not os.access(p, os.R_OK | os.X_OK):
        raise InputPathError(f"{p} is not readable")
    return p.resolve()


def index_folder(
    state: State,
    path: str | os.PathLike[str],
    *,
    follow_symlinks: bool = False,
    xattrs: bool | None = None,
    progress: ProgressFn | None = None,
    clock: Callable[[], float] = time.monotonic,
    batch_rows: int = 50_000,
) -> IndexSummary:
    """Merge a scan of ``path`` into the state. ``xattrs``: carry ``user.*`` extended attributes;
    None keeps what the folder was indexed with last (the choice is stored with the folder)."""
    root = resolve_folder(path)
    root_b = os.fsencode(root)
    cat = state.catalog
    folder = catalog.get_or_create_folder(cat, root_b)
    xattrs = catalog.folder_xattrs(cat, folder.folder_id, xattrs)
    run_id = catalog.start_run(cat, "index", folder.folder_id)
    summary = IndexSummary(folder=str(root), folder_id=folder.folder_id)
    counters = ScanCounters()
    writer = BatchWriter(state, max_rows=batch_rows, clock=clock)
    t0 = clock()
    try:
        _merge(state, writer, folder, run_id, root_b, summary, counters, follow_symlinks, xattrs, progress, clock, t0)
        writer.flush()
        _sweep_unseen_dirs(state, folder, run_id, summary)
    except BaseException as e:
        writer.discard()
        catalog.finish_run(cat, run_id, "interrupted" if isinstance(e, KeyboardInterrupt) else "failed", None)
        raise
    summary.dirs = counters.dirs
    summary.symlinks = counters.symlinks
    summary.special_skipped = counters.special
    summary.special_samples = counters.special_samples
    summary.vanished = counters.vanished
    summary.warnings = counters.warnings
    summary.warning_samples = counters.warning_samples
    summary.elapsed_s = clock() - t0
    catalog.update_folder_totals(
        cat, folder.folder_id, files=summary.files, nbytes=summary.bytes, dirs=summary.dirs, run_id=run_id
    )
    catalog.finish_run(cat, run_id, "ok", summary.to_dict())
    return summary


_size = itemgetter(2)
DIR_BATCH = 64  # directories whose stored rows are read with one query per shard
FILE_BATCH = 8192


def _merge(
    state: State,
    writer: BatchWriter,
    folder: catalog.Folder,
    run_id: int,
    root_b: bytes,
    s: IndexSummary,
    counters: ScanCounters,
    follow_symlinks: bool,
    xattrs: bool,
    progress: ProgressFn | None,
    clock: Callable[[], float],
    t0: float,
) -> None:
    batch: list[DirListing] = []
    nfiles = 0
    for listing in scan_tree(root_b, counters, follow_symlinks=follow_symlinks, xattrs=xattrs):
        batch.append(listing)
        nfiles += len(listing.files)
        if len(batch) < DIR_BATCH and nfiles < FILE_BATCH:
            continue
        _merge_batch(state, writer, folder, run_id, batch, s)
        batch, nfiles = [], 0
        writer.maybe_flush()
        if progress is not None:
            progress(IndexProgress(s.files, s.bytes, counters.dirs, clock() - t0))
    if batch:
        _merge_batch(state, writer, folder, run_id, batch, s)


def _merge_batch(
    state: State, writer: BatchWriter, folder: catalog.Folder, run_id: int, batch: list[DirListing], s: IndexSummary
) -> None:
    """Merge a few directories at once: one catalog query, and one query per shard that holds any of them."""
    fid, uid, cat = folder.folder_id, folder.uid, state.catalog
    marks = ",".join("?" * len(batch))
    known: dict[bytes, tuple[int, int]] = {}
    dir_meta: dict[bytes, tuple[int, int, int]] = {}
    for rel, dir_id, mask, mode, mtime, present in cat.execute(
        f"SELECT relpath, dir_id, shard_mask, mode, mtime_ns, present FROM dirs WHERE folder_id=? AND relpath IN ({marks})",
        (fid, *[lst.relpath for lst in batch]),
    ):
        known[rel] = (dir_id, mask)
        dir_meta[rel] = (mode, mtime, present)
    by_shard: dict[int, list[int]] = {}
    for dir_id, mask in known.values():
        for sh in iter_mask(mask):
            by_shard.setdefault(sh, []).append(dir_id)
    stored: dict[int, dict[bytes, tuple[Any, ...]]] = {d: {} for d, _ in known.values()}
    for sh, dir_ids in by_shard.items():
        q = _SELECT_DIRS.format(",".join("?" * len(dir_ids)))
        for r in state.shards[sh].execute(q, (fid, *dir_ids)):
            stored[r[0]][r[1]] = r
    add = writer.add
    seen_dirs = []
    for listing in batch:
        rel = listing.relpath
        if rel in known:
            dir_id, mask = known[rel]
            seen_dirs.append((listing.mode, listing.mtime_ns, run_id, dir_id))
            if dir_meta[rel] != (listing.mode, listing.mtime_ns, 1):
                s.dirs_changed += 1
        else:
            s.dirs_changed += 1
            writer.catalog().execute(  # type: ignore[attr-defined]
                "INSERT INTO dirs(folder_id, relpath, mode, mtime_ns, seen_run) VALUES(?,?,?,?,?)",
                (fid, rel, listing.mode, listing.mtime_ns, run_id),
            )
            dir_id, mask = cat.last_insert_rowid(), 0
        entries = listing.files
        s.files += len(entries)
        s.bytes += sum(map(_size, entries))
        rows = stored.get(dir_id, {})
        pop = rows.pop
        new_mask = mask
        prefix = rel + b"/" if rel else b""
        touched = 0
        for entry in entries:
            old = pop(entry[0], None)
            if old is not None and old[1:] == entry:
                continue  # unchanged: the common case costs one dict pop and one compare
            touched += 1
            name = entry[0]
            size = entry[2]
            sh = shard_of(uid, prefix + name)
            if old is None:
                if not new_mask >> sh & 1:
                    # The mask must reach the catalog before (or with) the row
                    # reaches the shard: flush() commits the catalog first, so a
                    # crash can never leave a row its directory does not point to.
                    new_mask |= 1 << sh
                    writer.catalog().execute(  # type: ignore[attr-defined]
                        "UPDATE dirs SET shard_mask=? WHERE dir_id=?", (new_mask, dir_id)
                    )
                add(sh, _INSERT, (fid, dir_id, *entry, run_id))
                s.new += 1
                s.new_bytes += size
            else:
                add(sh, _UPDATE, (*entry[1:], run_id, fid, dir_id, name))
                s.changed += 1
                s.changed_bytes += size
        s.unchanged += len(entries) - touched
        for name in rows:  # present before, gone now
            add(shard_of(uid, prefix + name), _DELETE, (run_id, fid, dir_id, name))
            s.deleted += 1
    if seen_dirs:
        writer.catalog().executemany(  # type: ignore[attr-defined]
            "UPDATE dirs SET mode=?, mtime_ns=?, present=1, seen_run=? WHERE dir_id=?", seen_dirs
        )


def _sweep_unseen_dirs(state: State, folder: catalog.Folder, run_id: int, s: IndexSummary) -> None:
    """Directories not seen in this run are gone: mark their files deleted."""
    cat = state.catalog
    gone = cat.execute(
        "SELECT dir_id, shard_mask FROM dirs WHERE folder_id=? AND present=1 AND seen_run<>?",
        (folder.folder_id, run_id),
    ).fetchall()
    # Shard transactions first, then the catalog: a crash in between leaves the
    # dir present, so the next run sweeps it again (the UPDATE is idempotent).
    for dir_id, mask in gone:
        for sh in iter_mask(mask):
            conn = state.shards[sh]
            with conn:
                conn.execute(
                    "UPDATE files SET present=0, changed_run=? WHERE folder_id=? AND dir_id=? AND present=1",
                    (run_id, folder.folder_id, dir_id),
                )
                s.deleted += conn.changes()
    if gone:
        s.dirs_changed += len(gone)
        with cat:
            cat.executemany("UPDATE dirs SET present=0 WHERE dir_id=?", [(d,) for d, _ in gone])
