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
   each segment to its place), check each piece's BLAKE3 hash against the
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

import errno
import json
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from usenetsync_cli.core.crypto import SEAL_OVERHEAD, open_segment, place_aad
from usenetsync_cli.core.hashing import file_content_hash, piece_hash
from usenetsync_cli.core.manifest import path_bytes
from usenetsync_cli.core.msgid import segment_message_id
from usenetsync_cli.errors import (
    DiskFullError,
    DownloadIncompleteError,
    InputPathError,
    LocalConflictError,
    TamperedError,
    UsenetSyncError,
)
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.destination import (
    Action,
    Destination,
    ModePolicy,
    Survey,
    conflict_name,
    local_content_hash,
    lstat_key,
    move_aside,
)
from usenetsync_cli.pipeline.fetch import Article, FetchJob, FetchPool, body_limit
from usenetsync_cli.pipeline.reader_state import KIND_FILE, KIND_LINK, ReaderState

__all__ = ["DownloadIncompleteError", "DownloadOptions", "DownloadSummary", "download_records"]

TMP_SUFFIX = b".uspart"
_COMMIT_ROWS, _COMMIT_S = 500, 1.0
_DAMAGED_NAMES = 100


@dataclass(frozen=True)
class DownloadOptions:
    connections: int | None = None
    sync: bool = False  # update a copy: conflicts kept beside, files the share dropped removed (if ours)
    overwrite: bool = False  # replace the user's conflicting files (moved into the home's replaced/ first)
    keep_deleted: bool = False  # with sync: remove nothing
    keep_special_modes: bool = False


@dataclass(eq=False)
class FileJob:
    rel: bytes
    path: bytes  # absolute final path
    size: int
    mtime_ns: int
    mode: int
    content: bytes  # the index's content hash
    action: Action
    layout: list[int]  # piece lengths in order (a packed file: one)
    pieces: list[bytes | None] = field(default_factory=list)
    remaining: int = 0
    waiting: bool = False  # a piece was deferred to PAR2

    @property
    def tmp(self) -> bytes:
        head, tail = os.path.split(self.path)
        return os.path.join(head, b"." + tail + TMP_SUFFIX)


@dataclass(eq=False)
class Task:
    shard: int
    seg_id: int
    sealed_len: int
    piece: bytes | None  # a file segment's piece hash; None for a pack (its members are checked)
    # (job, offset in the file, offset in the payload, length, member piece hash, piece index)
    writes: list[tuple[FileJob, int, int, int, bytes | None, int]]


@dataclass
class DownloadSummary:
    dest: str
    version: int
    files: int = 0
    files_written: int = 0
    files_skipped: int = 0  # already there with the share's content (mode and mtime applied)
    files_adopted: int = 0  # the user's own identical copy, now counted as ours
    files_deleted: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes_written: int = 0
    segments_fetched: int = 0
    segments_repaired: int = 0  # rebuilt from PAR2 recovery data
    conflicts: int = 0  # the user's files the share also names (kept, or moved aside with --overwrite)
    conflict_copies: list[str] = field(default_factory=list)  # --sync: the share's version written beside
    kept: list[str] = field(default_factory=list)  # the user's files kept (changed locally)
    replaced: list[str] = field(default_factory=list)  # --overwrite: where the user's files were moved
    damaged: list[str] = field(default_factory=list)
    damaged_count: int = 0
    elapsed_s: float = 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_written / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["mb_per_s"] = round(self.mb_per_s, 2)
        d["elapsed_s"] = round(self.elapsed_s, 3)
        return d

    def damage(self, rel: bytes, why: str) -> None:
        self.damaged_count += 1
        if len(self.damaged) < _DAMAGED_NAMES:
            self.damaged.append(f"{os.fsdecode(rel)} ({why})")


@dataclass(frozen=True)
class FolderSecrets:
    uid: bytes
    aes: AESGCM
    enc_key: bytes
    msgid_key: bytes
    domains: tuple[str, ...]
    segment_size: int


def folder_secrets(header: Any) -> FolderSecrets:
    try:
        return FolderSecrets(
            uid=bytes.fromhex(header["folder_uid"]), aes=AESGCM(bytes.fromhex(header["enc_key"])),
            enc_key=bytes.fromhex(header["enc_key"]), msgid_key=bytes.fromhex(header["msgid_key"]),
            domains=tuple(str(d) for d in header["domains"]), segment_size=int(header["segment_size"]),
        )
    except (KeyError, ValueError, TypeError):
        raise TamperedError("the share index header is damaged") from None


def _disk_error(e: OSError, where: bytes) -> UsenetSyncError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left on device while writing {os.fsdecode(where)}")
    return InputPathError(f"cannot write {os.fsdecode(where)}: {e.strerror}")


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


def _layout_of(size: int, segs: list[Any]) -> list[int]:
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
        self.replaced_root = replaced_root
        self.progress = progress
        self.modes = ModePolicy.current(opts.keep_special_modes)
        self.dest = Destination(dest, blocker=self._move_blocker if opts.overwrite else None)
        self.s = DownloadSummary(dest=os.fsdecode(self.dest.root), version=version)
        self.fs: FolderSecrets | None = None
        self.lock = threading.Lock()
        self.finished: deque[FileJob] = deque()
        self.done_rows: deque[tuple[int, int, bytes]] = deque()
        self.dirs: list[tuple[bytes, int, int]] = []
        self.symlinks: list[tuple[bytes, bytes, int, Action]] = []
        self.plan_present = False
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
                    self._open_tmp(job, keep=False)
                    self._finish_file(job)
            elif kind == "L":
                rel = path_bytes(rec[1])
                self._see(rel)
                action = self.action(rel)
                self.symlinks.append((rel, path_bytes(rec[2]), _int(rec[3]), action))
            elif kind == "R":
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
        if action is Action.CONFLICT and not self.opts.overwrite:
            return  # reported by the survey; what is under it is blocked too
        path = self.dest.place(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            if action is Action.CONFLICT:
                self._move_aside(rel)
            else:
                os.unlink(path)  # ours and unchanged (the survey said so)
            st = None
        if st is None:
            os.mkdir(path, 0o700)
        self.dirs.append((rel, mode, mtime))

    def _job(self, rel: bytes, size: int, mtime: int, mode: int, content: bytes, layout: list[int]) -> FileJob | None:
        """A FileJob for a file still to write, or None once it is settled here (same content)."""
        self._see(rel)
        self.s.files += 1
        action = self.action(rel)
        if action is Action.CONFLICT and self.opts.sync and self.dest.blocked_parent(rel) is not None:
            self.s.kept.append(os.fsdecode(rel)) if len(self.s.kept) < _DAMAGED_NAMES else None
            return None  # its folder is the user's file: nothing can be written beside it
        path = self.dest.place(rel)
        job = FileJob(rel=rel, path=path, size=size, mtime_ns=mtime, mode=mode, content=content, action=action,
                      layout=layout, pieces=[None] * len(layout))
        if action is Action.SAME:
            self._apply_meta(job, path)
            self._record(job, path)
            self.s.files_skipped += 1
            return None
        return job

    def _open_tmp(self, job: FileJob, keep: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(job.tmp, flags, 0o600)
            try:
                if not keep:
                    os.ftruncate(fd, 0)
                os.ftruncate(fd, job.size)
            finally:
                os.close(fd)
        except OSError as e:
            raise _disk_error(e, job.tmp) from None

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
        self._open_tmp(job, keep)
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
        for i, (shard, seg_id, attempt, length, _h, server_id) in enumerate(segs):
            got = done.get((shard, seg_id))
            if got is not None and got == pieces[i]:
                job.pieces[i] = got
            else:
                todo.append((i, _int(shard), _int(seg_id), _int(attempt), length, server_id, offset))
            offset += length
        job.remaining = len(todo)
        if not todo:
            self._finish_file(job)
            return
        for i, shard, seg_id, attempt, length, server_id, off in todo:
            mid = server_id or segment_message_id(fs.msgid_key, fs.domains, shard, seg_id, attempt)
            task = Task(shard, seg_id, length + SEAL_OVERHEAD, pieces[i], [(job, off, 0, length, None, i)])
            yield FetchJob(str(mid), body_limit(length + SEAL_OVERHEAD), task)

    def _pack_jobs(self, fs: FolderSecrets, rec: list[Any], members: list[tuple[FileJob, int, int, bytes]]) -> Iterator[FetchJob]:
        if not members:
            return
        _k, shard, seg_id, attempt, length, _h, server_id = rec
        length = _int(length)
        writes = []
        for job, off, size, mh in members:
            if off + size > length:
                raise TamperedError("the share index has a pack member outside its pack")
            self._open_tmp(job, keep=False)
            job.remaining = 1
            writes.append((job, 0, off, size, mh, 0))
        mid = server_id or segment_message_id(fs.msgid_key, fs.domains, _int(shard), _int(seg_id), _int(attempt))
        # A pack's own hash covers members this version may not list: its members' pieces are checked.
        task = Task(_int(shard), _int(seg_id), length + SEAL_OVERHEAD, None, writes)
        yield FetchJob(str(mid), body_limit(length + SEAL_OVERHEAD), task)

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
        try:
            payload = open_segment(fs.aes, place_aad(fs.uid, task.shard, task.seg_id), sealed)
        except UsenetSyncError:
            return "failed authentication (AES-GCM)"
        view = memoryview(payload)
        checked: list[bytes] = []
        if task.piece is not None and piece_hash(payload) != task.piece:
            return "hash mismatch"
        for _job, _off, pay_off, length, mh, _i in task.writes:
            if mh is not None:
                h = piece_hash(view[pay_off : pay_off + length])
                if h != mh:
                    return "hash mismatch"
                checked.append(h)
        for job, file_off, pay_off, length, _mh, _i in task.writes:
            _pwrite_all(job.tmp, view[pay_off : pay_off + length], file_off)
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
            self._finish_file(job)
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

    def _finish_file(self, job: FileJob) -> None:
        """Every piece is in: check the content hash, then give the file its name, mode and mtime."""
        pieces = job.pieces
        if any(p is None for p in pieces) or file_content_hash(job.size, pieces) != job.content:  # type: ignore[arg-type]
            self.s.damage(job.rel, "its content hash does not match the share index")
            return
        self._place(job)

    def _place(self, job: FileJob) -> None:
        try:
            os.chmod(job.tmp, self.modes.file(job.mode))
            os.utime(job.tmp, ns=(job.mtime_ns, job.mtime_ns))
            final = job.path
            if job.action is Action.CONFLICT and self.opts.overwrite:
                if os.path.lexists(final):  # (a conflict of its folder was moved aside already)
                    self._move_aside(job.rel)
                os.replace(job.tmp, final)
            elif job.action is Action.UPDATE:
                os.replace(job.tmp, final)
            else:
                if job.action is Action.CONFLICT:
                    final = conflict_name(job.path, self.version)
                final = self._link_new(job.tmp, final, job.rel)
        except OSError as e:
            raise _disk_error(e, job.path) from None
        self.s.files_written += 1
        self.s.bytes_written += job.size
        if final == job.path:
            self._record(job, final)
        else:
            self.s.conflict_copies.append(os.fsdecode(os.path.relpath(final, self.dest.root)))

    def _link_new(self, tmp: bytes, final: bytes, rel: bytes) -> bytes:
        """Give ``tmp`` the name ``final`` without ever replacing something there; returns the name used."""
        try:
            os.link(tmp, final)
        except FileExistsError:
            # Something appeared at that name during the download: it is the user's.
            self.s.conflicts += 1
            final = conflict_name(final, self.version)
            os.link(tmp, final)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            if os.path.lexists(final):
                final = conflict_name(final, self.version)
            os.rename(tmp, final)  # a filesystem without hard links
            return final
        os.unlink(tmp)
        return final

    def _apply_meta(self, job: FileJob, path: bytes) -> None:
        st = os.lstat(path)
        want = self.modes.file(job.mode)
        if stat.S_IMODE(st.st_mode) != want:
            os.chmod(path, want)
        if st.st_mtime_ns != job.mtime_ns:
            os.utime(path, ns=(job.mtime_ns, job.mtime_ns))

    def _record(self, job: FileJob, path: bytes) -> None:
        st = os.lstat(path)
        with self.reader.conn:
            self.reader.conn.execute(
                "INSERT OR REPLACE INTO files VALUES(?,?,?,?,?,?,?,?)",
                (job.rel, KIND_FILE, *lstat_key(st), job.content, self.version),
            )

    def _move_aside(self, rel: bytes) -> None:
        moved = move_aside(self.dest, rel, self.replaced_root)
        self.s.replaced.append(str(moved))

    def _move_blocker(self, rel: bytes) -> bool:
        self._move_aside(rel)
        return True

    # ------------------------------------------------------------------ repair

    def repair_deferred(self) -> None:
        """Rebuild spilled segments from their PAR2 groups, then settle the files that waited on them."""
        from usenetsync_cli.pipeline.recovery import RecoveryError, rebuild_sealed

        conn = self.reader.conn
        fs = self.fs
        assert fs is not None
        ctx = _recovery_context(fs)
        groups = conn.execute(
            "SELECT DISTINCT r.shard, r.group_id FROM deferred d JOIN rmember r ON r.shard=d.shard AND r.seg_id=d.seg_id"
        ).fetchall()
        for shard, group_id in groups:
            items = conn.execute(
                "SELECT d.seg_id, d.task FROM deferred d JOIN rmember r ON r.shard=d.shard AND r.seg_id=d.seg_id"
                " WHERE r.shard=? AND r.group_id=?", (shard, group_id),
            ).fetchall()
            layout = _layout_from_record(json.loads(conn.execute(
                "SELECT layout FROM rgroup WHERE shard=? AND group_id=?", (shard, group_id)
            ).fetchall()[0][0]))
            try:
                rebuilt = rebuild_sealed(self.spec, ctx, layout, [s for s, _t in items], workdir=self.reader.par2_dir)
            except RecoveryError as e:
                with conn:
                    conn.executemany(
                        "UPDATE deferred SET reason=reason || '; ' || ? WHERE shard=? AND seg_id=?",
                        [(e.message, shard, s) for s, _t in items],
                    )
                continue
            for seg_id, task_json in items:
                sealed = rebuilt.get(seg_id)
                if sealed is None or self._write_spilled(shard, seg_id, json.loads(task_json), sealed) is not None:
                    continue
                self.s.segments_repaired += 1
                with conn:
                    conn.execute("DELETE FROM deferred WHERE shard=? AND seg_id=?", (shard, seg_id))

    def _write_spilled(self, shard: int, seg_id: int, task: dict[str, Any], sealed: bytes) -> str | None:
        fs = self.fs
        assert fs is not None
        try:
            payload = open_segment(fs.aes, place_aad(fs.uid, shard, seg_id), sealed)
        except UsenetSyncError:
            return "failed authentication"
        if task["h"] is not None and piece_hash(payload) != bytes.fromhex(task["h"]):
            return "hash mismatch"
        view = memoryview(payload)
        for rel_hex, file_off, pay_off, length, mh, _i in task["w"]:
            piece = view[pay_off : pay_off + length]
            if mh is not None and piece_hash(piece) != bytes.fromhex(mh):
                return "hash mismatch"
        for rel_hex, file_off, pay_off, length, _mh, _i in task["w"]:
            _pwrite_all(_tmp_of(self.dest.full(bytes.fromhex(rel_hex))), view[pay_off : pay_off + length], file_off)
        return None

    def settle_waiting(self) -> None:
        """Files that waited on PAR2: re-hashed whole when nothing of theirs is still missing, else damaged."""
        conn = self.reader.conn
        lost: dict[bytes, str] = {}
        for _shard, _seg, reason, task_json in conn.execute("SELECT shard, seg_id, reason, task FROM deferred"):
            for w in json.loads(task_json)["w"]:
                lost.setdefault(bytes.fromhex(w[0]), reason)
        for rel, record_json in conn.execute("SELECT path, record FROM waiting").fetchall():
            if rel in lost:
                self.s.damage(rel, lost[rel])
                continue
            r = json.loads(record_json)
            job = FileJob(rel=rel, path=self.dest.full(rel), size=r["size"], mtime_ns=r["mtime"], mode=r["mode"],
                          content=bytes.fromhex(r["content"]), action=Action(r["action"]), layout=r["layout"])
            local = local_content_hash(job.tmp, job.size, max(job.layout) if len(job.layout) > 1 else 0)
            if local != job.content:
                self.s.damage(rel, "its content hash does not match the share index")
                continue
            self._place(job)
            with conn:
                conn.execute("DELETE FROM waiting WHERE path=?", (rel,))

    # ------------------------------------------------------------------ tree

    def finish_tree(self) -> None:
        for rel, target, mtime, action in self.symlinks:
            self._symlink(rel, target, mtime, action)
        if self.opts.sync and not self.opts.keep_deleted:
            self._remove_dropped()
        for rel, mode, mtime in sorted(self.dirs, key=lambda d: d[0].count(b"/"), reverse=True):
            path = os.path.join(self.dest.root, rel)
            try:
                os.chmod(path, self.modes.folder(mode))
                os.utime(path, ns=(mtime, mtime))
            except OSError:
                pass

    def _symlink(self, rel: bytes, target: bytes, mtime: int, action: Action) -> None:
        if action is Action.CONFLICT and self.opts.sync and self.dest.blocked_parent(rel) is not None:
            return
        path = self.dest.place(rel)
        try:
            if action is Action.SAME:
                pass
            elif action is Action.UPDATE:
                os.unlink(path)
                os.symlink(target, path)
            elif action is Action.CONFLICT and self.opts.overwrite:
                if os.path.lexists(path):
                    self._move_aside(rel)
                os.symlink(target, path)
            elif action is Action.CONFLICT:
                copy = conflict_name(path, self.version)
                os.symlink(target, copy)
                self.s.conflict_copies.append(os.fsdecode(os.path.relpath(copy, self.dest.root)))
                return
            else:
                os.symlink(target, path)
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
        except OSError as e:
            raise _disk_error(e, path) from None
        self.s.symlinks += 1
        st = os.lstat(path)
        with self.reader.conn:
            self.reader.conn.execute(
                "INSERT OR REPLACE INTO files VALUES(?,?,?,?,?,?,?,?)",
                (rel, KIND_LINK, *lstat_key(st), target, self.version),
            )

    def _remove_dropped(self) -> None:
        """Files ours and unchanged that the share no longer has go; changed ones are the user's now."""
        conn = self.reader.conn
        gone = conn.execute(
            "SELECT path, kind, size, mtime_ns, ino, ctime_ns, content FROM files WHERE path NOT IN (SELECT path FROM seen)"
        ).fetchall()
        for rel, kind, size, mtime, ino, ctime, content in gone:
            try:
                path = self.dest.full(rel)
                st = os.lstat(path)
            except (OSError, TamperedError):
                st = None
            if st is not None:
                unchanged = size is not None and lstat_key(st) == (size, mtime, ino, ctime)
                if not unchanged and kind == KIND_FILE and stat.S_ISREG(st.st_mode) and content is not None:
                    unchanged = local_content_hash(path, st.st_size, self._segment_size()) == content
                if unchanged and self.dest.blocked_parent(rel) is None:
                    try:
                        os.unlink(path)
                        self.s.files_deleted += 1
                    except OSError:
                        pass
                elif len(self.s.kept) < _DAMAGED_NAMES:
                    self.s.kept.append(f"{os.fsdecode(rel)} (changed locally; the share removed it)")
            with conn:
                conn.execute("DELETE FROM files WHERE path=?", (rel,))

    def _segment_size(self) -> int:
        return self.fs.segment_size if self.fs else 0


def _pwrite_all(path: bytes, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (a full disk may write part, then fail)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            while data:
                n = os.pwrite(fd, data, offset)
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                data, offset = data[n:], offset + n
        finally:
            os.close(fd)
    except OSError as e:
        raise _disk_error(e, path) from None


def _tmp_of(path: bytes) -> bytes:
    head, tail = os.path.split(path)
    return os.path.join(head, b"." + tail + TMP_SUFFIX)


def _recovery_context(fs: FolderSecrets) -> Any:
    """The FolderContext the recovery module needs, from what a share index gives a reader."""
    from usenetsync_cli.core.crypto import FolderKeys
    from usenetsync_cli.pipeline.encode import FolderContext

    # A reader has the segment and Message-ID keys only; the other two are unused by rebuilds.
    keys = FolderKeys(enc_key=fs.enc_key, msgid_key=fs.msgid_key, names_key=bytes(32), domain_key=bytes(32))
    return FolderContext(uid=fs.uid, keys=keys, domains=fs.domains, groups=())


def _layout_from_record(rec: list[Any]) -> Any:
    from usenetsync_cli.pipeline.recovery import GroupLayout, GroupMember

    _r, shard, group_id, gnonce, block, members, recovery = rec
    return GroupLayout(
        group_id=int(group_id), shard=int(shard), gnonce=bytes.fromhex(gnonce), block_size=int(block),
        members=tuple(
            GroupMember(int(seg), int(pos), int(slen), bytes.fromhex(sh) if sh else None, str(mid),
                        bytes.fromhex(ph) if ph else None)
            for seg, pos, slen, sh, mid, ph in members
        ),
        recovery=tuple((int(i), int(a), srv) for i, a, srv in recovery),
    )


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
    pool = FetchPool([spec], opts.connections)
    try:
        pool.run(run.jobs(records()), run.handle, run.fail, run.tick)
        run.tick()
        run._commit_done()
        if reader.conn.execute("SELECT 1 FROM deferred LIMIT 1").fetchall():
            run.repair_deferred()
        run.settle_waiting()
        run.finish_tree()
    finally:
        run._commit_done()
        pool.close()
    run.s.elapsed_s = time.monotonic() - t0
    return run.s
