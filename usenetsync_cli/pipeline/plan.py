"""Upload planning: turn indexed files into segment rows, shard by shard.

Owns: deciding which files need (re)planning — never planned, or their
indexed (size, mtime_ns, inode) differs from the stat they were planned
from — superseding their old segments, and writing the new layout
(``segments`` and ``pack_members`` rows) using ``core.packing``.

Commit point: one transaction per shard per chunk of files. It writes the
chunk's segment rows and the files' ``plan_*`` columns together, so a file
is either fully planned or not at all; a pack never spans two chunks.
Re-running after a crash plans exactly the files whose transaction did not
commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import apsw

from usenetsync_cli.core.packing import plan_segments
from usenetsync_cli.store.state import State

CHUNK_FILES = 2000

_NEEDS_PLAN = (
    "SELECT file_id, size, mtime_ns, inode, plan_size FROM files"
    " WHERE folder_id=? AND present=1 AND kind=0 AND file_id>?"
    " AND (plan_size IS NULL OR plan_size<>size OR plan_mtime_ns<>mtime_ns OR plan_inode<>inode)"
    " ORDER BY file_id LIMIT ?"
)
_SUPERSEDE = "UPDATE segments SET state=4 WHERE file_id=? AND state<>4"
_SUPERSEDE_EMPTY_PACK = (
    "UPDATE segments SET state=4 WHERE seg_id=? AND NOT EXISTS (SELECT 1 FROM pack_members WHERE seg_id=?)"
)
_INSERT_SEG = "INSERT INTO segments(folder_id, file_id, idx, offset, length) VALUES(?,?,?,?,?)"
_INSERT_MEMBER = "INSERT INTO pack_members(seg_id, file_id, pack_offset, length) VALUES(?,?,?,?)"
_MARK_PLANNED = "UPDATE files SET plan_size=size, plan_mtime_ns=mtime_ns, plan_inode=inode WHERE file_id=?"


@dataclass
class PlanSummary:
    files_planned: int = 0
    files_replanned: int = 0
    segments: int = 0
    packs: int = 0
    bytes: int = 0


def plan_folder(
    state: State,
    folder_id: int,
    segment_size: int,
    *,
    on_chunk: Callable[[PlanSummary], None] | None = None,
) -> PlanSummary:
    summary = PlanSummary()
    for conn in state.shards:
        after = 0
        while True:
            rows = conn.execute(_NEEDS_PLAN, (folder_id, after, CHUNK_FILES)).fetchall()
            if not rows:
                break
            after = rows[-1][0]
            with conn:
                _plan_chunk(conn, folder_id, rows, segment_size, summary)
            if on_chunk:
                on_chunk(summary)
    return summary


def _plan_chunk(
    conn: apsw.Connection, folder_id: int, rows: list[tuple[int, int, int, int, int | None]],
    segment_size: int, s: PlanSummary,
) -> None:
    for file_id, _size, _mtime, _ino, plan_size in rows:
        if plan_size is not None:
            # The file changed since it was planned: its old segments (posted or
            # not) no longer describe it, and it leaves any pack it was in.
            conn.execute(_SUPERSEDE, (file_id,))
            packs = conn.execute("SELECT seg_id FROM pack_members WHERE file_id=?", (file_id,)).fetchall()
            conn.execute("DELETE FROM pack_members WHERE file_id=?", (file_id,))
            for (seg_id,) in packs:  # a pack left with no members carries nothing
                conn.execute(_SUPERSEDE_EMPTY_PACK, (seg_id, seg_id))
            s.files_replanned += 1
        else:
            s.files_planned += 1
        conn.execute(_MARK_PLANNED, (file_id,))
    for seg in plan_segments(((r[0], r[1]) for r in rows), segment_size):
        s.segments += 1
        s.bytes += seg.length
        if seg.kind == "file":
            m = seg.members[0]
            conn.execute(_INSERT_SEG, (folder_id, m.file_ref, m.file_offset // segment_size, m.file_offset, m.length))
        else:
            s.packs += 1
            conn.execute(_INSERT_SEG, (folder_id, None, 0, 0, seg.length))
            seg_id = conn.last_insert_rowid()
            conn.executemany(_INSERT_MEMBER, [(seg_id, m.file_ref, m.pack_offset, m.length) for m in seg.members])
