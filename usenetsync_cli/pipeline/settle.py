"""Settling layouts: a file's generation becomes its published content once it is whole.

Owns: deciding, after an upload's rounds (and before a share version is
published), which files' current layout generation is *done* — every one of
its segments (or its pack) posted, STAT-verified and carrying a BLAKE3 hash
— computing their content hashes (core/hashing.py), retiring the rows of
older generations, and naming the files that kept changing (``unstable``).
It also backfills the BLAKE3 hash of live segments whose hash is unknown (an
article a crashed run had in flight, found present by STAT) or a legacy
xxh3 (a state made before shard schema v5), from the article itself:
BODY, CRC, AES-GCM under its place, then BLAKE3 of the plaintext that is
really on the server.

Rules, per unsettled file (``files_unsettled`` index: present regular files
whose ``done_gen`` is not their ``gen``):
- planned from another stat than the indexed one (it changed during the
  upload and the rounds ran out, or it could not be read): ``unstable``,
  and its unfinished generation is abandoned (the next upload plans it
  anew); a share keeps its done generation (the last consistent content),
  if any;
- every row of the current generation verified and hashed, covering the
  planned size: done (``done_gen``, ``done_size``, ``done_mtime_ns``,
  ``content_hash``), ``unstable`` cleared, older generations superseded
  (a pack only once no file's current or done generation is in it);
- otherwise still pending (the upload is incomplete; nothing changes).

Memory: a page of unsettled files is settled in parts of at most
``PART_SEGMENTS`` segments (by planned size; a file is never split), and only
unsettled files' rows are read: a page holding a hundred 10 GB files held
1.6M segment rows (538 MB at 26M segments).

Commit point: one transaction per shard per part of a page of unsettled files; the
backfill commits each page of hashes it computed. Re-running settles what a
crash left unsettled; nothing here is lost by a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import apsw

from usenetsync_cli.core.article import decode_yenc_article
from usenetsync_cli.core.hashing import file_content_hash, is_crypto_hash, pack_hash, piece_hash
from usenetsync_cli.core.packing import DEFAULT_SEGMENT_SIZE
from usenetsync_cli.errors import UsenetSyncError
from usenetsync_cli.nntp import Connection, ServerSpec
from usenetsync_cli.pipeline.encode import FolderContext
from usenetsync_cli.pipeline.plan import abandon_generation, supersede_pack_if_unneeded
from usenetsync_cli.pipeline.poster import open_connection
from usenetsync_cli.store import catalog
from usenetsync_cli.store.db import keyset_pages
from usenetsync_cli.store.segments import PAGE
from usenetsync_cli.store.state import State

_UNSETTLED = (
    "SELECT file_id, dir_id, name, size, mtime_ns, ctime_ns, inode, plan_size, plan_mtime_ns, plan_ctime_ns,"
    " plan_inode, gen, done_gen FROM files"
    " WHERE folder_id=? AND present=1 AND kind=0 AND plan_size IS NOT NULL AND done_gen IS NOT gen AND file_id>?"
    " ORDER BY file_id LIMIT ?"
)
# The current generation's rows of a page of files (file_id range), read in one query each:
# settling 10,000 small files must not cost 10,000 round trips to SQLite.
# Only unsettled files of the range (settled ones between them would be read for nothing).
_PAGE_SEGMENTS = (
    "SELECT s.file_id, s.idx, s.length, s.state, s.hash FROM segments s JOIN files f ON f.file_id=s.file_id"
    " WHERE s.file_id BETWEEN ? AND ? AND s.gen=f.gen AND s.state<>4 AND f.done_gen IS NOT f.gen"
    " ORDER BY s.file_id, s.idx"
)
_PAGE_MEMBERS = (
    "SELECT m.file_id, m.length, s.state, m.hash, s.hash FROM pack_members m JOIN files f ON f.file_id=m.file_id"
    " JOIN segments s ON s.seg_id=m.seg_id WHERE m.file_id BETWEEN ? AND ? AND m.gen=f.gen AND s.state<>4"
    " AND f.done_gen IS NOT f.gen"
)
PART_SEGMENTS = 50_000
_DONE = (
    "UPDATE files SET done_gen=gen, done_size=plan_size, done_mtime_ns=plan_mtime_ns, content_hash=?, unstable=0"
    " WHERE file_id=?"
)
_UNSTABLE = "UPDATE files SET unstable=1 WHERE file_id=?"
_RETIRE_SEGMENTS = "UPDATE segments SET state=4 WHERE file_id=? AND gen<>? AND state<>4"
_OLD_PACKS = "SELECT DISTINCT seg_id FROM pack_members WHERE file_id=? AND gen<>?"
# The WHERE holds the partial index segments_nohash's condition word for word: the end of every upload
# reads the few rows without a BLAKE3, not every verified segment.
_NEEDS_HASH = (
    "SELECT seg_id, file_id, attempt, server_msgid, hash, epoch FROM segments INDEXED BY segments_nohash"
    " WHERE folder_id=? AND state=2 AND (hash IS NULL OR length(hash)<>32) AND seg_id>? ORDER BY seg_id LIMIT ?"
)


@dataclass
class SettleSummary:
    settled: int = 0
    pending: int = 0
    unstable: list[str] = field(default_factory=list)  # relative paths (display form), first 100
    unstable_count: int = 0
    backfilled: int = 0
    unavailable: list[str] = field(default_factory=list)  # segments whose hash could not be learnt


def settle_folder(
    state: State, folder: catalog.Folder, ctx: FolderContext, spec: ServerSpec | None, *, after_upload: bool = False
) -> SettleSummary:
    """Settle every unsettled file of ``folder`` (see the module rules); ``spec`` serves backfills.

    Only an upload (``after_upload``) marks files unstable: it is what saw them
    change. Elsewhere (publishing) a file planned from an older stat is just
    not uploaded yet.
    """
    s = SettleSummary()
    if spec is not None and _any_needs_hash(state, folder.folder_id):
        backfill_hashes(state, folder, ctx, spec, s)
    dirs: dict[int, bytes] = {}
    seg_size = catalog.folder_segment_size(state.catalog, folder.folder_id) or DEFAULT_SEGMENT_SIZE
    for conn in state.shards:
        for rows in keyset_pages(conn, _UNSETTLED, (folder.folder_id,), PAGE):
            for part in _parts(rows, seg_size):
                with conn:
                    for row, verdict in _settle_page(conn, part, after_upload):
                        if verdict == "done":
                            s.settled += 1
                        elif verdict == "pending":
                            s.pending += 1
                        else:
                            s.unstable_count += 1
                            if len(s.unstable) < 100:
                                s.unstable.append(_relpath(state, dirs, row[1], row[2]))
    return s


def _parts(rows: list[tuple[Any, ...]], seg_size: int) -> list[list[tuple[Any, ...]]]:
    """``rows`` (in file_id order) cut so that each part's files have at most PART_SEGMENTS segments."""
    parts: list[list[tuple[Any, ...]]] = [[]]
    count = 0
    for r in rows:
        n = max(1, -(-(r[7] or 0) // seg_size))  # planned size
        if parts[-1] and count + n > PART_SEGMENTS:
            parts.append([])
            count = 0
        parts[-1].append(r)
        count += n
    return parts


def _settle_page(conn: apsw.Connection, rows: list[tuple[Any, ...]], after_upload: bool) -> list[tuple[Any, str]]:
    """Verdicts for a page of unsettled files (in one transaction of the caller)."""
    lo, hi = rows[0][0], rows[-1][0]
    segs: dict[int, list[tuple[int, int, int, bytes | None]]] = {}
    for file_id, idx, length, st, h in conn.execute(_PAGE_SEGMENTS, (lo, hi)):
        segs.setdefault(file_id, []).append((idx, length, st, h))
    members: dict[int, list[tuple[int, int, bytes | None, bytes | None]]] = {}
    for file_id, length, st, mh, ph in conn.execute(_PAGE_MEMBERS, (lo, hi)):
        members.setdefault(file_id, []).append((length, st, mh, ph))
    out: list[tuple[Any, str]] = []
    done: list[tuple[bytes, int]] = []
    retire: list[tuple[int, int]] = []
    for row in rows:
        file_id, _d, _n, size, mtime, ctime, ino, psize, pmtime, pctime, pino, gen, done_gen = row
        if (size, mtime, ctime, ino) != (psize, pmtime, pctime, pino):
            if after_upload:
                conn.execute(_UNSTABLE, (file_id,))
                abandon_generation(conn, file_id, gen)
            out.append((row, "unstable" if after_upload else "pending"))
            continue
        pieces = _whole_pieces(psize, segs.get(file_id, []), members.get(file_id, []))
        if pieces is None:
            out.append((row, "pending"))
            continue
        done.append((file_content_hash(psize, pieces), file_id))
        if done_gen is not None:  # an older done generation stays live until now (unfinished ones were abandoned)
            retire.append((file_id, gen))
        out.append((row, "done"))
    conn.executemany(_DONE, done)
    for file_id, gen in retire:  # after _DONE: a pack is unneeded once no file's *new* done generation is in it
        conn.execute(_RETIRE_SEGMENTS, (file_id, gen))
        for (seg_id,) in conn.execute(_OLD_PACKS, (file_id, gen)).fetchall():
            supersede_pack_if_unneeded(conn, seg_id)
    return out


def _whole_pieces(
    size: int, segs: list[tuple[int, int, int, bytes | None]], members: list[tuple[int, int, bytes | None, bytes | None]]
) -> list[bytes] | None:
    """The piece hashes of the current generation if it is whole, verified and hashed; else None."""
    if size == 0:
        return []
    if segs:
        whole = (
            [idx for idx, _l, _st, _h in segs] == list(range(len(segs)))
            and sum(n for _i, n, _st, _h in segs) == size
            and all(st == 2 and is_crypto_hash(h) for _i, _n, st, h in segs)
        )
        return [h for *_rest, h in segs] if whole else None  # type: ignore[misc]
    if len(members) != 1:
        return None
    length, st, mh, ph = members[0]
    if st != 2 or length != size or not is_crypto_hash(mh) or not is_crypto_hash(ph):
        return None
    return [mh]  # type: ignore[list-item]


def _relpath(state: State, dirs: dict[int, bytes], dir_id: int, name: bytes) -> str:
    if dir_id not in dirs:
        r = state.catalog.execute("SELECT relpath FROM dirs WHERE dir_id=?", (dir_id,)).fetchall()
        dirs[dir_id] = r[0][0] if r else b""
    base = dirs[dir_id]
    return os.fsdecode(base + b"/" + name if base else name)


# ---------------------------------------------------------------- backfill


def _any_needs_hash(state: State, folder_id: int) -> bool:
    return any(next(keyset_pages(conn, _NEEDS_HASH, (folder_id,), 1), None) for conn in state.shards)


def backfill_hashes(state: State, folder: catalog.Folder, ctx: FolderContext, spec: ServerSpec, s: SettleSummary) -> None:
    """BLAKE3 of the plaintext on the server for verified segments whose hash is unknown or legacy.

    An article that cannot be fetched or does not authenticate keeps its old
    hash and is marked for repair (``check_result`` 0 missing, 2 damaged), so
    its file does not settle until ``verify --repair`` brought it back.
    """
    conn: Connection | None = None
    try:
        for shard, sconn in enumerate(state.shards):
            for rows in keyset_pages(sconn, _NEEDS_HASH, (folder.folder_id,), PAGE):
                if conn is None:
                    conn = open_connection(spec)
                ids = {
                    (server or ctx.message_id(shard, seg_id, att, epoch)): (seg_id, fid, epoch)
                    for seg_id, fid, att, server, _h, epoch in rows
                }
                seg_updates: list[tuple[bytes, int]] = []
                member_updates: list[tuple[bytes, int, int]] = []
                bad: list[tuple[int, int]] = []
                for mid, body in conn.body_many(list(ids), window=8):
                    seg_id, file_id, epoch = ids[mid]
                    plain = _open_article(ctx, shard, seg_id, epoch, body)
                    if plain is None:
                        bad.append((0 if body is None else 2, seg_id))
                        if len(s.unavailable) < 20:
                            s.unavailable.append(f"segment {shard}:{seg_id}")
                        continue
                    if file_id is not None:
                        seg_updates.append((piece_hash(plain), seg_id))
                        continue
                    view = memoryview(plain)
                    members = sconn.execute(
                        "SELECT file_id, pack_offset, length FROM pack_members WHERE seg_id=? ORDER BY pack_offset",
                        (seg_id,),
                    ).fetchall()
                    hashed = [(fid, off, n, piece_hash(view[off : off + n])) for fid, off, n in members]
                    member_updates += [(h, seg_id, fid) for fid, _o, _n, h in hashed]
                    seg_updates.append((pack_hash(len(view), [(off, n, h) for _f, off, n, h in hashed]), seg_id))
                with sconn:
                    sconn.executemany("UPDATE segments SET hash=? WHERE seg_id=?", seg_updates)
                    sconn.executemany("UPDATE pack_members SET hash=? WHERE seg_id=? AND file_id=?", member_updates)
                    sconn.executemany(
                        "UPDATE segments SET check_result=?, error='cannot learn its hash: article missing or damaged'"
                        " WHERE seg_id=?", bad,
                    )
                s.backfilled += len(seg_updates)
    finally:
        if conn is not None:
            conn.quit()


def _open_article(ctx: FolderContext, shard: int, seg_id: int, epoch: int, body: bytes | None) -> bytes | None:
    if body is None:
        return None
    try:
        sealed, _name, crc_ok = decode_yenc_article(body)
        if not crc_ok:
            return None
        return ctx.open(shard, seg_id, epoch, sealed)
    except UsenetSyncError:
        return None
