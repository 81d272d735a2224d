"""Reader-side availability check (``download --check``): STAT every article of a share version or an NZB.

Owns: asking the servers whether every article a download would fetch is
there, and judging whether PAR2 can cover what is not, without writing
anything the download would (no DEST, no reader state in the home).

What is checked:
- a share: every data article the newest version's index names (file
  segments and packs) and every PAR2 recovery article of its recovery groups
  (R records). A group can rebuild what it lacks by the rule the download's
  repair uses (``recovery.can_rebuild``: one lost member costs one recovery
  block); a file is *repairable* when each of its missing articles lies in a
  group that can, else *lost*.
- an NZB: every segment of every file. usenetsync does not read an NZB's own
  PAR2 files, so a missing article of an NZB is reported as not repairable.

STAT proves presence, not content (a corrupted body passes, as with
``verify`` without ``--read-data``).

How: the records stream from the verified index (spooled into a private
temporary directory, mode 0700, removed whatever happens) into
``stat_all``: N threads, each with its own connection of the primary server
(``Connection.stat_many``: pipelined, up to ``window`` STATs in flight),
asking the fill servers only for what the primary lacks, as the fetch engine
does.

Memory: bounded, whatever the share's size. At most ``2 * connections``
batches of ``BATCH`` Message-IDs are in flight; answers are folded into
counters as they arrive; what must be kept until the end (group membership,
missing articles with their files) goes into a SQLite database in the same
temporary directory, never into a list. An NZB is parsed whole, as ``download
--nzb`` does, so its per-file counters are in memory.

Commit point: none; nothing outlives the run.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Self

import apsw

from usenetsync_cli.core.manifest import path_bytes
from usenetsync_cli.errors import TamperedError, UsenetSyncError
from usenetsync_cli.nntp import Connection, NNTPError, ServerSpec
from usenetsync_cli.pipeline.poster import open_connection

BATCH = 256
_DB_ROWS = 2000  # rows per transaction of the scratch database


# ---------------------------------------------------------------- STAT over many connections


def stat_all(
    spec: ServerSpec, jobs: Iterable[tuple[str, Any]], *, connections: int | None = None,
    fill: Iterable[ServerSpec] = (), window: int = 256,
    connect: Callable[[ServerSpec], Connection] = open_connection,
) -> Iterator[tuple[Any, bool]]:
    """``(tag, present)`` for every ``(message_id, tag)`` of ``jobs``, in batch order, not job order.

    ``jobs`` is pulled lazily in the calling thread; at most ``2 * N``
    batches are out at once. Present means: on ``spec``, or else on one of
    the ``fill`` servers (a fill server that cannot be reached counts as not
    having it). The first error of the primary server ends the run.
    """
    n = max(1, connections or spec.connections)
    fills = tuple(fill)
    todo: queue.Queue[list[tuple[str, Any]] | None] = queue.Queue()
    done: queue.Queue[list[tuple[Any, bool]] | BaseException] = queue.Queue()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_worker, name=f"stat-{i}", args=(spec, fills, todo, done, stop, window, connect),
                         daemon=True)
        for i in range(n)
    ]
    for t in threads:
        t.start()
    it = iter(jobs)
    outstanding, exhausted = 0, False
    try:
        while True:
            while not exhausted and outstanding < 2 * n:
                batch = list(islice(it, BATCH))
                if not batch:
                    exhausted = True
                    break
                todo.put(batch)
                outstanding += 1
            if outstanding == 0:
                return
            got = done.get()
            outstanding -= 1
            if isinstance(got, BaseException):
                raise got
            yield from got
    finally:
        stop.set()
        for _ in threads:
            todo.put(None)
        for t in threads:
            t.join(timeout=spec.timeout + 5)


def _worker(
    spec: ServerSpec, fills: tuple[ServerSpec, ...], todo: queue.Queue[list[tuple[str, Any]] | None],
    done: queue.Queue[list[tuple[Any, bool]] | BaseException], stop: threading.Event, window: int,
    connect: Callable[[ServerSpec], Connection],
) -> None:
    conns: dict[str, Connection] = {}
    try:
        while True:
            batch = todo.get()
            if batch is None or stop.is_set():
                return
            try:
                ids = list(dict.fromkeys(m for m, _t in batch))
                present = dict(_stat(conns, spec, ids, window, connect))
                for f in fills:
                    lacking = [m for m in ids if not present[m]]
                    if not lacking:
                        break
                    try:
                        present.update((m, True) for m, ok in _stat(conns, f, lacking, window, connect) if ok)
                    except UsenetSyncError:
                        continue  # a fill server is a bonus: one that fails has nothing to give
                done.put([(tag, present[m]) for m, tag in batch])
            except UsenetSyncError as e:
                done.put(e)
                return
    finally:
        for c in conns.values():
            c.close()


def _stat(
    conns: dict[str, Connection], spec: ServerSpec, ids: list[str], window: int,
    connect: Callable[[ServerSpec], Connection],
) -> list[tuple[str, bool]]:
    """One batch on one server; a dropped connection is reopened and the batch asked again (STAT is idempotent)."""
    for attempt in range(3):
        conn = conns.get(spec.name)
        try:
            if conn is None:
                conn = conns[spec.name] = connect(spec)
            return list(conn.stat_many(ids, window=window))
        except NNTPError as e:
            dropped = conns.pop(spec.name, None)
            if dropped is not None:
                dropped.close()
            if e.response is not None and e.response.code == 412 and spec.groups:
                conn = conns[spec.name] = connect(spec)  # this server wants a group first
                conn.group(spec.groups[0])
                continue
            if not e.retryable or attempt == 2:
                raise
            time.sleep(0.5 * (attempt + 1))  # the same backoff as verify's sweep
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- reports


@dataclass
class FileAvailability:
    path: str
    articles: int
    missing: int
    repairable: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class GroupAvailability:
    shard: int
    group_id: int
    members: int
    missing: int  # data blocks (member articles) missing
    recovery: int  # recovery articles the group has
    recovery_present: int  # ...of which the server has
    can_rebuild: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Availability:
    """The summary; ``files``/``groups``: only the ones missing something (streamed, see ``iter_*``)."""

    kind: str  # "share" or "nzb"
    version: int | None = None
    articles: int = 0
    present: int = 0
    bytes: int = 0
    bytes_present: int = 0
    recovery_articles: int = 0
    recovery_present: int = 0
    groups: int = 0
    groups_missing: int = 0  # groups with a data article missing
    groups_short: int = 0  # ...that cannot rebuild it
    files: int = 0
    files_missing: int = 0
    files_lost: int = 0
    elapsed_s: float = 0.0
    lost_sample: list[str] = field(default_factory=list)  # up to 10 paths of lost files

    @property
    def missing(self) -> int:
        return self.articles - self.present

    @property
    def complete(self) -> bool:
        return self.missing == 0

    @property
    def repairable(self) -> bool:
        return self.files_lost == 0

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "lost_sample"}
        d.update(missing=self.missing, complete=self.complete, repairable=self.repairable,
                 elapsed_s=round(self.elapsed_s, 3))
        return d


# ---------------------------------------------------------------- a share


_SCHEMA = """
CREATE TABLE missing(shard INTEGER, seg_id INTEGER, path BLOB, articles INTEGER);
CREATE TABLE rmember(shard INTEGER, seg_id INTEGER, group_id INTEGER, PRIMARY KEY(shard, seg_id));
CREATE TABLE rgroup(shard INTEGER, group_id INTEGER, members INTEGER, recovery INTEGER, present INTEGER DEFAULT 0,
                    PRIMARY KEY(shard, group_id));
CREATE TABLE short(shard INTEGER, group_id INTEGER, PRIMARY KEY(shard, group_id));
"""


class ShareCheck:
    """One check of an opened share version; ``run`` STATs, then ``files()``/``groups()`` stream the details.

    Use as a context manager: the scratch database lives in ``workdir`` (the
    caller's temporary directory) and is closed on exit.
    """

    def __init__(self, workdir: Path, version: int) -> None:
        self.db = apsw.Connection(str(workdir / "check.db"))
        self.db.execute("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF")
        self.db.execute(_SCHEMA)
        self.report = Availability(kind="share", version=version)
        self._rows: dict[str, list[tuple[Any, ...]]] = {"missing": [], "rmember": [], "rgroup": [], "present": []}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()

    def run(
        self, records: Iterator[list[Any]], spec: ServerSpec, *, connections: int | None = None,
        fill: Iterable[ServerSpec] = (), progress: Callable[[Availability], None] | None = None,
    ) -> Availability:
        from usenetsync_cli.pipeline.recovery import can_rebuild

        t0 = time.monotonic()
        s = self.report
        last = t0
        for tag, ok in stat_all(spec, self._jobs(records), connections=connections, fill=fill):
            if tag[0] == "r":
                s.recovery_present += ok
                if ok:
                    self._add("present", (tag[1], tag[2]))
                continue
            _d, shard, seg_id, nbytes, files = tag
            s.present += ok
            s.bytes_present += nbytes if ok else 0
            if not ok:
                for path, articles in files:
                    self._add("missing", (shard, seg_id, path, articles))
            if progress and time.monotonic() - last > 0.2:
                last = time.monotonic()
                progress(s)
        self._flush()
        groups = self.db.execute(
            "SELECT g.shard, g.group_id, g.recovery, g.present, (SELECT count(DISTINCT m.seg_id) FROM missing m"
            " JOIN rmember r ON r.shard=m.shard AND r.seg_id=m.seg_id WHERE r.shard=g.shard AND r.group_id=g.group_id)"
            " FROM rgroup g"
        ).fetchall()
        short = [(shard, gid) for shard, gid, _rec, present, lacking in groups if not can_rebuild(lacking, present)]
        s.groups = len(groups)
        s.groups_missing = sum(1 for g in groups if g[4])
        s.groups_short = len(short)
        with self.db:
            self.db.executemany("INSERT INTO short VALUES(?,?)", short)
        for f in self.files():
            s.files_missing += 1
            if not f.repairable:
                s.files_lost += 1
                if len(s.lost_sample) < 10:
                    s.lost_sample.append(f.path)
        s.elapsed_s = time.monotonic() - t0
        return s

    def files(self) -> Iterator[FileAvailability]:
        """Files with a missing article, by path; repairable when every such article's group can rebuild it."""
        cur = self.db.execute(
            "SELECT m.path, max(m.articles), count(DISTINCT m.shard || ':' || m.seg_id),"
            " sum(r.group_id IS NULL OR s.group_id IS NOT NULL)"
            " FROM missing m LEFT JOIN rmember r ON r.shard=m.shard AND r.seg_id=m.seg_id"
            " LEFT JOIN short s ON s.shard=r.shard AND s.group_id=r.group_id GROUP BY m.path ORDER BY m.path"
        )
        for path, articles, missing, uncovered in cur:
            yield FileAvailability(os.fsdecode(path), articles, missing, not uncovered)

    def groups(self) -> Iterator[GroupAvailability]:
        """Groups with a data article missing: what they lack against what recovery they still have."""
        from usenetsync_cli.pipeline.recovery import can_rebuild

        cur = self.db.execute(
            "SELECT g.shard, g.group_id, g.members, g.recovery, g.present, count(DISTINCT m.seg_id) FROM rgroup g"
            " JOIN rmember r ON r.shard=g.shard AND r.group_id=g.group_id"
            " JOIN missing m ON m.shard=r.shard AND m.seg_id=r.seg_id GROUP BY g.shard, g.group_id"
            " ORDER BY g.shard, g.group_id"
        )
        for shard, gid, members, recovery, present, lacking in cur:
            yield GroupAvailability(shard, gid, members, lacking, recovery, present, can_rebuild(lacking, present))

    # -------------------------------------------------------------- the index, as STAT jobs

    def _jobs(self, records: Iterator[list[Any]]) -> Iterator[tuple[str, Any]]:
        """(Message-ID, tag) of every article of the version, checked as the download checks the index."""
        from usenetsync_cli.pipeline.download import _header, _int, _layout_of, _msgid
        from usenetsync_cli.pipeline.download_repair import layout_from_record

        fs = _header(records)
        s = self.report
        count = 1
        pack: list[Any] | None = None
        members: list[tuple[bytes, int]] = []

        def flush_pack() -> Iterator[tuple[str, Any]]:
            assert pack is not None
            if not members:
                return  # a pack none of whose members this version holds: the download does not fetch it
            _k, shard, seg_id, attempt, length, _h, server_id, epoch = pack
            shard, seg_id, epoch = _int(shard), _int(seg_id), _int(epoch)
            s.articles += 1
            s.bytes += _int(length)
            mid = _msgid(server_id) or fs.ctx.message_id(shard, seg_id, _int(attempt), epoch)
            yield mid, ("d", shard, seg_id, _int(length), [(rel, 1) for rel, _n in members])

        for rec in records:
            count += 1
            kind = rec[0]
            if pack is not None and kind != "P":
                yield from flush_pack()
                pack, members = None, []
            if kind == "F":
                rel, size, segs = path_bytes(rec[1]), _int(rec[2]), rec[6]
                if not isinstance(segs, list) or not segs:
                    raise TamperedError(f"the share index lists no segments for {os.fsdecode(rel)!r}")
                _layout_of(size, segs)
                s.files += 1
                for shard, seg_id, attempt, length, _h, server_id, epoch in segs:
                    shard, seg_id, epoch = _int(shard), _int(seg_id), _int(epoch)
                    s.articles += 1
                    s.bytes += length
                    mid = _msgid(server_id) or fs.ctx.message_id(shard, seg_id, _int(attempt), epoch)
                    yield mid, ("d", shard, seg_id, length, [(rel, len(segs))])
            elif kind == "K":
                pack = rec
            elif kind == "P":
                if pack is None:
                    raise TamperedError("the share index has a pack member without its pack")
                s.files += 1
                members.append((path_bytes(rec[1]), _int(rec[2])))
            elif kind in ("E", "H"):
                s.files += 1
            elif kind == "R":
                layout = layout_from_record(rec)  # well formed, or TamperedError
                self._add("rgroup", (layout.shard, layout.group_id, len(layout.members), len(layout.recovery)))
                for m in layout.members:
                    self._add("rmember", (layout.shard, m.seg_id, layout.group_id))
                for _idx, mid in layout.recovery_ids(fs.ctx):
                    s.recovery_articles += 1
                    yield mid, ("r", layout.shard, layout.group_id)
            elif kind == "T":
                if rec[1] != count:
                    raise TamperedError("the share index is truncated (record count mismatch)")
                break
            elif kind not in ("D", "L", "X"):
                raise TamperedError(f"the share index has an unknown record type {str(kind)[:20]!r}")
        else:
            raise TamperedError("the share index is truncated (no trailer)")
        if pack is not None:
            yield from flush_pack()

    def _add(self, table: str, row: tuple[Any, ...]) -> None:
        rows = self._rows[table]
        rows.append(row)
        if len(rows) >= _DB_ROWS:
            self._flush()

    def _flush(self) -> None:
        r = self._rows
        with self.db:
            self.db.executemany("INSERT INTO missing VALUES(?,?,?,?)", r["missing"])
            self.db.executemany("INSERT OR REPLACE INTO rmember VALUES(?,?,?)", r["rmember"])
            self.db.executemany("INSERT OR IGNORE INTO rgroup(shard, group_id, members, recovery) VALUES(?,?,?,?)",
                                r["rgroup"])
            # Recovery answers can arrive before their group's row is flushed: the group rows go first.
            self.db.executemany("UPDATE rgroup SET present=present+1 WHERE shard=? AND group_id=?", r["present"])
        for rows in r.values():
            rows.clear()


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A private (0700) temporary directory for the spooled index and the scratch database, removed on exit."""
    return tempfile.TemporaryDirectory(prefix="usenetsync-check-")


# ---------------------------------------------------------------- an NZB


def check_nzb(
    files: list[Any], spec: ServerSpec, *, connections: int | None = None, fill: Iterable[ServerSpec] = (),
) -> tuple[Availability, list[FileAvailability]]:
    """STAT every segment of an NZB's files; the files missing something (none is judged repairable)."""
    t0 = time.monotonic()
    s = Availability(kind="nzb", files=len(files))
    missing = [0] * len(files)

    def jobs() -> Iterator[tuple[str, Any]]:
        for i, f in enumerate(files):
            for seg in f.segments:
                s.articles += 1
                s.bytes += seg.bytes
                yield seg.message_id, (i, seg.bytes)

    for (i, nbytes), ok in stat_all(spec, jobs(), connections=connections, fill=fill):
        if ok:
            s.present += 1
            s.bytes_present += nbytes
        else:
            missing[i] += 1
    out = [
        FileAvailability(f.filename or f.subject, len(f.segments), missing[i], False)
        for i, f in enumerate(files) if missing[i]
    ]
    s.files_missing = s.files_lost = len(out)
    s.lost_sample = [f.path for f in out[:10]]
    s.elapsed_s = time.monotonic() - t0
    return s, out


__all__ = ["Availability", "FileAvailability", "GroupAvailability", "ShareCheck", "check_nzb", "scratch_dir",
           "stat_all"]
