"""The upload pipeline: plan -> read/seal/frame -> N connections -> commit -> STAT.

Owns: running an upload of one indexed folder to completion (or to a clean,
resumable stop), in rounds. A round plans what is new or changed while it
posts every planned segment (the feeder follows the planner shard by shard:
pipeline/plan_ahead.py), then STATs what was posted; articles found missing
are re-planned under attempt+1 and the next round posts them again.

Threads and queues (all bounded, so memory does not grow with the job):
  planner (1, own connections) ... commits segment rows the feeder then reads
  feeder (1) --work--> encoder (1: read, hash, seal, yEnc; encoders=0: the posters) --ready-->
      posters (N) --results--> collector (main)
The collector is the only writer of posting results; the planner writes new
layouts; both write in bounded transactions, and results guard on state=0.

Commit point: the collector's ``BatchWriter.flush()`` (every ``batch_rows``
results or ``batch_seconds``), one transaction per shard. A segment row
says ``posted`` only after its article was answered 240 (or 441 435 and then
STAT 223). A crash loses at most the results of the open batch; those
segments are still ``planned`` and are posted again under the same
Message-ID, which the server answers with 441 435 and STAT confirms: every
segment stays on the server exactly once.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from usenetsync_cli.core.names import WireNames
from usenetsync_cli.core.packing import DEFAULT_SEGMENT_SIZE
from usenetsync_cli.errors import ConfigError, InterruptedByUser, NetworkError
from usenetsync_cli.nntp import Connection, NNTPError, PostingNotAllowed, ServerSpec, TransientError
from usenetsync_cli.pipeline.check import check_posted
from usenetsync_cli.pipeline.encode import FolderContext, Scratch, Source, Work, encode
from usenetsync_cli.pipeline.feed import DirPaths, iter_work
from usenetsync_cli.pipeline.plan_ahead import PlanAhead, PlanFollow
from usenetsync_cli.pipeline.poster import PosterOptions, PosterPool, PostResult, open_connection
from usenetsync_cli.pipeline.ratelimit import TokenBucket
from usenetsync_cli.pipeline.settle import settle_folder
from usenetsync_cli.store import catalog, counters, db, jobs
from usenetsync_cli.store.batch import BatchWriter
from usenetsync_cli.store.segments import (
    STATE_FAILED,
    STATE_PLANNED,
    STATE_POSTED,
    STATE_SUPERSEDED,
    STATE_VERIFIED,
)
from usenetsync_cli.store.state import NSHARDS, State, shard_path

_END = object()


# Every result guards on state=0: a segment the planner superseded while its article was in flight
# (its file changed; plan_ahead.py) stays superseded, the article an orphan no layout names.
_POSTED = (
    "UPDATE segments SET state=1, wire_bytes=?, hash=?, nonce=?, posted_ns=?, server_msgid=?, error=NULL"
    " WHERE seg_id=? AND state=0"
)
_MEMBER_HASH = "UPDATE pack_members SET hash=? WHERE seg_id=? AND file_id=?"
_DROP_MEMBER = "DELETE FROM pack_members WHERE seg_id=? AND file_id=?"
_BURNT = (
    "UPDATE segments SET attempt=attempt+1, error='server remembers the Message-ID; re-posting'"
    " WHERE seg_id=? AND state=0"
)
_FAILED = "UPDATE segments SET state=3, error=? WHERE seg_id=? AND state=0"
_SUPERSEDE_SEG = "UPDATE segments SET state=4 WHERE seg_id=?"
_FILE_GONE = "UPDATE files SET present=0 WHERE file_id=?"
_FILE_STAT = "UPDATE files SET size=?, mtime_ns=?, ctime_ns=?, inode=?, mode=? WHERE file_id=?"
# plan_size -1 never equals a size: the planner takes the file up again.
_FORCE_REPLAN = "UPDATE files SET plan_size=-1 WHERE file_id=?"
_REPLAN_MEMBERS = (
    "UPDATE files SET plan_size=-1 WHERE file_id IN (SELECT m.file_id FROM pack_members m"
    " WHERE m.seg_id=? AND m.gen=files.gen)"
)
_UNDONE_MEMBERS = (
    "UPDATE files SET done_gen=NULL, content_hash=NULL WHERE file_id IN (SELECT m.file_id FROM pack_members m"
    " WHERE m.seg_id=? AND m.gen IS files.done_gen)"
)
_RETRY_FAILED = "UPDATE segments SET state=0 WHERE folder_id=? AND state=3"
_SET_MARK = "INSERT OR REPLACE INTO upload_marks(folder_id, shard, seg_id) VALUES(?,?,?)"
MARK_RESERVE = 256  # segments handed out per durable mark write


@dataclass
class UploadOptions:
    servers: list[ServerSpec]
    limit_rate: int | None = None
    segment_size: int | None = None
    # One encoder thread feeds the posting threads. Measured same-run (1 GiB into the discard sink, 5
    # iterations, 2 cores): 2.57 CPU-s/GiB with one, 3.01 with the 4 posting threads encoding their own
    # (0): more threads wanting the GIL at each of its ~15 releases per article cost more switches (32k
    # against 20k per GiB) than the queue hand-off they save.
    encoders: int = 1
    max_attempts: int = 3
    max_rounds: int = 4
    check: bool = True
    # Role ``check`` servers (Nyuu's --check-host): the post-check STATs on the first of them instead of
    # the posting server, so an article is confirmed by another provider than the one that took it.
    # Never posted to.
    check_servers: list[ServerSpec] = field(default_factory=list)
    check_delay: float = 0.0  # before the first STAT look; a miss is looked at again after recheck_delay
    recheck_delay: float = 2.0
    # Repair: post only segments already set back to planned; never re-plan,
    # and a source that changed fails its segment instead of being re-planned.
    repair: bool = False
    batch_rows: int = 500
    batch_seconds: float = 2.0
    poster: PosterOptions = field(default_factory=PosterOptions)


@dataclass
class UploadProgress:
    phase: str  # plan | post | check
    round: int
    segments_total: int
    segments_done: int
    bytes_total: int
    bytes_done: int
    wire_bytes: int
    retries: int
    failed: int
    connections: int
    elapsed_s: float


@dataclass
class UploadSummary:
    folder: str
    segment_size: int
    segments: int = 0
    verified: int = 0
    posted_unverified: int = 0
    pending: int = 0
    failed: int = 0
    posted_now: int = 0
    duplicates_confirmed: int = 0
    reposted: int = 0
    rejected: int = 0
    changed_sources: int = 0
    retries: int = 0
    reconnects: int = 0
    payload_bytes: int = 0
    bytes_posted: int = 0
    wire_bytes_posted: int = 0
    files_planned: int = 0
    files_rehashed_same: int = 0  # ctime-only changes whose content was re-hashed and found unchanged
    hashes_backfilled: int = 0
    # Files that kept changing (or could not be read) through every round: a share keeps their
    # last consistent content. Relative paths, first 100; unstable_count has them all.
    unstable: list[str] = field(default_factory=list)
    unstable_count: int = 0
    rounds: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.segments == self.verified and not self.failed and not self.pending

    @property
    def mb_per_s(self) -> float:
        return self.bytes_posted / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def efficiency(self) -> float:
        return self.bytes_posted / self.wire_bytes_posted if self.wire_bytes_posted else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(complete=self.complete, mb_per_s=round(self.mb_per_s, 2), efficiency=round(self.efficiency, 4))
        d["elapsed_s"] = round(self.elapsed_s, 3)
        return d


ProgressFn = Callable[[UploadProgress], None]


def folder_context(folder: catalog.Folder, groups: tuple[str, ...]) -> FolderContext:
    """The folder's uid and every epoch's keys (the publisher knows them all); new content: its current epoch."""
    return FolderContext.from_keys(folder.uid, folder.keys_by_epoch(), folder.epoch, groups)


def upload_folder(
    state: State,
    folder: catalog.Folder,
    opts: UploadOptions,
    *,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> UploadSummary:
    if not opts.servers:
        raise ConfigError("no posting server is configured", hint="add one with `usenetsync server add`")
    stop = stop or threading.Event()
    seg_size = _segment_size(state, folder, opts.segment_size)
    summary = UploadSummary(folder=folder.display_path, segment_size=seg_size)
    ctx = folder_context(folder, opts.servers[0].groups)
    job_id = jobs.start(state.catalog, folder.folder_id, "upload")
    run_id = catalog.start_run(state.catalog, "upload", folder.folder_id)
    t0 = clock()
    run = _Run(state, folder, ctx, opts, summary, progress, stop, clock, t0)
    try:
        for conn in state.shards:  # a resumed job retries what failed last time
            with conn:
                conn.execute(_RETRY_FAILED, (folder.folder_id,))
        checker = run.preflight()
        try:
            summary.duplicates_confirmed += probe_in_doubt(state, folder.folder_id, ctx, checker)
            for rnd in range(1, opts.max_rounds + 1):
                summary.rounds = rnd
                run.replan_needed = False
                if opts.repair:
                    if _count(state, folder.folder_id, STATE_PLANNED):
                        run.post_round(rnd, PlanFollow.done())
                else:
                    # Posting starts as soon as the planner has committed work (or finds it pending
                    # from an earlier run); an unchanged folder opens no posting connection.
                    ahead = PlanAhead(state, folder, seg_size, stop).start()
                    try:
                        if not _count(state, folder.folder_id, STATE_PLANNED):  # a resume has work at once
                            ahead.wait_for_work()
                        if _count(state, folder.folder_id, STATE_PLANNED):
                            run.post_round(rnd, ahead.follow)
                    except BaseException:
                        ahead.cancel()
                        raise
                    plan = ahead.join()
                    summary.files_planned += plan.files_planned + plan.files_replanned
                    summary.files_rehashed_same += plan.files_rehashed_same
                    summary.errors += plan.unreadable[: max(0, 20 - len(summary.errors))]
                if opts.check and _count(state, folder.folder_id, STATE_POSTED):
                    checker = run.check_round(rnd, checker)
                # A file that changed while it was read is planned anew by the next round.
                if not _count(state, folder.folder_id, STATE_PLANNED) and not run.replan_needed:
                    break
        finally:
            checker.close()
            if run.stat_conn is not None:
                run.stat_conn.close()
        if not opts.repair:
            settled = settle_folder(state, folder, ctx, opts.servers[0], after_upload=True)
            summary.unstable = settled.unstable
            summary.unstable_count = settled.unstable_count
            summary.hashes_backfilled = settled.backfilled
            summary.errors += [f"{u}: hash unknown and its article cannot be read" for u in settled.unavailable[:5]]
    except KeyboardInterrupt:
        stop.set()
        _finish(state, folder, summary, clock() - t0)
        jobs.finish(state.catalog, job_id, "incomplete", summary.to_dict())
        catalog.finish_run(state.catalog, run_id, "interrupted", summary.to_dict())
        raise InterruptedByUser(
            f"upload interrupted: {summary.posted_now:,} articles posted this run, state saved",
            hint=f"run `usenetsync upload {folder.display_path} --resume` to continue",
        ) from None
    except TransientError as e:  # the server went away for good in the check or probe
        _finish(state, folder, summary, clock() - t0)
        jobs.finish(state.catalog, job_id, "incomplete", summary.to_dict())
        catalog.finish_run(state.catalog, run_id, "failed", summary.to_dict())
        resume = f"run `usenetsync upload {folder.display_path} --resume`"
        own = vars(e).get("hint")  # set where the cause is known (e.g. a plain connection to a TLS port)
        raise NetworkError(
            f"{e}; progress is saved", hint=f"{own}, then {resume}" if own else f"check the server, then {resume}"
        ) from None
    except BaseException:
        _finish(state, folder, summary, clock() - t0)
        jobs.finish(state.catalog, job_id, "incomplete", summary.to_dict())
        catalog.finish_run(state.catalog, run_id, "failed", summary.to_dict())
        raise
    _finish(state, folder, summary, clock() - t0)
    jobs.finish(state.catalog, job_id, "done" if summary.complete else "incomplete", summary.to_dict())
    catalog.finish_run(state.catalog, run_id, "ok" if summary.complete else "incomplete", summary.to_dict())
    return summary


def probe_in_doubt(state: State, folder_id: int, ctx: FolderContext, conn: Connection) -> int:
    """After a crash: STAT the planned segments a dead run may have posted; present ones are verified.

    Only segments at or below the run's durable marks can be in doubt, so
    this costs at most ``MARK_RESERVE`` STATs per shard, not a sweep of the
    job. Returns how many were found already on the server (not re-posted).
    """
    marks = state.catalog.execute("SELECT shard, seg_id FROM upload_marks WHERE folder_id=?", (folder_id,)).fetchall()
    found = 0
    for shard, mark in marks:
        sconn = state.shards[shard]
        rows = sconn.execute(
            "SELECT seg_id, attempt, epoch FROM segments WHERE folder_id=? AND state=0 AND seg_id<=?", (folder_id, mark)
        ).fetchall()
        ids = {ctx.message_id(shard, seg_id, att, epoch): seg_id for seg_id, att, epoch in rows}
        now = time.time_ns()
        present = [(now, now, ids[mid]) for mid, ok in conn.stat_many(list(ids)) if ok]
        with sconn:
            sconn.executemany("UPDATE segments SET state=2, posted_ns=?, checked_ns=?, check_result=1 WHERE seg_id=?", present)
        found += len(present)
    with state.catalog:
        state.catalog.execute("DELETE FROM upload_marks WHERE folder_id=?", (folder_id,))
    return found


def _segment_size(state: State, folder: catalog.Folder, wanted: int | None) -> int:
    current = catalog.folder_segment_size(state.catalog, folder.folder_id)
    if current:
        if wanted and wanted != current:
            raise ConfigError(
                f"this folder's segments are {current:,} bytes; --segment-size cannot change it",
                hint="drop --segment-size (it applies to a folder's first upload only)",
            )
        return int(current)
    size = wanted or DEFAULT_SEGMENT_SIZE
    with state.catalog:
        state.catalog.execute("UPDATE folders SET segment_size=? WHERE folder_id=?", (size, folder.folder_id))
    return size


def _count(state: State, folder_id: int, st: int) -> int:
    return counters.count(state, folder_id, st)


def _finish(state: State, folder: catalog.Folder, s: UploadSummary, elapsed: float) -> None:
    s.elapsed_s = elapsed
    totals = counters.folder_by_state(state, folder.folder_id)
    live = [st for st in totals if st != STATE_SUPERSEDED]
    s.segments = sum(totals[st][0] for st in live)
    s.payload_bytes = sum(totals[st][1] for st in live)
    s.verified = totals.get(STATE_VERIFIED, (0, 0))[0]
    s.posted_unverified = totals.get(STATE_POSTED, (0, 0))[0]
    s.pending = totals.get(STATE_PLANNED, (0, 0))[0]
    s.failed = totals.get(STATE_FAILED, (0, 0))[0]


class _Run:
    """One upload's rounds; the collector side runs on the caller's thread."""

    def __init__(
        self, state: State, folder: catalog.Folder, ctx: FolderContext, opts: UploadOptions, summary: UploadSummary,
        progress: ProgressFn | None, stop: threading.Event, clock: Callable[[], float], t0: float,
    ) -> None:
        self.state = state
        self.folder = folder
        self.ctx = ctx
        self.opts = opts
        self.s = summary
        self.progress = progress
        self.stop = stop
        self.clock = clock
        self.t0 = t0
        self.bucket = TokenBucket(opts.limit_rate) if opts.limit_rate else None
        self._last_progress = 0.0
        self.stat_conn: Connection | None = None  # to the check server, when there is one
        self.replan_needed = False  # this round saw a source change: plan again before stopping

    # ------------------------------------------------------------ connections

    def preflight(self) -> Connection:
        """Connect once to each server before any work, so a dead server fails fast.

        Returns one open connection for the STAT checks. Servers that refuse
        us fatally are dropped (with a note); if none is left, the first
        server's error is raised as it is (typed, with its exit code).
        """
        first_err: NNTPError | None = None
        keep: list[ServerSpec] = []
        checker: Connection | None = None
        for spec in self.opts.servers:
            try:
                conn = open_connection(spec)
            except NNTPError as e:
                first_err = first_err or e
                self.s.errors.append(f"{spec.name}: {e}")
                continue
            if not conn.posting_allowed:
                conn.close()
                err = PostingNotAllowed(f"server {spec.name} ({spec.address}) does not allow posting (greeting 201)")
                first_err = first_err or err
                self.s.errors.append(str(err))
                continue
            keep.append(spec)
            if checker is None:
                checker = conn
            else:
                conn.close()
        if checker is None:
            assert first_err is not None
            raise first_err
        self.opts.servers = keep
        return checker

    # ------------------------------------------------------------ posting

    def post_round(self, rnd: int, follow: PlanFollow) -> None:
        """Post every planned segment, following the planner until it has planned every shard."""
        state, fid = self.state, self.folder.folder_id
        base = counters.count_bytes(state, fid, STATE_PLANNED)
        planned = follow.summary  # the planner's figures grow as it commits; read without a lock (ints)
        before = (planned.segments, planned.bytes)

        def totals() -> list[int]:
            return [base[0] + planned.segments - before[0], base[1] + planned.bytes - before[1]]
        total_conns = sum(s.connections for s in self.opts.servers)
        encoders = self.opts.encoders
        # Planned segments for the encoder thread(s), or (encoders=0) for the posting threads to encode.
        work_q: queue.Queue[object] = queue.Queue(maxsize=max(16, 4 * total_conns))
        ready_q: queue.Queue[object] = queue.Queue(maxsize=max(4, 2 * total_conns)) if encoders else work_q
        results_q: queue.Queue[PostResult] = queue.Queue()
        round_stop = threading.Event()
        fed = [0]
        feeder_done = threading.Event()
        ctx = self.ctx

        def encoder() -> Callable[[Work], Work]:
            names, scratch = WireNames.fresh(), Scratch()  # one each per thread
            return lambda work: encode(work, ctx, names, scratch)

        pool = PosterPool(
            self.opts.servers, ready_q, results_q, round_stop, bucket=self.bucket, options=self.opts.poster,
            encoder=None if encoders else encoder,
        )

        def halted() -> bool:
            return round_stop.is_set() or self.stop.is_set()

        def put(q: queue.Queue[object], item: object) -> bool:
            while not halted():
                try:
                    q.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def feeder() -> None:
            readers = [db.connect(shard_path(state.home.shards_dir, n)) for n in range(NSHARDS)]
            cat = db.connect(state.home.catalog_path)
            try:
                paths = DirPaths(cat, self.folder.path)
                for shard in range(NSHARDS):
                    reserved = after = 0
                    while not halted():
                        # Read before looking: a shard reported done then has every row committed.
                        shard_done, seen = shard < follow.shards_done, follow.commits
                        for work in iter_work(readers[shard], shard, fid, paths, after):
                            if work.seg_id > reserved:
                                # Durable before any segment below it can reach a server.
                                reserved = work.seg_id + MARK_RESERVE
                                with cat:
                                    cat.execute(_SET_MARK, (fid, shard, reserved))
                            if not put(work_q, work):
                                return
                            fed[0] += 1
                            after = work.seg_id
                        if shard_done:
                            break
                        follow.wait_change(seen, timeout=0.5)
            finally:
                feeder_done.set()
                for _ in range(encoders):
                    put(work_q, _END)
                for c in readers:
                    c.close()
                cat.close()

        def encode_loop() -> None:
            encode_one = encoder()
            while not halted():
                try:
                    item = work_q.get(timeout=0.2)
                except queue.Empty:
                    continue
                if item is _END:
                    return
                assert isinstance(item, Work)
                done = encode_one(item)
                if done.changed:
                    results_q.put(PostResult(done, "changed"))
                elif not put(ready_q, done):
                    return

        threads = [threading.Thread(target=feeder, name="feeder", daemon=True)]
        threads += [threading.Thread(target=encode_loop, name=f"encode-{i}", daemon=True) for i in range(encoders)]
        for t in threads:
            t.start()
        pool.start()
        writer = BatchWriter(state, max_rows=self.opts.batch_rows, max_seconds=self.opts.batch_seconds, clock=self.clock)
        done = 0
        done_bytes = 0
        dead = False
        try:
            while True:
                try:
                    r: PostResult | None = results_q.get(timeout=0.1)
                except queue.Empty:
                    r = None
                if r is not None:
                    self._apply(writer, r)
                    done += 1
                    done_bytes += r.work.length
                writer.maybe_flush()
                self._report("post", rnd, totals(), done, done_bytes, pool)
                if feeder_done.is_set() and done >= fed[0]:
                    break
                if pool.alive_total == 0:
                    dead = True
                    break
        except KeyboardInterrupt:
            round_stop.set()
            self._drain(writer, results_q, pool, threads)
            raise
        finally:
            writer.flush()
        if dead:
            round_stop.set()
            self._drain(writer, results_q, pool, threads)
            writer.flush()
            if pool.group_refused is not None:
                # Retrying (--resume) meets the same 441 forever: the configuration has to change.
                spec, err = pool.group_refused
                raise ConfigError(
                    f"server {spec.name} refuses the newsgroup(s) {', '.join(spec.groups) or '?'}: {err};"
                    " nothing more was posted, progress is saved",
                    hint=f"give a group it carries: `usenetsync server add {spec.name} --host {spec.host} --group GROUP"
                    f" --replace` (`usenetsync server test {spec.name}` checks it), then upload again",
                )
            errs = "; ".join(f"{name}: {e}" for name, e in pool.server_errors.items())
            first = next(iter(pool.server_errors.values()), None)
            if isinstance(first, NNTPError) and not first.retryable:
                raise first
            raise NetworkError(
                f"every connection to the server failed ({errs or 'no connection left'}); progress is saved",
                hint="check the server, then run `usenetsync upload --resume`",
            )
        pool.finish(timeout=30)
        round_stop.set()
        for t in threads:
            t.join(timeout=5)
        # Every result of this round is committed: nothing is in doubt any more.
        with state.catalog:
            state.catalog.execute("DELETE FROM upload_marks WHERE folder_id=?", (fid,))
        self.s.retries += pool.retries
        self.s.reconnects += pool.reconnects
        for name, e in pool.server_errors.items():
            self.s.errors.append(f"{name}: {e}")

    def _drain(
        self, writer: BatchWriter, results_q: queue.Queue[PostResult], pool: PosterPool, threads: list[threading.Thread]
    ) -> None:
        """After a stop: let in-flight POSTs finish (a second or two) and record their results."""
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                self._apply(writer, results_q.get(timeout=0.1))
            except queue.Empty:
                if pool.alive_total == 0:
                    break
        while True:
            try:
                self._apply(writer, results_q.get_nowait())
            except queue.Empty:
                break
        writer.flush()

    def _apply(self, w: BatchWriter, r: PostResult) -> None:
        work, s = r.work, self.s
        sh = work.shard
        if r.outcome in ("posted", "duplicate"):
            # A confirmed duplicate is an earlier post's copy, sealed with a nonce we never
            # recorded: leave it unknown rather than claim this run's.
            nonce = work.nonce if r.outcome == "posted" else None
            # Members first, the posted mark last: the writer may commit a batch between any two rows (a pack
            # has thousands of members), and a crash there must leave the segment planned (re-posted under its
            # Message-ID, or found by the in-doubt probe), never posted with member hashes missing: such a
            # pack's files never settle and are never published.
            for file_id, h in work.member_hashes:
                w.add(sh, _MEMBER_HASH, (h, work.seg_id, file_id))
            w.add(sh, _POSTED, (work.wire_bytes, work.hash, nonce, time.time_ns(), r.server_msgid, work.seg_id))
            s.posted_now += 1
            s.bytes_posted += work.length
            s.wire_bytes_posted += work.wire_bytes
            if r.outcome == "duplicate":
                s.duplicates_confirmed += 1
        elif r.outcome == "burnt":
            w.add(sh, _BURNT, (work.seg_id,))
        elif r.outcome in ("rejected", "failed"):
            w.add(sh, _FAILED, (r.error or r.outcome, work.seg_id))
            s.rejected += r.outcome == "rejected"
            s.errors.append(f"segment {sh}:{work.seg_id}: {r.error}") if len(s.errors) < 20 else None
        elif r.outcome == "changed" and self.opts.repair:
            s.changed_sources += 1
            w.add(sh, _FAILED, ("the source changed since it was posted: cannot repair from it", work.seg_id))
        elif r.outcome == "changed":
            s.changed_sources += 1
            self.replan_needed = True
            for src in work.sources:
                self._refresh_file(w, sh, src)
            if work.is_pack:
                # Nothing of it was posted: files whose current layout it held are planned anew,
                # files whose done layout it was lose that (their next one settles them).
                w.add(sh, _SUPERSEDE_SEG, (work.seg_id,))
                w.add(sh, _REPLAN_MEMBERS, (work.seg_id,))
                w.add(sh, _UNDONE_MEMBERS, (work.seg_id,))
        if work.dropped and r.outcome != "changed" and not self.opts.repair:
            self.replan_needed = True
            for file_id in work.dropped:
                src = next(x for x in work.sources if x.file_id == file_id)
                # Its bytes are not in the posted pack: the row must not claim them.
                w.add(sh, _DROP_MEMBER, (work.seg_id, file_id))
                self._refresh_file(w, sh, src)
                s.changed_sources += 1

    def _refresh_file(self, w: BatchWriter, shard: int, src: Source) -> None:
        """Make the next round plan ``src``'s file anew: record its current stat, or force it.

        A file that vanished is marked deleted. A file whose stat still equals
        the planned one (unreadable, or rewritten within one clock tick) is
        forced to a new plan all the same; one that cannot be read at all ends
        the run unsettled and is reported.
        """
        try:
            st = os.stat(src.path, follow_symlinks=False)
        except FileNotFoundError:
            w.add(shard, _FILE_GONE, (src.file_id,))
            return
        except OSError as e:
            self.s.errors.append(f"cannot read {os.fsdecode(src.path)}: {e.strerror}") if len(self.s.errors) < 20 else None
            w.add(shard, _FORCE_REPLAN, (src.file_id,))
            return
        if (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == src.planned:
            w.add(shard, _FORCE_REPLAN, (src.file_id,))
        else:
            w.add(shard, _FILE_STAT, (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode, src.file_id))

    def _report(
        self, phase: str, rnd: int, totals: list[int], done: int, done_bytes: int, pool: PosterPool | None
    ) -> None:
        if self.progress is None:
            return
        now = self.clock()
        if now - self._last_progress < 0.1 and done < totals[0]:
            return
        self._last_progress = now
        self.progress(
            UploadProgress(
                phase=phase, round=rnd, segments_total=totals[0], segments_done=done, bytes_total=totals[1],
                bytes_done=done_bytes, wire_bytes=self.s.wire_bytes_posted,
                retries=self.s.retries + (pool.retries if pool else 0), failed=self.s.rejected,
                connections=pool.alive_total if pool else 0, elapsed_s=now - self.t0,
            )
        )

    # ------------------------------------------------------------ checking

    def check_round(self, rnd: int, checker: Connection) -> Connection:
        """STAT what this round posted (after ``check_delay``), reconnecting once if needed.

        On the check server when one is configured (``stat_conn``; ``checker`` is then returned as it
        is), else on the posting server's ``checker`` (returned, reconnected if it had to be).
        """
        if self.opts.check_delay > 0:
            self.stop.wait(self.opts.check_delay)
        other = bool(self.opts.check_servers)
        spec = self.opts.check_servers[0] if other else self.opts.servers[0]
        conn = self.stat_conn if other else checker
        for attempt in range(2):
            try:
                if conn is None or conn.closed:
                    conn = open_connection(spec)
                    if other:
                        self.stat_conn = conn
                cs = check_posted(
                    self.state, self.folder.folder_id, self.ctx, conn, max_attempts=self.opts.max_attempts,
                    recheck_delay=self.opts.recheck_delay,
                )
                self.s.reposted += cs.requeued
                break
            except NNTPError as e:
                if conn is not None:
                    conn.close()
                if attempt or not e.retryable:
                    raise
        return checker if other or conn is None else conn
