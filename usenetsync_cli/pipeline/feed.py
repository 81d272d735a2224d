"""The feeder: planned segments of a folder as ``Work`` items, with paths.

Owns: resolving each planned segment's source files (directory path from the
catalog, name and planned stat from the shard) into the ``Work`` the
encoders consume.

Invariant: memory is one page of segment rows plus a bounded LRU of
directory paths, whatever the size of the folder.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import apsw

from usenetsync_cli.pipeline.encode import Source, Work
from usenetsync_cli.store.segments import STATE_PLANNED, iter_segments

_FILE = "SELECT dir_id, name, plan_size, plan_mtime_ns, plan_ctime_ns, plan_inode FROM files WHERE file_id=?"
# Every member sealed into the pack (a posted pack keeps the rows of files that moved on: a
# re-post must reproduce exactly those bytes or be refused as changed).
_MEMBERS = (
    "SELECT m.file_id, m.pack_offset, m.length, f.dir_id, f.name, f.plan_size, f.plan_mtime_ns, f.plan_ctime_ns,"
    " f.plan_inode FROM pack_members m JOIN files f ON f.file_id=m.file_id WHERE m.seg_id=? ORDER BY m.pack_offset"
)


class DirPaths:
    """dir_id -> absolute directory path (bytes), with a bounded LRU cache."""

    def __init__(self, catalog: apsw.Connection, root: bytes, maxsize: int = 8192) -> None:
        self.catalog = catalog
        self.root = root
        self.maxsize = maxsize
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def __call__(self, dir_id: int) -> bytes:
        hit = self._cache.get(dir_id)
        if hit is not None:
            self._cache.move_to_end(dir_id)
            return hit
        rows = self.catalog.execute("SELECT relpath FROM dirs WHERE dir_id=?", (dir_id,)).fetchall()
        rel = rows[0][0] if rows else b""
        path = os.path.join(self.root, rel) if rel else self.root
        self._cache[dir_id] = path
        if len(self._cache) > self.maxsize:
            self._cache.popitem(last=False)
        return path


def iter_work(
    conn: apsw.Connection, shard: int, folder_id: int, paths: DirPaths, after: int = 0
) -> Iterator[Work]:
    """Every planned (state 0) segment of one shard above seg_id ``after`` as a ``Work`` item."""
    for row in iter_segments(conn, folder_id, STATE_PLANNED, after):
        work = work_for_row(conn, shard, row, paths, row[7])
        if work is not None:
            yield work


def work_for_row(conn: apsw.Connection, shard: int, row: tuple[Any, ...], paths: DirPaths, epoch: int) -> Work | None:
    """The ``Work`` of one segment row (seg_id, file_id, offset, length, attempt, hash, nonce, ...).

    Sources carry the stat each file was planned from; the encoder reads
    them only while that stat holds.
    """
    seg_id, file_id, offset, length, attempt, expect, nonce = row[:7]
    if file_id is not None:
        f = conn.execute(_FILE, (file_id,)).fetchall()
        if not f:
            return None
        dir_id, name, size, mtime, ctime, ino = f[0]
        src = Source(file_id, os.path.join(paths(dir_id), name), offset, length, 0, size, mtime, ctime, ino)
        return Work(shard, seg_id, attempt, length, False, [src], epoch=epoch, expect_hash=expect, nonce=nonce)
    sources = [
        Source(fid, os.path.join(paths(dir_id), name), 0, mlen, poff, size, mtime, ctime, ino)
        for fid, poff, mlen, dir_id, name, size, mtime, ctime, ino in conn.execute(_MEMBERS, (seg_id,))
    ]
    return Work(shard, seg_id, attempt, length, True, sources, epoch=epoch, expect_hash=expect, nonce=nonce)
