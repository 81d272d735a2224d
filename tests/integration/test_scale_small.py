"""The scale benchmark's path at a small size (benchmarks/bench_scale.py), asserting only correctness.

Owns: one end-to-end run of the CLI, each command a real child process, over
a tree shaped like the benchmark's (small files in directories of 1,000, one
directory holding a tenth of them, sparse large files for the bulk of the
segments) into the discard NNTP sink (benchmarks/discard_sink.py, which
answers POST 240 and STAT 223 and stores nothing): index, upload killed -9
mid-way (proved by the state: 0 < posted < total), ``upload --resume`` to
completion, ``status --json``, ``verify --max-duration``.

Invariants checked: every exit code 0 (the killed child: -9), no traceback,
every segment verified and counted once, ``status`` totals equal a direct
count over the shards. Never a time.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SINK = REPO / "benchmarks" / "discard_sink.py"
SEG = 16_384  # the smallest segment size: many articles from few sparse bytes
SMALL = 3_000
SPARSE_FILES = 4
SEGS_PER_SPARSE = 5_000  # 4 x 5,000 = 20,000 segments, plus the small files' packs


def _touch(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: nothing written, the content reads as zeros


def _tree(root: Path) -> int:
    """Small files (1,000 per directory, a tenth in one directory) and sparse files; returns the file count."""
    big = SMALL // 10
    for i in range(SMALL - big):
        d = root / f"d{i // 1000:02d}"
        d.mkdir(parents=True, exist_ok=True)
        _touch(d / f"f{i:05d}.txt", 150 + (i * 37) % 101)
    (root / "big").mkdir()
    for i in range(big):
        _touch(root / "big" / f"g{i:05d}.txt", 150 + (i * 37) % 101)
    (root / "sparse").mkdir()
    for k in range(SPARSE_FILES):
        _touch(root / "sparse" / f"s{k}.bin", SEGS_PER_SPARSE * SEG)
    return SMALL + SPARSE_FILES


@pytest.fixture
def sink() -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen([sys.executable, str(SINK), "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    words = proc.stdout.readline().split()
    assert len(words) == 3 and words[0] == "LISTENING", words
    try:
        yield proc, int(words[2])
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=30)


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "usenetsync_cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    return r


def _counts(home: Path) -> dict[str, int]:
    """A direct count over every shard (read-only): segments by state, present files."""
    by_state: dict[int, int] = {}
    files = 0
    shards = sorted((home / "state" / "shards").glob("*.db"))
    assert shards
    for db in shards:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            for st, n in conn.execute("SELECT state, count(*) FROM segments GROUP BY state"):
                by_state[st] = by_state.get(st, 0) + n
            files += conn.execute("SELECT count(*) FROM files WHERE present=1").fetchone()[0]
        finally:
            conn.close()
    return {"total": sum(by_state.values()), "planned": by_state.get(0, 0), "posted": by_state.get(1, 0),
            "verified": by_state.get(2, 0), "other": sum(n for s, n in by_state.items() if s not in (0, 1, 2)),
            "files": files}


@pytest.mark.slow
def test_small_scale_index_kill_resume_status_verify(
    tmp_path: Path, isolated_env: Path, sink: tuple[subprocess.Popen[str], int]
) -> None:
    home = isolated_env
    sink_proc, port = sink
    src = tmp_path / "src"
    nfiles = _tree(src)
    _ok(_cli("server", "add", "sink", "--host", "127.0.0.1", "--port", str(port), "--group", "alt.binaries.test"))
    _ok(_cli("index", str(src)))
    assert _counts(home)["files"] == nfiles

    up = ["upload", "--redundancy", "0", "--no-backup"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "usenetsync_cli", *up, str(src), "--segment-size", str(SEG)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Wait on the state itself: the first committed posted row, then kill -9 at once.
    posted = 0
    while proc.poll() is None:
        if (home / "state" / "shards").is_dir() and len(list((home / "state" / "shards").glob("*.db"))) == 16:
            try:
                c = _counts(home)
            except sqlite3.OperationalError:  # a shard still being created
                continue
            posted = c["posted"] + c["verified"]
            if posted:
                break
        time.sleep(0.05)  # a polling interval; the wait itself ends on the row, not on time
    proc.kill()  # SIGKILL, by this child's own pid
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, f"the upload ended before the kill: {proc.returncode} {err}"
    killed = _counts(home)
    total = killed["total"]
    assert total >= SPARSE_FILES * SEGS_PER_SPARSE + 1  # every segment planned, the packs too
    assert 0 < killed["posted"] + killed["verified"] < total, killed

    r = _ok(_cli(*up, "--resume", "--json"))
    done = _counts(home)
    assert done == {"total": total, "planned": 0, "posted": 0, "verified": total, "other": 0, "files": nfiles}
    summary = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert summary, r.stdout

    r = _ok(_cli("status", "--json"))
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    shards = [x for x in lines if x["type"] == "status.shard"]
    assert len(shards) == 16
    assert sum(x["segments"]["verified"] for x in shards) == total
    assert sum(sum(x["segments"].values()) for x in shards) == total
    assert sum(x["present_files"] for x in shards) == nfiles
    (folder,) = [x for x in lines if x["type"] == "status.folder"]
    assert folder["files"] == nfiles

    r = _ok(_cli("verify", "--max-duration", "60s", "--json"))
    assert _counts(home) == done  # a healthy sweep changes no state
    sink_proc.terminate()
    out, _ = sink_proc.communicate(timeout=30)
    totals = json.loads(out.strip().splitlines()[-1])
    # Every segment was posted at least once (a kill may cost a re-post), and STATed by upload and verify.
    assert totals["articles"] >= total
    assert totals["stats"] >= 2 * total
