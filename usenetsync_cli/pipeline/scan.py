"""Directory scanning: a generator over ``os.scandir``, one directory at a time.

Owns: walking a folder and reporting, per directory, the regular files and
symlinks it holds with their lstat (or stat, when following links).

Invariants:
- Never a list of the whole tree in memory, nor of one whole directory's
  files: the generator holds at most ``CHUNK_ENTRIES`` file entries of the
  current directory, its subdirectories (relpath, mode, mtime), and a stack of
  directories still to visit. A directory is yielded in parts
  (``DirListing.part`` 0, 1, ...; ``last`` set on its final part); one that
  fits in a part is yielded exactly once, ``part=0, last=True``, as before
  parts existed. Every directory that is started ends with a ``last`` part,
  even when its listing fails part-way. Subdirectories are pushed only after
  the last part, so a directory's parts are consecutive. (A directory with
  millions of subdirectories still holds their list: not bounded here.)
- Paths are bytes end to end, so names that are not UTF-8 round-trip.
- Symlinks are recorded, not followed, unless ``follow_symlinks``; then
  directories are identified by (st_dev, st_ino) so a loop is visited once.
- Exclusions (``selection``, core/excludes.py) are decided before a
  directory is entered: an excluded directory, a cache directory
  (``--exclude-caches``: a valid ``CACHEDIR.TAG``, left out whole, the tag
  too) is never listed nor stat'ed below, so an unreadable or huge one costs
  one lstat. With ``one_file_system`` a directory on another device than the
  root (a mount point) is yielded as an empty directory and not entered.
  The root itself is always scanned.
- Nothing here is fatal: an unreadable directory or file is a warning; a
  file that vanishes between listing and stat is counted, not reported;
  special files (FIFOs, sockets, devices) are skipped and counted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from usenetsync_cli.core.excludes import CACHEDIR_SIGNATURE, CACHEDIR_TAG, Selection, crosses_device, is_cachedir_tag

S_IFMT = 0o170000
S_IFREG = 0o100000
S_IFDIR = 0o040000
S_IFLNK = 0o120000

KIND_FILE = 0
KIND_SYMLINK = 1

# (name, kind, size, mtime_ns, ctime_ns, inode, mode, symlink target or None, link count,
#  extended attributes (xattr_blob) or None when not asked for)
FileEntry = tuple[bytes, int, int, int, int, int, int, bytes | None, int, bytes | None]

# Most file entries of one directory held at once (~0.35 KiB each): a bigger
# directory is yielded in parts of this size.
CHUNK_ENTRIES = 8192


@dataclass(slots=True)
class DirListing:
    relpath: bytes  # b"" for the root
    mode: int
    mtime_ns: int
    files: list[FileEntry]
    part: int = 0  # which part of this directory (0 first)
    last: bool = True  # the directory's final part: no more entries of it follow


@dataclass
class ScanCounters:
    dirs: int = 0
    symlinks: int = 0
    special: int = 0
    vanished: int = 0
    warnings: int = 0
    loops: int = 0
    excluded: int = 0  # files and directories left out by patterns (a directory counts once)
    caches: int = 0  # cache directories left out (--exclude-caches)
    mounts: int = 0  # mount points not crossed (--one-file-system)
    warning_samples: list[str] = field(default_factory=list)
    special_samples: list[str] = field(default_factory=list)  # a few skipped sockets, FIFOs, devices

    def warn(self, message: str) -> None:
        self.warnings += 1
        if len(self.warning_samples) < 20:
            self.warning_samples.append(message)


def _join(rel: bytes, name: bytes) -> bytes:
    return rel + b"/" + name if rel else name


def xattr_blob(path: bytes) -> bytes | None:
    """The ``user.*`` extended attributes of a file, canonically encoded (None if it has none).

    Encoding: sorted (name, value) pairs, each as u16be name length, name,
    u32be value length, value. Only the ``user`` namespace is carried:
    ``security``/``trusted``/``system`` attributes belong to the machine.
    """
    try:
        names = sorted(n for n in os.listxattr(path, follow_symlinks=False) if n.startswith("user."))
        if not names:
            return None
        out = bytearray()
        for name in names:
            raw = name.encode("utf-8", "surrogateescape")
            value = os.getxattr(path, name, follow_symlinks=False)
            out += len(raw).to_bytes(2, "big") + raw + len(value).to_bytes(4, "big") + value
        return bytes(out)
    except OSError:
        return None  # unsupported here, or vanished: nothing to carry


def scan_tree(
    root: bytes,
    counters: ScanCounters,
    *,
    follow_symlinks: bool = False,
    xattrs: bool = False,
    scandir: Callable[[bytes], object] = os.scandir,
    selection: Selection | None = None,
) -> Iterator[DirListing]:
    """Yield the ``DirListing`` parts of each directory below (and including) ``root``.

    A directory of at most ``CHUNK_ENTRIES`` files is one part (``part=0, last=True``).
    ``selection``: what to leave out (see the module docstring)."""
    chunk = CHUNK_ENTRIES
    st = os.stat(root)
    root_dev = st.st_dev
    visited: set[tuple[int, int]] = {(st.st_dev, st.st_ino)} if follow_symlinks else set()
    stack: list[tuple[bytes, int, int, int]] = [(b"", st.st_mode, st.st_mtime_ns, st.st_dev)]
    # None when there is nothing to match: the per-entry loop then costs nothing more.
    match = selection.matcher.matches if selection is not None and selection.matcher else None
    caches = selection is not None and selection.exclude_caches
    one_fs = selection is not None and selection.one_file_system
    sep = b"/"
    # Locals, not globals, in the per-entry loop: it runs millions of times.
    ifmt, ifreg, ifdir, iflnk, kind_file = S_IFMT, S_IFREG, S_IFDIR, S_IFLNK, KIND_FILE
    while stack:
        rel, dmode, dmtime, ddev = stack.pop()
        full = root + sep + rel if rel else root
        if rel and one_fs and crosses_device(root_dev, ddev):
            # A mount point: kept as an empty directory (it is where the other file system goes).
            counters.dirs += 1
            counters.mounts += 1
            yield DirListing(rel, dmode, dmtime, [], 0, True)
            continue
        if rel and caches and _cache_tagged(full):
            counters.caches += 1
            continue
        files: list[FileEntry] = []
        subdirs: list[tuple[bytes, int, int, int]] = []
        try:
            it = scandir(full)
        except FileNotFoundError:
            counters.vanished += 1
            continue
        except OSError as e:
            counters.warn(f"cannot read directory {os.fsdecode(full)}: {e.strerror}")
            continue
        counters.dirs += 1
        append = files.append
        part = 0
        with it:  # type: ignore[attr-defined]
            try:
                for entry in it:  # type: ignore[attr-defined]
                    try:
                        est = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        counters.vanished += 1
                        continue
                    except OSError as e:
                        counters.warn(f"cannot stat {os.fsdecode(entry.path)}: {e.strerror}")
                        continue
                    m = est.st_mode
                    fmt = m & ifmt
                    # A followed symlink's kind is known only after following it: _symlink matches it.
                    if match is not None and (fmt == ifreg or fmt == ifdir or (fmt == iflnk and not follow_symlinks)) \
                            and match(rel + sep + entry.name if rel else entry.name, fmt == ifdir):
                        counters.excluded += 1
                        continue
                    if fmt == ifreg:
                        append((entry.name, kind_file, est.st_size, est.st_mtime_ns, est.st_ctime_ns, est.st_ino, m, None,
                                est.st_nlink, xattr_blob(entry.path) if xattrs else None))
                        if len(files) > chunk:
                            # One entry past a full part: the full part is not the last one.
                            yield DirListing(rel, dmode, dmtime, files[:chunk], part, False)
                            del files[:chunk]  # same list: ``append`` stays bound to it
                            part += 1
                    elif fmt == ifdir:
                        subdirs.append((_join(rel, entry.name), m, est.st_mtime_ns, est.st_dev))
                    elif fmt == iflnk:
                        _symlink(entry, rel, est, files, subdirs, counters, follow_symlinks, visited, match)
                        if len(files) > chunk:
                            yield DirListing(rel, dmode, dmtime, files[:chunk], part, False)
                            del files[:chunk]
                            part += 1
                    else:
                        counters.special += 1
                        if len(counters.special_samples) < 5:
                            counters.special_samples.append(os.fsdecode(entry.path))
            except OSError as e:  # the listing itself failed part-way (e.g. EIO)
                counters.warn(f"error listing {os.fsdecode(full)}: {e.strerror}")
        yield DirListing(rel, dmode, dmtime, files, part, True)
        if follow_symlinks:
            # Directory identity only matters when links can lead back up the tree.
            for sub in subdirs:
                try:
                    sst = os.stat(root + sep + sub[0])
                except OSError:
                    continue
                key = (sst.st_dev, sst.st_ino)
                if key in visited:
                    counters.loops += 1
                    continue
                visited.add(key)
                stack.append(sub)
        else:
            subdirs.reverse()  # visit in listing order
            stack.extend(subdirs)


def _cache_tagged(full: bytes) -> bool:
    """Whether the directory holds a ``CACHEDIR.TAG`` that starts with the signature."""
    try:
        with open(full + b"/" + CACHEDIR_TAG, "rb") as f:
            return is_cachedir_tag(f.read(len(CACHEDIR_SIGNATURE)))
    except OSError:
        return False  # no tag (the common case), or unreadable: then the directory is not a cache


def _symlink(
    entry: os.DirEntry[bytes],
    rel: bytes,
    lst: os.stat_result,
    files: list[FileEntry],
    subdirs: list[tuple[bytes, int, int, int]],
    counters: ScanCounters,
    follow: bool,
    visited: set[tuple[int, int]],
    match: Callable[[bytes, bool], bool] | None = None,
) -> None:
    name = entry.name
    if follow:
        try:
            tst = entry.stat(follow_symlinks=True)
        except OSError:
            counters.warn(f"broken symlink {os.fsdecode(entry.path)} skipped")
            return
        fmt = tst.st_mode & S_IFMT
        if match is not None and match(_join(rel, name), fmt == S_IFDIR):
            counters.excluded += 1
            return
        if fmt == S_IFREG:
            files.append(
                (name, KIND_FILE, tst.st_size, tst.st_mtime_ns, tst.st_ctime_ns, tst.st_ino, tst.st_mode, None, tst.st_nlink,
                 None)
            )
        elif fmt == S_IFDIR:
            subdirs.append((_join(rel, name), tst.st_mode, tst.st_mtime_ns, tst.st_dev))
        else:
            counters.special += 1
        return
    try:
        target = os.readlink(entry.path)
    except FileNotFoundError:
        counters.vanished += 1
        return
    except OSError as e:
        counters.warn(f"cannot read symlink {os.fsdecode(entry.path)}: {e.strerror}")
        return
    counters.symlinks += 1
    files.append(
        (name, KIND_SYMLINK, 0, lst.st_mtime_ns, lst.st_ctime_ns, lst.st_ino, lst.st_mode, target, 1, None)
    )
