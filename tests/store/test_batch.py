"""Tests of the batch writer's commit point."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from usenetsync_cli.store.batch import BatchWriter
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

SQL = (
    "INSERT INTO files(folder_id, dir_id, name, kind, size, mtime_ns, ctime_ns, inode, mode)"
    " VALUES(1, 1, ?, 0, 0, 0, 0, 0, 0)"
)


def _count(st: State) -> int:
    return sum(c.execute("SELECT count(*) FROM files").fetchall()[0][0] for c in st.shards)


def test_rows_are_visible_only_after_flush(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path)
    with State.open(home) as st:
        w = BatchWriter(st, max_rows=1000)
        for i in range(10):
            w.add(i % 16, SQL, (b"f%d" % i,))
        with State.open(home) as other:
            assert _count(other) == 0
        w.flush()
        with State.open(home) as other:
            assert _count(other) == 10
        assert w.batches == 1


def test_batch_flushes_by_row_count_and_time(tmp_path: Path) -> None:
    now = [0.0]
    with State.open(Home.resolve(tmp_path)) as st:
        w = BatchWriter(st, max_rows=5, max_seconds=2.0, clock=lambda: now[0])
        for i in range(7):
            w.add(0, SQL, (b"f%d" % i,))
        assert w.batches == 1 and w.pending == 2
        w.maybe_flush()
        assert w.batches == 1  # not yet 2 s
        now[0] = 2.5
        w.maybe_flush()
        assert w.batches == 2 and w.pending == 0 and _count(st) == 7


def test_discard_rolls_back_catalog_and_rows(tmp_path: Path) -> None:
    with State.open(Home.resolve(tmp_path)) as st:
        w = BatchWriter(st)
        w.catalog().execute(  # type: ignore[attr-defined]
            "INSERT INTO dirs(folder_id, relpath) VALUES(1, b'')".replace("b''", "x''")
        )
        w.add(3, SQL, (b"x",))
        w.discard()
        assert st.catalog.execute("SELECT count(*) FROM dirs").fetchall()[0][0] == 0
        w.flush()
        assert _count(st) == 0


def test_crash_between_batches_loses_only_the_open_batch(tmp_path: Path) -> None:
    """kill -9 of a writer: committed batches survive, the open one is gone, the DB is sound."""
    home = tmp_path / "home"
    script = textwrap.dedent(
        f"""
        import os, signal
        from usenetsync_cli.store.batch import BatchWriter
        from usenetsync_cli.store.home import Home
        from usenetsync_cli.store.state import State
        st = State.open(Home.resolve({str(home)!r}))
        w = BatchWriter(st, max_rows=100)
        for i in range(250):          # two full batches commit (200 rows) ...
            w.add(i % 16, {SQL!r}, (b"f%d" % i,))
        os.kill(os.getpid(), signal.SIGKILL)   # ... 50 rows are still open
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env=os.environ.copy())
    assert proc.returncode == -9
    with State.open(Home.resolve(home)) as st:
        assert _count(st) == 200
        for c in st.shards:
            assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
