"""Downloading a share: stream the verified index, fetch segments, write files.

Owns: turning an opened share index (pipeline/share_index.py) into files
under DEST, resumably, and ``--sync`` of an existing copy.

Threads: a feeder streams index records into fetch tasks (bounded queue);
N connection threads fetch with pipelined BODY received straight into a
sabctools decoder (yEnc decoding and CRC in C, from the socket buffer), open the
AES-GCM seal (AAD binds each segment to its place), check the plaintext hash,
and ``pwrite`` the bytes into a hidden temporary file ``.NAME.uspart``
beside the final path; the main thread counts what each file still needs and,
when nothing is left, renames it into place and restores mode and mtime.
Partial files are never visible under their final names.

Commit point: DEST/.usenetsync/download.db. Finished large-file segments are
recorded there in batches (every 500 or 1 s); a resumed run skips them if
their temporary file is still there. A file whose final path already has the
index's size and mtime is complete and is not fetched again — which is also
how ``--sync`` fetches only new and changed files.

Repair: a segment still missing or damaged after one more try is kept aside;
once the whole index is read, the PAR2 recovery groups it lists rebuild
what they can (survivors plus recovery articles, via pipeline/recovery.py),
and only what they cannot is reported damaged.

Safety: every path passes ``core.manifest.safe_relpath``; parent directories
are checked with ``lstat`` to be real directories, never symlinks; symlinks
from the index are created last, so nothing is ever written through one.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import xxhash

from usenetsync_cli.core.crypto import open_segment, place_aad
from usenetsync_cli.core.manifest import UnsafePathError, path_bytes, safe_relpath
from usenetsync_cli.core.msgid import segment_message_id
from usenetsync_cli.errors import DiskFullError, InputPathError, NetworkError, TamperedError, UsenetSyncError
from usenetsync_cli.nntp import Connection, NNTPError, ServerSpec
from usenetsync_cli.pipeline.poster import open_connection
from usenetsync_cli.store import db

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

STATE_DIR = ".usenetsync"
TMP_SUFFIX = b".uspart"
_END = object()


class DownloadIncompleteError(UsenetSyncError):
    exit_code = 16
    hint = "some articles are missing or damaged; run again later or repair from PAR2 (verify --repair)"


@dataclass(eq=False)
class FileJob:
    path: bytes  # absolute final path
    size: int
    mtime_ns: int
    mode: int
    remaining: int = 0
    failed: bool = False

    @property
    def tmp(self) -> bytes:
        head, tail = os.path.split(self.path)
        return os.path.join(head, b"." + tail + TMP_SUFFIX)


@dataclass(eq=False)
class Task:
    shard: int
    seg_id: int
    msgid: str
    hash: bytes | None
    # (job, offset in the file, offset in the payload, length, member hash or None)
    writes: list[tuple[FileJob, int, int, int, bytes | None]]
    tries: int = 0


@dataclass
class DownloadSummary:
    dest: str
    version: int
    files: int = 0
    files_written: int = 0
    files_skipped: int = 0
    files_deleted: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes_written: int = 0
    segments_fetched: int = 0
    segments_repaired: int = 0  # rebuilt from PAR2 recovery data
    damaged: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_written / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["mb_per_s"] = round(self.mb_per_s, 2)
        d["elapsed_s"] = round(self.elapsed_s, 3)
        return d


@dataclass(frozen=True)
class FolderSecrets:
    uid: bytes
    aes: AESGCM
    enc_key: bytes
    msgid_key: bytes
    domains: tuple[str, ...]
    segment_size: int


def _secrets(header: dict[str, Any]) -> FolderSecrets:
    try:
        return FolderSecrets(
            uid=bytes.fromhex(header["folder_uid"]), aes=AESGCM(bytes.fromhex(header["enc_key"])),
            enc_key=bytes.fromhex(header["enc_key"]),
            msgid_key=bytes.fromhex(header["msgid_key"]), domains=tuple(header["domains"]),
            segment_size=int(header["segment_size"]),
        )
    except (KeyError, ValueError, TypeError):
        raise TamperedError("the share index header is damaged") from None


class Destination:
    """DEST with its safety checks: every write goes through ``place``."""

    def __init__(self, root: Path) -> None:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputPathError(f"cannot create {root}: {e.strerror}") from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise InputPathError(f"{root} is not writable", hint="choose another destination or fix its permissions")
        self.root = os.fsencode(root.resolve())
        self._real_dirs: set[bytes] = {b""}

    def place(self, rel: bytes, *, make_parents: bool = True) -> bytes:
        rel = safe_relpath(rel)
        parent = os.path.dirname(rel)
        if parent not in self._real_dirs:
            self._check_parents(parent, make_parents)
        return os.path.join(self.root, rel)

    def _check_parents(self, parent: bytes, make: bool) -> None:
        cur = b""
        for comp in parent.split(b"/"):
            cur = cur + b"/" + comp if cur else comp
            if cur in self._real_dirs:
                continue
            full = os.path.join(self.root, cur)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                if not make:
                    raise
                os.mkdir(full, 0o755)
                st = os.lstat(full)
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePathError(
                    f"{os.fsdecode(cur)!r} in the destination is not a real folder (a symlink or file is in the way)"
                )
            self._real_dirs.add(cur)


def _complete(path: bytes, size: int, mtime_ns: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size and st.st_mtime_ns == mtime_ns


def _disk_error(e: OSError, where: bytes) -> UsenetSyncError:
    if e.errno == errno.ENOSPC:
        return DiskFullError(f"no space left on device while writing {os.fsdecode(where)}")
    return InputPathError(f"cannot write {os.fsdecode(where)}: {e.strerror}")


class _Run:
    def __init__(
        self, dest: Destination, spec: ServerSpec, connections: int, version: int, index_sha: bytes,
        progress: Callable[[DownloadSummary], None] | None,
    ) -> None:
        self.dest = dest
        self.spec = spec
        self.connections = connections
        self.s = DownloadSummary(dest=os.fsdecode(dest.root), version=version)
        self.progress = progress
        self.tasks: queue.Queue[object] = queue.Queue(maxsize=256)
        self.results: queue.Queue[tuple[Task, str | None]] = queue.Queue()
        self.stop = threading.Event()
        self.fed = 0
        self.feeder_done = threading.Event()
        self.feeder_error: BaseException | None = None
        self.worker_errors: list[BaseException] = []
        self.dirs: list[tuple[bytes, int, int]] = []
        self.symlinks: list[tuple[bytes, bytes, int]] = []
        state_dir = os.path.join(dest.root, STATE_DIR.encode())
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.db = db.connect(Path(os.fsdecode(os.path.join(state_dir, b"download.db"))))
        with self.db:
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v BLOB);"
                "CREATE TABLE IF NOT EXISTS done(shard INTEGER, seg_id INTEGER, PRIMARY KEY(shard, seg_id)) WITHOUT ROWID;"
                "CREATE TABLE IF NOT EXISTS files(path BLOB PRIMARY KEY) WITHOUT ROWID;"
                "CREATE TABLE IF NOT EXISTS seen(path BLOB PRIMARY KEY) WITHOUT ROWID;"
                "DELETE FROM seen;"
                "CREATE TABLE IF NOT EXISTS rgroup(shard INTEGER, group_id INTEGER, layout TEXT,"
                " PRIMARY KEY(shard, group_id)) WITHOUT ROWID;"
                "CREATE TABLE IF NOT EXISTS rmember(shard INTEGER, seg_id INTEGER, group_id INTEGER,"
                " PRIMARY KEY(shard, seg_id)) WITHOUT ROWID;"
                "DELETE FROM rgroup; DELETE FROM rmember;"
            )
            old = self.db.execute("SELECT v FROM meta WHERE k='index'").fetchall()
            if not old or old[0][0] != index_sha:
                self.db.execute("DELETE FROM done")
                self.db.execute("INSERT OR REPLACE INTO meta VALUES('index', ?)", (index_sha,))
        self.reader = db.connect(Path(os.fsdecode(os.path.join(state_dir, b"download.db"))))
        self._seen_batch: list[tuple[bytes]] = []
        self.deferred: list[tuple[Task, str]] = []
        self._done_batch: list[tuple[int, int]] = []

    # ------------------------------------------------------------------ feeder

    def feed(self, records: Iterator[list[Any]]) -> None:
        try:
            self._feed(records)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
            self.feeder_error = e
        finally:
            self.feeder_done.set()

    def _put(self, task: Task) -> None:
        while not self.stop.is_set():
            try:
                self.tasks.put(task, timeout=0.2)
                self.fed += 1
                return
            except queue.Full:
                continue
        raise InterruptedError

    def _feed(self, records: Iterator[list[Any]]) -> None:
        first = next(records, None)
        if not first or first[0] != "H" or not isinstance(first[1], dict):
            raise TamperedError("the share index does not start with its header")
        fs = _secrets(first[1])
        count = 1
        pack: tuple[list[Any], list[tuple[FileJob, int, int, bytes | None]]] | None = None
        for rec in records:
            count += 1
            kind = rec[0]
            if pack is not None and kind != "P":
                self._feed_pack(fs, *pack)
                pack = None
            if kind == "D":
                rel = path_bytes(rec[1])
                self.dest.place(rel + b"/x")  # creates it, checked
                self.dirs.append((rel, int(rec[2]), int(rec[3])))
                self.s.dirs += 1
            elif kind == "F":
                self._feed_file(fs, rec)
            elif kind == "K":
                pack = (rec, [])
            elif kind == "P":
                if pack is None:
                    raise TamperedError("the share index has a pack member without its pack")
                job = self._job(path_bytes(rec[1]), int(rec[2]), int(rec[3]), int(rec[4]))
                if job is not None:
                    pack[1].append((job, int(rec[5]), int(rec[2]), bytes.fromhex(rec[6]) if rec[6] else None))
            elif kind == "E":
                path = self.dest.place(path_bytes(rec[1]))
                self._seen(path_bytes(rec[1]))
                self.s.files += 1
                if not _complete(path, 0, int(rec[2])):
                    self._write_empty(path, int(rec[2]), int(rec[3]))
                else:
                    self.s.files_skipped += 1
            elif kind == "L":
                rel = path_bytes(rec[1])
                self.dest.place(rel)
                self._seen(rel)
                self.symlinks.append((rel, path_bytes(rec[2]), int(rec[3])))
            elif kind == "R":
                with self.reader:
                    self.reader.execute("INSERT OR REPLACE INTO rgroup VALUES(?,?,?)", (rec[1], rec[2], json.dumps(rec)))
                    self.reader.executemany(
                        "INSERT OR REPLACE INTO rmember VALUES(?,?,?)", [(rec[1], m[0], rec[2]) for m in rec[5]]
                    )
            elif kind == "T":
                if int(rec[1]) != count:
                    raise TamperedError("the share index is truncated (record count mismatch)")
                break
            else:
                raise TamperedError(f"the share index has an unknown record type {kind!r}")
        else:
            raise TamperedError("the share index is truncated (no trailer)")
        if pack is not None:
            self._feed_pack(fs, *pack)
        self._flush_seen()

    def _seen(self, rel: bytes) -> None:
        self._seen_batch.append((rel,))
        if len(self._seen_batch) >= 1000:
            self._flush_seen()

    def _flush_seen(self) -> None:
        if self._seen_batch:
            with self.reader:
                self.reader.executemany("INSERT OR IGNORE INTO seen VALUES(?)", self._seen_batch)
            self._seen_batch = []

    def _job(self, rel: bytes, size: int, mtime: int, mode: int) -> FileJob | None:
        """A FileJob for a file still to fetch, or None if DEST already has it complete."""
        path = self.dest.place(rel)
        self._seen(rel)
        self.s.files += 1
        if _complete(path, size, mtime):
            self.s.files_skipped += 1
            return None
        return FileJob(path=path, size=size, mtime_ns=mtime, mode=mode)

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

    def _feed_file(self, fs: FolderSecrets, rec: list[Any]) -> None:
        job = self._job(path_bytes(rec[1]), int(rec[2]), int(rec[3]), int(rec[4]))
        if job is None:
            return
        segs = rec[5]
        keep = os.path.exists(job.tmp)
        self._open_tmp(job, keep)
        todo = []
        offset = 0
        for shard, seg_id, attempt, length, h, server_id in segs:
            if not (keep and self.reader.execute("SELECT 1 FROM done WHERE shard=? AND seg_id=?", (shard, seg_id)).fetchall()):
                todo.append((shard, seg_id, attempt, length, h, server_id, offset))
            offset += length
        if offset != job.size:
            raise TamperedError(f"the share index's layout of {os.fsdecode(job.path)!r} does not add up")
        job.remaining = len(todo)
        if not todo:
            self.results.put((Task(-1, -1, "", None, [(job, 0, 0, 0, None)]), "noop"))
            self.fed += 1
            return
        for shard, seg_id, attempt, length, h, server_id, off in todo:
            mid = server_id or segment_message_id(fs.msgid_key, fs.domains, shard, seg_id, attempt)
            self._put(Task(shard, seg_id, mid, bytes.fromhex(h) if h else None, [(job, off, 0, length, None)]))

    def _feed_pack(self, fs: FolderSecrets, rec: list[Any], members: list[tuple[FileJob, int, int, bytes | None]]) -> None:
        if not members:
            return
        _k, shard, seg_id, attempt, length, h, server_id = rec
        writes = []
        for job, off, size, mh in members:
            if off + size > int(length):
                raise TamperedError("the share index has a pack member outside its pack")
            self._open_tmp(job, False)
            job.remaining = 1
            writes.append((job, 0, off, size, mh))
        mid = server_id or segment_message_id(fs.msgid_key, fs.domains, shard, seg_id, attempt)
        self._put(Task(shard, seg_id, mid, bytes.fromhex(h) if h else None, writes))

    def _write_empty(self, path: bytes, mtime: int, mode: int) -> None:
        job = FileJob(path=path, size=0, mtime_ns=mtime, mode=mode)
        self._open_tmp(job, False)
        self._finish_file(job)

    # ------------------------------------------------------------------ workers

    def work(self, fs_getter: Callable[[], FolderSecrets | None]) -> None:
        conn: Connection | None = None
        try:
            while not self.stop.is_set():
                batch: list[Task] = []
                try:
                    item = self.tasks.get(timeout=0.2)
                except queue.Empty:
                    continue  # the collector may still hand back a task to retry
                if item is _END:
                    self.tasks.put(_END)
                    return
                batch.append(item)  # type: ignore[arg-type]
                while len(batch) < 8:
                    try:
                        more = self.tasks.get_nowait()
                    except queue.Empty:
                        break
                    if more is _END:
                        self.tasks.put(_END)
                        break
                    batch.append(more)  # type: ignore[arg-type]
                fs = fs_getter()
                assert fs is not None
                for attempt in range(3):
                    try:
                        if conn is None:
                            conn = open_connection(self.spec)
                        done = 0
                        for task, (_mid, resp) in zip(batch, conn.decoded_bodies([t.msgid for t in batch], window=8)):
                            self.results.put((task, self._apply_decoded(fs, task, resp)))
                            done += 1
                        break
                    except NNTPError as e:
                        if conn is not None:
                            conn.close()
                            conn = None
                        batch = batch[done:]
                        if not e.retryable or attempt == 2:
                            raise
                        self.stop.wait(0.5 * (attempt + 1))
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.worker_errors.append(e)
        finally:
            if conn is not None:
                conn.close()

    def _apply_decoded(self, fs: FolderSecrets, task: Task, resp: Any) -> str | None:
        """Write one segment decoded by sabctools straight from the socket; None when done."""
        if resp.status_code != 222:
            return "missing"
        if resp.crc_expected is None or resp.crc != resp.crc_expected or resp.data is None:
            return "crc"
        return self._write_sealed(fs, task, bytes(resp.data))

    def _write_sealed(self, fs: FolderSecrets, task: Task, sealed: bytes) -> str | None:
        try:
            payload = open_segment(fs.aes, place_aad(fs.uid, task.shard, task.seg_id), sealed)
        except UsenetSyncError:
            return "damaged"
        if task.hash is not None and xxhash.xxh3_128_digest(payload) != task.hash:
            return "hash"
        view = memoryview(payload)
        for job, file_off, pay_off, length, mh in task.writes:
            piece = view[pay_off : pay_off + length]
            if mh is not None and xxhash.xxh3_128_digest(piece) != mh:
                return "hash"
            try:
                fd = os.open(job.tmp, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    os.pwrite(fd, piece, file_off)
                finally:
                    os.close(fd)
            except OSError as e:
                raise _disk_error(e, job.tmp) from None
        return None

    # ------------------------------------------------------------------ main thread

    def _finish_file(self, job: FileJob) -> None:
        try:
            os.chmod(job.tmp, stat.S_IMODE(job.mode) or 0o644)
            os.utime(job.tmp, ns=(job.mtime_ns, job.mtime_ns))
            os.replace(job.tmp, job.path)
        except OSError as e:
            raise _disk_error(e, job.path) from None
        self.s.files_written += 1
        self.s.bytes_written += job.size

    def collect(self) -> None:
        done = 0
        last_commit = time.monotonic()
        while True:
            if self.worker_errors:
                raise self.worker_errors[0]
            try:
                task, err = self.results.get(timeout=0.1)
            except queue.Empty:
                if self.feeder_error is not None:
                    raise self.feeder_error
                if self.feeder_done.is_set() and done >= self.fed:
                    break
                if self.feeder_done.is_set() and not any(
                    t.is_alive() for t in threading.enumerate() if t.name.startswith("fetch-")
                ):
                    if done < self.fed:
                        raise NetworkError("every download connection failed; what was fetched is kept")
                continue
            done += 1
            if err == "noop":
                self._finish_file(task.writes[0][0])
                continue
            if err is not None:
                task.tries += 1
                if task.tries < 2:
                    self.tasks.put(task)  # one more try, likely on another connection
                    done -= 1
                    continue
                self.deferred.append((task, err))  # PAR2 may still rebuild it, once the index is read
                continue
            self.s.segments_fetched += 1
            if len(task.writes) == 1 and task.shard >= 0:
                self._done_batch.append((task.shard, task.seg_id))
            for job, *_ in task.writes:
                job.remaining -= 1
                if job.remaining == 0 and not job.failed:
                    self._finish_file(job)
            if len(self._done_batch) >= 500 or time.monotonic() - last_commit > 1.0:
                self._commit_done()
                last_commit = time.monotonic()
                if self.progress:
                    self.progress(self.s)
        self._commit_done()

    def repair_deferred(self, fs: FolderSecrets) -> None:
        """Rebuild failed segments from their PAR2 groups; what cannot be rebuilt is reported damaged."""
        from usenetsync_cli.pipeline.recovery import RecoveryError, rebuild_sealed

        by_group: dict[tuple[int, int], list[tuple[Task, str]]] = {}
        lost: list[tuple[Task, str]] = []
        for task, err in self.deferred:
            row = self.reader.execute(
                "SELECT group_id FROM rmember WHERE shard=? AND seg_id=?", (task.shard, task.seg_id)
            ).fetchall()
            if row:
                by_group.setdefault((task.shard, row[0][0]), []).append((task, err))
            else:
                lost.append((task, err))
        ctx = _recovery_context(fs)
        for (shard, group_id), items in by_group.items():
            layout_rec = json.loads(self.reader.execute(
                "SELECT layout FROM rgroup WHERE shard=? AND group_id=?", (shard, group_id)
            ).fetchall()[0][0])
            try:
                rebuilt = rebuild_sealed(
                    self.spec, ctx, _layout_from_record(layout_rec), [t.seg_id for t, _ in items],
                    workdir=os.fsdecode(os.path.join(self.dest.root, STATE_DIR.encode(), b"par2")),
                )
            except RecoveryError as e:
                lost += [(t, f"{err}; {e.message}") for t, err in items]
                continue
            for task, err in items:
                sealed = rebuilt.get(task.seg_id)
                why = self._write_sealed(fs, task, sealed) if sealed is not None else err
                if why is not None:
                    lost.append((task, why))
                    continue
                self.s.segments_repaired += 1
                for job, *_ in task.writes:
                    job.remaining -= 1
                    if job.remaining == 0 and not job.failed:
                        self._finish_file(job)
        for task, err in lost:
            for job, *_ in task.writes:
                if not job.failed:
                    job.failed = True
                    self.s.damaged.append(f"{os.fsdecode(os.path.relpath(job.path, self.dest.root))} ({err})")

    def _commit_done(self) -> None:
        if self._done_batch:
            with self.db:
                self.db.executemany("INSERT OR IGNORE INTO done VALUES(?,?)", self._done_batch)
            self._done_batch = []

    def finish_tree(self, sync: bool, keep_deleted: bool) -> None:
        for rel, target, mtime in self.symlinks:
            path = self.dest.place(rel)
            try:
                if os.path.lexists(path):
                    if os.path.islink(path) and os.readlink(path) == target:
                        continue
                    if os.path.isdir(path) and not os.path.islink(path):
                        raise UnsafePathError(f"{os.fsdecode(rel)!r} is a folder in the destination")
                    os.unlink(path)
                os.symlink(target, path)
                os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
            except OSError as e:
                raise _disk_error(e, path) from None
            self.s.symlinks += 1
        if sync and not keep_deleted:
            gone = self.reader.execute("SELECT path FROM files WHERE path NOT IN (SELECT path FROM seen)").fetchall()
            for (rel,) in gone:
                try:
                    path = self.dest.place(rel, make_parents=False)
                    if os.path.islink(path) or os.path.isfile(path):
                        os.unlink(path)
                        self.s.files_deleted += 1
                except (OSError, UnsafePathError):
                    continue
        if not self.s.damaged:
            with self.reader:
                self.reader.execute("DELETE FROM files")
                self.reader.execute("INSERT INTO files SELECT path FROM seen")
        for rel, mode, mtime in sorted(self.dirs, key=lambda d: d[0].count(b"/"), reverse=True):
            path = os.path.join(self.dest.root, rel)
            try:
                os.chmod(path, stat.S_IMODE(mode) or 0o755)
                os.utime(path, ns=(mtime, mtime))
            except OSError:
                pass

    def close(self) -> None:
        self.reader.close()
        self.db.close()


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
    records: Iterator[list[Any]],
    dest: Path,
    spec: ServerSpec,
    *,
    version: int,
    index_sha256: bytes,
    connections: int | None = None,
    sync: bool = False,
    keep_deleted: bool = False,
    progress: Callable[[DownloadSummary], None] | None = None,
) -> DownloadSummary:
    t0 = time.monotonic()
    n = connections or spec.connections
    run = _Run(Destination(dest), spec, n, version, index_sha256, progress)
    holder: dict[str, FolderSecrets] = {}

    def records_with_header() -> Iterator[list[Any]]:
        for rec in records:
            if rec and rec[0] == "H" and "fs" not in holder:
                holder["fs"] = _secrets(rec[1])
            yield rec

    feeder = threading.Thread(target=run.feed, args=(records_with_header(),), name="index-feeder", daemon=True)
    workers = [
        threading.Thread(target=run.work, args=(lambda: holder.get("fs"),), name=f"fetch-{i}", daemon=True)
        for i in range(n)
    ]
    feeder.start()
    for w in workers:
        w.start()
    try:
        run.collect()
        if run.deferred:
            run.repair_deferred(holder["fs"])
        run.finish_tree(sync, keep_deleted)
    except BaseException:
        run.stop.set()
        run._commit_done()
        raise
    finally:
        run.stop.set()
        for w in workers:
            w.join(timeout=5)
        run.close()
    run.s.elapsed_s = time.monotonic() - t0
    return run.s
