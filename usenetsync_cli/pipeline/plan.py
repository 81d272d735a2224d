"""Upload planning: turn indexed files into segment rows, shard by shard.

Owns: deciding which files need a (new) layout, and writing it (``segments``
and ``pack_members`` rows of a new generation, using ``core.packing``).

A file needs planning when it was never planned, or its indexed stat differs
from the stat it was planned from:
- size, mtime_ns or inode differ: its content changed; it gets a new
  generation (``files.gen + 1``);
- only ctime_ns differs (chmod, chown, a rewrite with the mtime set back,
  ``touch -r``): the file is read again and re-hashed along its current
  layout. Same content hash: the plan is brought up to the new stat and
  nothing is posted (the metadata is republished by the next share
  version); another content hash: a new generation, as above.
Superseding: the rows of an *unfinished* generation are superseded when a
newer one is planned (they can never become a consistent whole); the rows of
the *done* generation (``files.done_gen``) stay live, so a share keeps the
last consistent content until the new one is done (pipeline/settle.py).
Member rows of a posted pack are never deleted: the pack's hash is
recomputed from them (core.hashing.pack_hash).

Commit point: one transaction per shard per chunk of files. It writes the
chunk's segment rows and the files' ``plan_*``/``gen`` columns together, so a
file is either fully planned or not at all; a pack never spans two chunks.
A chunk holds at most ``CHUNK_FILES`` files and, beyond its first file, at
most ``TXN_SEGMENTS`` segments, so a transaction (and the WAL, store/db.py)
stays bounded by one file's layout however large the folder: planning 1,900
sparse 10 GB files once wrote one 1.6-million-row transaction per shard.
Re-hashing (reads) happens before that transaction, never inside it.
Re-running after a crash plans exactly the files whose transaction did not
commit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import apsw

from usenetsync_cli.core.hashing import file_content_hash, is_crypto_hash, piece_hash
from usenetsync_cli.core.packing import plan_segments
from usenetsync_cli.pipeline.feed import DirPaths
from usenetsync_cli.store import catalog
from usenetsync_cli.store.db import keyset_pages, write_txn
from usenetsync_cli.store.state import State

CHUNK_FILES = 2000
TXN_SEGMENTS = 50_000  # segment rows one planning transaction writes at most (a file is never split)
_READ = 1 << 22

# The WHERE repeats the partial index files_unplanned's word for word (SQLite uses a partial index only
# for a query whose terms contain its condition): the pages walk only files that need a plan.
_PLAN_COLS = (
    "SELECT file_id, dir_id, name, size, mtime_ns, ctime_ns, inode, plan_size, plan_mtime_ns, plan_inode, gen,"
    " done_gen, content_hash FROM files"
)
_NEEDS = (
    " AND present=1 AND kind=0 AND (plan_size IS NULL OR plan_size<>size OR plan_mtime_ns<>mtime_ns"
    " OR plan_inode<>inode OR plan_ctime_ns IS NOT ctime_ns)"
)
_NEEDS_PLAN = _PLAN_COLS + " INDEXED BY files_unplanned WHERE folder_id=?" + _NEEDS + " AND file_id>? ORDER BY file_id LIMIT ?"
_FRESH = _PLAN_COLS + " WHERE file_id IN ({})" + _NEEDS + " ORDER BY file_id"
# Unfinished generation: its segments can never be part of a consistent whole.
_SUPERSEDE_GEN = "UPDATE segments SET state=4 WHERE file_id=? AND gen=? AND state<>4"
# Its member rows leave packs never posted (no hash yet: they will be posted without it); a
# posted pack keeps the row, which its pack hash needs.
_MEMBER_PACKS = (
    "SELECT m.seg_id, s.hash IS NULL FROM pack_members m JOIN segments s ON s.seg_id=m.seg_id"
    " WHERE m.file_id=? AND m.gen=?"
)
_DROP_MEMBER = "DELETE FROM pack_members WHERE seg_id=? AND file_id=?"
_INSERT_SEG = "INSERT INTO segments(folder_id, file_id, idx, offset, length, gen, epoch) VALUES(?,?,?,?,?,?,?)"
# Never posted yet (no hash): sealed in the epoch that is current when it goes out, so content posted after a
# revocation is never readable with an older epoch's keys. Failed ones too: a resume retries them.
_REEPOCH = "UPDATE segments SET epoch=? WHERE folder_id=? AND state IN (0,3) AND hash IS NULL AND epoch<>?"
_INSERT_MEMBER = "INSERT INTO pack_members(seg_id, file_id, pack_offset, length, gen) VALUES(?,?,?,?,?)"
# The stat the layout was made from, as read (not the columns as they are now): the upload's collector
# may record a newer stat in between (plan_ahead.py), which then simply needs a plan again.
_MARK_PLANNED = "UPDATE files SET plan_size=?, plan_mtime_ns=?, plan_ctime_ns=?, plan_inode=?, gen=? WHERE file_id=?"
_SAME_CONTENT = "UPDATE files SET plan_ctime_ns=ctime_ns WHERE file_id=? AND ctime_ns=?"
_DONE_SEGMENTS = "SELECT length FROM segments WHERE file_id=? AND gen=? AND state<>4 ORDER BY idx"


@dataclass
class PlanSummary:
    files_planned: int = 0
    files_replanned: int = 0
    files_rehashed_same: int = 0  # ctime-only changes whose content hash held: nothing to post
    segments: int = 0
    packs: int = 0
    bytes: int = 0
    unreadable: list[str] = field(default_factory=list)


def plan_folder(
    state: State,
    folder: catalog.Folder,
    segment_size: int,
    *,
    summary: PlanSummary | None = None,
    on_commit: Callable[[int, bool], None] | None = None,
    halted: Callable[[], bool] | None = None,
) -> PlanSummary:
    """Plan every file of ``folder`` that needs it, shard by shard in order.

    ``on_commit(shard, shard_done)`` runs after every committed transaction
    (and once with ``shard_done`` when a shard has nothing left), so a feeder
    in another thread can follow (pipeline/plan_ahead.py). ``halted()`` true ends
    the work between transactions; what committed stays planned.
    """
    summary = summary if summary is not None else PlanSummary()
    paths = DirPaths(state.catalog, folder.path)
    epoch = folder.epoch
    reepoch(state, folder.folder_id, epoch)
    for shard, conn in enumerate(state.shards):
        for rows in keyset_pages(conn, _NEEDS_PLAN, (folder.folder_id,), CHUNK_FILES):
            if halted is not None and halted():
                return summary
            # Re-hash outside the write transaction: reads may take a while.
            same = [r for r in rows if _ctime_only(r) and _same_content(conn, r, paths, summary)]
            same_ids = {r[0] for r in same}
            if same:
                with conn:
                    for r in same:
                        conn.execute(_SAME_CONTENT, (r[0], r[5]))
                    summary.files_rehashed_same += len(same)
            for part in _bounded(rows, same_ids, segment_size):
                with write_txn(conn):
                    # Read again under the write lock: the upload's collector may have changed a row
                    # since the page was read (plan_ahead.py); the layout and plan_* come from one snapshot.
                    fresh = conn.execute(_FRESH.format(",".join("?" * len(part))), [r[0] for r in part]).fetchall()
                    if fresh:
                        _plan_chunk(conn, folder.folder_id, fresh, segment_size, summary, epoch)
                if on_commit:
                    on_commit(shard, False)
        if on_commit:
            on_commit(shard, True)
    return summary


def reepoch(state: State, folder_id: int, epoch: int) -> None:
    """Bring never-posted segments to ``epoch``; a no-op read when the folder's last plan was in it.

    ``folders.planned_epoch`` is written only after every shard committed, and
    every segment planned since is inserted in the current epoch, so it is
    true whenever it is set.
    """
    rows = state.catalog.execute("SELECT planned_epoch FROM folders WHERE folder_id=?", (folder_id,)).fetchall()
    if rows and rows[0][0] == epoch:
        return
    for conn in state.shards:
        with conn:
            conn.execute(_REEPOCH, (epoch, folder_id, epoch))
    with state.catalog:
        state.catalog.execute("UPDATE folders SET planned_epoch=? WHERE folder_id=?", (epoch, folder_id))


def _ctime_only(r: tuple) -> bool:  # type: ignore[type-arg]
    _fid, _d, _n, size, mtime, _ctime, ino, psize, pmtime, pino, gen, done_gen, chash = r
    return (
        psize is not None and (size, mtime, ino) == (psize, pmtime, pino)
        and done_gen == gen and is_crypto_hash(chash)
    )


def _same_content(conn: apsw.Connection, r: tuple, paths: DirPaths, s: PlanSummary) -> bool:  # type: ignore[type-arg]
    """Re-read a file whose ctime alone moved; True if its content hash is the done one.

    The read must see one stat from start to end, equal to the indexed one;
    anything else is a change, and the file is planned anew.
    """
    file_id, dir_id, name, size, mtime, ctime, ino, _ps, _pm, _pi, gen, _dg, chash = r
    # A large file's pieces are its segments; a packed file is one piece; an empty file none.
    lengths = [n for (n,) in conn.execute(_DONE_SEGMENTS, (file_id, gen))] or ([size] if size else [])
    if sum(lengths) != size:
        return False
    path = os.path.join(paths(dir_id), name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        s.unreadable.append(f"{os.fsdecode(path)}: {e.strerror}")
        return False
    want = (size, mtime, ctime, ino)
    try:
        if _stat_key(os.fstat(fd)) != want:
            return False
        pieces = []
        offset = 0
        for n in lengths:
            pieces.append(_hash_range(fd, offset, n))
            offset += n
        if _stat_key(os.fstat(fd)) != want:
            return False
    except OSError:
        return False
    finally:
        os.close(fd)
    return file_content_hash(size, pieces) == chash


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _hash_range(fd: int, offset: int, length: int) -> bytes:
    data = bytearray()
    while len(data) < length:
        chunk = os.pread(fd, min(_READ, length - len(data)), offset + len(data))
        if not chunk:
            raise OSError("file shrank while it was read")
        data += chunk
    return piece_hash(data)


def _bounded(rows: list[tuple], skip: set[int], segment_size: int) -> Iterator[list[tuple]]:  # type: ignore[type-arg]
    """``rows`` (less ``skip``) in runs of at most ``TXN_SEGMENTS`` segments (a small file counts as one)."""
    part: list[tuple] = []  # type: ignore[type-arg]
    count = 0
    for r in rows:
        if r[0] in skip:
            continue
        segs = max(1, -(-r[3] // segment_size))
        if part and count + segs > TXN_SEGMENTS:
            yield part
            part, count = [], 0
        part.append(r)
        count += segs
    if part:
        yield part


def _plan_chunk(
    conn: apsw.Connection, folder_id: int, rows: list[tuple], segment_size: int, s: PlanSummary,  # type: ignore[type-arg]
    epoch: int,
) -> None:
    gens: dict[int, int] = {}
    for r in rows:
        file_id, plan_size, gen, done_gen = r[0], r[7], r[10], r[11]
        if plan_size is not None:
            if gen != done_gen:
                abandon_generation(conn, file_id, gen)
            s.files_replanned += 1
        else:
            s.files_planned += 1
        gens[file_id] = gen + 1
        conn.execute(_MARK_PLANNED, (r[3], r[4], r[5], r[6], gen + 1, file_id))
    # A large file's segments go in one executemany (a 10 GB file is 13,680 rows); packs need their seg_id.
    run: list[tuple[int, ...]] = []
    for seg in plan_segments(((r[0], r[3]) for r in rows), segment_size):
        s.segments += 1
        s.bytes += seg.length
        if seg.kind == "file":
            m = seg.members[0]
            run.append((folder_id, m.file_ref, m.file_offset // segment_size, m.file_offset, m.length,
                        gens[m.file_ref], epoch))
        else:
            if run:
                conn.executemany(_INSERT_SEG, run)
                run = []
            s.packs += 1
            conn.execute(_INSERT_SEG, (folder_id, None, 0, 0, seg.length, 0, epoch))
            seg_id = conn.last_insert_rowid()
            conn.executemany(
                _INSERT_MEMBER, [(seg_id, m.file_ref, m.pack_offset, m.length, gens[m.file_ref]) for m in seg.members]
            )
    if run:
        conn.executemany(_INSERT_SEG, run)


def abandon_generation(conn: apsw.Connection, file_id: int, gen: int) -> None:
    """Supersede an unfinished generation of a file (its done one, if any, stays)."""
    conn.execute(_SUPERSEDE_GEN, (file_id, gen))
    for seg_id, never_posted in conn.execute(_MEMBER_PACKS, (file_id, gen)).fetchall():
        if never_posted:
            conn.execute(_DROP_MEMBER, (seg_id, file_id))
        supersede_pack_if_unneeded(conn, seg_id)


def supersede_pack_if_unneeded(conn: apsw.Connection, seg_id: int) -> None:
    """A pack no file needs any more (no member of a file's current or done generation) carries nothing."""
    conn.execute(
        "UPDATE segments SET state=4 WHERE seg_id=? AND state<>4 AND NOT EXISTS ("
        " SELECT 1 FROM pack_members m JOIN files f ON f.file_id=m.file_id"
        " WHERE m.seg_id=? AND (m.gen=f.gen OR m.gen IS f.done_gen))",
        (seg_id, seg_id),
    )
