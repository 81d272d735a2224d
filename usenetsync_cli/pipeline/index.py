"""Incremental indexing: merge a scan of a folder into its shards.

Owns: deciding, per file, whether it is new, changed, deleted or unchanged
since the last index, and writing exactly those differences.

How: the scanner yields one directory at a time, a big one in parts of at
most ``scan.CHUNK_ENTRIES`` files. Directories that arrive whole (one part,
the common case) are merged in small batches, whose stored rows are read
from the shards their ``shard_mask`` names (one indexed query per shard per
batch), compared by (kind, size, mtime_ns, ctime_ns, inode, mode, target),
and only differences are written; stored rows not matched by a scanned name
are deleted files. A directory in several parts is merged part by part
(``_BigDir``): each part reads only the stored rows of its own names (one
``name IN (...)`` query per shard, each shard asked only for the names that
hash to it), compares and writes the same way, and records its names in a
throwaway SQLite file (``index-seen-PID.db`` in the state dir, deleted at
the end; a crashed run's file is removed when the next one is made). After
the last part, the directory's stored present rows are walked per shard in
keyset pages by name, and those the seen-file does not hold are deleted; the
walk is skipped when the parts matched every stored row, and stops at the
last deleted one (the count is the stored rows minus those matched). A new
directory (first index) has no stored rows: no lookups, no seen-file.
Unchanged files cost no write either way. Directories not seen in this run
are swept at the end and their files marked deleted.

Selection: the folder's stored rules (``--exclude`` and friends,
core/excludes.py) are handed to the scanner, which never lists what they
leave out; so a path excluded now but indexed before is not seen, and is
marked deleted exactly like a file removed from disk (the next upload or
share update drops it from the share; nothing on disk is touched).

Memory: one batch of whole directories' rows, or one part plus one page
(``DELETE_PAGE`` names) of a big directory, never a whole big directory;
plus the writer's open batch (``batch_rows``).

Commit point: ``BatchWriter.flush()`` (see store/batch.py). A crash loses at
most the open batch; re-running ``index`` redoes exactly that work, because
every decision is recomputed from the disk and the committed rows (the
seen-file is only ever read in the run that wrote it). A directory's
``shard_mask`` bit goes into the batch's catalog transaction before its
first row for that shard, and the catalog commits first. A big directory's
new ``dirs`` row is written with its first part; its mode/mtime/seen_run
update with its last. Folder totals and the run's summary are written only
after the last flush. The summary counts of a directory in parts equal those
of the same directory merged whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from operator import itemgetter
from typing import Any

import apsw

from usenetsync_cli.core.excludes import Selection
from usenetsync_cli.errors import InputPathError
from usenetsync_cli.pipeline.scan import DirListing, ScanCounters, scan_tree
from usenetsync_cli.store import catalog, db
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
# A big directory's part: the stored rows of some of its names (unique index files(folder_id, dir_id, name)).
_SELECT_NAMES = (
    "SELECT name, kind, size, mtime_ns, ctime_ns, inode, mode, target, nlink, xattrs"
    " FROM files WHERE folder_id=? AND dir_id=? AND name IN ({}) AND present=1"
)
# A big directory's present names in one shard, one keyset page at a time (same index, in name order).
_COUNT_PRESENT = "SELECT count(*) FROM files WHERE folder_id=? AND dir_id=? AND present=1"
_PAGE_PRESENT = "SELECT name FROM files WHERE folder_id=? AND dir_id=? AND present=1 AND name>? ORDER BY name LIMIT ?"


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
    excluded: int = 0  # files and directories left out by the folder's patterns (a directory counts once)
    caches_skipped: int = 0  # directories with a valid CACHEDIR.TAG left out (--exclude-caches)
    mounts_skipped: int = 0  # mount points not crossed (--one-file-system)
    selection: dict[str, Any] = field(default_factory=dict)  # the rules this run applied
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
    selection: Selection | None = None,
    progress: ProgressFn | None = None,
    clock: Callable[[], float] = time.monotonic,
    batch_rows: int = 50_000,
) -> IndexSummary:
    """Merge a scan of ``path`` into the state. ``xattrs``: carry ``user.*`` extended attributes;
    None keeps what the folder was indexed with last (the choice is stored with the folder).
    ``selection``: what to leave out; None applies the folder's stored rules, a value replaces them for good."""
    root = resolve_folder(path)
    root_b = os.fsencode(root)
    cat = state.catalog
    folder = catalog.get_or_create_folder(cat, root_b)
    xattrs = catalog.folder_xattrs(cat, folder.folder_id, xattrs)
    selection = catalog.folder_selection(cat, folder.folder_id, selection)
    run_id = catalog.start_run(cat, "index", folder.folder_id)
    summary = IndexSummary(folder=str(root), folder_id=folder.folder_id, selection=selection.to_dict())
    counters = ScanCounters()
    writer = BatchWriter(state, max_rows=batch_rows, clock=clock)
    t0 = clock()
    try:
        _merge(state, writer, folder, run_id, root_b, summary, counters, follow_symlinks, xattrs, selection, progress,
               clock, t0)
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
    summary.excluded = counters.excluded
    summary.caches_skipped = counters.caches
    summary.mounts_skipped = counters.mounts
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
    selection: Selection,
    progress: ProgressFn | None,
    clock: Callable[[], float],
    t0: float,
) -> None:
    batch: list[DirListing] = []
    nfiles = 0
    big: _BigDir | None = None
    try:
        for listing in scan_tree(root_b, counters, follow_symlinks=follow_symlinks, xattrs=xattrs,
                                 selection=selection):
            if listing.part == 0 and listing.last:
                batch.append(listing)
                nfiles += len(listing.files)
                if len(batch) < DIR_BATCH and nfiles < FILE_BATCH:
                    continue
                _merge_batch(state, writer, folder, run_id, batch, s)
                batch, nfiles = [], 0
            else:
                if batch:  # whole directories first: memory holds one part, not a part and a batch
                    _merge_batch(state, writer, folder, run_id, batch, s)
                    batch, nfiles = [], 0
                if listing.part == 0:
                    big = _BigDir(state, writer, folder, run_id, listing, s)
                assert big is not None and big.relpath == listing.relpath  # the scanner yields parts in a row
                big.merge_part(listing)
                if listing.last:
                    big.finish()
                    big = None
            writer.maybe_flush()
            if progress is not None:
                progress(IndexProgress(s.files, s.bytes, counters.dirs, clock() - t0))
        if batch:
            _merge_batch(state, writer, folder, run_id, batch, s)
    finally:
        if big is not None:
            big.close()


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
            dir_id, mask = _new_dir(writer, cat, fid, listing, run_id), 0
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
            sh = shard_of(uid, prefix + entry[0])
            new_mask = _write_entry(writer, s, sh, new_mask, fid, dir_id, run_id, entry, old is not None)
        s.unchanged += len(entries) - touched
        for name in rows:  # present before, gone now
            add(shard_of(uid, prefix + name), _DELETE, (run_id, fid, dir_id, name))
            s.deleted += 1
    if seen_dirs:
        writer.catalog().executemany(  # type: ignore[attr-defined]
            "UPDATE dirs SET mode=?, mtime_ns=?, present=1, seen_run=? WHERE dir_id=?", seen_dirs
        )


_NEW_DIR = "INSERT INTO dirs(folder_id, relpath, mode, mtime_ns, seen_run) VALUES(?,?,?,?,?)"


def _new_dir(writer: BatchWriter, cat: apsw.Connection, fid: int, listing: DirListing, run_id: int) -> int:
    """A directory first seen in this run: its row, in the writer's catalog transaction; returns its dir_id."""
    cat_txn: Any = writer.catalog()
    cat_txn.execute(_NEW_DIR, (fid, listing.relpath, listing.mode, listing.mtime_ns, run_id))
    return int(cat.last_insert_rowid())


def _write_entry(
    writer: BatchWriter, s: IndexSummary, sh: int, mask: int, fid: int, dir_id: int, run_id: int,
    entry: tuple[Any, ...], stored: bool,
) -> int:
    """Queue one new (``stored`` False) or changed file; returns the directory's shard mask.

    The mask must reach the catalog before (or with) the row reaches the
    shard: flush() commits the catalog first, so a crash can never leave a
    row its directory does not point to.
    """
    size = entry[2]
    if stored:
        writer.add(sh, _UPDATE, (*entry[1:], run_id, fid, dir_id, entry[0]))
        s.changed += 1
        s.changed_bytes += size
        return mask
    if not mask >> sh & 1:
        mask |= 1 << sh
        cat_txn: Any = writer.catalog()
        cat_txn.execute("UPDATE dirs SET shard_mask=? WHERE dir_id=?", (mask, dir_id))
    writer.add(sh, _INSERT, (fid, dir_id, *entry, run_id))
    s.new += 1
    s.new_bytes += size
    return mask


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


DELETE_PAGE = 1000  # stored names of a big directory checked against the seen-file at once


class _BigDir:
    """One directory that arrives in several parts: merged part by part, deletions found after the last.

    Holds one part's stored rows at a time, and the directory's seen names
    in a file (``_SeenNames``), never in memory.
    """

    def __init__(
        self, state: State, writer: BatchWriter, folder: catalog.Folder, run_id: int, first: DirListing,
        s: IndexSummary,
    ) -> None:
        self.state, self.writer, self.folder, self.run_id, self.s = state, writer, folder, run_id, s
        self.relpath = rel = first.relpath
        self.mode, self.mtime_ns = first.mode, first.mtime_ns
        self.prefix = rel + b"/" if rel else b""
        fid = folder.folder_id
        row = state.catalog.execute(
            "SELECT dir_id, shard_mask, mode, mtime_ns, present FROM dirs WHERE folder_id=? AND relpath=?", (fid, rel)
        ).fetchall()
        if row:
            self.dir_id, mask, mode, mtime, present = row[0]
            if (mode, mtime, present) != (first.mode, first.mtime_ns, 1):
                s.dirs_changed += 1
        else:
            s.dirs_changed += 1
            self.dir_id, mask = _new_dir(writer, state.catalog, fid, first, run_id), 0
        # Only shards in the mask at the start can hold rows from before this run: only
        # they are read, and only their rows can be deleted. With none (a new directory,
        # the first index) there is nothing to compare or delete, so no names are kept.
        self.old_mask = self.mask = mask
        self.seen = _SeenNames(state.home.state_dir) if mask else None
        # Stored present rows now, and how many of them the parts match: the difference is the
        # number of deleted files, so an unchanged directory skips the walk for them, and a walk
        # stops at the last one. Exact only without duplicate names (see finish).
        self.present_before = sum(
            self.state.shards[sh].execute(_COUNT_PRESENT, (fid, self.dir_id)).fetchall()[0][0] for sh in iter_mask(mask)
        )
        self.matched = 0

    def merge_part(self, listing: DirListing) -> None:
        s, uid, fid, dir_id, run_id = self.s, self.folder.uid, self.folder.folder_id, self.dir_id, self.run_id
        entries = listing.files
        s.files += len(entries)
        s.bytes += sum(map(_size, entries))
        prefix = self.prefix
        shards = [shard_of(uid, prefix + e[0]) for e in entries]
        stored: dict[bytes, tuple[Any, ...]] = {}
        if self.old_mask:
            by_shard: dict[int, list[bytes]] = {}
            old_mask = self.old_mask
            for e, sh in zip(entries, shards):
                if old_mask >> sh & 1:
                    by_shard.setdefault(sh, []).append(e[0])
            for sh, names in by_shard.items():
                q = _SELECT_NAMES.format(",".join("?" * len(names)))
                # can_cache=False: one statement per list length would otherwise sit in each shard's
                # statement cache (hundreds of parameters each): +60 MB at 300,000 files, measured.
                for r in self.state.shards[sh].execute(q, (fid, dir_id, *names), can_cache=False):
                    stored[r[0]] = r
            self.matched += len(stored)
        get = stored.get
        touched = 0
        for entry, sh in zip(entries, shards):
            old = get(entry[0])
            if old is not None and old == entry:
                continue
            touched += 1
            self.mask = _write_entry(self.writer, s, sh, self.mask, fid, dir_id, run_id, entry, old is not None)
        s.unchanged += len(entries) - touched
        if self.seen is not None:
            self.seen.add(e[0] for e in entries)

    def finish(self) -> None:
        """After the last part: delete the stored present files no part named; then mark the directory seen."""
        s, fid, dir_id, run_id = self.s, self.folder.folder_id, self.dir_id, self.run_id
        if self.seen is not None:
            # A name listed twice (a directory changing while it is listed can do that) is
            # matched twice: then the count is not exact, and every stored row is checked.
            todo = self.present_before - self.matched if self.seen.seal() else -1
            add = self.writer.add
            for sh in iter_mask(self.old_mask if todo else 0):
                conn = self.state.shards[sh]
                after = b""
                while todo:
                    # fetchall: no cursor stays open while the writer may flush into this shard.
                    names = [r[0] for r in conn.execute(_PAGE_PRESENT, (fid, dir_id, after, DELETE_PAGE)).fetchall()]
                    if not names:
                        break
                    after = names[-1]
                    for name in self.seen.unseen(names):
                        add(sh, _DELETE, (run_id, fid, dir_id, name))
                        s.deleted += 1
                        todo -= 1
        self.writer.catalog().execute(  # type: ignore[attr-defined]
            "UPDATE dirs SET mode=?, mtime_ns=?, present=1, seen_run=? WHERE dir_id=?",
            (self.mode, self.mtime_ns, run_id, dir_id),
        )
        self.close()

    def close(self) -> None:
        if self.seen is not None:
            self.seen.close()
            self.seen = None


class _SeenNames:
    """The names a big directory's parts held, in a throwaway SQLite file (no memory per name).

    Appended to in scan order without an index (cheap), then indexed once by
    ``seal()`` (SQLite's external sort: bounded memory) and probed a page at a
    time. Not state: written with no journal and no sync, read only by the run
    that wrote it, removed by ``close()``; after a crash, by the next run's
    ``_SeenNames``, which removes every ``index-seen-PID.db`` whose PID is gone.
    """

    CACHE_KIB = 2048

    def __init__(self, state_dir: Path) -> None:
        _remove_stale_seen(state_dir)
        self.path = state_dir / f"index-seen-{os.getpid()}.db"
        _remove_db_files(self.path)
        self.conn: apsw.Connection | None = db.connect(self.path, cache_kib=self.CACHE_KIB)
        try:
            # No WAL, no journal, no fsync: a crash throws the file away anyway. The
            # sorter of seal() spills to files, not memory (connect sets temp_store=MEMORY).
            self.conn.execute("PRAGMA journal_mode=OFF")
            self.conn.execute("PRAGMA synchronous=OFF")
            self.conn.execute("PRAGMA temp_store=FILE")
            self.conn.execute("CREATE TABLE seen(name BLOB NOT NULL)")
        except apsw.Error as e:
            self.close()
            raise db.translate(e, self.path) or e from None

    def add(self, names: Iterator[bytes]) -> None:
        assert self.conn is not None
        try:
            with self.conn:
                self.conn.executemany("INSERT INTO seen(name) VALUES(?)", ((n,) for n in names))
        except apsw.Error as e:
            raise db.translate(e, self.path) or e from None

    def seal(self) -> bool:
        """Index the names for ``unseen``; False if some name was added twice."""
        assert self.conn is not None
        try:
            try:
                self.conn.execute("CREATE UNIQUE INDEX seen_name ON seen(name)")
                return True
            except apsw.ConstraintError:
                self.conn.execute("CREATE INDEX seen_name ON seen(name)")
                return False
        except apsw.Error as e:
            raise db.translate(e, self.path) or e from None

    def unseen(self, names: list[bytes]) -> list[bytes]:
        """Those of ``names`` (a page, at most DELETE_PAGE) that no part held."""
        assert self.conn is not None
        q = f"SELECT name FROM seen WHERE name IN ({','.join('?' * len(names))})"
        found = {r[0] for r in self.conn.execute(q, names, can_cache=False)}
        return [n for n in names if n not in found]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        _remove_db_files(self.path)


def _remove_db_files(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"),
              path.with_name(path.name + "-journal")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _remove_stale_seen(state_dir: Path) -> None:
    """Seen-files of runs that died (kill -9): their PID no longer exists."""
    for p in state_dir.glob("index-seen-*.db"):
        try:
            pid = int(p.stem.removeprefix("index-seen-"))
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _remove_db_files(p)
        except PermissionError:
            pass  # alive, someone else's
