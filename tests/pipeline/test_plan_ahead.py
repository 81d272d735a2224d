"""Planning ahead of posting (pipeline/plan_ahead.py), and the counters under kill -9.

- Posting starts while the planner is still planning: with the planner held
  after its first transaction (the test hook ``USENETSYNC_TESTONLY_PLAN_HOLD``),
  articles go out and files are still unplanned. ``kill -9`` there (planner
  mid-way, articles in doubt behind the fault proxy's held replies), then
  ``upload --resume``: every segment is on the server exactly once, judged by
  the proxy's wire log.
- After each kill -9 the counters (store/counters.py) equal a full count of
  the rows, in every shard.
- The collector's results guard on ``state=0`` (a segment the planner
  superseded stays superseded), and the planner reads its files again inside
  its write transaction (a row the collector changed after the page was read
  is planned from what it is now).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import run
from tests.pipeline.test_upload_exactly_once import _live, _segments, _wait
from tests.support.faultproxy import ARTICLE, FaultProxy
from tests.support.inn import InnServer
from usenetsync_cli.pipeline import plan as plan_mod
from usenetsync_cli.pipeline.index import index_folder
from usenetsync_cli.pipeline.plan import plan_folder
from usenetsync_cli.pipeline.plan_ahead import HOLD_ENV
from usenetsync_cli.pipeline.upload import _POSTED
from usenetsync_cli.store import catalog, counters
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

SEG = 16_384
FILE = 20 * SEG  # every file is 20 segments: whichever shard is planned first, it has work for both connections


def _tree(root: Path, files: int) -> int:
    root.mkdir()
    for i in range(files):
        (root / f"f{i:03d}.bin").write_bytes(os.urandom(FILE))
    return files * (FILE // SEG)


def _home_state() -> State:
    return State.open(Home.resolve(None))


def _assert_counters_match(where: str) -> None:
    with _home_state() as state:
        for n, conn in enumerate(state.shards):
            assert counters.stored(conn) == counters.recount(conn), f"{where}: shard {n}"


def _unplanned_files() -> int:
    with _home_state() as state:
        return sum(c.execute("SELECT count(*) FROM files WHERE plan_size IS NULL").fetchall()[0][0] for c in state.shards)


def _upload(src: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "usenetsync_cli", "upload", str(src), "--segment-size", str(SEG), "--redundancy", "0",
         "--no-backup"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **env},
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_kill_9_while_planning_and_posting_then_resume_posts_each_segment_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer
) -> None:
    src = tmp_path / "data"
    total = _tree(src, 32)
    marker = tmp_path / "planner-held"
    answered = 5
    with FaultProxy(inn.host, inn.port) as proxy:
        r = run(capsys, "server", "add", "local", "--host", proxy.host, "--port", str(proxy.port), "--group", inn.group,
                "--connections", "2", "--timeout", "300")
        assert r.code == 0, r.err
        assert run(capsys, "index", str(src)).code == 0
        proxy.hold_replies(ARTICLE, after=answered)
        proc = _upload(src, {HOLD_ENV: f"1:{marker}"})
        try:
            _wait("the planner held after its first transaction", marker.exists, proc)
            _wait("an article stored with its reply held", lambda: proxy.faults_fired.get("hold_replies", 0) >= 1, proc)
            _wait("commit of the answered articles",
                  lambda: _segments(capsys).get("posted", 0) + _segments(capsys).get("verified", 0) >= answered, proc)
            _kill(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        first = proxy.articles
        seg = _segments(capsys)
        # Mid-planning: some files have no layout yet; mid-posting: fewer posted than planned, some in doubt.
        unplanned = _unplanned_files()
        assert 0 < unplanned < 32
        assert seg.get("posted", 0) + seg.get("verified", 0) == answered < _live(seg) < total
        in_doubt = [a.message_id for a in first if a.reply is None]
        assert in_doubt
        for mid in in_doubt:
            _wait(f"{mid} on the server", lambda mid=mid: inn.stat(mid) == 223)
        _assert_counters_match("after kill -9 mid-planning")

        proxy.clear_faults()
        since = len(first)
        # The resume's planner holds too, until the test lets it go once articles are going out: the feeder
        # must follow it through every shard in this round, not stop at what was planned when posting began.
        marker.unlink()
        log = tmp_path / "resume.jsonl"  # a file, not a pipe: nobody reads a pipe while the test waits
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "usenetsync_cli", "upload", "--resume", "--redundancy", "0", "--no-backup",
                 "--json"], stdout=out, stderr=subprocess.PIPE, env={**os.environ, HOLD_ENV: f"1:{marker}"})
            _wait("the resume's planner held", marker.exists, proc)
            # Everything planned so far is posted and committed, so the feeder has gone as far as it can:
            # a feeder that did not wait for the planner would end the round here.
            _wait("the planned segments posted while the planner holds",
                  lambda: len(proxy.articles) > since and _segments(capsys).get("planned", 0) == 0, proc)
            marker.unlink()
            _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        (summary,) = [x for x in map(json.loads, log.read_text().splitlines()) if x["type"] == "upload.summary"]
        assert summary["rounds"] == 1 and summary["files_planned"] == unplanned
        second = proxy.articles[since:]
        held_by_server = {a.message_id for a in first}
        assert [a.message_id for a in second if a.message_id in held_by_server] == []  # nothing sent twice
        assert set(proxy.posted_message_ids(since).values()) == {1}
        seg = _segments(capsys)
        assert _live(seg) == seg["verified"] == total == len(held_by_server) + len(second)
        assert _unplanned_files() == 0
    _assert_counters_match("after the resume")


def test_counters_equal_a_recount_after_kill_9_at_random_points(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer
) -> None:
    src = tmp_path / "data"
    total = _tree(src, 12)
    rng = random.Random(12)  # fixed points, drawn once: the kill lands where the proxy holds, not by timing
    with FaultProxy(inn.host, inn.port) as proxy:
        r = run(capsys, "server", "add", "local", "--host", proxy.host, "--port", str(proxy.port), "--group", inn.group,
                "--connections", "2", "--timeout", "300")
        assert r.code == 0, r.err
        assert run(capsys, "index", str(src)).code == 0
        done = 0
        for _ in range(3):
            answered = rng.randint(1, 30)
            proxy.clear_faults()
            proxy.hold_replies(ARTICLE, after=len(proxy.articles) + answered)
            proc = _upload(src, {})
            try:
                _wait("a held reply", lambda: proxy.faults_fired.get("hold_replies", 0) >= 1, proc)
                _wait("the answered articles committed",
                      lambda: _segments(capsys).get("posted", 0) + _segments(capsys).get("verified", 0)
                      >= done + answered, proc)
                _kill(proc)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            seg = _segments(capsys)
            now = seg.get("posted", 0) + seg.get("verified", 0)
            assert done < now < total  # each kill landed mid-way, after progress
            done = now
            _assert_counters_match(f"after a kill at {answered} more articles")
        proxy.clear_faults()
        r = run(capsys, "upload", "--resume", "--redundancy", "0", "--no-backup")
        assert r.code == 0, r.err
    seg = _segments(capsys)
    assert seg["verified"] == _live(seg) == total
    _assert_counters_match("after the upload")


def test_a_result_never_revives_a_segment_the_planner_superseded(tmp_path: Path) -> None:
    with State.open(Home.resolve(tmp_path / "home")) as state:
        conn = state.shards[0]
        conn.execute("INSERT INTO segments(folder_id, file_id, idx, offset, length, state) VALUES(1, 1, 0, 0, 10, 4)")
        seg_id = conn.last_insert_rowid()
        conn.execute(_POSTED, (100, b"h" * 32, b"n" * 12, 1, None, seg_id))
        assert conn.execute("SELECT state, hash FROM segments WHERE seg_id=?", (seg_id,)).fetchall() == [(4, None)]


def test_the_planner_reads_a_file_again_under_its_write_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector may clear a file's done generation (a pack it was in changed) after the planner read its
    page: the planner must then abandon the unfinished generation, as it would have from a fresh read."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3 * 10_000))
    with State.open(Home.resolve(tmp_path / "home")) as state:
        index_folder(state, src)
        folder = catalog.get_folder(state.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        plan_folder(state, folder, 10_000)
        conn = next(c for c in state.shards if c.execute("SELECT count(*) FROM files").fetchall()[0][0])
        conn.execute("UPDATE files SET done_gen=gen")  # generation 1 counts as done
        (src / "a.bin").write_bytes(os.urandom(3 * 10_000 + 1))
        index_folder(state, src)
        pages = plan_mod.keyset_pages

        def page_then_collector(*a: object, **kw: object):  # type: ignore[no-untyped-def]
            for rows in pages(*a, **kw):  # type: ignore[arg-type]
                if rows:  # what the collector's _UNDONE_MEMBERS does, between the read and the write
                    conn.execute("UPDATE files SET done_gen=NULL, content_hash=NULL")
                yield rows

        monkeypatch.setattr(plan_mod, "keyset_pages", page_then_collector)
        plan_folder(state, folder, 10_000)
        live_gens = {g for (g,) in conn.execute("SELECT DISTINCT gen FROM segments WHERE state<>4")}
        assert live_gens == {2}  # generation 1 is no longer done, so it was abandoned


def test_a_pack_result_never_commits_posted_without_all_its_member_hashes(tmp_path: Path) -> None:
    """The batch writer commits every ``batch_rows`` rows, inside one result too (a pack has thousands of
    members). A crash between two of its commits must leave the pack planned, never posted with member
    hashes missing (its files would never settle, nor be published)."""
    import threading
    import time

    from usenetsync_cli.pipeline.encode import Work
    from usenetsync_cli.pipeline.poster import PostResult
    from usenetsync_cli.pipeline.upload import UploadOptions, UploadSummary, _Run
    from usenetsync_cli.store.batch import BatchWriter

    with State.open(Home.resolve(tmp_path / "home")) as state:
        conn = state.shards[0]
        conn.execute("INSERT INTO segments(folder_id, file_id, idx, offset, length) VALUES(1, NULL, 0, 0, 100)")
        seg_id = conn.last_insert_rowid()
        conn.executemany("INSERT INTO pack_members(seg_id, file_id, pack_offset, length) VALUES(?,?,?,10)",
                         [(seg_id, f, f * 10) for f in range(10)])
        run_ = _Run(state, None, None, UploadOptions(servers=[]), UploadSummary("x", 100), None,  # type: ignore[arg-type]
                    threading.Event(), time.monotonic, 0.0)
        work = Work(0, seg_id, 0, 100, True, [], hash=b"p" * 32, wire_bytes=130,
                    member_hashes=[(f, bytes([f]) * 32) for f in range(10)])
        for cut in range(1, 12):  # the writer commits after every `cut` rows; the crash loses the rest
            conn.execute("UPDATE segments SET state=0, hash=NULL WHERE seg_id=?", (seg_id,))
            conn.execute("UPDATE pack_members SET hash=NULL")
            w = BatchWriter(state, max_rows=cut)
            run_._apply(w, PostResult(work, "posted"))
            w.discard()  # kill -9: what the last batch held is lost
            (st,) = conn.execute("SELECT state FROM segments WHERE seg_id=?", (seg_id,)).fetchall()[0]
            missing = conn.execute("SELECT count(*) FROM pack_members WHERE hash IS NULL").fetchall()[0][0]
            assert st == 0 or missing == 0, (cut, st, missing)
