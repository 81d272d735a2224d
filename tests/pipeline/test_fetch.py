"""The fetch engine (pipeline/fetch.py) against the fake NNTP server, for what INN
cannot do: endless replies, gigabyte yEnc claims, a server that says yes to
everything, a million jobs answered at once; and the pool's scheduling.

The fake server runs in a subprocess (tests/nntp/fakeserver.py), so its
300 MB endless replies and its CPU never count against this process: the
memory measured here is the client's alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psutil
import pytest

from tests.nntp.fakeserver import payload, serve_subprocess
from tests.nntp.rss import RssPeak
from usenetsync_cli.errors import DiskFullError
from usenetsync_cli.nntp import Article, ConnectFailed, Connection, NNTPProtocolError, ServerSpec
from usenetsync_cli.pipeline import fetch
from usenetsync_cli.pipeline.fetch import FetchJob, FetchPool, fetch_results
from usenetsync_cli.pipeline.poster import open_connection

MB = 1024 * 1024


@pytest.fixture(scope="module")
def fake() -> Iterator[int]:
    with serve_subprocess() as port:
        yield port


@pytest.fixture(scope="module")
def fake_yes() -> Iterator[int]:
    with serve_subprocess("--yes") as port:
        yield port


def spec(port: int, name: str = "fake", connections: int = 4) -> ServerSpec:
    return ServerSpec(name=name, host="127.0.0.1", port=port, timeout=10.0, connections=connections)


def no_workers_left() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith("fetchpool-")]


class Recorder:
    """A handler that checks ``ok`` payloads and records everything it is given."""

    def __init__(self) -> None:
        self.got: dict[str, list[Article | None]] = {}
        self.failed: dict[str, str] = {}
        self.threads: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def handle(self, job: FetchJob, art: Article | None) -> str | None:
        with self.lock:
            self.got.setdefault(job.message_id, []).append(art)
            self.threads.setdefault(job.message_id, []).append(threading.current_thread().name)
        kind = job.message_id[1:].split(".")[0]
        if art is None:
            return "missing" if kind == "missing" else None
        if kind in ("ok", "lf"):
            size = int(job.message_id.split(".")[1])
            assert bytes(art.data) == payload(job.message_id, size) and art.crc_ok
        return None

    def fail(self, job: FetchJob, reason: str) -> None:
        assert job.message_id not in self.failed
        self.failed[job.message_id] = reason


# ---------------------------------------------------------------- hostile replies


def test_endless_replies_fail_one_article_each_and_memory_stays_bounded(fake: int) -> None:
    endless = [f"<{k}.{i}@fake>" for i in range(2) for k in ("endless-line", "endless-text", "endless-yenc", "endless-status")]
    good = [f"<ok.200000.{i}@fake>" for i in range(12)]
    ids = [m for pair in zip(good, endless + good[len(endless):]) for m in pair]
    ids = list(dict.fromkeys(ids + endless + good))
    rec = Recorder()
    pool = FetchPool([spec(fake)])  # 4 connections
    try:
        with RssPeak() as rss:
            stats = pool.run((FetchJob(m, 1 * MB) for m in ids), rec.handle, rec.fail)
    finally:
        pool.close()
    # Every endless reply cost its own article, twice tried, and nothing else.
    assert set(rec.failed) == set(endless)
    for reason in rec.failed.values():
        assert "reply larger than expected" in reason and "\n" not in reason
    assert stats.too_large == 2 * len(endless) and stats.failed == len(endless)
    assert sorted(m for m, arts in rec.got.items() if arts == [arts[0]]) == sorted(good)
    assert stats.articles == len(good)
    # Each of those replies would have been 300 MB; the client held ~1 MB of each.
    assert rss.growth < 100 * MB, f"RSS grew {rss.growth / MB:.0f} MB"


def test_bounds_beyond_the_client_buffers_still_hold(fake: int) -> None:
    """Bounds larger than sabctools' 2 MiB receive buffer and its ~10 MB data ceiling."""
    jobs = [FetchJob("<endless-line.big@fake>", 64 * MB), FetchJob("<endless-yenc.big@fake>", 64 * MB),
            FetchJob("<ok.1000.after@fake>", MB)]
    rec = Recorder()
    pool = FetchPool([spec(fake)], 1)
    try:
        with RssPeak() as rss:
            pool.run(jobs, rec.handle, rec.fail)
    finally:
        pool.close()
    assert set(rec.failed) == {"<endless-line.big@fake>", "<endless-yenc.big@fake>"}
    assert "(a line over 2,097,152 bytes)" in rec.failed["<endless-line.big@fake>"]
    assert "reply larger than expected" in rec.failed["<endless-yenc.big@fake>"]
    assert list(rec.got) == ["<ok.1000.after@fake>"]
    assert rss.growth < 100 * MB


def test_a_complete_reply_past_its_bound_fails_too(fake: int) -> None:
    rec = Recorder()
    pool = FetchPool([spec(fake)], 1)
    try:
        stats = pool.run([FetchJob("<ok.30000.x@fake>", 20_000), FetchJob("<ok.300.y@fake>", 20_000)],
                         rec.handle, rec.fail)
    finally:
        pool.close()
    assert list(rec.failed) == ["<ok.30000.x@fake>"] and "reply larger than expected" in rec.failed["<ok.30000.x@fake>"]
    assert list(rec.got) == ["<ok.300.y@fake>"] and stats.articles == 1


def test_gigabyte_yenc_claims_cost_the_article_not_memory(fake: int) -> None:
    rec = Recorder()
    with RssPeak() as rss:
        pool = FetchPool([spec(fake)], 2)
        try:
            pool.run([FetchJob("<huge-part.1@fake>", 100_000), FetchJob("<huge-file.1@fake>", 100_000)],
                     rec.handle, rec.fail)
        finally:
            pool.close()
    assert list(rec.failed) == ["<huge-part.1@fake>"]
    assert rec.failed["<huge-part.1@fake>"].startswith("yEnc part claims 2,147,483,648 bytes")
    # A part that fits may belong to a huge file: that claim is the caller's to judge (the NZB
    # downloader refuses sizes its NZB does not support).
    (art,) = rec.got["<huge-file.1@fake>"]
    assert isinstance(art, Article) and art.file_size == 2**31 and len(art.data) == 100
    assert rss.growth < 50 * MB


def test_a_body_sabctools_misreads_is_decoded_exactly(fake: int) -> None:
    rec = Recorder()
    pool = FetchPool([spec(fake)], 1)
    try:
        stats = pool.run([FetchJob("<lf.5000.1@fake>", 100_000), FetchJob("<ok.300.2@fake>", 100_000)],
                         rec.handle, rec.fail)
    finally:
        pool.close()
    assert rec.failed == {} and stats.fallbacks == 1 and stats.articles == 2
    (art,) = rec.got["<lf.5000.1@fake>"]
    assert isinstance(art, Article) and art.name == "lf.bin" and art.crc_ok


def test_a_server_that_says_yes_to_everything(fake_yes: int) -> None:
    ids = [f"<anything.{i}@fake>" for i in range(20)]
    with Connection(spec(fake_yes)) as conn:
        assert all(ok for _, ok in conn.stat_many(ids))  # STAT believes it
    rec = Recorder()
    pool = FetchPool([spec(fake_yes)], 2)
    try:
        stats = pool.run((FetchJob(m, 100_000) for m in ids), rec.handle, rec.fail)
    finally:
        pool.close()
    assert rec.got == {}  # nothing usable ever reached the handler
    assert set(rec.failed) == set(ids)
    assert all(r.startswith("not a usable yEnc article: article body is not yEnc") for r in rec.failed.values())
    assert stats.fallbacks == stats.retries * 2 == 2 * len(ids)


# ---------------------------------------------------------------- scheduling


@pytest.mark.timeout(60)  # a hang guard: a retry waiting for a connection that cannot take it never ends
def test_retry_uses_the_only_connection_and_another_when_there_is_one(fake: int) -> None:
    for connections, want_threads in ((1, 1), (4, 2)):
        rec = Recorder()
        pool = FetchPool([spec(fake)], connections)
        try:
            stats = pool.run([FetchJob("<missing.one@fake>", 10_000)], rec.handle, rec.fail)
        finally:
            pool.close()
        assert rec.got["<missing.one@fake>"] == [None, None]  # asked twice: once, then the retry
        assert len(set(rec.threads["<missing.one@fake>"])) == want_threads
        assert rec.failed == {"<missing.one@fake>": "missing"}
        assert (stats.retries, stats.failed, stats.missing) == (1, 1, 2)


def test_retry_backlog_is_bounded(fake: int) -> None:
    """Retries wait for a server that is slow to come; meanwhile no new job is taken."""
    gate = threading.Event()

    def connect(s: ServerSpec) -> Connection:
        if s.name == "b":
            gate.wait(30)  # "b" comes up only when the test lets it
        return open_connection(s)

    total = 20_000
    pulled = 0

    def jobs() -> Iterator[FetchJob]:
        nonlocal pulled
        for i in range(total):
            pulled += 1
            yield FetchJob(f"<missing.{i}@fake>", 10_000)

    def handle(job: FetchJob, art: Article | None) -> str | None:
        return "not on a" if job.server == "a" else None

    failures: list[str] = []
    pool = FetchPool([spec(fake, "a", 1), spec(fake, "b", 1)], window=8, connect=connect)
    seen: dict[str, int] = {}

    def tick() -> None:
        b = pool.backlog
        seen["max_retrying"] = max(seen.get("max_retrying", 0), b.retrying)
        # Everything "a" could do is done: the backlog is full (or every job was taken).
        if not gate.is_set() and b.queued == 0 and b.in_flight == 0 and (b.retrying >= 64 or pulled == total):
            seen["pulled_at_gate"] = pulled
            gate.set()

    try:
        stats = pool.run(jobs(), handle, lambda job, reason: failures.append(reason), tick)
    finally:
        pool.close()
    # Every job is fetched in the end: those "a" had first failed once and came from "b".
    assert failures == [] and stats.missing == total + stats.retries
    assert stats.retries >= seen["pulled_at_gate"] - 8
    assert seen["pulled_at_gate"] < 3 * 64  # the queue and the backlog were full; nothing more was taken
    assert seen["max_retrying"] <= 2 * 64 + 8  # the backlog cap, plus the queue and window it had then


def test_a_million_jobs_stream_through_in_flat_memory(fake: int) -> None:
    total = 1_000_000
    pulled = settled = 0
    ahead = 0
    lock = threading.Lock()

    def jobs() -> Iterator[FetchJob]:
        nonlocal pulled
        for i in range(total):
            pulled += 1
            yield FetchJob(f"<missing.{i}@fake>", 4096)

    def handle(job: FetchJob, art: Article | None) -> None:
        nonlocal settled
        with lock:
            settled += 1

    proc = psutil.Process()
    rss: list[int] = []

    def tick() -> None:
        nonlocal ahead
        ahead = max(ahead, pulled - settled)
        rss.append(proc.memory_info().rss)

    pool = FetchPool([spec(fake)], 2, window=64)
    try:
        stats = pool.run(jobs(), handle, lambda job, reason: None, tick)
    finally:
        pool.close()
    assert settled == total and stats.missing == total
    # Jobs are pulled as the queue has room: never more than the queue, the windows and the backlog ahead.
    assert ahead <= 2 * (2 * 64 * 2) + 2 * 64
    warm = rss[len(rss) // 10 :]
    assert max(warm) - min(warm) < 20 * MB


def test_a_handler_error_stops_every_worker_and_is_raised_here(fake: int) -> None:
    pulled = 0

    def jobs() -> Iterator[FetchJob]:
        nonlocal pulled
        for i in range(100_000):
            pulled += 1
            yield FetchJob(f"<ok.100.{i}@fake>", 10_000)

    def handle(job: FetchJob, art: Article | None) -> None:
        if job.message_id == "<ok.100.500@fake>":
            raise DiskFullError("disk full while writing x")

    pool = FetchPool([spec(fake)], 4)
    try:
        with pytest.raises(DiskFullError):
            pool.run(jobs(), handle, lambda job, reason: None)
    finally:
        pool.close()
    assert no_workers_left()
    assert pulled < 2_000


def test_ctrl_c_stops_workers_waiting_for_a_reply(fake: int) -> None:
    """Workers blocked on replies that never come (30 s socket timeout) stop at once."""

    def tick() -> None:
        if pool.stats.articles >= 1:
            raise KeyboardInterrupt

    ids = ["<ok.100.first@fake>"] + [f"<stall.{i}@fake>" for i in range(4)]
    pool = FetchPool([ServerSpec(name="slow", host="127.0.0.1", port=fake, timeout=30.0)], 4, window=1)
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.run((FetchJob(m, 10_000) for m in ids), lambda j, a: None, lambda j, r: None, tick)
        # Had a worker still been waiting in recv, it would still be alive (the run waits 10 s, then gives up).
        assert no_workers_left()
    finally:
        pool.close()


def test_results_iterator_stops_its_workers_when_abandoned(fake: int) -> None:
    jobs = (FetchJob(f"<ok.1000.{i}@fake>", 10_000) for i in range(1000))
    it = fetch_results(spec(fake), jobs)
    first = [next(it) for _ in range(3)]
    assert all(isinstance(a, Article) and a.crc_ok for _, a in first)
    it.close()
    assert no_workers_left()


@pytest.mark.parametrize(("mid", "what"), [("<wrong-id.1@fake>", "out of order"), ("<extra.1@fake>", "after the last")])
def test_a_server_out_of_step_is_a_protocol_error(fake: int, mid: str, what: str) -> None:
    pool = FetchPool([spec(fake)], 1)
    try:
        with pytest.raises(NNTPProtocolError, match=what) as ei:
            pool.run([FetchJob(mid, 10_000)], lambda j, a: None, lambda j, r: None)
    finally:
        pool.close()
    assert ei.value.fatal_for_server and pool.alive == 0  # that server's replies cannot be trusted


def test_every_connection_refused_raises_the_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    monkeypatch.setattr(fetch, "BACKOFF_BASE", 0.01)
    monkeypatch.setattr(fetch, "BACKOFF_CAP", 0.02)
    pool = FetchPool([spec(port, "nowhere", 2)])
    with pytest.raises(ConnectFailed, match="nowhere"):
        pool.run([FetchJob("<ok.1.1@fake>", 1000)], lambda j, a: None, lambda j, r: None)
    assert pool.alive == 0 and no_workers_left()
