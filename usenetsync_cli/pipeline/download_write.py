"""Writing downloaded files into DEST: the types of a download and the last step of every file.

Owns ``FileJob`` (one file being written: its hidden ``.NAME.uspart``, its
expected content hash and the piece hashes checked so far), ``Task`` (one
article's writes), ``DownloadSummary``, and ``Writer``, which gives a file
its name once it is proven whole (see its docstring), restores safe modes
(pipeline/destination.py ``ModePolicy``) and keeps the reader's records of
what it wrote (pipeline/reader_state.py).

Invariant: a file is visible under its final name only after its content
hash (core/hashing.py, over its ordered piece hashes, each checked against
the plaintext it came from) equals the share index's; nothing replaces a
file that is not ours.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from usenetsync_cli.core.epochs import EpochKeys, FolderContext
from usenetsync_cli.core.hashing import file_content_hash
from usenetsync_cli.core.manifest import FORMAT, OldFormatError
from usenetsync_cli.errors import DiskFullError, InputPathError, TamperedError, UsenetSyncError
from usenetsync_cli.pipeline.destination import (
    Action,
    Destination,
    ModePolicy,
    conflict_name,
    local_content_hash,
    lstat_key,
    move_aside,
)
from usenetsync_cli.pipeline.reader_state import KIND_DIR, KIND_FILE, KIND_LINK, ReaderState

TMP_SUFFIX = b".uspart"
_DAMAGED_NAMES = 100


@dataclass(frozen=True)
class DownloadOptions:
    connections: int | None = None
    sync: bool = False  # update a copy: conflicts kept beside, files the share dropped removed (if ours)
    overwrite: bool = False  # replace the user's conflicting files (moved into the home's replaced/ first)
    keep_deleted: bool = False  # with sync: remove nothing
    keep_special_modes: bool = False
    xattrs: bool = False  # restore the user.* extended attributes the share carries
    fill: tuple[Any, ...] = ()  # ServerSpecs of role fill: asked only for articles the server lacks


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
    epoch: int = 0  # the key epoch it is sealed in


@dataclass
class DownloadSummary:
    dest: str
    version: int
    files: int = 0
    files_written: int = 0
    files_skipped: int = 0  # already there with the share's content (mode and mtime applied)
    files_adopted: int = 0  # the user's own identical copy, now counted as ours
    files_deleted: int = 0
    dirs_deleted: int = 0  # --sync: folders ours that the share dropped, removed once empty
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
    """What a share version gives its reader: the folder's uid and the keys of the epochs it references."""

    ctx: FolderContext
    segment_size: int


MAX_EPOCHS = 4096  # per index: one key each; an index naming more is refused before anything is derived


def folder_secrets(header: Any) -> FolderSecrets:
    if isinstance(header, dict) and header.get("format") != FORMAT:
        raise OldFormatError(header.get("format"))
    try:
        uid = bytes.fromhex(header["folder_uid"])
        epochs_doc = header["epochs"]
        if not isinstance(epochs_doc, dict) or len(epochs_doc) > MAX_EPOCHS or len(uid) != 16:
            raise ValueError("epochs")
        epochs = {int(e): EpochKeys.from_reader_doc(int(e), d) for e, d in epochs_doc.items()}
        if any(not 0 <= e < 1 << 32 for e in epochs):
            raise ValueError("epoch")
        return FolderSecrets(FolderContext.for_reader(uid, epochs), segment_size=int(header["segment_size"]))
    except (KeyError, ValueError, TypeError, AttributeError):
        raise TamperedError("the share index header is damaged") from None


def disk_error(e: OSError, where: bytes) -> UsenetSyncError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left on device while writing {os.fsdecode(where)}")
    return InputPathError(f"cannot write {os.fsdecode(where)}: {e.strerror}")


@dataclass(frozen=True)
class HardLink:
    """Another name of a file of the version (an H record): linked once the first name is in place."""

    rel: bytes
    first: bytes
    content: bytes
    mtime_ns: int
    mode: int
    action: Action


class Writer:
    """Gives verified files their names in DEST and records them as ours; never over the user's files.

    Owns the reader's ``files`` records (what a download wrote, with its lstat
    after writing), the final step of every file (content hash, then mode,
    mtime and name: a new name by hard link, never over something that
    appeared; an update over our own unchanged file; a conflict beside the
    user's file with ``--sync``, or after moving it into ``replaced/`` with
    ``--overwrite``), symlinks, ``--sync`` removals and folder modes.
    Called from the calling thread only (it uses the reader's database).
    """

    def __init__(
        self, root: Path, reader: ReaderState, opts: DownloadOptions, version: int, replaced_root: Path,
        summary: DownloadSummary,
    ) -> None:
        self.reader = reader
        self.opts = opts
        self.version = version
        self.replaced_root = replaced_root
        self.s = summary
        self.modes = ModePolicy.current(opts.keep_special_modes)
        self.dest = Destination(root, blocker=self.move_blocker if opts.overwrite else None)
        self.segment_size = 0  # of the share, once its header is read (to re-hash local files)

    def open_tmp(self, job: FileJob, keep: bool) -> None:
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
            raise disk_error(e, job.tmp) from None

    def finish_file(self, job: FileJob) -> None:
        """Every piece is in: check the content hash, then give the file its name, mode and mtime."""
        pieces = job.pieces
        if any(p is None for p in pieces) or file_content_hash(job.size, pieces) != job.content:  # type: ignore[arg-type]
            self.s.damage(job.rel, "its content hash does not match the share index")
            return
        self.place(job)

    def place(self, job: FileJob) -> None:
        try:
            os.chmod(job.tmp, self.modes.file(job.mode))
            os.utime(job.tmp, ns=(job.mtime_ns, job.mtime_ns))
            final = job.path
            if job.action is Action.CLEAR:
                self.clear_tree(job.rel)  # a folder of ours the share turned into this file
            if job.action is Action.CONFLICT and self.opts.overwrite:
                if os.path.lexists(final):  # (a conflict of its folder was moved aside already)
                    self.move_aside(job.rel)
                os.replace(job.tmp, final)
            elif job.action is Action.UPDATE:
                os.replace(job.tmp, final)
            else:
                if job.action is Action.CONFLICT:
                    final = conflict_name(job.path, self.version)
                final = self._link_new(job.tmp, final, job.rel)
        except OSError as e:
            raise disk_error(e, job.path) from None
        self.s.files_written += 1
        self.s.bytes_written += job.size
        if final == job.path:
            self.record(job, final)
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

    def apply_meta(self, job: FileJob, path: bytes) -> None:
        st = os.lstat(path)
        want = self.modes.file(job.mode)
        if stat.S_IMODE(st.st_mode) != want:
            os.chmod(path, want)
        if st.st_mtime_ns != job.mtime_ns:
            os.utime(path, ns=(job.mtime_ns, job.mtime_ns))

    def record(self, job: FileJob, path: bytes) -> None:
        st = os.lstat(path)
        with self.reader.conn:
            self.reader.conn.execute(
                "INSERT OR REPLACE INTO files VALUES(?,?,?,?,?,?,?,?)",
                (job.rel, KIND_FILE, *lstat_key(st), job.content, self.version),
            )

    def move_aside(self, rel: bytes) -> None:
        moved = move_aside(self.dest, rel, self.replaced_root)
        self.s.replaced.append(str(moved))

    def record_dir(self, rel: bytes) -> None:
        """A folder this download created: ours, so --sync may remove it once the share drops it."""
        with self.reader.conn:
            self.reader.conn.execute(
                "INSERT OR REPLACE INTO files(path, kind, version) VALUES(?,?,?)", (rel, KIND_DIR, self.version)
            )

    def clear_tree(self, rel: bytes) -> None:
        """Remove the folder at ``rel`` and what is in it (the survey proved all of it ours and unchanged)."""
        top = self.dest.full(rel)
        for dirpath, dirnames, filenames in os.walk(top, topdown=False):
            for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                os.unlink(os.path.join(dirpath, name))
            for name in dirnames:
                full = os.path.join(dirpath, name)
                if not os.path.islink(full):
                    os.rmdir(full)
        os.rmdir(top)
        with self.reader.conn:
            self.reader.conn.execute(
                "DELETE FROM files WHERE path=? OR (path>=? AND path<?)", (rel, rel + b"/", rel + b"0")
            )

    def move_blocker(self, rel: bytes) -> bool:
        self.move_aside(rel)
        return True

    def finish_tree(
        self, symlinks: list[tuple[bytes, bytes, int, Action]], dirs: list[tuple[bytes, int, int]],
        links: list[HardLink] = (),  # type: ignore[assignment]
        xattrs: list[tuple[bytes, list[tuple[str, bytes]]]] = (),  # type: ignore[assignment]
    ) -> None:
        """Hard links, extended attributes, symlinks (last: nothing is written through one), --sync removals,
        folder modes."""
        for link in links:
            self._hard_link(link)
        if self.opts.xattrs:
            carried = set()
            for rel, pairs in xattrs:
                self._xattrs(rel, pairs)
                carried.add(rel)
            # Exactly the share's: a file of this version without attributes has none of the user's kind.
            for (rel,) in self.reader.conn.execute("SELECT path FROM seen").fetchall():
                if rel not in carried:
                    self._drop_user_xattrs(rel)
        for rel, target, mtime, action in symlinks:
            self._symlink(rel, target, mtime, action)
        if self.opts.sync and not self.opts.keep_deleted:
            self._remove_dropped()
        for rel, mode, mtime in sorted(dirs, key=lambda d: d[0].count(b"/"), reverse=True):
            path = os.path.join(self.dest.root, rel)
            try:
                os.chmod(path, self.modes.folder(mode))
                os.utime(path, ns=(mtime, mtime))
            except OSError:
                pass

    def _hard_link(self, link: HardLink) -> None:
        """Give the file at ``link.first`` the name ``link.rel`` too: one copy of the data, as in the source."""
        rel = link.rel
        if link.action is Action.CONFLICT and self.opts.sync and self.dest.blocked_parent(rel) is not None:
            return
        first = self.dest.full(link.first)
        rows = self.reader.conn.execute("SELECT content FROM files WHERE path=? AND kind=?", (link.first, KIND_FILE))
        got = rows.fetchall()
        try:
            first_st = os.lstat(first)
        except OSError:
            first_st = None
        if not got or got[0][0] != link.content or first_st is None or not stat.S_ISREG(first_st.st_mode):
            self.s.damage(rel, f"its first name {os.fsdecode(link.first)} was not written")
            return
        path = self.dest.place(rel)
        try:
            if link.action is Action.SAME and os.lstat(path).st_ino == first_st.st_ino:
                pass
            elif link.action is Action.CONFLICT and not self.opts.overwrite:
                copy = conflict_name(path, self.version)
                os.link(first, copy)
                self.s.conflict_copies.append(os.fsdecode(os.path.relpath(copy, self.dest.root)))
                return
            else:
                if link.action is Action.CLEAR:
                    self.clear_tree(rel)
                elif link.action is Action.CONFLICT and os.path.lexists(path):
                    self.move_aside(rel)
                tmp = tmp_of(path)
                if os.path.lexists(tmp):
                    os.unlink(tmp)
                os.link(first, tmp)
                os.replace(tmp, path)  # NEW, or ours (UPDATE, SAME but a separate copy)
        except OSError as e:
            raise disk_error(e, path) from None
        self.s.files_written += 1
        with self.reader.conn:  # linking changed the first name's ctime: record both as they are now
            for name, full in ((rel, path), (link.first, first)):
                self.reader.conn.execute(
                    "INSERT OR REPLACE INTO files VALUES(?,?,?,?,?,?,?,?)",
                    (name, KIND_FILE, *lstat_key(os.lstat(full)), link.content, self.version),
                )

    def _drop_user_xattrs(self, rel: bytes) -> None:
        path = self.dest.full(rel)
        try:
            if not os.path.isfile(path) or os.path.islink(path):
                return
            names = [n for n in os.listxattr(path, follow_symlinks=False) if n.startswith("user.")]
        except OSError:
            return
        if names:
            self._xattrs(rel, [])

    def _xattrs(self, rel: bytes, pairs: list[tuple[str, bytes]]) -> None:
        """Make the file's user.* attributes exactly the share's (only on a file this download owns)."""
        rows = self.reader.conn.execute("SELECT content FROM files WHERE path=? AND kind=?", (rel, KIND_FILE)).fetchall()
        path = self.dest.full(rel)
        if not rows or not os.path.isfile(path) or os.path.islink(path):
            return  # not written here (a conflict, damaged): nothing of the user's is touched
        try:
            want = dict(pairs)
            for name in os.listxattr(path, follow_symlinks=False):
                if name.startswith("user.") and name not in want:
                    os.removexattr(path, name, follow_symlinks=False)
            for name, value in pairs:
                os.setxattr(path, name, value, follow_symlinks=False)
        except OSError as e:
            self.s.damage(rel, f"its extended attributes could not be set: {e.strerror}")
            return
        with self.reader.conn:  # setting attributes moved ctime: record the file as it is now
            self.reader.conn.execute(
                "INSERT OR REPLACE INTO files VALUES(?,?,?,?,?,?,?,?)",
                (rel, KIND_FILE, *lstat_key(os.lstat(path)), rows[0][0], self.version),
            )

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
            elif action is Action.CLEAR:
                self.clear_tree(rel)
                os.symlink(target, path)
            elif action is Action.CONFLICT and self.opts.overwrite:
                if os.path.lexists(path):
                    self.move_aside(rel)
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
            raise disk_error(e, path) from None
        self.s.symlinks += 1
        st = os.lstat(path)
        with self.reader.conn:
            self.reader.conn.execute(
                "INSERT OR REPLACE INTO files VALUES(?,?,?,?,?,?,?,?)",
                (rel, KIND_LINK, *lstat_key(st), target, self.version),
            )

    def _remove_dropped(self) -> None:
        """What is ours and unchanged that the share no longer has goes; changed things are the user's now.

        Files and symlinks first, then folders deepest first: a folder goes only
        once it is empty (anything left in it is the user's: it is kept and
        reported).
        """
        conn = self.reader.conn
        gone = conn.execute(
            "SELECT path, kind, size, mtime_ns, ino, ctime_ns, content FROM files WHERE path NOT IN (SELECT path FROM seen)"
        ).fetchall()
        folders = sorted((r[0] for r in gone if r[1] == KIND_DIR), key=lambda p: p.count(b"/"), reverse=True)
        for rel, kind, size, mtime, ino, ctime, content in gone:
            if kind == KIND_DIR:
                continue
            try:
                path = self.dest.full(rel)
                st = os.lstat(path)
            except (OSError, TamperedError):
                st = None
            if st is not None:
                unchanged = size is not None and lstat_key(st) == (size, mtime, ino, ctime)
                if not unchanged and kind == KIND_FILE and stat.S_ISREG(st.st_mode) and content is not None:
                    unchanged = local_content_hash(path, st.st_size, self.segment_size) == content
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
        for rel in folders:
            try:
                path = self.dest.full(rel)
                if self.dest.blocked_parent(rel) is None and stat.S_ISDIR(os.lstat(path).st_mode):
                    os.rmdir(path)
                    self.s.dirs_deleted += 1
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST) and len(self.s.kept) < _DAMAGED_NAMES:
                    self.s.kept.append(f"{os.fsdecode(rel)}/ (the share removed this folder; it holds files of yours)")
            except TamperedError:
                pass
            with conn:
                conn.execute("DELETE FROM files WHERE path=?", (rel,))


_BLOCK = 1 << 16
_ZEROS = bytes(_BLOCK)


def nonzero_spans(view: memoryview) -> list[tuple[int, int]]:
    """(start, end) of the runs of ``view`` that are not whole 64 KiB blocks of zeros.

    How a download leaves holes: a file is pre-sized with ``ftruncate`` (a
    hole), so a zero block that is simply not written stays a hole and the
    file comes back sparse; nothing about holes is recorded in the index.
    Cheap on real data: a block whose first or last byte is not zero is not
    compared at all.
    """
    spans: list[tuple[int, int]] = []
    start: int | None = None
    n = len(view)
    for off in range(0, n, _BLOCK):
        end = min(off + _BLOCK, n)
        zero = view[off] == 0 and view[end - 1] == 0 and bytes(view[off:end]) == _ZEROS[: end - off]
        if zero and start is not None:
            spans.append((start, off))
            start = None
        elif not zero and start is None:
            start = off
    if start is not None:
        spans.append((start, n))
    return spans


def pwrite_all(path: bytes, data: memoryview, offset: int, *, sparse: bool = False) -> None:
    """Write all of ``data`` at ``offset`` (a full disk may write part, then fail); ``sparse``: skip zero blocks."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for start, end in nonzero_spans(data) if sparse else [(0, len(data))]:
                chunk, at = data[start:end], offset + start
                while chunk:
                    n = os.pwrite(fd, chunk, at)
                    if n <= 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    chunk, at = chunk[n:], at + n
        finally:
            os.close(fd)
    except OSError as e:
        raise disk_error(e, path) from None


def tmp_of(path: bytes) -> bytes:
    head, tail = os.path.split(path)
    return os.path.join(head, b"." + tail + TMP_SUFFIX)


