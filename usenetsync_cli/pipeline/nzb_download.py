"""Download the files of a parsed NZB into a folder over N pipelined connections.

Owns: turning ``NzbFile`` entries (``core.nzb``) into finished files in
``dest``: naming them safely, fetching every segment with pipelined BODY,
decoding yEnc, checking CRCs, writing parts in place, verifying, renaming,
and resuming an interrupted or damaged download.

How it runs:
1. Names. A file's name is the quoted name of its Subject, else the yEnc
   ``name=`` of its first article (fetched in a "probe" round; a round is
   named and its probes written in a thread of its own while the next round
   is fetched, rounds one after another). Both
   are untrusted and go through ``safe_filename``: only a basename, never
   '.', '..', NUL, control characters or a path, so nothing is written
   outside ``dest``. Names that collide get " (1)", " (2)" … in NZB order.
   A final name that already exists is never overwritten: if its size (and
   yEnc whole-file CRC, when the poster gave one) match the first article,
   the file counts as done ("present"); otherwise a free variant is used.
2. Fetch. Segments stream (one generator over the NZB, never a list of
   them) into the fetch engine (pipeline/fetch.py): pipelined BODY decoded
   by sabctools straight from the socket, the exact pure-Python decoder
   where sabctools cannot be trusted, each reply bounded by the segment's
   NZB ``bytes`` plus headroom (``segment_limit``). A missing article (430),
   a CRC mismatch, an undecodable or oversized body is retried once on
   another connection (another server when there is one), then recorded as
   a failure of that part. Reconnects, backoff and retiring connections are
   the engine's.
3. Write. Each part is ``os.pwrite``-n at ``begin - 1`` into
   ``dest/NAME.part``, a sparse file sized from the yEnc ``size=``, and its
   writeback is started at once (``posix_fadvise(DONTNEED)``), so the fsync
   before the rename waits for little.
4. Finish. When every part of a file is written, the parts must tile
   ``1..size`` exactly and their CRCs, combined in order, must equal the
   whole-file ``crc32=`` when the poster gave one; then ``NAME.part`` becomes
   ``NAME`` (hard link + unlink, so an existing ``NAME`` is never replaced).

Invariants:
- A file is visible under its final name only when complete and verified.
  A damaged file stays ``NAME.part`` with its sidecar, and is listed in
  ``NzbSummary.files_damaged`` with the NZB segment numbers it lacks; a
  damaged file never raises.
- Raises only for what stops the whole download: every connection failed
  (the typed ``NNTPError`` of the first one: ``AuthFailed``, ``ConnectFailed``
  …), the destination cannot be written (``InputPathError``,
  ``DiskFullError``), or Ctrl-C (``InterruptedByUser``, after saving).
- Commit point of a part: the rewrite of ``NAME.part.json`` (atomic,
  temporary file + ``os.replace``) that lists it, done only after an
  ``fdatasync`` of ``NAME.part``. A crash loses at most the parts written
  since the last sidecar save (every few seconds); they are fetched again.
  A sidecar is trusted only if it names the same segment list (a SHA-256 of
  numbers and Message-IDs) and the ``.part`` has the recorded size.
- Resume: ``NAME.part`` + a trusted sidecar means the parts it lists are
  not fetched again; a damaged file's next run fetches only what it lacks.
- Memory: the per-file state (done/failed part numbers), the engine's
  bounded queue, at most ``window`` replies per connection each under its
  bound, and the decoded probe articles of at most two probe rounds (each
  <= 64 files and <= 48 MiB of article bounds).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sabctools

from usenetsync_cli.core.nzb import NzbFile, NzbSegment
from usenetsync_cli.errors import (
    ConfigError,
    DiskFullError,
    InputPathError,
    InterruptedByUser,
    UsenetSyncError,
)
from usenetsync_cli.nntp import BODY_MAX_BYTES, Article, ServerSpec
from usenetsync_cli.pipeline.fetch import FetchJob, FetchPool

__all__ = [
    "NzbProgress",
    "NzbSummary",
    "PartFailure",
    "download_nzb",
    "safe_filename",
    "segment_limit",
]

PART_SUFFIX = ".part"
SIDECAR_SUFFIX = ".part.json"
_SIDECAR_FORMAT = 1
_SAVE_EVERY_S = 3.0  # sidecar rewrite interval: bounds what a crash refetches
_PROBE_TRIES = 3  # segments tried per file to learn a yEnc name before giving up
_WINDOW = 8  # pipelined BODY requests per connection
_NAME_MAX = 255 - len(SIDECAR_SUFFIX)  # bytes: NAME.part.json must still fit NAME_MAX
_TICK_S = 0.1
_PROBE_BATCH = 64  # files probed per round (each waiting probe holds one decoded article) ...
_PROBE_BYTES = 48 << 20  # ... and their first articles' bounds add up to at most this (two rounds are held)
_FADV_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", None)


def segment_limit(nzb_bytes: int) -> int:
    """The byte bound of one segment's BODY reply: the NZB's ``bytes`` plus headroom.

    ``bytes`` is the article's size by convention (headers included), but some
    tools write the decoded size (~3 % less) or round; a quarter more plus
    64 KiB covers them. An NZB without sizes gets the client's default bound.
    """
    if nzb_bytes <= 0:
        return BODY_MAX_BYTES
    return nzb_bytes + nzb_bytes // 4 + 64 * 1024


# --- public results -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartFailure:
    """Why one segment of one file could not be used."""

    file: str
    number: int
    reason: str


@dataclass
class NzbSummary:
    """What a ``download_nzb`` run did. ``files_damaged``: (name, missing segment numbers)."""

    files_ok: list[str] = field(default_factory=list)
    files_damaged: list[tuple[str, list[int]]] = field(default_factory=list)
    bytes: int = 0  # payload bytes written this run
    articles: int = 0  # articles fetched and decoded this run
    elapsed_s: float = 0.0
    mb_per_s: float = 0.0
    files_present: list[str] = field(default_factory=list)  # subset of files_ok already in dest
    parts_resumed: int = 0  # parts skipped because a sidecar proved them written
    failures: list[PartFailure] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.files_damaged

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files_damaged"] = [{"name": n, "missing": m} for n, m in self.files_damaged]
        d["complete"] = self.complete
        d["elapsed_s"] = round(self.elapsed_s, 3)
        d["mb_per_s"] = round(self.mb_per_s, 2)
        return d


@dataclass(frozen=True, slots=True)
class NzbProgress:
    """A snapshot for progress bars; sent from the calling thread at most every 0.1 s."""

    phase: str  # "names" | "download"
    articles_done: int
    articles_total: int
    bytes_done: int  # NZB ``bytes`` of the segments settled so far this run
    bytes_total: int  # NZB ``bytes`` of the segments this run fetches (article sizes)
    files_done: int
    files_total: int
    failed_parts: int
    connections: int
    elapsed_s: float


ProgressFn = Callable[[NzbProgress], None]


# --- names --------------------------------------------------------------------------------------

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def safe_filename(name: str | None) -> str | None:
    """A basename that is safe to create in the destination, or None if nothing usable is left.

    Keeps only the last path component ('/' and '\\' both count), replaces
    NUL and control characters with '_', strips surrounding spaces, refuses
    names made only of dots ('.', '..'), and shortens names longer than the
    filesystem allows (keeping the extension).
    """
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _CONTROL_RE.sub("_", base).strip()
    if not base or not base.strip("."):
        return None
    # Lone surrogates cannot be file names in UTF-8; '?' keeps the rest readable.
    base = base.encode("utf-8", "replace").decode("utf-8")
    if len(base.encode("utf-8")) > _NAME_MAX:
        stem, dot, ext = base.rpartition(".")
        suffix = (dot + ext) if dot and stem and len(ext) <= 16 else ""
        room = _NAME_MAX - len(suffix.encode("utf-8"))
        base = base[: len(base) - len(suffix)].encode("utf-8")[:room].decode("utf-8", "ignore") + suffix
    return base


def _variant(name: str, k: int) -> str:
    if k == 0:
        return name
    stem, dot, ext = name.rpartition(".")
    if dot and stem:
        return safe_filename(f"{stem} ({k}).{ext}") or f"file ({k})"
    return safe_filename(f"{name} ({k})") or f"file ({k})"


def _fingerprint(nzb: NzbFile) -> str:
    h = hashlib.sha256()
    for seg in nzb.segments:
        h.update(f"{seg.number} {seg.message_id}\n".encode())
    return h.hexdigest()


def _os_error(e: OSError, what: str) -> UsenetSyncError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"disk full while writing {what}")
    return InputPathError(f"cannot write {what}: {e.strerror or e}")


# --- one file -----------------------------------------------------------------------------------


class _File:
    """Download state of one NZB file. ``lock`` guards everything but ``pwrite`` itself."""

    def __init__(self, index: int, nzb: NzbFile, dest: Path) -> None:
        self.index = index
        self.nzb = nzb
        self.dest = dest
        self.fingerprint = _fingerprint(nzb)
        self.numbers = frozenset(s.number for s in nzb.segments)
        # yEnc only grows data, so the articles' sizes bound the file's; generous
        # slack covers NZBs that list decoded sizes or round them.
        nzb_bytes = nzb.bytes
        self.max_size = 2 * nzb_bytes + (1 << 20) if nzb_bytes > 0 else None
        self.lock = threading.Lock()
        self.name: str | None = None
        self.fd: int | None = None
        self.size: int | None = None
        self.file_crc32: int | None = None
        self.done: dict[int, tuple[int, int, int]] = {}  # number -> (begin, end, crc32)
        self.failed: dict[int, str] = {}
        self.saved_count = 0  # len(done) at the last sidecar save
        self.resumed = 0  # parts a trusted sidecar proved written by an earlier run
        self.probe: tuple[int, Article] | None = None
        self.probe_tried: set[int] = set()
        self.finished = False  # handed to the main thread for finalisation
        self.outcome: str | None = None  # "ok" | "present" | "damaged"

    @property
    def label(self) -> str:
        return self.name or self.nzb.subject[:80]

    @property
    def part_path(self) -> Path:
        assert self.name is not None
        return self.dest / (self.name + PART_SUFFIX)

    @property
    def sidecar_path(self) -> Path:
        assert self.name is not None
        return self.dest / (self.name + SIDECAR_SUFFIX)

    @property
    def final_path(self) -> Path:
        assert self.name is not None
        return self.dest / self.name

    def settled(self) -> bool:
        return len(self.done) + len(self.failed) >= len(self.numbers)

    # -- resume

    def load_sidecar(self) -> None:
        """Adopt ``NAME.part`` + sidecar when they belong to this file; else discard both."""
        part, side = self.part_path, self.sidecar_path
        data: Any = None
        try:
            data = json.loads(side.read_text("utf-8"))
        except (OSError, ValueError):
            data = None
        try:
            part_size = part.lstat().st_size if part.is_file() and not part.is_symlink() else None
        except OSError:
            part_size = None
        ok = (
            isinstance(data, dict)
            and data.get("format") == _SIDECAR_FORMAT
            and data.get("segments") == self.fingerprint
            and isinstance(data.get("size"), int)
            and part_size == data["size"]
            and isinstance(data.get("done"), list)
        )
        if not ok:
            for p in (side,):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise _os_error(e, str(p)) from None
            return
        size = data["size"]
        crc = data.get("crc32")
        done: dict[int, tuple[int, int, int]] = {}
        for entry in data["done"]:
            if not (isinstance(entry, list) and len(entry) == 4 and all(isinstance(x, int) for x in entry)):
                continue
            number, begin, end, pcrc = entry
            if number in self.numbers and 1 <= begin <= end + 1 and end <= size:
                done[number] = (begin, end, pcrc)
        try:
            self.fd = os.open(part, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise _os_error(e, str(part)) from None
        self.size = size
        self.file_crc32 = crc if isinstance(crc, int) else None
        self.done = done
        self.saved_count = self.resumed = len(done)

    # -- writing (worker threads)

    def write(self, number: int, part: Article) -> str | None:
        """Write one verified part; returns a failure reason instead when it does not fit."""
        with self.lock:
            if number in self.done:
                return None
            if self.fd is None:
                if self.max_size is not None and part.file_size > self.max_size:
                    return f"yEnc size={part.file_size:,} is far more than the NZB's {self.nzb.bytes:,} bytes"
                path = self.part_path
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                except OSError as e:
                    raise _os_error(e, str(path)) from None
                try:
                    os.ftruncate(fd, part.file_size)  # sparse: holes until parts arrive
                except OSError as e:
                    os.close(fd)
                    try:
                        os.unlink(path)  # an empty .part helps no later run
                    except OSError:
                        pass
                    if e.errno in (errno.EFBIG, errno.EINVAL):
                        # A hostile or broken size= must cost one part, not the run.
                        return f"yEnc size={part.file_size:,} cannot be created here: {e.strerror}"
                    raise _os_error(e, str(path)) from None
                self.fd, self.size = fd, part.file_size
            elif part.file_size != self.size:
                return f"yEnc size={part.file_size} disagrees with size={self.size} of the other parts"
            if part.file_crc32 is not None and self.file_crc32 is None:
                self.file_crc32 = part.file_crc32
            fd = self.fd
        # Outside the lock: parts of one file land in disjoint ranges, so
        # connections write in parallel (pwrite releases the GIL).
        view = memoryview(part.payload)
        offset = part.begin - 1
        start, length = offset, len(view)
        try:
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as e:
            raise _os_error(e, str(self.part_path)) from None
        if _FADV_DONTNEED is not None:
            # Start writing the part to disk now (Linux starts writeback of dirty pages on DONTNEED), so
            # the fsync before the file's rename waits for little instead of the whole file.
            try:
                os.posix_fadvise(fd, start, length, _FADV_DONTNEED)
            except OSError:
                pass  # advice only: the fsync in _finalize is what makes the file durable
        with self.lock:
            self.done[number] = (part.begin, part.end, part.crc32)
        return None

    # -- commit (calling thread)

    def save_sidecar(self) -> None:
        """Make the parts written so far durable and list them (the commit point)."""
        with self.lock:
            if self.fd is None or self.size is None or len(self.done) == self.saved_count:
                return
            done = sorted(self.done.items())
            fd, size, crc = self.fd, self.size, self.file_crc32
        try:
            os.fdatasync(fd)  # the data before the record that claims it
            body = json.dumps(
                {
                    "format": _SIDECAR_FORMAT,
                    "segments": self.fingerprint,
                    "size": size,
                    "crc32": crc,
                    "done": [[n, b, e, c] for n, (b, e, c) in done],
                },
                separators=(",", ":"),
            )
            tmp = self.sidecar_path.with_name(self.sidecar_path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.sidecar_path)
        except OSError as e:
            raise _os_error(e, str(self.sidecar_path)) from None
        self.saved_count = len(done)

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = None

    def verify(self) -> str | None:
        """None if the written parts make the whole file, else why not."""
        if self.size is None:
            return "no part of the file could be fetched"
        ranges = sorted(self.done.values())
        expect = 1
        crc = 0
        for begin, end, pcrc in ranges:
            if begin != expect:
                return f"parts leave a gap or overlap at byte {expect - 1:,}"
            crc = sabctools.crc32_combine(crc, pcrc, end - begin + 1)
            expect = end + 1
        if expect - 1 != self.size:
            return f"parts cover {expect - 1:,} bytes of {self.size:,}"
        # Combining the verified part CRCs proves the same as re-reading the
        # file, without a second pass over gigabytes.
        if self.file_crc32 is not None and crc != self.file_crc32:
            return f"whole-file CRC {crc:08x} does not match the poster's crc32={self.file_crc32:08x}"
        return None


def _crc32_of(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _probe_groups(probes: list[_File]) -> Iterator[list[_File]]:
    """Probe rounds: up to ``_PROBE_BATCH`` files whose first articles' bounds add up to ``_PROBE_BYTES``.

    Each waiting probe holds one decoded article until its round is named, so a
    round's memory is bounded by bytes, not only by count; and large rounds
    keep every connection's pipeline full (an NZB of single-article files is
    fetched entirely by its probes).
    """
    group: list[_File] = []
    size = 0
    for f in probes:
        first = f.nzb.segments[0].bytes if f.nzb.segments else 0
        cost = segment_limit(first) if first > 0 else _PROBE_BYTES // 16
        if group and (len(group) >= _PROBE_BATCH or size + cost > _PROBE_BYTES):
            yield group
            group, size = [], 0
        group.append(f)
        size += cost
    if group:
        yield group


# --- fetch jobs ---------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Part:
    """A fetch job's tag: which segment of which file, and whether it only probes the name."""

    file: _File
    seg: NzbSegment
    probe: bool = False


def _job(f: _File, seg: NzbSegment, probe: bool = False) -> FetchJob:
    return FetchJob(seg.message_id, segment_limit(seg.bytes), _Part(f, seg, probe))


# --- the download -------------------------------------------------------------------------------


class _Download:
    def __init__(
        self,
        files: list[NzbFile],
        dest: Path,
        pool: FetchPool,
        progress: ProgressFn | None,
        clock: Callable[[], float],
    ) -> None:
        self.dest = dest
        self.files = [_File(i, f, dest) for i, f in enumerate(files)]
        self.pool = pool
        self.progress = progress
        self.clock = clock
        self.t0 = clock()
        self.summary = NzbSummary()
        self.taken: set[str] = set()
        self.finished: queue.SimpleQueue[_File] = queue.SimpleQueue()
        self.phase = "names"
        self.articles_total = 0
        self.bytes_total = 0
        self.settled_bytes = 0
        self._save_every = _SAVE_EVERY_S
        self._counter_lock = threading.Lock()
        self._last_progress = 0.0
        self._last_save = clock()

    # -- names

    def _free(self, name: str, file: _File) -> bool:
        """``name`` is usable for ``file``: not reserved, no final file, no foreign ``.part``."""
        if name in self.taken or name + PART_SUFFIX in self.taken:
            return False
        if name.endswith(PART_SUFFIX) and name[: -len(PART_SUFFIX)] in self.taken:
            return False
        if os.path.lexists(self.dest / name):
            return False
        part = self.dest / (name + PART_SUFFIX)
        if os.path.lexists(part) and (part.is_symlink() or not part.is_file()):
            return False  # a directory or link where our .part would go: not ours to touch
        side = self.dest / (name + SIDECAR_SUFFIX)
        if os.path.lexists(part) and side.exists():
            try:
                owner = json.loads(side.read_text("utf-8")).get("segments")
            except (OSError, ValueError, AttributeError):
                return True  # an unreadable sidecar proves nothing: the .part is scrap
            # Ours from an earlier run (resume), or another download's: leave that alone.
            return bool(owner == file.fingerprint)
        return True

    def _assign(self, file: _File, candidate: str) -> None:
        k = 0
        while not self._free(_variant(candidate, k), file):
            k += 1
        file.name = _variant(candidate, k)
        self.taken.add(file.name)
        file.load_sidecar()

    def _fallback(self, file: _File) -> str:
        return f"nzb-file-{file.index + 1:04d}"

    def assign_names(self) -> None:
        probes: list[_File] = []
        for f in self.files:
            candidate = safe_filename(f.nzb.filename)
            if candidate is None or os.path.lexists(self.dest / candidate):
                probes.append(f)  # learn the yEnc name, or whether the existing file is this one
            else:
                self._assign(f, candidate)
        if not probes:
            return
        # A round is named (and its probes written) in a thread of its own while the next round is
        # fetched: naming creates, writes and flushes files, which the connections need not wait for.
        # Rounds are named one after another, in NZB order; at most two rounds' probes are held.
        namer: threading.Thread | None = None
        failure: list[BaseException] = []

        def name_round(group: list[_File]) -> None:
            try:
                for f in group:  # NZB order, so collisions resolve the same way every run
                    self._name_probed(f)
            except BaseException as e:  # noqa: BLE001 - DiskFullError, an unwritable destination: re-raised below
                failure.append(e)

        try:
            for group in _probe_groups(probes):
                for _round in range(_PROBE_TRIES):
                    jobs = []
                    for f in group:
                        if f.probe is None:
                            seg = next((s for s in f.nzb.segments if s.number not in f.probe_tried), None)
                            if seg is not None:
                                f.probe_tried.add(seg.number)
                                jobs.append(_job(f, seg, probe=True))
                    if not jobs:
                        break
                    self.pool.run(jobs, self._handle, lambda job, reason: None, self._tick, _TICK_S)
                if namer is not None:
                    namer.join()
                    if failure:
                        raise failure[0]
                namer = threading.Thread(target=name_round, args=(group,), name="nzb-names", daemon=True)
                namer.start()
        finally:
            if namer is not None:
                namer.join()
        if failure:
            raise failure[0]

    def _name_probed(self, f: _File) -> None:
        probe = f.probe
        candidate = (
            safe_filename(f.nzb.filename) or (safe_filename(probe[1].name) if probe else None) or self._fallback(f)
        )
        final = self.dest / candidate
        if probe is not None and candidate not in self.taken and final.is_file() and not final.is_symlink():
            part = probe[1]
            try:
                same = final.stat().st_size == part.file_size and (
                    part.file_crc32 is None or _crc32_of(final) == part.file_crc32
                )
            except OSError:
                same = False
            if same:
                f.name = candidate
                f.outcome = "present"
                self.taken.add(candidate)
                f.probe = None
                if not os.path.lexists(f.part_path):
                    # Left by a crash between the rename and the sidecar's removal.
                    try:
                        f.sidecar_path.unlink()
                    except OSError:
                        pass
                return
        self._assign(f, candidate)
        if probe is not None:
            number, part = probe
            f.probe = None
            if number not in f.done:
                reason = f.write(number, part)
                if reason is None:
                    self._count(part)
                    self._written(f)
                else:
                    self._part_failed(f, number, 0, reason)

    # -- per-article work (worker threads)

    def _handle(self, job: FetchJob, part: Article | None) -> str | None:
        """An answer from the engine (worker thread): write it, or say why it is no use."""
        tag: _Part = job.tag
        if part is None:
            return "article missing on the server (430)"
        if part.expected_crc is not None and not part.crc_ok:
            return f"CRC mismatch: crc32 {part.crc32:08x}, the poster's pcrc32 {part.expected_crc:08x}"
        with self._counter_lock:
            self.summary.articles += 1
            self.settled_bytes += tag.seg.bytes
        if tag.probe:
            with tag.file.lock:
                tag.file.probe = (tag.seg.number, part)
            return None
        reason = tag.file.write(tag.seg.number, part)
        if reason is None:
            self._count(part)
            self._written(tag.file)
        return reason

    def _count(self, part: Article) -> None:
        with self._counter_lock:
            self.summary.bytes += len(part.payload)

    def _fail(self, job: FetchJob, reason: str) -> None:
        """Every try of a segment failed (calling thread)."""
        tag: _Part = job.tag
        self._part_failed(tag.file, tag.seg.number, tag.seg.bytes, reason)

    def _part_failed(self, f: _File, number: int, nbytes: int, reason: str) -> None:
        with self._counter_lock:
            self.settled_bytes += nbytes
        with f.lock:
            f.failed[number] = reason
        self._written(f)

    def _written(self, f: _File) -> None:
        with f.lock:
            if f.finished or not f.settled():
                return
            f.finished = True
        self.finished.put(f)

    # -- calling thread

    def _tick(self) -> None:
        while True:
            try:
                f = self.finished.get_nowait()
            except queue.Empty:
                break
            self._finalize(f)
        now = self.clock()
        if now - self._last_save >= self._save_every:
            for f in self.files:
                if f.outcome is None and f.fd is not None:
                    f.save_sidecar()
            done = self.clock()
            self._last_save = done
            # A sidecar of a million parts takes a while to write; keep its
            # cost under ~5 % of the run by spacing the saves out.
            self._save_every = max(_SAVE_EVERY_S, 20 * (done - now))
        self._report()

    def _report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = self.clock()
        if not force and now - self._last_progress < 0.1:
            return
        self._last_progress = now
        s = self.summary
        self.progress(
            NzbProgress(
                phase=self.phase,
                articles_done=s.articles,
                articles_total=self.articles_total,
                bytes_done=self.settled_bytes,
                bytes_total=self.bytes_total,
                files_done=sum(1 for f in self.files if f.outcome is not None),
                files_total=len(self.files),
                failed_parts=sum(len(f.failed) for f in self.files),
                connections=self.pool.alive,
                elapsed_s=now - self.t0,
            )
        )

    def _finalize(self, f: _File) -> None:
        if f.outcome is not None:
            return
        problem = None if f.failed else f.verify()
        if f.failed or problem is not None:
            if problem is not None:
                # The parts are all there but do not make the file: start over next time.
                f.close()
                try:
                    f.sidecar_path.unlink()
                except FileNotFoundError:
                    pass
                f.failed = {0: problem}
            else:
                f.save_sidecar()
                f.close()
            f.outcome = "damaged"
            return
        try:
            assert f.fd is not None
            os.fsync(f.fd)
            f.close()
            try:
                os.link(f.part_path, f.final_path)  # fails if NAME exists: never replace a file
            except FileExistsError:
                f.failed = {0: f"{f.name} appeared in the destination during the download"}
                f.outcome = "damaged"
                f.save_sidecar()
                return
            except OSError:
                os.rename(f.part_path, f.final_path)  # a filesystem without hard links
            else:
                os.unlink(f.part_path)
            try:
                f.sidecar_path.unlink()
            except FileNotFoundError:
                pass
        except OSError as e:
            raise _os_error(e, str(f.final_path)) from None
        f.outcome = "ok"

    def run(self) -> NzbSummary:
        try:
            self.assign_names()
            self.phase = "download"
            todo = 0
            for f in self.files:
                if f.outcome is not None:
                    continue
                self.summary.parts_resumed += f.resumed  # not the parts this run's probes just wrote
                for seg in f.nzb.segments:
                    if seg.number not in f.done and seg.number not in f.failed:
                        todo += 1
                        self.bytes_total += seg.bytes
                if f.settled():  # everything was on disk already (crash before the rename)
                    self._written(f)
            # Probe articles were fetched already; they count on both sides.
            self.articles_total = todo + self.summary.articles
            self.bytes_total += self.settled_bytes
            self.pool.run(self._jobs(), self._handle, self._fail, self._tick, _TICK_S)
            self._tick()
            for f in self.files:
                if f.outcome is None:
                    if not f.settled():  # pragma: no cover - the pool settles every job
                        for seg in f.nzb.segments:
                            if seg.number not in f.done:
                                f.failed.setdefault(seg.number, "not fetched")
                    self._finalize(f)
        except KeyboardInterrupt:
            self._save_all()
            raise InterruptedByUser(
                "download interrupted; the parts written so far are saved",
                hint="run the same command again to continue where it stopped",
            ) from None
        except BaseException:
            self._save_all()
            raise
        finally:
            for f in self.files:
                f.close()
        return self._summarize()

    def _jobs(self) -> Iterator[FetchJob]:
        """The segments still to fetch, streamed: the engine pulls them as its queue has room."""
        for f in self.files:
            if f.outcome is not None:
                continue
            for seg in f.nzb.segments:
                if seg.number not in f.done and seg.number not in f.failed:
                    yield _job(f, seg)

    def _save_all(self) -> None:
        for f in self.files:
            if f.outcome is None and f.fd is not None:
                try:
                    f.save_sidecar()
                except UsenetSyncError:
                    pass  # already failing; the next run refetches what is not recorded

    def _summarize(self) -> NzbSummary:
        s = self.summary
        for f in self.files:
            if f.outcome in ("ok", "present"):
                s.files_ok.append(f.label)
                if f.outcome == "present":
                    s.files_present.append(f.label)
            else:
                missing = sorted(n for n in f.failed if n > 0)
                s.files_damaged.append((f.label, missing))
                for n, reason in sorted(f.failed.items()):
                    s.failures.append(PartFailure(f.label, n, reason))
        s.elapsed_s = self.clock() - self.t0
        s.mb_per_s = s.bytes / 1e6 / s.elapsed_s if s.elapsed_s > 0 else 0.0
        self._report(force=True)
        return s


def download_nzb(
    files: list[NzbFile],
    dest: Path,
    specs: list[ServerSpec],
    *,
    connections: int | None = None,
    progress: ProgressFn | None = None,
    clock: Callable[[], float] = time.monotonic,
    fill: list[ServerSpec] | None = None,
) -> NzbSummary:
    """Download every file of a parsed NZB into ``dest`` (created if missing).

    ``specs``: servers to read from; a failed article is retried on another
    server when there is one. ``connections``: total connections, spread
    over ``specs`` round-robin (default: each spec's own ``connections``).
    ``fill``: servers asked only for the articles ``specs`` lack (role fill).
    ``progress`` is called from this thread. Damaged files are reported in
    the summary, not raised; see the module docstring for what raises.
    """
    if not specs:
        raise ConfigError("no server is configured to download from", hint="add one with `usenetsync server add`")
    if connections is not None and connections < 1:
        raise ConfigError("connections must be at least 1")
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputPathError(f"cannot create the destination {dest}: {e.strerror or e}") from None
    if not dest.is_dir():
        raise InputPathError(f"the destination {dest} is not a folder")
    pool = FetchPool(specs, connections, window=_WINDOW, file_crc=True, fill=fill or ())
    try:
        return _Download(files, dest, pool, progress, clock).run()
    finally:
        pool.close()
