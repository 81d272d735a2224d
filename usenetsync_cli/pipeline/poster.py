"""Posting connections: N threads per server, each with its own NNTP session.

Owns: taking articles from the ready queue (encoding them on the posting
thread itself when given an ``encoder``, which upload.py's ``encoders=0``
chooses), POSTing them, and handling every server answer as DESIGN.md §7 says. Each
article ends in exactly one ``PostResult`` for the collector; this module
writes no state.

Answers and what they cause:
- 240: ``posted`` (with the server's ID when it names another one).
- 441 435 (duplicate): STAT on the same connection; present -> ``duplicate``
  (our earlier post whose answer was lost; counts as posted), absent ->
  ``burnt`` (the ID is remembered but the article is gone: re-post under
  attempt+1).
- 441 for the newsgroups themselves (INN: 'No valid newsgroups in "x"'):
  every article would meet it, so the pool stops at the first one (``stop``
  is set, ``group_refused`` holds the answer): no further article is posted,
  and the refused one gets no result (it stays ``planned`` for a run with a
  group the server carries).
- other 441: ``rejected`` (policy/headers; retrying the same bytes will not
  help).
- 400 / 503 / timeouts / resets: reconnect after exponential backoff (never
  at once) and post the same article again (same Message-ID, so a post that
  did arrive comes back as 441 435 and is confirmed).
- 502 too many connections: this connection retires (the server wants fewer),
  unless it is the server's last one: then it backs off and retries.
- 440 / 481 / 482 / 502 / TLS / protocol errors: fatal for that server; the
  article goes back to the queue for the other servers' connections.
"""

from __future__ import annotations

import queue
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from usenetsync_cli.nntp import (
    Backoff,
    Connection,
    DuplicateArticle,
    NNTPError,
    PostRejected,
    ServerSpec,
    TooManyConnections,
    TransientError,
)
from usenetsync_cli.pipeline.encode import Work
from usenetsync_cli.pipeline.ratelimit import TokenBucket

END = object()  # sentinel: no more articles in this round

# A 441 for the newsgroups themselves (INN: 'No valid newsgroups in "alt.binaries.x"'): every article meets it.
GROUP_REFUSED = re.compile(r"no valid newsgroup|newsgroups? .*(does not exist|not (allowed|found|exist|valid))"
                           r"|unknown newsgroup|no such (news)?group", re.IGNORECASE)


@dataclass(slots=True)
class PostResult:
    work: Work
    outcome: str  # posted | duplicate | burnt | rejected | failed | changed
    server_msgid: str | None = None
    error: str | None = None


@dataclass
class PosterOptions:
    max_retries: int = 6  # per article, transient failures
    max_reconnects: int = 8  # consecutive failed (re)connects before a thread gives up
    backoff_base: float = 1.0
    backoff_cap: float = 60.0


class PosterPool:
    def __init__(
        self,
        specs: list[ServerSpec],
        ready: queue.Queue[object],
        results: queue.Queue[PostResult],
        stop: threading.Event,
        *,
        bucket: TokenBucket | None = None,
        options: PosterOptions | None = None,
        connect: Callable[[ServerSpec], Connection] | None = None,
        encoder: Callable[[], Callable[[Work], Work]] | None = None,
    ) -> None:
        self.specs = specs
        self.ready = ready
        self.results = results
        self.stop = stop
        self.bucket = bucket
        self.options = options or PosterOptions()
        self._connect = connect or open_connection
        self._encoder = encoder
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.alive: dict[str, int] = {s.name: 0 for s in specs}
        self.server_errors: dict[str, NNTPError] = {}
        self.group_refused: tuple[ServerSpec, PostRejected] | None = None  # the first such 441: the pool stopped
        self.retries = 0
        self.reconnects = 0

    @property
    def alive_total(self) -> int:
        with self._lock:
            return sum(self.alive.values())

    def start(self) -> None:
        for spec in self.specs:
            for n in range(spec.connections):
                t = threading.Thread(target=self._run, args=(spec,), name=f"post-{spec.name}-{n}", daemon=True)
                with self._lock:
                    self.alive[spec.name] += 1
                self._threads.append(t)
                t.start()

    def finish(self, timeout: float | None = None) -> None:
        """Tell every thread the round is over and wait for them."""
        self.ready.put(END)
        for t in self._threads:
            t.join(timeout)

    # ------------------------------------------------------------------ one connection

    def _run(self, spec: ServerSpec) -> None:
        conn: Connection | None = None
        backoff = Backoff(
            base=self.options.backoff_base, cap=self.options.backoff_cap, rand=random.Random().random
        )
        encode = self._encoder() if self._encoder is not None else None
        try:
            while not self.stop.is_set():
                try:
                    item = self.ready.get(timeout=0.2)
                except queue.Empty:
                    continue
                if item is END:
                    self.ready.put(END)  # let the other threads see it too
                    return
                assert isinstance(item, Work)
                if encode is not None and not item.msgid:  # a requeued article is encoded already
                    item = encode(item)
                    if item.changed:
                        self.results.put(PostResult(item, "changed"))
                        continue
                conn, keep_going = self._post_one(spec, conn, item, backoff)
                if not keep_going:
                    return
        finally:
            if conn is not None:
                conn.close()
            with self._lock:
                self.alive[spec.name] -= 1

    def _post_one(
        self, spec: ServerSpec, conn: Connection | None, item: Work, backoff: Backoff
    ) -> tuple[Connection | None, bool]:
        """Post ``item`` until it has a result; returns (connection, thread should go on)."""
        while True:
            if self.stop.is_set():
                self._requeue(item)
                return conn, False
            try:
                if conn is None:
                    conn = self._connect(spec)
                if self.bucket is not None:
                    self.bucket.acquire(item.wire_bytes)
                returned = conn.post(item.buffers, item.msgid, trusted=True)
                backoff.reset()
                self._emit(item, "posted", server_msgid=returned if returned and returned != item.msgid else None)
                return conn, True
            except DuplicateArticle:
                try:
                    present = conn.stat(item.msgid) if conn is not None else False
                except TransientError as e:
                    conn = self._drop(conn)
                    if not self._wait_retry(item, backoff, e):
                        return conn, True
                    continue
                self._emit(item, "duplicate" if present else "burnt")
                return conn, True
            except PostRejected as e:
                if GROUP_REFUSED.search(str(e)):
                    # Every article would be refused the same way: stop every connection now.
                    with self._lock:
                        if self.group_refused is None:
                            self.group_refused = (spec, e)
                    self.stop.set()
                    return conn, False
                self._emit(item, "rejected", error=str(e))
                return conn, True
            except TooManyConnections as e:
                conn = self._drop(conn)
                with self._lock:
                    last = self.alive[spec.name] <= 1
                if not last:
                    self._requeue(item)
                    return conn, False  # this server wants fewer connections
                if not self._wait_retry(item, backoff, e):
                    return conn, True
            except TransientError as e:
                conn = self._drop(conn)
                if backoff.attempts >= self.options.max_reconnects:
                    self._requeue(item)
                    self._server_failed(spec, e)
                    return conn, False
                if not self._wait_retry(item, backoff, e):
                    return conn, True
            except NNTPError as e:  # fatal for this server (440, 481/482, 502, TLS, protocol)
                conn = self._drop(conn)
                self._requeue(item)
                self._server_failed(spec, e)
                return conn, False

    def _wait_retry(self, item: Work, backoff: Backoff, err: NNTPError) -> bool:
        """Back off before trying ``item`` again; False if it has used up its retries."""
        item.retries += 1
        with self._lock:
            self.retries += 1
        if item.retries > self.options.max_retries:
            self._emit(item, "failed", error=str(err))
            return False
        self.stop.wait(backoff.next_delay())
        return True

    def _drop(self, conn: Connection | None) -> None:
        if conn is not None:
            conn.close()
            with self._lock:
                self.reconnects += 1
        return None

    def _emit(self, item: Work, outcome: str, *, server_msgid: str | None = None, error: str | None = None) -> None:
        item.buffers = []  # the article bytes are not needed past this point
        self.results.put(PostResult(item, outcome, server_msgid, error))

    def _requeue(self, item: Work) -> None:
        """Give an unposted article back for another connection (or, if none is left, fail it)."""
        try:
            self.ready.put(item, timeout=1.0)
        except queue.Full:
            self._emit(item, "failed", error="no connection left to post it")

    def _server_failed(self, spec: ServerSpec, err: NNTPError) -> None:
        with self._lock:
            self.server_errors.setdefault(spec.name, err)


def open_connection(spec: ServerSpec) -> Connection:
    """Connect, log in if the server has credentials, and be ready to POST."""
    conn = Connection(spec)
    try:
        conn.connect()
        if spec.user:
            conn.authenticate()
    except BaseException:
        conn.close()
        raise
    return conn
