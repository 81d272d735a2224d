"""Verify sweeps: which of a folder's articles are still on the server.

Owns: STATting every live posted segment of a folder, pipelined over several
connections, least recently checked first, optionally fetching a sample with
BODY to prove the content (STAT can pass while the body is gone), and
recording the result per segment.

How: each connection thread owns a fixed set of shards (so a shard's
connection is only ever used by one thread) and pages through them with
``checked_ns < sweep start`` (rows it updates leave the predicate, so no
cursor or keyset is needed and an interrupted sweep resumes with what is
still oldest). ``--max-age`` raises the bar to ``now - max_age``;
``--max-duration`` stops every thread at a deadline.

Commit point: one transaction per shard per page of results (``PAGE`` rows).
A server error is never recorded as a missing article: a thread that cannot
get answers stops, and what it did not check stays unchecked.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import xxhash

from usenetsync_cli.core.hashing import file_content_hash, payload_matches, piece_hash
from usenetsync_cli.errors import UsenetSyncError
from usenetsync_cli.nntp import Connection, NNTPError, ServerSpec
from usenetsync_cli.pipeline.encode import FolderContext
from usenetsync_cli.pipeline.fetch import OUR_ARTICLE_LIMIT, Article, FetchJob, fetch_results
from usenetsync_cli.pipeline.poster import open_connection
from usenetsync_cli.pipeline.upload import folder_context
from usenetsync_cli.store import catalog, counters
from usenetsync_cli.store.segments import PAGE, pack_layout
from usenetsync_cli.store.state import NSHARDS, State

RESULT_MISSING, RESULT_PRESENT, RESULT_DAMAGED = 0, 1, 2

_PAGE = (
    "SELECT seg_id, attempt, server_msgid, hash, file_id, idx, gen, epoch FROM segments"
    " WHERE folder_id=? AND state IN (1,2) AND checked_ns<? ORDER BY checked_ns, seg_id LIMIT ?"
)
_UNCHECKED = (
    "SELECT seg_id, attempt, server_msgid, hash, file_id, idx, gen, epoch FROM segments"
    " WHERE folder_id=? AND state IN (1,2) AND checked_ns IS NULL ORDER BY seg_id LIMIT ?"
)

_CHECKED_SINCE = "SELECT count(*) FROM segments WHERE folder_id=? AND state IN (1,2) AND checked_ns>=?"


@dataclass
class VerifyOptions:
    connections: int = 4
    max_duration: float | None = None  # seconds
    max_age: float | None = None  # seconds
    read_data_pct: float = 0.0
    window: int = 256


@dataclass
class VerifySummary:
    folder: str
    checked: int = 0
    present: int = 0
    missing: int = 0
    damaged: int = 0
    bodies_read: int = 0
    errors: list[str] = field(default_factory=list)
    unchecked_left: int = 0
    recovery_checked: int = 0
    recovery_missing: int = 0
    elapsed_s: float = 0.0
    missing_files: list[str] = field(default_factory=list)
    whole_files_checked: int = 0  # --read-data: files read whole, their content hash checked
    whole_files_failed: list[str] = field(default_factory=list)  # ...and those that failed it

    @property
    def rate(self) -> float:
        return self.checked / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["articles_per_s"] = round(self.rate, 1)
        d["elapsed_s"] = round(self.elapsed_s, 3)
        return d


def verify_folder(
    state: State,
    folder: catalog.Folder,
    spec: ServerSpec,
    opts: VerifyOptions,
    *,
    progress: Callable[[VerifySummary], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> VerifySummary:
    s = VerifySummary(folder=folder.display_path)
    ctx = folder_context(folder, spec.groups)
    t0 = clock()
    deadline = t0 + opts.max_duration if opts.max_duration else None
    bar = time.time_ns() - int((opts.max_age or 0) * 1e9)
    lock = threading.Lock()
    n = max(1, min(opts.connections, NSHARDS))
    seed = random.Random().getrandbits(64)
    whole = WholeFiles() if opts.read_data_pct > 0 else None
    threads = [
        threading.Thread(
            target=_sweep_shards, name=f"verify-{i}",
            args=(state, folder.folder_id, ctx, spec, opts, list(range(i, NSHARDS, n)), bar, deadline, clock, s, lock,
                  seed, progress, whole),
            daemon=True,
        )
        for i in range(n)
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        if deadline is None:
            deadline = clock()
        raise
    s.elapsed_s = clock() - t0
    # Live segments less those checked since the bar: a counter and a range of segments_due as long as
    # this sweep's work, never a count of every unchecked row.
    s.unchecked_left = counters.count(state, folder.folder_id, 1, 2) - sum(
        c.execute(_CHECKED_SINCE, (folder.folder_id, bar)).fetchall()[0][0] for c in state.shards
    )
    s.missing_files = damaged_files(state, folder)
    if whole is not None:
        s.whole_files_checked = whole.checked
        s.whole_files_failed = [_relpath(state, d, n) for d, n in whole.failed]
    _check_recovery(state, folder, ctx, spec, s, deadline, clock)
    return s


def _check_recovery(
    state: State, folder: catalog.Folder, ctx: FolderContext, spec: ServerSpec, s: VerifySummary,
    deadline: float | None = None, clock: Callable[[], float] = time.monotonic,
) -> None:
    """STAT the PAR2 recovery articles too: lost recovery data is lost protection (until ``deadline``)."""
    if deadline is not None and clock() >= deadline:
        return
    from usenetsync_cli.pipeline.recovery import iter_layouts

    ids: list[str] = []
    for lay in iter_layouts(state, folder, ctx):
        ids += [mid for _idx, mid in lay.recovery_ids(ctx)]
    if not ids:
        return
    try:
        conn = open_connection(spec)
        try:
            for _mid, ok in conn.stat_many(ids, window=256):
                s.recovery_checked += 1
                s.recovery_missing += not ok
                if deadline is not None and s.recovery_checked % 256 == 0 and clock() >= deadline:
                    break
        finally:
            conn.close()
    except UsenetSyncError as e:
        s.errors.append(f"{spec.name}: {e}")


def _sweep_shards(
    state: State, folder_id: int, ctx: FolderContext, spec: ServerSpec, opts: VerifyOptions, shards: list[int],
    bar: int, deadline: float | None, clock: Callable[[], float], s: VerifySummary, lock: threading.Lock,
    seed: int, progress: Callable[[VerifySummary], None] | None, whole: WholeFiles | None = None,
) -> None:
    conn: Connection | None = None
    try:
        for shard in shards:
            sconn = state.shards[shard]
            while deadline is None or clock() < deadline:
                rows = sconn.execute(_UNCHECKED, (folder_id, PAGE)).fetchall()
                if not rows:
                    rows = sconn.execute(_PAGE, (folder_id, bar, PAGE)).fetchall()
                if not rows:
                    break
                for attempt in range(3):
                    try:
                        if conn is None:
                            conn = open_connection(spec)
                        results = _check_page(conn, sconn, ctx, shard, rows, opts, seed, whole)
                        break
                    except NNTPError as e:
                        if conn is not None:
                            conn.close()
                            conn = None
                        if e.response is not None and e.response.code == 412 and spec.groups:
                            conn = open_connection(spec)  # this server wants a group first
                            conn.group(spec.groups[0])
                            continue
                        if not e.retryable or attempt == 2:
                            raise
                        time.sleep(0.5 * (attempt + 1))
                now = time.time_ns()
                with sconn:
                    # A posted article found present is verified (an interrupted upload or
                    # repair may have left it unchecked).
                    sconn.executemany(
                        "UPDATE segments SET checked_ns=?, check_result=?,"
                        " state=CASE WHEN state=1 AND ?=1 THEN 2 ELSE state END WHERE seg_id=?",
                        [(now, res, res, seg_id) for seg_id, res in results],
                    )
                with lock:
                    for _seg, res in results:
                        s.checked += 1
                        if res == RESULT_PRESENT:
                            s.present += 1
                        elif res == RESULT_MISSING:
                            s.missing += 1
                        else:
                            s.damaged += 1
                    s.bodies_read += sum(1 for r in rows if _sampled(seed, shard, r[0], opts.read_data_pct))
                    if progress:
                        progress(s)
    except UsenetSyncError as e:
        with lock:
            s.errors.append(f"{spec.name}: {e}")
    finally:
        if conn is not None:
            conn.close()


def _sampled(seed: int, shard: int, seg_id: int, pct: float) -> bool:
    if pct <= 0:
        return False
    if pct >= 100:
        return True
    return xxhash.xxh64_intdigest(seg_id.to_bytes(8, "big") + bytes((shard,)), seed) % 10_000 < pct * 100


def _check_page(
    conn: Connection, sconn: Any, ctx: FolderContext, shard: int, rows: list[tuple[Any, ...]], opts: VerifyOptions,
    seed: int, whole: WholeFiles | None = None,
) -> list[tuple[int, int]]:
    ids: dict[str, tuple[Any, ...]] = {}
    for row in rows:
        seg_id, attempt, server_id = row[0], row[1], row[2]
        mid = server_id or ctx.message_id(shard, seg_id, attempt, row[7])
        ids[mid] = row
    out: dict[int, int] = {}
    for mid, ok in conn.stat_many(list(ids), window=opts.window):
        out[ids[mid][0]] = RESULT_PRESENT if ok else RESULT_MISSING
    sample = [m for m, row in ids.items() if out[row[0]] == RESULT_PRESENT and _sampled(seed, shard, row[0], opts.read_data_pct)]
    # The fetch engine over this one connection: bounded replies, sabctools decoding.
    jobs = (FetchJob(m, OUR_ARTICLE_LIMIT) for m in sample)
    for job, body in fetch_results(conn, jobs, window=8):
        seg_id, _att, _srv, h, file_id, idx, gen, epoch = ids[job.message_id]
        layout = pack_layout(sconn, seg_id) if file_id is None else None
        result, payload = _body_result(ctx, shard, seg_id, epoch, h, layout, body)
        out[seg_id] = result
        if whole is not None and payload is not None:
            whole.add(sconn, seg_id, file_id, idx, gen, payload)
    return list(out.items())


class WholeFiles:
    """Whole-file checks of ``--read-data``: files whose every published piece was read in this sweep.

    Pieces are collected per file (one shard's thread each) and a file is
    checked as soon as its last piece of its published generation arrived:
    ``file_content_hash`` of the plaintexts actually read must equal the
    state's content hash (what shares publish). Files never read whole are
    simply not checked; at most ``MAX_OPEN`` partial files are held.
    """

    MAX_OPEN = 50_000

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[tuple[int, int], dict[int, bytes]] = {}
        self.checked = 0
        self.failed: list[tuple[int, bytes]] = []  # (dir_id, name)
        self.failed_count = 0

    def add(self, sconn: Any, seg_id: int, file_id: int | None, idx: int, gen: int, payload: bytes) -> None:
        if file_id is not None:
            pieces = [(file_id, idx, gen, piece_hash(payload))]
        else:
            view = memoryview(payload)
            pieces = [
                (fid, 0, mgen, piece_hash(view[off : off + n]))
                for fid, off, n, mgen in sconn.execute(
                    "SELECT file_id, pack_offset, length, gen FROM pack_members WHERE seg_id=?", (seg_id,)
                )
            ]
        for fid, i, g, h in pieces:
            row = sconn.execute(
                "SELECT done_gen, done_size, content_hash, dir_id, name FROM files WHERE file_id=? AND present=1", (fid,)
            ).fetchall()
            if not row or row[0][0] != g or row[0][2] is None:
                continue  # not the published generation of a present file
            done_gen, size, content, dir_id, name = row[0]
            want = sconn.execute(
                "SELECT count(*) FROM segments WHERE file_id=? AND gen=? AND state<>4", (fid, g)
            ).fetchall()[0][0] or 1  # a packed file is one piece
            key = (id(sconn), fid)
            with self.lock:
                got = self.open.setdefault(key, {}) if len(self.open) < self.MAX_OPEN or key in self.open else None
                if got is None:
                    continue
                got[i] = h
                if len(got) < want:
                    continue
                del self.open[key]
                self.checked += 1
                if file_content_hash(size, [got[k] for k in sorted(got)]) != content:
                    self.failed_count += 1
                    if len(self.failed) < 100:
                        self.failed.append((dir_id, name))


def _body_result(
    ctx: FolderContext, shard: int, seg_id: int, epoch: int, h: bytes | None, layout: list[tuple[int, int]] | None,
    body: Article | str | None,
) -> tuple[int, bytes | None]:
    """(result, the plaintext when it is the one stored) of one fetched article."""
    if body is None:
        return RESULT_MISSING, None
    if isinstance(body, str) or not body.crc_ok:
        return RESULT_DAMAGED, None  # not usable yEnc, larger than any article of ours, or a CRC mismatch
    try:
        payload = ctx.open(shard, seg_id, epoch, body.data)
    except UsenetSyncError:
        return RESULT_DAMAGED, None
    if not payload_matches(h, payload, layout):
        return RESULT_DAMAGED, None
    return RESULT_PRESENT, payload


def damaged_files(state: State, folder: catalog.Folder, limit: int = 1000) -> list[str]:
    """Paths of files with a segment last found missing or damaged."""
    dirs: dict[int, bytes] = {}
    out: list[str] = []
    for conn in state.shards:
        for dir_id, name in conn.execute(
            "SELECT DISTINCT f.dir_id, f.name FROM segments s INDEXED BY segments_bad"
            " LEFT JOIN pack_members m ON m.seg_id=s.seg_id"
            " JOIN files f ON f.file_id=COALESCE(s.file_id, m.file_id)"
            " WHERE s.folder_id=? AND s.state IN (1,2) AND s.check_result IN (0,2) AND f.present=1 LIMIT ?",
            (folder.folder_id, limit),
        ):
            if dir_id not in dirs:
                r = state.catalog.execute("SELECT relpath FROM dirs WHERE dir_id=?", (dir_id,)).fetchall()
                dirs[dir_id] = r[0][0] if r else b""
            rel = dirs[dir_id] + b"/" + name if dirs[dir_id] else name
            out.append(rel.decode("utf-8", "replace"))
    return sorted(out)[:limit]


def _relpath(state: State, dir_id: int, name: bytes) -> str:
    r = state.catalog.execute("SELECT relpath FROM dirs WHERE dir_id=?", (dir_id,)).fetchall()
    base = r[0][0] if r else b""
    return (base + b"/" + name if base else name).decode("utf-8", "replace")
