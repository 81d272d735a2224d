"""The scale benchmark's path at a small size (benchmarks/bench_scale.py), asserting only correctness.

Owns: one end-to-end run of the CLI, each command a real child process, over
a tree shaped like the benchmark's (small files in directories of 1,000, one
directory holding a tenth of them, sparse large files for the bulk of the
segments) into a sink that keeps no data beyond the killed run's articles (``RememberingSink`` below: POST 240,
STAT 223 only for IDs it received; see there why not benchmarks/discard_sink.py):
index, upload killed -9 mid-way (proved by the state: 0 < posted < total),
``upload --resume`` to completion, ``status --json``, ``verify --max-duration``.

Invariants checked: every exit code 0 (the killed child: -9), no traceback,
every segment verified and counted once, ``status`` totals equal a direct
count over the shards. Never a time.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
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


class RememberingSink:
    """An NNTP peer that keeps the Message-IDs it received, so STAT can say 430 for the rest.

    Why not benchmarks/discard_sink.py alone: it answers STAT 223 for any ID, so after the kill the
    resumed upload's probe of the dead run's in-doubt segments (``upload.probe_in_doubt``) finds all of
    them "present", marks them verified without a hash, and the settle step then fetches their BODY to
    hash them, which a discard sink cannot serve (exit 13). A real server answers 430 for what never
    arrived and serves what did; this does the same. Bodies are kept only while ``keep_bodies`` is set
    (the killed run's articles, the only ones a resumed run may fetch), so memory stays small.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: set[bytes] = set()
        self.bodies: dict[bytes, bytes] = {}
        self.keep_bodies = True
        self.articles = 0
        self.stats = 0
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        buf = b""

        def fill() -> bool:
            nonlocal buf
            data = sock.recv(1 << 20)
            buf += data
            return bool(data)

        try:
            sock.sendall(b"200 sink ready\r\n")
            while True:
                while b"\r\n" not in buf:
                    if not fill():
                        return
                line, buf = buf.split(b"\r\n", 1)
                words = line.split()
                verb = words[0].upper() if words else b""
                if verb == b"POST":
                    sock.sendall(b"340 send\r\n")
                    while (end := buf.find(b"\r\n.\r\n")) < 0:
                        if not fill():
                            return
                    article, buf = buf[: end + 5], buf[end + 5 :]
                    head, _, body = article.partition(b"\r\n\r\n")
                    m = _MSGID.search(head)
                    assert m is not None
                    with self.lock:
                        self.ids.add(m.group(1))
                        self.articles += 1
                        if self.keep_bodies:
                            self.bodies[m.group(1)] = body
                    sock.sendall(b"240 " + m.group(1) + b"\r\n")
                elif verb in (b"STAT", b"BODY"):
                    mid = words[1] if len(words) > 1 else b""
                    with self.lock:
                        self.stats += verb == b"STAT"
                        known = mid in self.ids
                        body = self.bodies.get(mid)
                    if verb == b"STAT":
                        sock.sendall((b"223 0 " + mid if known else b"430 no such article") + b"\r\n")
                    elif body is None:
                        sock.sendall(b"430 no such article\r\n")
                    else:
                        sock.sendall(b"222 0 " + mid + b"\r\n" + body)
                elif verb == b"QUIT":
                    sock.sendall(b"205 bye\r\n")
                    return
                elif verb == b"GROUP":
                    sock.sendall(b"211 0 1 0 " + (words[1] if len(words) > 1 else b"x") + b"\r\n")
                elif verb == b"CAPABILITIES":
                    sock.sendall(b"101 caps\r\nVERSION 2\r\nREADER\r\nPOST\r\n.\r\n")
                elif verb in (b"MODE", b"AUTHINFO"):
                    sock.sendall(b"200 ok\r\n" if verb == b"MODE" else b"281 ok\r\n")
                else:
                    sock.sendall(b"500 unknown\r\n")
        except OSError:
            return
        finally:
            sock.close()

    def close(self) -> None:
        self.lsock.close()


_MSGID = re.compile(rb"(?im)^Message-ID:[ \t]*(<[^\s<>]+>)")


@pytest.fixture
def sink() -> Iterator[RememberingSink]:
    s = RememberingSink()
    try:
        yield s
    finally:
        s.close()


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
    tmp_path: Path, isolated_env: Path, sink: RememberingSink
) -> None:
    home = isolated_env
    port = sink.port
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
                c = {"posted": 0, "verified": 0}
            posted = c["posted"] + c["verified"]
            if posted:
                break
        time.sleep(0.05)  # a polling interval; the wait itself ends on the row, not on time
    proc.kill()  # SIGKILL, by this child's own pid
    _, err = proc.communicate(timeout=60)
    with sink.lock:
        sink.keep_bodies = False
    assert proc.returncode == -9, f"the upload ended before the kill: {proc.returncode} {err}"
    killed = _counts(home)
    # Posting starts while planning goes on (pipeline/plan_ahead.py): the kill may find part planned.
    assert 0 < killed["posted"] + killed["verified"] < killed["total"], killed

    r = _ok(_cli(*up, "--resume", "--json"))
    done = _counts(home)
    total = done["total"]
    assert total >= SPARSE_FILES * SEGS_PER_SPARSE + 1  # every segment planned, the packs too
    assert done == {"total": total, "planned": 0, "posted": 0, "verified": total, "other": 0, "files": nfiles}
    (summary,) = [x for x in map(json.loads, r.stdout.splitlines()) if x["type"] == "upload.summary"]
    assert summary["complete"] is True and summary["verified"] == total and summary["failed"] == 0, summary

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
    (sweep,) = [x for x in map(json.loads, r.stdout.splitlines()) if x["type"] == "verify.summary"]
    assert (sweep["checked"], sweep["present"], sweep["missing"], sweep["unchecked_left"]) == (total, total, 0, 0)
    assert _counts(home) == done  # a healthy sweep changes no state
    # Every segment reached the server (a kill may cost a re-post), and was STATed by upload and by verify.
    assert len(sink.ids) == total
    assert sink.stats >= 2 * total
