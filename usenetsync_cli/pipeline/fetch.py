"""The fetch engine: pipelined BODY over a pool of connections, bounded everywhere.

Owns: getting articles by Message-ID for every reader of the product — share
downloads, ``download --nzb`` (pipeline/nzb_download.py), ``verify
--read-data`` and PAR2 rebuilds — so a fix to fetching lands in all of them.

API
---
``FetchJob(message_id, limit, tag=None)``: one article to fetch. ``limit`` is
the byte bound of its whole BODY reply on the wire (status line to
terminator); the caller knows it: ``body_limit(payload_len)`` for a yEnc
article of a known payload, ``OUR_ARTICLE_LIMIT`` for anything usenetsync
posted, the NZB's ``bytes`` plus headroom for others. ``tag`` is the
caller's, untouched. The engine sets ``job.tries`` (failed attempts so far)
and ``job.server`` (name of the server of the current attempt); a handler
may read both.

``FetchPool(specs, connections=None, *, window=8, retries=1, file_crc=False,
connect=open_connection, fill=())``: N connections over one or more servers
(``connections`` total, spread round-robin over ``specs``; None: each spec's
own ``connections``). ``fill``: servers of role ``fill`` (each with its own
``connections``), asked only for an article another server failed to give
(430, a bad CRC, ...), as SABnzbd's and NZBGet's server priorities do: they
take no new job while a server of ``specs`` is alive, and a job that used up
its ``retries`` on ``specs`` still gets one try on a fill server. Connections open lazily, when a worker first has work,
and stay open across runs until ``close()``. ``file_crc``: also read each
``=yend`` line for the whole-file ``crc32=`` of multi-part posts (one more C
scan per receive; the NZB downloader wants it). ``connect`` opens (and logs
in) a connection; tests wrap it.

``pool.run(jobs, handle, fail, tick=None, tick_every=0.1) -> FetchStats``:
fetch every job of the iterable ``jobs`` (pulled lazily, in the calling
thread, into a bounded queue). In a worker thread, ``handle(job, article)``
gets each answer: an ``nntp.Article`` (decoded, headers checked; ``.data``
is sabctools' own buffer, no copy; ``.crc_ok``) or None (430 family: the
server does not have it). It returns None (done) or a one-line reason (that
attempt failed). A failed attempt is retried ``retries`` times on another
connection — another server when one is alive — and then handed to
``fail(job, reason)`` in the calling thread, for the caller to defer (PAR2,
a spill table); the engine keeps no list of failures. ``tick()`` runs in the
calling thread about every ``tick_every`` seconds (progress, commits).
Returns the run's ``FetchStats``; ``pool.stats`` is the live view,
``pool.backlog`` where the unsettled jobs are (queued, retrying, in flight)
and ``pool.alive`` how many connections are not retired.

``pool.results(jobs)``: the same as an iterator of ``(job, outcome)``, outcome
an ``Article``, None (missing) or a failure reason; content is not judged
(a CRC mismatch is the consumer's call), at most a few articles are held.
``fetch_results(server_or_connection, jobs)`` runs it over one connection
(borrowed connections are left open): verify and recovery use that.

Failures the engine finds itself, each one attempt of that job:
- a reply past its ``limit`` (endless line or block, a huge body): while it
  is still arriving, the connection is closed at once (the stream is
  unusable), the job fails with "reply larger than expected", the other
  requests in flight go back to the queue untouched, and the connection
  reconnects; one that ended within the same receive fails the same way but
  leaves the connection in step;
- a 222 that sabctools cannot be trusted with (not yEnc as it reads it, a
  decoded length that is not the part's): fetched again on the same
  connection with plain BODY (under the same bound) and decoded by the exact
  ``core.article.decode_yenc_part``; if that fails too, the reason;
- yEnc claims beyond the bound (a part of 2 GB in a 1 MB article).

Invariants and bounds:
- Memory does not grow with the number of jobs: the queue holds at most
  Q = ``2 * window * connections`` (>= 64) new jobs, refilled only while the
  retry backlog is below Q (so it stays under 2Q plus the windows); final
  failures wait for the calling thread in a short queue (256) that workers
  do not outgrow (they wait for it).
- A connection holds at most ``window`` requests in flight and buffers at
  most the oldest reply's ``limit`` plus 64 KiB (plus sabctools' 2 MiB
  receive buffer); ``results()`` holds at most 4 decoded articles for its
  consumer plus one per connection.
- Dropped or timed-out connections (``TransientError``) reconnect after an
  exponential backoff, never at once; their unanswered requests go back to
  the queue untouched (not counted as attempts). Three failed reconnects in a
  row, or a refusal (auth, 502, TLS; "too many connections" unless it is the
  last connection) retire the connection; the others carry on. When every
  connection is retired the run raises the first retirement's typed error.
- A retry goes to a connection of another server if one is alive, else to
  another connection of the same server, else — only connection left — the
  same one. Every alive connection has a running worker, so a retry never
  waits for a connection that cannot take it (the one-segment NZB hang).
- An exception raised by ``handle``/``fail``/``tick`` or by the ``jobs``
  iterator (disk full, unwritable destination, a bug, Ctrl-C) stops every
  worker — sockets are shut down so none waits for a reply — and is
  re-raised in the calling thread.
- Commit points are the callers': the engine writes nothing.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from itertools import islice
from typing import Any, NamedTuple

from usenetsync_cli.core.article import MAX_ARTICLE_BYTES, decode_yenc_part
from usenetsync_cli.errors import NetworkError, UsenetSyncError
from usenetsync_cli.nntp import (
    Article,
    Backoff,
    Connection,
    NNTPError,
    RawNeeded,
    ReplyTooLarge,
    ServerSpec,
    TooManyConnections,
    valid_message_id,
)
from usenetsync_cli.pipeline.poster import open_connection

__all__ = [
    "Article",
    "Backlog",
    "FetchJob",
    "FetchPool",
    "FetchStats",
    "Failer",
    "Handler",
    "OUR_ARTICLE_LIMIT",
    "body_limit",
    "fetch_results",
]

MAX_RECONNECTS = 3  # consecutive failed reconnects before a connection retires
BACKOFF_BASE, BACKOFF_CAP = 0.5, 10.0  # seconds; never reconnect at once (DESIGN.md §7)
WINDOW = 8  # pipelined BODY requests per connection
_RETRY_SCAN = 64  # retries a worker looks at for one it may take
_FAILED_MAX = 256  # final failures waiting for the calling thread before workers wait
_RESULTS_MAX = 4  # articles results() holds for a slow consumer (plus one per worker)
_JOIN_S = 10.0  # how long a stopping run waits for a worker (stuck in a handler)
# The bound of a BODY reply to any article usenetsync posted: build_article
# refuses articles past MAX_ARTICLE_BYTES; the status line and slack on top.
OUR_ARTICLE_LIMIT = MAX_ARTICLE_BYTES + 64 * 1024


def body_limit(payload_len: int) -> int:
    """A safe bound for the BODY reply of a yEnc article of ``payload_len`` bytes, any poster.

    Every byte escaped (2x), lines as short as 32 columns, dot-stuffing, the
    status line and the yEnc control lines: a genuine article never comes
    near it, and nothing past it is buffered.
    """
    return 2 * payload_len + payload_len // 8 + 8192


@dataclass(eq=False, slots=True)
class FetchJob:
    """One article to fetch; ``tag`` is the caller's. ``tries``/``server`` are set by the engine."""

    message_id: str
    limit: int
    tag: Any = None
    tries: int = 0  # failed attempts so far
    server: str | None = None  # the server of the current (or last) attempt
    failed_slot: int = -1  # connection of the last failed attempt, -1 if none
    failed_server: str | None = None
    fill_only: bool = False  # its retries on the primary servers are used up: a fill server's turn


@dataclass
class FetchStats:
    """What a run did. Summed over connections; live while it runs."""

    articles: int = 0  # 222 replies decoded and handed to the handler
    bytes: int = 0  # decoded payload bytes of those
    missing: int = 0  # 430-family answers handed to the handler
    retries: int = 0  # failed attempts put back for another try
    failed: int = 0  # jobs handed to fail() (every try failed)
    reconnects: int = 0  # connections re-opened after a loss or an abandoned reply
    too_large: int = 0  # replies abandoned past their bound
    fallbacks: int = 0  # 222 replies fetched again for the exact decoder

    def add(self, other: FetchStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class Backlog(NamedTuple):
    """Where a run's unsettled jobs are: queued new, waiting for a retry, taken by a worker (or failing)."""

    queued: int
    retrying: int
    in_flight: int


Handler = Callable[[FetchJob, Article | None], str | None]
Failer = Callable[[FetchJob, str], None]


class _Slot:
    """One connection of the pool; only its worker thread touches ``conn`` (and ``raw``)."""

    def __init__(self, index: int, spec: ServerSpec, fill: bool = False) -> None:
        self.index = index
        self.spec = spec
        self.fill = fill  # a fill server's: only jobs another server failed
        self.conn: Connection | None = None
        self.owned = True  # False: a borrowed connection, left open at close()
        self.opened = False
        self.alive = True  # False once retired: it has no worker and takes no job
        self.error: NNTPError | None = None
        self.raw: deque[FetchJob] = deque()  # replies to fetch again for the exact decoder
        self.stats = FetchStats()


class FetchPool:
    """N connections fetching a stream of jobs; see the module docstring for the contract."""

    def __init__(
        self,
        specs: Sequence[ServerSpec],
        connections: int | None = None,
        *,
        window: int = WINDOW,
        retries: int = 1,
        file_crc: bool = False,
        connect: Callable[[ServerSpec], Connection] = open_connection,
        fill: Sequence[ServerSpec] = (),
    ) -> None:
        if not specs:
            raise ValueError("FetchPool needs at least one server")
        order: list[ServerSpec] = []
        if connections is None:
            for spec in specs:
                order.extend([spec] * spec.connections)
        else:
            order = [specs[i % len(specs)] for i in range(max(1, connections))]
        self.slots = [_Slot(i, s) for i, s in enumerate(order)]
        for spec in fill:
            self.slots.extend(_Slot(len(self.slots), spec, fill=True) for _ in range(spec.connections))
        self.window = max(1, min(window, 64))
        self.retries = max(0, retries)
        self.file_crc = file_crc
        self._connect = connect
        self._lock = threading.Lock()
        self._work_cv = threading.Condition(self._lock)  # workers wait here
        self._main_cv = threading.Condition(self._lock)  # the calling thread waits here
        self._queue: deque[FetchJob] = deque()
        self._retries: deque[FetchJob] = deque()
        self._failed: deque[tuple[FetchJob, str]] = deque()
        self._out: deque[tuple[FetchJob, Article | str | None]] | None = None
        self._qmax = max(64, 2 * self.window * len(self.slots))
        self._pending = 0
        self._finished = False
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._errors: list[NNTPError] = []
        self._handle: Handler = lambda job, art: None
        self._running = False
        self._broken = False
        self._extra = FetchStats()  # counted by the calling thread (failed)

    @classmethod
    def borrowing(cls, conn: Connection, **kw: Any) -> FetchPool:
        """A one-connection pool over ``conn``, which stays the lender's (never closed by ``close()``)."""
        pool = cls([conn.spec], 1, **kw)
        slot = pool.slots[0]
        slot.conn, slot.owned, slot.opened = conn, False, True
        return pool

    # ------------------------------------------------------------------ public

    @property
    def alive(self) -> int:
        """Connections not retired."""
        return sum(1 for s in self.slots if s.alive)

    @property
    def stats(self) -> FetchStats:
        total = FetchStats()
        for s in self.slots:
            total.add(s.stats)
        total.add(self._extra)
        return total

    @property
    def backlog(self) -> Backlog:
        with self._lock:
            queued, retrying = len(self._queue), len(self._retries)
            return Backlog(queued, retrying, self._pending - queued - retrying)

    def close(self) -> None:
        """QUIT every connection the pool opened. Idempotent."""
        for slot in self.slots:
            conn, slot.conn = slot.conn, None
            if conn is not None and slot.owned:
                if self._broken:
                    conn.interrupt()  # a stuck worker may still hold it: no QUIT under its feet
                else:
                    conn.quit()

    def run(
        self,
        jobs: Iterable[FetchJob],
        handle: Handler,
        fail: Failer,
        tick: Callable[[], None] | None = None,
        tick_every: float = 0.1,
    ) -> FetchStats:
        """Fetch every job; ``handle`` in worker threads, ``fail`` and ``tick`` here. See the module docstring."""
        for _ in self._drive(jobs, handle, fail, tick, tick_every):
            pass
        return self.stats

    def results(self, jobs: Iterable[FetchJob]) -> Iterator[tuple[FetchJob, Article | str | None]]:
        """Fetch every job, yielding ``(job, Article | None | reason)`` as answers come in."""
        out: deque[tuple[FetchJob, Article | str | None]] = deque()
        cap = _RESULTS_MAX

        def handle(job: FetchJob, article: Article | None) -> None:
            with self._lock:
                while len(out) >= cap and not self._stop.is_set():
                    self._work_cv.wait(0.5)
                out.append((job, article))
                self._main_cv.notify()

        def fail(job: FetchJob, reason: str) -> None:
            out.append((job, reason))

        self._out = out
        drive = self._drive(jobs, handle, fail, None, 0.1)
        try:
            for _ in drive:
                while out:
                    item = out.popleft()
                    with self._lock:
                        self._work_cv.notify_all()  # room for a waiting handler
                    yield item
            while out:
                yield out.popleft()
        finally:
            drive.close()  # a consumer that stops early stops the workers now
            self._out = None

    # ------------------------------------------------------------------ calling thread

    def _drive(
        self,
        jobs: Iterable[FetchJob],
        handle: Handler,
        fail: Failer,
        tick: Callable[[], None] | None,
        tick_every: float,
    ) -> Iterator[None]:
        if self._running or self._broken:
            raise RuntimeError("a FetchPool runs one job stream at a time")
        live = [s for s in self.slots if s.alive]
        if not live:
            self._raise_dead()
        self._running = True
        self._handle = handle
        self._finished = False
        self._stop.clear()
        self._fatal = None
        self._pending = 0
        self._extra = FetchStats()
        for s in self.slots:
            s.stats = FetchStats()
        threads = [
            threading.Thread(target=self._work, args=(s,), name=f"fetchpool-{s.spec.name}-{s.index}", daemon=True)
            for s in live
        ]
        for t in threads:
            t.start()
        it = iter(jobs)
        exhausted = False
        low = self._qmax // 2
        next_tick = time.monotonic() + tick_every
        clean = False
        try:
            while True:
                with self._lock:
                    room = self._qmax - len(self._queue) if len(self._retries) < self._qmax else 0
                if not exhausted and room >= low:
                    batch = list(islice(it, room))  # the caller's iterator runs in its own thread
                    exhausted = len(batch) < room
                    if batch:
                        with self._lock:
                            self._queue.extend(batch)
                            self._pending += len(batch)
                            self._work_cv.notify_all()
                while True:
                    with self._lock:
                        if not self._failed:
                            break
                        job, reason = self._failed.popleft()
                    try:
                        self._extra.failed += 1
                        fail(job, reason)
                    finally:
                        with self._lock:
                            self._pending -= 1
                            self._work_cv.notify_all()  # a worker may wait for room in _failed
                with self._lock:
                    if self._fatal is not None or (exhausted and self._pending == 0) or not any(
                        s.alive for s in self.slots
                    ):
                        break
                    if not self._main_due(exhausted, low):
                        self._main_cv.wait(max(0.0, next_tick - time.monotonic()) if tick else 0.5)
                if tick is not None and time.monotonic() >= next_tick:
                    tick()
                    next_tick = time.monotonic() + tick_every
                yield
            clean = self._fatal is None and exhausted and self._pending == 0
        finally:
            self._shutdown(threads, clean)
        if self._fatal is not None:
            raise self._fatal
        if not clean:
            self._raise_dead()

    def _main_due(self, exhausted: bool, low: int) -> bool:
        """Something for the calling thread to do (caller holds the lock)."""
        if self._failed or (self._out is not None and self._out):
            return True
        if self._pending == 0 and exhausted:
            return True
        return not exhausted and len(self._queue) <= low and len(self._retries) < self._qmax

    def _shutdown(self, threads: list[threading.Thread], clean: bool) -> None:
        with self._lock:
            if clean:
                self._finished = True
            else:
                self._stop.set()  # no worker takes another job
            self._work_cv.notify_all()
        if not clean:
            for s in self.slots:
                conn = s.conn
                if conn is not None:
                    conn.interrupt()  # a worker waiting for a reply gets ConnectionLost now
        deadline = time.monotonic() + _JOIN_S
        for t in threads:
            t.join(None if clean else max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            self._broken = True  # a worker is stuck (in a handler): this pool is done
        with self._lock:
            self._queue.clear()
            self._retries.clear()
            self._failed.clear()
            for s in self.slots:
                s.raw.clear()
            self._running = False

    def _raise_dead(self) -> None:
        if self._errors:
            raise self._errors[0]
        errors = [s.error for s in self.slots if s.error is not None]
        if errors:
            raise errors[0]
        raise NetworkError("every connection stopped before the articles were fetched")  # pragma: no cover

    # ------------------------------------------------------------------ worker threads

    def _primary_alive(self) -> bool:
        return any(s.alive and not s.fill for s in self.slots)

    def _fill_alive(self) -> bool:
        return any(s.alive and s.fill for s in self.slots)

    def _can_take(self, slot: _Slot, job: FetchJob) -> bool:
        """A retry goes to another server if one is alive, else another connection, else this one.

        A job whose tries on the other servers are used up waits for a fill server. (A fill server
        takes no new job while another server is alive: ``_has_work``/``_take``.)
        """
        if job.fill_only and not slot.fill and self._fill_alive():
            return False
        if job.failed_slot < 0:
            return True
        others = [s for s in self.slots if s.alive and s is not slot]
        if not others:
            return True
        if job.failed_server != slot.spec.name:
            return True
        if any(s.spec.name != job.failed_server for s in others):
            return False  # leave it for a connection to another server
        return slot.index != job.failed_slot

    def _has_work(self, slot: _Slot) -> bool:
        new = bool(self._queue) and (not slot.fill or not self._primary_alive())
        return new or any(self._can_take(slot, j) for j in islice(self._retries, _RETRY_SCAN))

    def _take(self, slot: _Slot, n: int, sent: deque[FetchJob]) -> list[FetchJob]:
        """Up to ``n`` jobs for ``slot``: retries it may take first, then new ones."""
        out: list[FetchJob] = []
        with self._lock:
            if self._stop.is_set() or slot.raw:
                return out  # a reply to refetch raw first: let the pipeline drain
            if self._retries:
                picked = [i for i, j in enumerate(islice(self._retries, _RETRY_SCAN)) if self._can_take(slot, j)][:n]
                for i in reversed(picked):
                    out.append(self._retries[i])
                    del self._retries[i]
                out.reverse()
            while len(out) < n and self._queue and (not slot.fill or not self._primary_alive()):
                out.append(self._queue.popleft())
            if len(self._queue) <= self._qmax // 2:
                self._main_cv.notify()
        good = []
        for job in out:
            job.server = slot.spec.name
            if valid_message_id(job.message_id):
                good.append(job)
            else:
                # Not something to put on the wire; no server can ever answer it.
                job.tries = self.retries
                self._settle(slot, job, f"not a valid Message-ID: {job.message_id[:80]!r}")
        sent.extend(good)
        return good

    def _work(self, slot: _Slot) -> None:
        backoff = Backoff(base=BACKOFF_BASE, cap=BACKOFF_CAP, rand=random.Random().random)
        sent: deque[FetchJob] = deque()
        try:
            while True:
                with self._lock:
                    while not (self._finished or self._stop.is_set() or self._has_work(slot) or slot.raw):
                        self._work_cv.wait(1.0)
                    if self._finished or self._stop.is_set():
                        return
                try:
                    conn = slot.conn
                    if conn is None or conn.closed:
                        if slot.opened:
                            slot.stats.reconnects += 1
                        conn = slot.conn = self._connect(slot.spec)
                        slot.owned = slot.opened = True
                    for job, result in conn.fetch_articles(
                        lambda n: self._take(slot, n, sent), self.window, file_crc=self.file_crc
                    ):
                        sent.popleft()
                        backoff.reset()
                        if isinstance(result, RawNeeded):
                            slot.raw.append(job)
                            slot.stats.fallbacks += 1
                        else:
                            self._settle(slot, job, result)
                    while slot.raw:
                        self._fetch_raw(slot, conn)
                except ReplyTooLarge as e:
                    # The oldest unanswered reply ran past its bound; the connection is closed.
                    self._drop_conn(slot)
                    culprit = sent.popleft() if sent else slot.raw.popleft() if slot.raw else None
                    self._requeue(slot, sent)
                    slot.stats.too_large += 1
                    if culprit is not None:
                        self._settle(slot, culprit, _one_line(e))
                except NNTPError as e:
                    self._drop_conn(slot)
                    self._requeue(slot, sent)
                    if self._connection_failed(slot, e, backoff):
                        return
        except BaseException as e:  # a handler's DiskFullError, a bug: stop everything
            with self._lock:
                self._queue.extendleft(reversed(sent))
                if self._fatal is None:
                    self._fatal = e
                self._stop.set()
                self._work_cv.notify_all()
                self._main_cv.notify()

    def _fetch_raw(self, slot: _Slot, conn: Connection) -> None:
        """Fetch the oldest reply sabctools could not be trusted with, decode it exactly, settle it."""
        job = slot.raw[0]
        body = conn.body(job.message_id, max_bytes=job.limit)
        slot.raw.popleft()
        result: Article | str | None
        if body is None:
            result = None
        else:
            try:
                result = Article.from_part(decode_yenc_part(body))
            except (UsenetSyncError, ValueError) as e:  # hostile input costs this article only
                result = f"not a usable yEnc article: {_one_line(e)}"
        self._settle(slot, job, result)

    def _settle(self, slot: _Slot, job: FetchJob, result: Article | str | None) -> None:
        """One attempt's outcome: done, back for another try, or a final failure."""
        if isinstance(result, str):
            reason: str | None = result
        else:
            if result is None:
                slot.stats.missing += 1
            else:
                slot.stats.articles += 1
                slot.stats.bytes += len(result.data)
            reason = self._handle(job, result)
        with self._lock:
            if reason is None:
                self._pending -= 1
                if self._pending <= 0:
                    self._main_cv.notify()
                return
            job.tries += 1
            # Tries used up on the primary servers: one more on a fill server, if one is alive.
            to_fill = not slot.fill and not job.fill_only and job.tries > self.retries and self._fill_alive()
            if job.tries <= self.retries or to_fill:
                job.fill_only = job.fill_only or to_fill
                job.failed_slot, job.failed_server = slot.index, slot.spec.name
                self._retries.append(job)
                slot.stats.retries += 1
                self._work_cv.notify_all()
                return
            while len(self._failed) >= _FAILED_MAX and not self._stop.is_set():
                self._main_cv.notify()
                self._work_cv.wait(0.5)
            self._failed.append((job, reason))
            self._main_cv.notify()

    def _requeue(self, slot: _Slot, sent: deque[FetchJob]) -> None:
        """Unanswered requests go back untouched (not an attempt), ahead of new jobs."""
        back = list(slot.raw) + list(sent)
        slot.raw.clear()
        sent.clear()
        if back:
            with self._lock:
                self._queue.extendleft(reversed(back))
                self._work_cv.notify_all()

    def _drop_conn(self, slot: _Slot) -> None:
        conn, slot.conn = slot.conn, None
        if conn is not None:
            conn.close()
        slot.owned = True  # whatever opens next is ours

    def _connection_failed(self, slot: _Slot, e: NNTPError, backoff: Backoff) -> bool:
        """After a lost or refused connection: True if the worker retires (or the run stops)."""
        if self._stop.is_set():
            return True
        with self._lock:
            last = sum(1 for s in self.slots if s.alive) == 1
        # "Too many connections": this one retires so the others fit, unless it is the last.
        if e.retryable and backoff.attempts < MAX_RECONNECTS and (last or not isinstance(e, TooManyConnections)):
            self._stop.wait(backoff.next_delay())
            return self._stop.is_set()
        with self._lock:
            slot.alive = False
            slot.error = e
            self._errors.append(e)
            self._work_cv.notify_all()  # retries waiting for this connection go elsewhere
            self._main_cv.notify()
        return True


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def fetch_results(
    server: ServerSpec | Connection,
    jobs: Iterable[FetchJob],
    *,
    window: int = WINDOW,
    file_crc: bool = False,
) -> Iterator[tuple[FetchJob, Article | str | None]]:
    """``FetchPool.results`` over one connection: a spec (opened and closed here) or a borrowed one."""
    pool = (
        FetchPool.borrowing(server, window=window, file_crc=file_crc)
        if isinstance(server, Connection)
        else FetchPool([server], 1, window=window, file_crc=file_crc)
    )
    try:
        yield from pool.results(jobs)
    finally:
        pool.close()
