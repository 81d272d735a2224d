"""The destination folder of a download: what may be written where, and what is the user's.

Owns: path safety in DEST (every path through ``core.manifest.safe_relpath``;
parents must be real directories, never symlinks or files), the decision for
each path of a share version against what DEST holds (``Survey``), the
names of conflict copies, moving a user's file aside (``--overwrite``), and
the modes a download may restore.

Decisions (``Action``) for a path the share version names:
- ``new``: nothing there; write it (never over something that appeared since:
  the final step is a hard link, which fails on an existing name);
- ``same``: content already identical (ours, or the user's own copy: adopted);
  only mode and mtime are applied;
- ``update``: ours and unchanged since we wrote it (reader_state.py); replace;
- ``clear``: a folder is in the way of a file or symlink of the share, and
  everything in it is ours and unchanged (a folder the share turned into a
  file): it is removed, then the path is written;
- ``conflict``: the user's (not ours, or changed since): a plain download
  refuses before writing anything; ``--sync`` keeps it and writes the share's
  version beside it as ``NAME.usenetsync-conflict-vN``; ``--overwrite``
  moves it into the home's ``replaced/`` folder, then writes.
A path whose parent is blocked by a file or symlink is a conflict too,
unless that parent is ours and becomes a folder in this version (then
everything below it is new). Folders the reader created are recorded as
ours (kind 2), so ``--sync`` can remove them once the share drops them and
they are empty of anything else.

Modes: without ``--keep-special-modes`` a restored file or folder never gets
setuid, setgid or sticky bits nor any bit the user's umask clears (the
publisher's modes are untrusted input); as root the same holds.

Invariant: nothing here writes through a symlink or outside DEST.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from usenetsync_cli.core.hashing import file_content_hash, piece_hash
from usenetsync_cli.core.manifest import UnsafePathError, safe_relpath
from usenetsync_cli.errors import InputPathError
from usenetsync_cli.pipeline.reader_state import KIND_DIR, KIND_FILE, KIND_LINK, ReaderState

CONFLICT_TAG = b".usenetsync-conflict-v"
_READ = 1 << 22


class Action(str, Enum):
    NEW = "new"
    SAME = "same"
    UPDATE = "update"
    CLEAR = "clear"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class ModePolicy:
    keep_special: bool
    umask: int

    @classmethod
    def current(cls, keep_special: bool) -> ModePolicy:
        old = os.umask(0o022)  # EDGE: the only way to read the umask is to set it
        os.umask(old)
        return cls(keep_special=keep_special, umask=old)

    def file(self, mode: int) -> int:
        return self._apply(mode, 0o644)

    def folder(self, mode: int) -> int:
        return self._apply(mode, 0o755)

    def _apply(self, mode: int, default: int) -> int:
        bits = stat.S_IMODE(int(mode)) or default
        if self.keep_special:
            return bits
        return bits & 0o777 & ~self.umask


def lstat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def local_content_hash(path: bytes, size: int, segment_size: int) -> bytes | None:
    """The content hash of a local file as a share of ``segment_size`` would have it; None if unreadable.

    Files of at least half a segment are cut into segments (core.packing),
    smaller ones are one piece.
    """
    if size >= max(1, segment_size // 2) and segment_size > 0:
        lengths = [min(segment_size, size - off) for off in range(0, size, segment_size)]
    else:
        lengths = [size] if size else []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        pieces = []
        off = 0
        for n in lengths:
            buf = bytearray()
            while len(buf) < n:
                chunk = os.pread(fd, min(_READ, n - len(buf)), off + len(buf))
                if not chunk:
                    return None
                buf += chunk
            pieces.append(piece_hash(buf))
            off += n
        if os.pread(fd, 1, off):
            return None  # longer than it said
    except OSError:
        return None
    finally:
        os.close(fd)
    return file_content_hash(size, pieces)


@dataclass
class Conflicts:
    count: int = 0
    sample: list[str] = field(default_factory=list)

    def add(self, rel: bytes, why: str) -> None:
        self.count += 1
        if len(self.sample) < 20:
            self.sample.append(f"{os.fsdecode(rel)} ({why})")


class Destination:
    """DEST with its safety checks: every path the download touches goes through ``place``.

    ``blocker`` decides what to do when a parent component is a file or a
    symlink: return True after moving it aside (``--overwrite``), False to
    refuse. DEST itself is created only when the first path is placed.
    """

    def __init__(self, root: Path, *, blocker: Callable[[bytes], bool] | None = None) -> None:
        self.root = os.fsencode(os.path.abspath(root))
        self.blocker = blocker
        self._real_dirs: set[bytes] = set()

    def check_root(self) -> None:
        """DEST is a folder, or can be made one: its nearest existing ancestor is a writable folder."""
        cur = self.root
        while True:
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                parent = os.path.dirname(cur)
                if parent == cur:
                    break
                cur = parent
                continue
            except NotADirectoryError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise InputPathError(
                    f"cannot use {os.fsdecode(self.root)} as the destination: {os.fsdecode(cur)} is not a folder",
                    hint="choose a folder you can write to",
                )
            if not os.access(cur, os.W_OK | os.X_OK):
                raise InputPathError(
                    f"cannot use {os.fsdecode(self.root)} as the destination: {os.fsdecode(cur)} is not writable",
                    hint="choose a folder you can write to",
                )
            return

    def is_empty(self) -> bool:
        try:
            with os.scandir(self.root) as it:
                return next(it, None) is None
        except FileNotFoundError:
            return True
        except NotADirectoryError:
            return False

    def ensure_root(self) -> None:
        if b"" in self._real_dirs:
            return
        try:
            os.makedirs(self.root, exist_ok=True)
        except FileExistsError:
            raise InputPathError(f"{os.fsdecode(self.root)} exists and is not a folder") from None
        except OSError as e:
            raise InputPathError(f"cannot create {os.fsdecode(self.root)}: {e.strerror}") from None
        st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode):
            raise InputPathError(f"{os.fsdecode(self.root)} is not a folder")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise InputPathError(
                f"{os.fsdecode(self.root)} is not writable", hint="choose another destination or fix its permissions"
            )
        self._real_dirs.add(b"")

    def full(self, rel: bytes) -> bytes:
        return os.path.join(self.root, safe_relpath(rel))

    def place(self, rel: bytes) -> bytes:
        """The absolute path of ``rel``, its parent folders created and checked to be real folders."""
        rel = safe_relpath(rel)
        self.ensure_root()
        parent = os.path.dirname(rel)
        if parent not in self._real_dirs:
            self._check_parents(parent)
        return os.path.join(self.root, rel)

    def _check_parents(self, parent: bytes) -> None:
        cur = b""
        for comp in parent.split(b"/"):
            cur = cur + b"/" + comp if cur else comp
            if cur in self._real_dirs:
                continue
            full = os.path.join(self.root, cur)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                os.mkdir(full, 0o700)  # its mode is applied at the end, like every folder's
                st = os.lstat(full)
            if not stat.S_ISDIR(st.st_mode):
                if self.blocker is None or not self.blocker(cur):
                    raise UnsafePathError(
                        f"{os.fsdecode(cur)!r} in the destination is not a real folder (a symlink or file is in the way)"
                    )
                os.mkdir(full, 0o700)
            self._real_dirs.add(cur)

    def blocked_parent(self, rel: bytes) -> bytes | None:
        """The first existing parent component of ``rel`` that is not a real folder, if any (no writes)."""
        parent = os.path.dirname(rel)
        if not parent or parent in self._real_dirs:
            return None
        cur = b""
        for comp in parent.split(b"/"):
            cur = cur + b"/" + comp if cur else comp
            try:
                st = os.lstat(os.path.join(self.root, cur))
            except FileNotFoundError:
                return None
            except NotADirectoryError:
                return cur
            if not stat.S_ISDIR(st.st_mode):
                return cur
        return None


def conflict_name(path: bytes, version: int) -> bytes:
    """A free name beside ``path`` for the share's version of a file the user changed."""
    base = path + CONFLICT_TAG + str(version).encode()
    candidate, n = base, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = base + b"-" + str(n).encode()
    return candidate


@dataclass(frozen=True)
class _Record:
    kind: int
    key: tuple[int, int, int, int] | None  # lstat after writing; None: unknown (imported from an old version)
    content: bytes | None


class Survey:
    """Decides, per path of a share version, against DEST and the reader's records."""

    def __init__(self, dest: Destination, reader: ReaderState, segment_size: int, version: int) -> None:
        self.dest = dest
        self.reader = reader
        self.segment_size = segment_size
        self.version = version
        self.conflicts = Conflicts()
        self.adopted = 0
        # Folders this version (re)creates where something of ours was: what is below them is new.
        self.fresh: set[bytes] = set()

    def _record(self, rel: bytes) -> _Record | None:
        rows = self.reader.conn.execute(
            "SELECT kind, size, mtime_ns, ino, ctime_ns, content FROM files WHERE path=?", (rel,)
        ).fetchall()
        if not rows:
            return None
        kind, size, mtime, ino, ctime, content = rows[0]
        return _Record(kind, None if size is None else (size, mtime, ino, ctime), content)

    def _under_fresh(self, rel: bytes) -> bool:
        parent = os.path.dirname(rel)
        while parent:
            if parent in self.fresh:
                return True
            parent = os.path.dirname(parent)
        return False

    def _lstat(self, rel: bytes, full: bytes) -> os.stat_result | Action:
        """What is at ``rel``: NEW if nothing, CONFLICT if a parent is not a real folder, else its lstat."""
        if self.fresh and self._under_fresh(rel):
            return Action.NEW
        blocker = self.dest.blocked_parent(rel)
        if blocker is not None:
            self.conflicts.add(rel, f"{os.fsdecode(blocker)} is not a folder")
            return Action.CONFLICT
        try:
            return os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            return Action.NEW

    def unchanged_ours(self, rel: bytes, st: os.stat_result, kind: int) -> bool:
        """Written by a download of this destination and not touched since (same lstat)."""
        rec = self._record(rel)
        return rec is not None and rec.kind == kind and rec.key is not None and rec.key == lstat_key(st)

    def ours_unchanged(self, rel: bytes, full: bytes, st: os.stat_result) -> bool:
        """Ours and unchanged in content (a file touched since is hashed), of any kind."""
        rec = self._record(rel)
        if rec is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            return rec.kind == KIND_DIR
        kind = KIND_LINK if stat.S_ISLNK(st.st_mode) else KIND_FILE if stat.S_ISREG(st.st_mode) else -1
        if rec.kind != kind:
            return False
        if rec.key is not None and rec.key == lstat_key(st):
            return True
        return kind == KIND_FILE and rec.content is not None and (
            local_content_hash(full, st.st_size, self.segment_size) == rec.content
        )

    def removable_tree(self, rel: bytes, full: bytes) -> bool:
        """Is the folder at ``rel`` ours, with everything below it ours and unchanged?"""
        if not self.ours_unchanged(rel, full, os.lstat(full)):
            return False
        try:
            with os.scandir(full) as it:
                for entry in it:
                    sub = rel + b"/" + entry.name
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        if not self.removable_tree(sub, entry.path):
                            return False
                    elif not self.ours_unchanged(sub, entry.path, st):
                        return False
        except OSError:
            return False
        return True

    def _in_the_way(self, rel: bytes, full: bytes, st: os.stat_result) -> Action:
        """A folder where the share has a file or symlink: cleared if it is all ours, else the user's."""
        if stat.S_ISDIR(st.st_mode) and self.removable_tree(rel, full):
            return Action.CLEAR
        self.conflicts.add(rel, "a folder is in the way" if stat.S_ISDIR(st.st_mode) else "something else is there")
        return Action.CONFLICT

    def file(self, rel: bytes, size: int, content: bytes) -> Action:
        """A regular file of the share (``content``: its content hash)."""
        full = self.dest.full(rel)
        st = self._lstat(rel, full)
        if isinstance(st, Action):
            return st
        if stat.S_ISREG(st.st_mode):
            rec = self._record(rel)
            ours = rec is not None and rec.kind == KIND_FILE
            if ours and rec.key is not None and rec.key == lstat_key(st):
                return Action.SAME if rec.content == content else Action.UPDATE
            # Not ours, or touched since: its content decides (read only when it can matter).
            local = None
            if st.st_size == size or (ours and rec.content is not None):
                local = local_content_hash(full, st.st_size, self.segment_size)
            if local is not None and local == content:
                self.adopted += 1
                return Action.SAME  # the share's bytes are already there: adopt them
            if ours and local is not None and local == rec.content:
                return Action.UPDATE  # ours, touched but not changed
            self.conflicts.add(rel, "changed locally" if ours else "not written by usenetsync")
            return Action.CONFLICT
        if stat.S_ISLNK(st.st_mode) and self.unchanged_ours(rel, st, KIND_LINK):
            return Action.UPDATE
        return self._in_the_way(rel, full, st)

    def symlink(self, rel: bytes, target: bytes) -> Action:
        full = self.dest.full(rel)
        st = self._lstat(rel, full)
        if isinstance(st, Action):
            return st
        if stat.S_ISLNK(st.st_mode):
            if os.readlink(full) == target:
                return Action.SAME
            if self.unchanged_ours(rel, st, KIND_LINK):
                return Action.UPDATE
        elif stat.S_ISREG(st.st_mode) and self.ours_unchanged(rel, full, st):
            return Action.UPDATE
        elif stat.S_ISDIR(st.st_mode):
            return self._in_the_way(rel, full, st)
        self.conflicts.add(rel, "something else is there")
        return Action.CONFLICT

    def folder(self, rel: bytes) -> Action:
        full = self.dest.full(rel)
        st = self._lstat(rel, full)
        if isinstance(st, Action):
            return st
        if stat.S_ISDIR(st.st_mode):
            return Action.SAME
        if self.ours_unchanged(rel, full, st):
            self.fresh.add(rel)
            return Action.UPDATE
        self.conflicts.add(rel, "a file is in the way")
        return Action.CONFLICT


def move_aside(dest: Destination, rel: bytes, replaced_root: Path) -> Path:
    """Move the user's ``rel`` (file, link or folder) into ``replaced_root`` keeping its relative path."""
    src = os.path.join(dest.root, rel)
    target = Path(os.fsdecode(os.path.join(os.fsencode(replaced_root), rel)))
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.rename(src, target)
    except OSError:
        shutil.move(os.fsdecode(src), target)  # another filesystem: copy, then remove
    return target


def replaced_folder(state_dir: Path, dest_key: str) -> Path:
    return state_dir / "replaced" / f"{time.strftime('%Y%m%d-%H%M%S')}-{dest_key[:8]}"
