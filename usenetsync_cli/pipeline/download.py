"""Downloading a share: stream the verified index, fetch segments, write files, never a wrong byte.

Owns: turning an opened share index (pipeline/share_index.py) into files
under DEST, resumably, for a new folder, an existing copy (``--sync``) or a
forced replace (``--overwrite``), without ever destroying local data.

Passes over the index (a verified spool, streamed twice, never in memory):
1. survey (pipeline/destination.py): each path against DEST and the
   reader's records (pipeline/reader_state.py): new, same, ours to update,
   or the user's (a conflict). A plain download with conflicts refuses here,
   before anything is written, listing them (``LocalConflictError``). A new
   or empty DEST skips the survey. DEST is created only when the first path
   is written, so a download that fails before that leaves it as it was.
2. fetch (pipeline/fetch.py, the one fetch engine): the index records become
   fetch jobs in the calling thread; connection threads decode the yEnc
   (sabctools, straight from the socket), open the AES-GCM seal (AAD binds
   each segment to its place; into a plaintext buffer each thread reuses,
   with the GIL released during the decryption), check each piece's BLAKE3 hash against the
   index, and ``pwrite`` it into a hidden ``.NAME.uspart`` beside the final
   path. When a file has every piece, its content hash (core/hashing.py:
   over the ordered piece hashes that were just checked, or recorded by an
   earlier run) must equal the index's; only then does it get its name,
   mode (never setuid/setgid/sticky or beyond the umask unless
   ``--keep-special-modes``) and mtime.
3. repair: segments that failed every try were spilled to the reader's
   database (``deferred``), not kept in memory; the PAR2 groups the index
   lists rebuild what they can, and the files that waited on them are
   re-hashed whole before they get their names. What cannot be rebuilt is
   reported damaged by name; everything else is kept.
4. tree: symlinks (created last, so nothing is ever written through one),
   ``--sync`` removals (only files ours and unchanged), folder modes/mtimes.

Commit points: the reader's ``done`` rows (every 500 segments or 1 s) and
``files`` rows (after each rename); a resumed run skips segments in ``done``
whose temporary file is still there. Safety: every path passes
``core.manifest.safe_relpath`` and parents are checked with ``lstat``.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from usenetsync_cli.core.hashing import file_content_hash, piece_hash
from usenetsync_cli.core.manifest import path_bytes, xattrs_of
from usenetsync_cli.core.msgid import is_valid_message_id
from usenetsync_cli.errors import DownloadIncompleteError, LocalConflictError, TamperedError, UsenetSyncError
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.destination import Action, Survey
from usenetsync_cli.pipeline.download_repair import layout_from_record, repair_spilled, settle_waiting
from usenetsync_cli.pipeline.download_write import (
    DownloadOptions,
    DownloadSummary,
    FileJob,
    FolderSecrets,
    HardLink,
    Task,
    Writer,
    folder_secrets,
    pwrite_all,
)
from usenetsync_cli.pipeline.fetch import Article, FetchJob, FetchPool, body_limit
from usenetsync_cli.pipeline.reader_state import ReaderState

__all__ = ["DownloadIncompleteError", "DownloadOptions", "DownloadSummary", "download_records"]

_COMMIT_ROWS, _COMMIT_S = 500, 1.0
_KEPT_NAMES = 100


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise TamperedError("the share index is damaged (a number is out of range)")
    return v


def _hash(v: Any) -> bytes:
    try:
        h = bytes.fromhex(v)
    except (TypeError, ValueError):
        raise TamperedError("the share index is damaged (a hash is malformed)") from None
    if len(h) != 32:
        raise TamperedError("the share index is damaged (a hash is malformed)")
    return h


def _header(records: Iterator[list[Any]]) -> FolderSecrets:
    first = next(records, None)
    if not first or first[0] != "H" or not isinstance(first[1], dict):
        raise TamperedError("the share index does not start with its header")
    return folder_secrets(first[1])


def _msgid(v: Any) -> str | None:
    """A Message-ID the index names (the server chose it), checked; None when the ID is derived."""
    if v is None:
        return None
    if not isinstance(v, str) or not is_valid_message_id(v):
        raise TamperedError("the share index is damaged (a Message-ID is malformed)")
    return v


def _layout_of(size: int, segs: list[Any]) -> list[int]:
    if any(not isinstance(s, list) or len(s) != 7 for s in segs):
        raise TamperedError("the share index is damaged (a segment entry has the wrong shape)")
    lengths = [_int(s[3]) for s in segs]
    if sum(lengths) != size:
        raise TamperedError("the share index's layout of a file does not add up")
    return lengths


class _Run:
    """One download; the calling thread owns the reader's database, workers only write file bytes."""

    def __init__(
        self, dest: Path, reader: ReaderState, spec: ServerSpec, opts: DownloadOptions, version: int,
        replaced_root: Path, progress: Callable[[DownloadSummary], None] | None,
    ) -> None:
        self.reader = reader
        self.spec = spec
        self.opts = opts
        self.version = version
        self.progress = progress
        self.s = DownloadSummary(dest=os.fsdecode(os.path.abspath(dest)), version=version)
        self.w = Writer(dest, reader, opts, version, replaced_root, self.s)
        self.dest = self.w.dest
        self.fs: FolderSecrets | None = None
        self.lock = threading.Lock()
        self._bufs = threading.local()  # each worker's plaintext buffer (write_sealed)
        self.finished: deque[FileJob] = deque()
        self.done_rows: deque[tuple[int, int, bytes]] = deque()
        self.dirs: list[tuple[bytes, int, int]] = []
        self.symlinks: list[tuple[bytes, bytes, int, Action]] = []
        self.links: list[HardLink] = []  # second names of files (H records): a version's hard links, few
        self.xattrs: list[tuple[bytes, list[tuple[str, bytes]]]] = []  # with --xattrs: files that carry some
        self.plan_present = False
        # Paths the version links others to (first names of H records): they may have more than one name.
        self.first_names: set[bytes] = set()
        self._seen: list[tuple[bytes]] = []
        self._spill: list[tuple[int, int, str, str]] = []  # deferred tasks not yet in the database
        self._waiting: list[tuple[bytes, str]] = []
        self._waiting_recent: dict[bytes, None] = {}  # a bounded memo: files already spilled as waiting
        self._last_commit = time.monotonic()

    # ------------------------------------------------------------------ survey

    def survey(self, records: Iterator[list[Any]]) -> None:
        """Decide every path that exists in DEST; refuse (plain mode) before writing anything."""
        fs = _header(records)
        known = self.reader.conn.execute("SELECT 1 FROM files LIMIT 1").fetchall()
        if self.dest.is_empty() and not known:
            return  # a new or empty folder: everything is new
        survey = Survey(self.dest, self.reader, fs.segment_size, self.version)
        batch: list[tuple[bytes, str]] = []
        for rec in records:
            kind = rec[0]
            if kind == "T":
                break
            if kind == "D":
                rel, action = path_bytes(rec[1]), survey.folder(path_bytes(rec[1]))
            elif kind == "F":
                rel = path_bytes(rec[1])
                action = survey.file(rel, _int(rec[2]), _hash(rec[5]))
            elif kind == "P":
                rel = path_bytes(rec[1])
                size = _int(rec[2])
                action = survey.file(rel, size, file_content_hash(size, [_hash(rec[6])]))
            elif kind == "E":
                rel = path_bytes(rec[1])
                action = survey.file(rel, 0, file_content_hash(0, []))
            elif kind == "H":
                rel = path_bytes(rec[1])
                action = survey.file(rel, _int(rec[3]), _hash(rec[4]))
                self.first_names.add(path_bytes(rec[2]))
            elif kind == "L":
                rel, action = path_bytes(rec[1]), survey.symlink(path_bytes(rec[1]), path_bytes(rec[2]))
            else:
                continue
            if action is not Action.NEW:
                batch.append((rel, action.value))
                if len(batch) >= 1000:
                    self._store_plan(batch)
        self._store_plan(batch)
        self.s.conflicts = survey.conflicts.count
        self.s.files_adopted = survey.adopted
        if survey.conflicts.count and not (self.opts.sync or self.opts.overwrite):
            more = survey.conflicts.count - len(survey.conflicts.sample)
            raise LocalConflictError(
                f"{os.fsdecode(self.dest.root)} already holds {survey.conflicts.count:,} path(s) this share would"
                f" overwrite: {', '.join(survey.conflicts.sample)}" + (f" … and {more:,} more" if more > 0 else "")
                + "; nothing was written",
            )

    def _store_plan(self, batch: list[tuple[bytes, str]]) -> None:
        if batch:
            with self.reader.conn:
                self.reader.conn.executemany("INSERT OR REPLACE INTO plan VALUES(?, ?)", batch)
            self.plan_present = True
            batch.clear()

    def action(self, rel: bytes) -> Action:
        if not self.plan_present:
            return Action.NEW
        rows = self.reader.conn.execute("SELECT action FROM plan WHERE path=?", (rel,)).fetchall()
        return Action(rows[0][0]) if rows else Action.NEW

    # ------------------------------------------------------------------ jobs (calling thread)

    def jobs(self, records: Iterator[list[Any]]) -> Iterator[FetchJob]:
        fs = self.fs = _header(records)
        self.w.segment_size = fs.segment_size
        count = 1
        pack: tuple[list[Any], list[tuple[FileJob, int, int, bytes]]] | None = None
        for rec in records:
            count += 1
            kind = rec[0]
            if pack is not None and kind != "P":
                yield from self._pack_jobs(fs, *pack)
                pack = None
            if kind == "D":
                self._folder(path_bytes(rec[1]), int(rec[2]), int(rec[3]))
            elif kind == "F":
                yield from self._file_jobs(fs, rec)
            elif kind == "K":
                pack = (rec, [])
            elif kind == "P":
                if pack is None:
                    raise TamperedError("the share index has a pack member without its pack")
                rel, size = path_bytes(rec[1]), _int(rec[2])
                mh = _hash(rec[6])
                job = self._job(rel, size, _int(rec[3]), _int(rec[4]), file_content_hash(size, [mh]), [size])
                if job is not None:
                    pack[1].append((job, _int(rec[5]), size, mh))
            elif kind == "E":
                rel = path_bytes(rec[1])
                job = self._job(rel, 0, _int(rec[2]), _int(rec[3]), file_content_hash(0, []), [])
                if job is not None:
                    self.w.open_tmp(job, keep=False)
                    self.w.finish_file(job)
            elif kind == "L":
                rel = path_bytes(rec[1])
                self._see(rel)
                action = self.action(rel)
                self.symlinks.append((rel, path_bytes(rec[2]), _int(rec[3]), action))
            elif kind == "X":
                pairs = xattrs_of(rec)  # bounded whether or not they are restored
                if self.opts.xattrs:
                    self.xattrs.append((path_bytes(rec[1]), pairs))
            elif kind == "H":
                rel = path_bytes(rec[1])
                self._see(rel)
                self.s.files += 1
                self.dest.full(path_bytes(rec[2]))  # the first name must be a safe path too
                self.links.append(HardLink(rel, path_bytes(rec[2]), _hash(rec[4]), _int(rec[5]), _int(rec[6]),
                                           self.action(rel)))
            elif kind == "R":
                layout_from_record(rec)  # well formed, or TamperedError before it is stored
                with self.reader.conn:
                    self.reader.conn.execute("INSERT OR REPLACE INTO rgroup VALUES(?,?,?)", (rec[1], rec[2], json.dumps(rec)))
                    self.reader.conn.executemany(
                        "INSERT OR REPLACE INTO rmember VALUES(?,?,?)", [(rec[1], m[0], rec[2]) for m in rec[5]]
                    )
            elif kind == "T":
                if rec[1] != count:
                    raise TamperedError("the share index is truncated (record count mismatch)")
                break
            else:
                raise TamperedError(f"the share index has an unknown record type {str(kind)[:20]!r}")
        else:
            raise TamperedError("the share index is truncated (no trailer)")
        if pack is not None:
            yield from self._pack_jobs(fs, *pack)
        self._flush_seen()

    def _see(self, rel: bytes) -> None:
        self._seen.append((rel,))
        if len(self._seen) >= 1000:
            self._flush_seen()

    def _flush_seen(self) -> None:
        if self._seen:
            with self.reader.conn:
                self.reader.conn.executemany("INSERT OR IGNORE INTO seen VALUES(?)", self._seen)
            self._seen = []

    def _folder(self, rel: bytes, mode: int, mtime: int) -> None:
        action = self.action(rel)
        self.s.dirs += 1
        self._see(rel)
        if action is Action.CONFLICT and not self.opts.overwrite:
            return  # reported by the survey; what is under it is blocked too
        path = self.dest.place(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            if action is Action.CONFLICT:
                self.w.move_aside(rel)
            else:
                os.unlink(path)  # ours and unchanged (the survey said so)
            st = None
        if st is None:
            os.mkdir(path, 0o700)
            self.w.record_dir(rel)
        self.dirs.append((rel, mode, mtime))

    def _job(self, rel: bytes, size: int, mtime: int, mode: int, content: bytes, layout: list[int]) -> FileJob | None:
        """A FileJob for a file still to write, or None once it is settled here (same content)."""
        self._see(rel)
        self.s.files += 1
        action = self.action(rel)
        if action is Action.CONFLICT and self.opts.sync and self.dest.blocked_parent(rel) is not None:
            self.s.kept.append(os.fsdecode(rel)) if len(self.s.kept) < _KEPT_NAMES else None
            return None  # its folder is the user's file: nothing can be written beside it
        path = self.dest.place(rel)
        job = FileJob(rel=rel, path=path, size=size, mtime_ns=mtime, mode=mode, content=content, action=action,
                      layout=layout, pieces=[None] * len(layout))
        if action is Action.SAME and os.lstat(path).st_nlink > 1 and rel not in self.first_names:
            # The same bytes, but still one name of a file the version no longer links: write a copy of its own.
            job.action = Action.UPDATE
        if job.action is Action.SAME:
            self.w.apply_meta(job, path)
            self.w.record(job, path)
            self.s.files_skipped += 1
            return None
        return job

    def _file_jobs(self, fs: FolderSecrets, rec: list[Any]) -> Iterator[FetchJob]:
        rel, size = path_bytes(rec[1]), _int(rec[2])
        content, segs = _hash(rec[5]), rec[6]
        if not isinstance(segs, list) or not segs:
            raise TamperedError(f"the share index lists no segments for {os.fsdecode(rel)!r}")
        pieces = [_hash(s[4]) for s in segs]
        if file_content_hash(size, pieces) != content:
            raise TamperedError(f"the share index's hashes of {os.fsdecode(rel)!r} do not add up")
        job = self._job(rel, size, _int(rec[3]), _int(rec[4]), content, _layout_of(size, segs))
        if job is None:
            return
        keep = os.path.lexists(job.tmp)
        self.w.open_tmp(job, keep)
        done: dict[tuple[int, int], bytes] = {}
        if keep:
            for shard, seg_id, *_rest in segs:
                row = self.reader.conn.execute(
                    "SELECT piece FROM done WHERE shard=? AND seg_id=?", (shard, seg_id)
                ).fetchall()
                if row:
                    done[(shard, seg_id)] = row[0][0]
        offset = 0
        todo = []
        for i, (shard, seg_id, attempt, length, _h, server_id, epoch) in enumerate(segs):
            got = done.get((shard, seg_id))
            if got is not None and got == pieces[i]:
                job.pieces[i] = got
            else:
                todo.append((i, _int(shard), _int(seg_id), _int(attempt), length, server_id, offset, _int(epoch)))
            offset += length
        job.remaining = len(todo)
        if not todo:
            self.w.finish_file(job)
            return
        for i, shard, seg_id, attempt, length, server_id, off, epoch in todo:
            mid = _msgid(server_id) or fs.ctx.message_id(shard, seg_id, attempt, epoch)
            sealed_len = fs.ctx.sealed_len(shard, seg_id, epoch, length)
            task = Task(shard, seg_id, sealed_len, pieces[i], [(job, off, 0, length, None, i)], epoch)
            yield FetchJob(mid, body_limit(sealed_len), task)

    def _pack_jobs(self, fs: FolderSecrets, rec: list[Any], members: list[tuple[FileJob, int, int, bytes]]) -> Iterator[FetchJob]:
        if not members:
            return
        _k, shard, seg_id, attempt, length, _h, server_id, epoch = rec
        length, shard, seg_id, epoch = _int(length), _int(shard), _int(seg_id), _int(epoch)
        writes = []
        for job, off, size, mh in members:
            if off + size > length:
                raise TamperedError("the share index has a pack member outside its pack")
            self.w.open_tmp(job, keep=False)
            job.remaining = 1
            writes.append((job, 0, off, size, mh, 0))
        mid = _msgid(server_id) or fs.ctx.message_id(shard, seg_id, _int(attempt), epoch)
        # A pack's own hash covers members this version may not list: its members' pieces are checked.
        sealed_len = fs.ctx.sealed_len(shard, seg_id, epoch, length)
        task = Task(shard, seg_id, sealed_len, None, writes, epoch)
        yield FetchJob(mid, body_limit(sealed_len), task)

    # ------------------------------------------------------------------ workers

    def handle(self, fjob: FetchJob, article: Article | None) -> str | None:
        """Check and write one article (worker thread); a reason if this attempt failed."""
        task: Task = fjob.tag
        if article is None:
            return "missing on the server"
        if not article.crc_ok:
            return "CRC mismatch"
        if len(article.data) != task.sealed_len:
            return f"{len(article.data)} bytes where {task.sealed_len} were expected"
        return self.write_sealed(task, article.data)

    def write_sealed(self, task: Task, sealed: bytes | bytearray | memoryview) -> str | None:
        fs = self.fs
        assert fs is not None
        # One plaintext buffer per worker thread, reused for every article it opens: the article is
        # hashed and written before the thread opens the next one.
        buf = getattr(self._bufs, "b", None)
        if buf is None or len(buf) < len(sealed):
            buf = self._bufs.b = bytearray(len(sealed))
        try:
            view = fs.ctx.open_into(task.shard, task.seg_id, task.epoch, sealed, buf)
        except UsenetSyncError:
            return "failed authentication (AES-GCM)"
        checked: list[bytes] = []
        if task.piece is not None and piece_hash(view) != task.piece:
            return "hash mismatch"
        for _job, _off, pay_off, length, mh, _i in task.writes:
            if mh is not None:
                h = piece_hash(view[pay_off : pay_off + length])
                if h != mh:
                    return "hash mismatch"
                checked.append(h)
        for job, file_off, pay_off, length, _mh, _i in task.writes:
            # A large file's zero blocks are left as holes (its temporary file was pre-sized).
            pwrite_all(job.tmp, view[pay_off : pay_off + length], file_off, sparse=task.piece is not None)
        with self.lock:
            for n, (job, _off, _po, _len, mh, i) in enumerate(task.writes):
                job.pieces[i] = task.piece if mh is None else mh
                job.remaining -= 1
                if job.remaining == 0 and not job.waiting:
                    self.finished.append(job)
            if len(task.writes) == 1 and task.piece is not None:
                self.done_rows.append((task.shard, task.seg_id, task.piece))
            self.s.segments_fetched += 1
        return None

    # ------------------------------------------------------------------ calling thread

    def fail(self, fjob: FetchJob, reason: str) -> None:
        """Every try failed: spill the task for PAR2 (after the pass), never keep it in memory."""
        task: Task = fjob.tag
        writes = [[w[0].rel.hex(), w[1], w[2], w[3], w[4].hex() if w[4] else None, w[5]] for w in task.writes]
        with self.lock:
            for w in task.writes:
                w[0].waiting = True
        self._spill.append((task.shard, task.seg_id, reason, json.dumps({
            "m": fjob.message_id, "n": task.sealed_len, "h": task.piece.hex() if task.piece else None, "w": writes,
            "e": task.epoch,
        })))
        for w in task.writes:
            if w[0].rel not in self._waiting_recent:
                self._waiting_recent[w[0].rel] = None
                self._waiting.append((w[0].rel, json.dumps(self._waiting_record(w[0]))))
                if len(self._waiting_recent) > 4096:
                    self._waiting_recent.pop(next(iter(self._waiting_recent)))
        if len(self._spill) >= _COMMIT_ROWS:
            self._flush_spill()

    def _flush_spill(self) -> None:
        if self._spill or self._waiting:
            with self.reader.conn:
                self.reader.conn.executemany("INSERT OR REPLACE INTO deferred VALUES(?,?,?,?)", self._spill)
                self.reader.conn.executemany("INSERT OR IGNORE INTO waiting VALUES(?, ?)", self._waiting)
            self._spill.clear()
            self._waiting.clear()

    def _waiting_record(self, job: FileJob) -> dict[str, Any]:
        return {"size": job.size, "mtime": job.mtime_ns, "mode": job.mode, "content": job.content.hex(),
                "action": job.action.value, "layout": job.layout}

    def tick(self) -> None:
        while True:
            with self.lock:
                job = self.finished.popleft() if self.finished else None
            if job is None:
                break
            self.w.finish_file(job)
        now = time.monotonic()
        if len(self.done_rows) >= _COMMIT_ROWS or now - self._last_commit > _COMMIT_S:
            self._commit_done()
            self._last_commit = now
            if self.progress:
                self.progress(self.s)

    def _commit_done(self) -> None:
        self._flush_spill()
        with self.lock:
            rows = list(self.done_rows)
            self.done_rows.clear()
        if rows:
            with self.reader.conn:
                self.reader.conn.executemany("INSERT OR REPLACE INTO done VALUES(?,?,?)", rows)

    # ------------------------------------------------------------------ repair

    # ------------------------------------------------------------------ tree

def download_records(
    records: Callable[[], Iterator[list[Any]]],
    dest: Path,
    spec: ServerSpec,
    reader: ReaderState,
    *,
    version: int,
    replaced_root: Path,
    opts: DownloadOptions = DownloadOptions(),
    progress: Callable[[DownloadSummary], None] | None = None,
) -> DownloadSummary:
    """Write share version ``version`` (its records: ``records()`` gives a fresh stream) into ``dest``."""
    t0 = time.monotonic()
    run = _Run(dest, reader, spec, opts, version, replaced_root, progress)
    run.survey(records())
    pool = FetchPool([spec], opts.connections, fill=opts.fill)
    try:
        pool.run(run.jobs(records()), run.handle, run.fail, run.tick)
        run.tick()
        run._commit_done()
        if reader.conn.execute("SELECT 1 FROM deferred LIMIT 1").fetchall():
            assert run.fs is not None
            repair_spilled(run.w, run.fs, spec)
        settle_waiting(run.w)
        run.w.finish_tree(run.symlinks, run.dirs, run.links, run.xattrs)
        run.dest.ensure_root()  # a version with nothing in it still leaves its (empty) folder
    finally:
        run._commit_done()
        pool.close()
    run.s.elapsed_s = time.monotonic() - t0
    return run.s
