#!/usr/bin/env python3
"""Scale benchmark (issue 12): what the per-command whole-state walks cost on a huge folder.

Owns: building (and caching) a synthetic tree of a given size and timing each
CLI step on it, every step in a fresh child process (``python3 -c`` running
``usenetsync_cli.entry.main`` exactly as ``python -m usenetsync_cli`` does)
with a real home (a temporary ``USENETSYNC_HOME``), measuring its wall time
and peak RSS (the child's own ``VmHWM``; for a step killed with -9 the parent
reads the child's ``/proc/<pid>/status`` just before the kill).

The tree, cached under ``--cache`` (default /tmp/bench-scale-cache/N, marker
``meta.json`` beside ``tree/``):

- N small files of 150-250 bytes, made with ``os.ftruncate`` (all zeros, no
  block written): 9/10 of them in directories of 1,000 (``d00000/``...), 1/10
  in one directory (``big/``);
- sparse large files (``sparse/``), ``os.truncate`` only, no data: at
  N=300,000, 190 files of 13,680 segments of 768,000 bytes (10.5 GB each),
  2,599,200 segments, ~2 TB that use no disk.

All content is zeros, so ``tests/pipeline/upload_support.py fabricate_posted``
(every planned segment marked posted and verified with what a real upload
writes: state 2, the BLAKE3 of the zero payload, a nonce, times, wire bytes)
gives the exact rows a real upload would have given (the script runs its own
copy of that function: see ``_FABRICATE``).

Steps, in order, each in its own child: ``index``; ``index`` again (rescan);
``upload --redundancy 0 --no-backup`` into the discard sink until some
articles are posted, then kill -9; ``upload --resume`` the same way; the
rest of the plan (in process);
``status`` and ``status --json``; fabricate_posted (not a CLI step, timed for
the record); ``verify --server sink --max-duration 60s``; ``share create
--public --server inn`` (the index goes to the real INN on 127.0.0.1:119,
because ``share create`` reads it back with BODY, which the sink cannot
serve); ``status`` with the share. A baseline comes first: ``status`` in the
same home before anything is indexed (interpreter start and imports). The
state's size on disk (catalog, shards and their WAL files) is read after the
index, after planning (the uploads post while they plan, so a child plans
what the two killed runs left, timed as "plan the rest"; also on a
checkpointed copy) and at the end.

First post: the discard sink (``discard_sink.py``) runs inside a small
wrapper process that prints ``P <articles> <monotonic time>`` and
``S <stats> <monotonic time>`` on stdout whenever its counters move, at most
once per 20 ms, so the first article (or STAT) after a quiet moment is always
reported at once. CLOCK_MONOTONIC is system-wide, so the parent compares it
with the time it started the child.

Usage:
    python3 benchmarks/bench_scale.py                   # N=300,000, ~2.6M segments
    python3 benchmarks/bench_scale.py --files 3000 --json
    python3 benchmarks/bench_scale.py --files 3000000 --sparse-files 1900   # ~26M segments: hours, GBs of state
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
SEGMENT_SIZE = 768_000
SEGS_PER_SPARSE = 13_680  # 10.5 GB a file; 190 of them at 300k files = 2,599,200 segments
LAYOUT_VERSION = 1
GROUP = "alt.binaries.test"
SMALL_PER_DIR = 1_000

from cli_child import CLI as _CLI  # noqa: E402 - benchmarks/ is the script's own directory


# tests/pipeline/upload_support.py fabricate_posted, with two changes that keep it usable at millions of
# segments and leave the rows the same: the zero payload's hash is computed once per length (there,
# ``dict.setdefault``'s argument is evaluated for every row: a BLAKE3 of 768 KB each, ~30 min at 2.6M), and
# rows are read in keyset pages of 50,000 instead of one fetchall per shard.
_FABRICATE = r"""
import json, os, sys, time
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["repo"])
from tests.pipeline.upload_support import fabricate_pack_hashes
from usenetsync_cli.core.hashing import piece_hash
from usenetsync_cli.pipeline.plan import plan_folder
from usenetsync_cli.pipeline.settle import settle_folder
from usenetsync_cli.pipeline.upload import folder_context
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State
t0 = time.perf_counter()
with State.open(Home.resolve(spec["home"])) as st:
    folder = catalog.get_folder(st.catalog, os.fsencode(spec["root"]))
    plan_folder(st, folder, spec["segment_size"])  # a no-op: planned by the _PLAN step before
    now = time.time_ns()
    hashes = {}
    n = 0
    for conn in st.shards:
        last = 0
        while True:
            # Planned rows, and rows the resume's probe of in-doubt articles marked verified without a hash:
            # the discard sink answers STAT 223 for any ID (a real server answers 430 for what it never got),
            # and without a hash the files never settle, so `share create` would publish nothing.
            rows = conn.execute("SELECT seg_id, length FROM segments WHERE folder_id=? AND seg_id>?"
                                " AND (state=0 OR (state IN (1,2) AND hash IS NULL))"
                                " ORDER BY seg_id LIMIT 50000", (folder.folder_id, last)).fetchall()
            if not rows:
                break
            for _s, length in rows:
                if length not in hashes:
                    hashes[length] = piece_hash(bytes(length))
            with conn:
                conn.executemany(
                    "UPDATE segments SET state=2, hash=?, nonce=?, posted_ns=?, checked_ns=?, check_result=1,"
                    " wire_bytes=? WHERE seg_id=?",
                    [(hashes[length], os.urandom(12), now, now, length + 29, s) for s, length in rows])
            n += len(rows)
            last = rows[-1][0]
        fabricate_pack_hashes(conn, folder.folder_id)  # members' piece hashes and the pack hash: packed files settle
    t1 = time.perf_counter()
    settle_folder(st, folder, folder_context(folder, ("alt.binaries.test",)), None, after_upload=True)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"marked": n, "wall_s": time.perf_counter() - t0, "settle_s": time.perf_counter() - t1,
                  "peak_rss": int(hwm) * 1024}))
"""


# Planning what the killed uploads left unplanned (they post while planning, pipeline/plan_ahead.py), so
# the state's size after planning is measured on a whole plan.
_PLAN = r"""
import json, os, sys, time
spec = json.loads(sys.argv[1])
from usenetsync_cli.pipeline.plan import plan_folder
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State
t0 = time.perf_counter()
with State.open(Home.resolve(spec["home"])) as st:
    folder = catalog.get_folder(st.catalog, os.fsencode(spec["root"]))
    s = plan_folder(st, folder, spec["segment_size"])
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"segments": s.segments, "files": s.files_planned, "wall_s": time.perf_counter() - t0,
                  "peak_rss": int(hwm) * 1024}))
"""


# The discard sink with its counters reported on stdout as they move (see the module docstring).
_SINK = r"""
import sys, threading, time
sys.path.insert(0, sys.argv[1])
import discard_sink as d

_out = threading.Lock()
_last = {"articles": 0.0, "stats": 0.0}

class Reporting(d.Totals):
    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in _last and value:
            now = time.monotonic()
            if now - _last[name] >= 0.02:
                _last[name] = now
                with _out:
                    sys.stdout.write(f"{'P' if name == 'articles' else 'S'} {value} {now:.6f}\n")
                    sys.stdout.flush()

d.Totals = Reporting
sys.exit(d.main(sys.argv[2:]))
"""


# --------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------


def layout(files: int, sparse_files: int | None) -> dict[str, int]:
    big = files // 10
    sparse = sparse_files if sparse_files is not None else max(1, round(files * 190 / 300_000))
    return {"layout": LAYOUT_VERSION, "files": files, "big_dir_files": big, "dir_files": files - big,
            "sparse_files": sparse, "segs_per_sparse": SEGS_PER_SPARSE, "segment_size": SEGMENT_SIZE}


def _small_size(i: int) -> int:
    return 150 + (i * 37) % 101


def _touch(path: str, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def ensure_tree(cache: Path, want: dict[str, int]) -> tuple[Path, dict[str, Any]]:
    """The cached tree for ``want``, built if missing or different."""
    base = cache / str(want["files"])
    root = base / "tree"
    marker = base / "meta.json"
    if root.is_dir() and marker.is_file():
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError):
            meta = {}
        if all(meta.get(k) == v for k, v in want.items()):
            meta["reused"] = True
            return root, meta
        print(f"  cached tree {root} does not match: rebuilding", flush=True)
    if base.exists():
        shutil.rmtree(base)
    root.mkdir(parents=True)
    sparse_bytes = want["segs_per_sparse"] * want["segment_size"]
    st = os.statvfs(root)
    if st.f_favail < want["files"] + want["files"] // SMALL_PER_DIR + 1000:
        sys.exit(f"bench_scale: refusing: {want['files']:,} inodes needed, {st.f_favail:,} free")
    t0 = time.perf_counter()
    print(f"  building {want['files']:,} small files and {want['sparse_files']} sparse files of "
          f"{sparse_bytes / 1e9:.1f} GB under {root} ...", flush=True)
    i = 0
    for d in range((want["dir_files"] + SMALL_PER_DIR - 1) // SMALL_PER_DIR):
        dpath = os.path.join(root, f"d{d:05d}")
        os.mkdir(dpath)
        for _ in range(min(SMALL_PER_DIR, want["dir_files"] - d * SMALL_PER_DIR)):
            _touch(os.path.join(dpath, f"f{i:07d}.txt"), _small_size(i))
            i += 1
    big = os.path.join(root, "big")
    os.mkdir(big)
    for _ in range(want["big_dir_files"]):
        _touch(os.path.join(big, f"f{i:07d}.txt"), _small_size(i))
        i += 1
    sparse = os.path.join(root, "sparse")
    os.mkdir(sparse)
    for k in range(want["sparse_files"]):
        _touch(os.path.join(sparse, f"s{k:04d}.bin"), sparse_bytes)  # a hole: no block written
    os.sync()
    meta: dict[str, Any] = {**want, "build_s": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(meta) + "\n")
    meta["reused"] = False
    return root, meta


# --------------------------------------------------------------------------
# The sink and the children
# --------------------------------------------------------------------------


class Sink:
    """The discard sink in a reporting wrapper; ``articles``/``stats`` hold (count, monotonic time) events."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SINK, str(BENCH), "--host", "127.0.0.1", "--port", "0"],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        words = self.proc.stdout.readline().split()
        if len(words) != 3 or words[0] != "LISTENING":
            self.proc.kill()
            raise RuntimeError(f"discard sink did not start: {words!r}")
        self.port = int(words[2])
        self.cond = threading.Condition()
        self.events: dict[str, list[tuple[int, float]]] = {"P": [], "S": []}
        self.totals: dict[str, Any] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            words = line.split()
            if len(words) == 3 and words[0] in self.events:
                with self.cond:
                    self.events[words[0]].append((int(words[1]), float(words[2])))
                    self.cond.notify_all()
            elif line.startswith("{"):
                self.totals = json.loads(line)

    def count_unlocked(self, kind: str) -> int:
        """The latest count; the caller holds ``cond``."""
        return self.events[kind][-1][0] if self.events[kind] else 0

    def count(self, kind: str) -> int:
        with self.cond:
            return self.count_unlocked(kind)

    def first_after(self, kind: str, t: float) -> float | None:
        with self.cond:
            return next((ts for _n, ts in self.events[kind] if ts >= t), None)

    def close(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=5)
        return self.totals


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USENETSYNC_")}
    env.update(USENETSYNC_HOME=str(home), PYTHONPATH=str(REPO), COLUMNS="120", NO_COLOR="1")
    return env


def _vmhwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cli(home: Path, work: Path, *args: str, timeout: float = 7200) -> dict[str, Any]:
    """Run one CLI command to its end in a fresh child; wall time (parent's clock), peak RSS, exit code."""
    out = work / "cli-result.json"
    out.unlink(missing_ok=True)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", _CLI, str(out), *args], env=_env(home), cwd=work,
                       capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.monotonic() - t0
    res = json.loads(out.read_text()) if out.is_file() else {"code": p.returncode, "peak_rss": 0, "cpu_s": None}
    return {"code": res["code"], "wall_s": wall, "peak_rss": res["peak_rss"], "cpu_s": res["cpu_s"],
            "stdout": p.stdout, "stderr": p.stderr}


def upload_until_posted(home: Path, work: Path, sink: Sink, args: list[str], kill_after: int,
                        timeout: float) -> dict[str, Any]:
    """Start an upload, wait for ``kill_after`` articles at the sink, kill -9 it; time to first post, RSS."""
    base = sink.count("P")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", _CLI, str(work / "upload-result.json"), *args],
                            env=_env(home), cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = t0 + timeout
    with sink.cond:
        while sink.count_unlocked("P") - base < kill_after and proc.poll() is None and time.monotonic() < deadline:
            sink.cond.wait(timeout=0.2)
    rss = _vmhwm(proc.pid)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    t_end = time.monotonic()
    first = sink.first_after("P", t0)
    return {"first_post_s": (first - t0) if first is not None else None, "posted_before_kill": sink.count("P") - base,
            "killed": killed, "code": proc.returncode, "wall_s": t_end - t0, "peak_rss": rss,
            "stderr_tail": err[-400:] if not killed else ""}


# --------------------------------------------------------------------------
# The state on disk
# --------------------------------------------------------------------------


def state_files(home: Path) -> dict[str, int]:
    """Bytes of catalog, shards and WAL files (with -shm) under the home's state directory."""
    out = {"catalog": 0, "shards": 0, "wal": 0}
    for p in (home / "state").rglob("*"):
        if not p.is_file():
            continue
        size = p.stat().st_size
        if p.name.endswith(("-wal", "-shm")):
            out["wal"] += size
        elif p.parent.name == "shards":
            out["shards"] += size
        elif p.name.startswith("catalog"):
            out["catalog"] += size
    out["total"] = sum(out.values())
    return out


def checkpointed_size(home: Path, scratch: Path) -> dict[str, int]:
    """The state's size as it would be with its WAL folded in: a copy is checkpointed (the real one is not
    touched, so the next step opens the state as the killed run left it)."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(home / "state", scratch, ignore=shutil.ignore_patterns("lock"))
    for db in scratch.rglob("*.db"):
        conn = sqlite3.connect(db, timeout=60)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
    sizes = {"catalog": 0, "shards": 0, "wal": 0}
    for f in scratch.rglob("*"):
        if f.is_file():
            key = "wal" if f.name.endswith(("-wal", "-shm")) else "shards" if f.parent.name == "shards" else "catalog"
            sizes[key] += f.stat().st_size
    sizes["total"] = sum(sizes.values())
    shutil.rmtree(scratch, ignore_errors=True)
    return sizes


def count_segments(home: Path) -> dict[str, int]:
    """Direct counts over every shard, read-only: segments by state, present files."""
    by_state: dict[int, int] = {}
    files = 0
    for db in sorted((home / "state" / "shards").glob("*.db")):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
        try:
            for st, n in conn.execute("SELECT state, count(*) FROM segments GROUP BY state"):
                by_state[st] = by_state.get(st, 0) + n
            files += conn.execute("SELECT count(*) FROM files WHERE present=1").fetchone()[0]
        finally:
            conn.close()
    return {"segments": sum(by_state.values()), "planned": by_state.get(0, 0),
            "posted": sum(n for s, n in by_state.items() if s >= 1), "verified": by_state.get(2, 0),
            "present_files": files}


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


def mb(n: int | None) -> float | None:
    return round(n / 1e6, 1) if n else None


def run_once(root: Path, meta: dict[str, Any], a: argparse.Namespace, sink: Sink) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=a.workdir))
    home = work / "home"
    rows: list[dict[str, Any]] = []

    def row(step: str, seconds: float | None, rss: int | None, notes: str, **extra: Any) -> None:
        r = {"step": step, "seconds": round(seconds, 3) if seconds is not None else None, "peak_rss_mb": mb(rss),
             "notes": notes, **extra}
        rows.append(r)
        print(f"  {step:<34} {r['seconds'] if seconds is not None else '-':>9} s  "
              f"{r['peak_rss_mb'] if rss else '-':>7} MB  {notes}", flush=True)

    def must(res: dict[str, Any], what: str) -> dict[str, Any]:
        if res["code"] != 0:
            raise RuntimeError(f"{what} exited {res['code']}: {res['stderr'][-600:]}")
        return res

    try:
        must(cli(home, work, "server", "add", "sink", "--host", "127.0.0.1", "--port", str(sink.port),
                 "--group", GROUP, "--connections", str(a.connections)), "server add")
        # share create reads its index back (BODY), which the sink cannot serve: the index goes to INN.
        must(cli(home, work, "server", "add", "inn", "--host", "127.0.0.1", "--port", str(a.inn_port),
                 "--group", GROUP), "server add inn")
        must(cli(home, work, "keys", "init", "--no-passphrase"), "keys init")

        r = must(cli(home, work, "status"), "status (empty home)")
        row("baseline: status, empty home", r["wall_s"], r["peak_rss"],
            "interpreter start + imports: the floor of every CLI step below")
        r = must(cli(home, work, "index", str(root)), "index")
        row("index (first)", r["wall_s"], r["peak_rss"], f"{meta['files'] + meta['sparse_files']:,} files")
        size_index = state_files(home)
        r = must(cli(home, work, "index", str(root)), "index rescan")
        row("index (rescan, unchanged)", r["wall_s"], r["peak_rss"], "")

        up = ["upload", str(root), "--server", "sink", "--redundancy", "0", "--no-backup"]
        u = upload_until_posted(home, work, sink, up, a.kill_after, a.upload_timeout)
        counts = count_segments(home)
        row("upload: first post", u["first_post_s"], u["peak_rss"],
            f"killed -9 after {u['posted_before_kill']} articles at the sink; RSS at the kill; "
            f"{counts['posted']:,}/{counts['segments']:,} posted in state", upload=u, counts=counts)
        if not u["killed"]:
            raise RuntimeError(f"upload ended before the kill (exit {u['code']}): {u['stderr_tail']}")

        u = upload_until_posted(home, work, sink, ["upload", "--resume", "--server", "sink", "--redundancy", "0", "--no-backup"],
                                a.kill_after, a.upload_timeout)
        counts2 = count_segments(home)
        row("upload --resume: first post", u["first_post_s"], u["peak_rss"],
            f"killed -9 after {u['posted_before_kill']} articles; {counts2['posted']:,} posted in state",
            upload=u, counts=counts2)

        t0 = time.monotonic()
        spec = json.dumps({"home": str(home), "root": str(root), "segment_size": SEGMENT_SIZE})
        p = subprocess.run([sys.executable, "-c", _PLAN, spec], env=_env(home), cwd=work, capture_output=True,
                           text=True, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"planning failed: {p.stderr[-800:]}")
        pl = json.loads(p.stdout.strip().splitlines()[-1])
        counts3 = count_segments(home)
        row("plan the rest (in process)", time.monotonic() - t0, pl["peak_rss"],
            f"{pl['segments']:,} segments of {pl['files']:,} files the killed uploads had not planned yet "
            f"(they post while planning); {counts3['segments']:,} segments in all")
        size_plan = state_files(home)
        size_plan_ckpt = checkpointed_size(home, work / "state-copy")
        segments = counts3["segments"]

        r = must(cli(home, work, "status"), "status")
        row("status", r["wall_s"], r["peak_rss"], "partly posted, no share")
        r = must(cli(home, work, "status", "--json"), "status --json")
        row("status --json", r["wall_s"], r["peak_rss"], "")

        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-c", _FABRICATE,
                            json.dumps({"home": str(home), "root": str(root), "segment_size": SEGMENT_SIZE,
                                        "repo": str(REPO)})],
                           env=_env(home), cwd=work, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"fabricate_posted failed: {p.stderr[-800:]}")
        fab = json.loads(p.stdout.strip().splitlines()[-1])
        row("mark posted (fabricate_posted)", time.monotonic() - t0, fab["peak_rss"],
            f"{fab['marked']:,} segments marked state 2 as a real upload writes them (fabricate_posted's rows; "
            f"settle {fab['settle_s']:.1f} s); not a CLI step")

        base_s = sink.count("S")
        t0 = time.monotonic()
        r = cli(home, work, "verify", "--server", "sink", "--max-duration", f"{a.verify_duration}s")
        first_stat = sink.first_after("S", t0)
        late = r["wall_s"] - a.verify_duration
        row(f"verify --max-duration {a.verify_duration}s", r["wall_s"], r["peak_rss"],
            f"exit {r['code']}; ends {late:+.1f} s past the limit; first STAT "
            f"{(first_stat - t0) if first_stat else float('nan'):.2f} s; {sink.count('S') - base_s:,} STATs",
            first_stat_s=(first_stat - t0) if first_stat else None, late_s=late, code=r["code"])

        r = must(cli(home, work, "share", "create", str(root), "--public", "--name", "scale", "--server", "inn"),
                 "share create")
        cat = sqlite3.connect(home / "state" / "catalog.db")
        published = cat.execute("SELECT files, bytes FROM shares WHERE name='scale'").fetchone()
        cat.close()
        if not published[0]:
            print(f"  share create published nothing: {r['stderr'][-800:]}", flush=True)
        row("share create --public", r["wall_s"], r["peak_rss"],
            f"{published[0]:,} files, {published[1] / 1e12:,.2f} TB published; segments marked posted by "
            "fabricate_posted; the index itself posted to and read back from INN", published_files=published[0])
        r = must(cli(home, work, "status"), "status with share")
        row("status (with a share)", r["wall_s"], r["peak_rss"], "")
        size_end = state_files(home)

        nfiles = meta["files"] + meta["sparse_files"]
        per_seg = (size_plan_ckpt["total"] - size_index["total"]) / max(segments, 1)
        row("state on disk", None, None,
            f"after index {size_index['total'] / 1e6:,.0f} MB = {size_index['total'] / nfiles:,.0f} B/file; "
            f"after planning {size_plan['total'] / 1e6:,.0f} MB of which WAL {size_plan['wal'] / 1e6:,.0f} MB, "
            f"{size_plan_ckpt['total'] / 1e6:,.0f} MB checkpointed = +{per_seg:,.0f} B/segment "
            f"({segments:,} segments; {size_plan_ckpt['total'] / max(segments, 1):,.0f} B/segment all in); "
            f"fully posted, after share: {size_end['total'] / 1e6:,.0f} MB "
            f"({size_end['total'] / max(segments, 1):,.0f} B/segment, WAL {size_end['wal'] / 1e6:,.0f} MB)",
            sizes={"after_index": size_index, "after_planning": size_plan,
                   "after_planning_checkpointed": size_plan_ckpt, "end": size_end},
            segments=segments, files=nfiles, bytes_per_file_index=size_index["total"] / nfiles,
            bytes_per_segment_planned=per_seg)
    finally:
        if not a.keep_home:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"  kept {work}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=300_000, help="small files (default 300000)")
    p.add_argument("--sparse-files", type=int, default=None,
                   help=f"sparse files of {SEGS_PER_SPARSE:,} segments each (default files*190/300000)")
    p.add_argument("--runs", type=int, default=1, help="runs, each on a fresh home (default 1)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/bench-scale-cache"))
    p.add_argument("--workdir", type=Path, default=Path("/tmp"), help="where the temporary homes go")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--inn-port", type=int, default=119, help="INN (127.0.0.1) for the share index (default 119)")
    p.add_argument("--kill-after", type=int, default=50, help="articles at the sink before each kill -9")
    p.add_argument("--upload-timeout", type=float, default=3600.0, help="max seconds to wait for the posts")
    p.add_argument("--verify-duration", type=int, default=60)
    p.add_argument("--keep-home", action="store_true")
    p.add_argument("--json", action="store_true", help="one JSON line per step and one summary line")
    a = p.parse_args(argv)
    want = layout(a.files, a.sparse_files)
    t_start = time.monotonic()
    root, meta = ensure_tree(a.cache.absolute(), want)
    print(f"tree {root}: {meta['files']:,} small files ({meta['big_dir_files']:,} in one directory), "
          f"{meta['sparse_files']} sparse files, ~{meta['sparse_files'] * SEGS_PER_SPARSE:,} segments; "
          f"{'cached' if meta['reused'] else 'built in ' + str(meta['build_s']) + ' s'}", flush=True)
    sink = Sink()
    runs: list[list[dict[str, Any]]] = []
    loads = [os.getloadavg()[0]]
    try:
        for i in range(a.runs):
            print(f"run {i + 1}/{a.runs}", flush=True)
            runs.append(run_once(root, meta, a, sink))
            loads.append(os.getloadavg()[0])
    finally:
        totals = sink.close()

    print("\n| step | seconds | peak RSS MB | notes |\n|---|---:|---:|---|")
    for k, first in enumerate(runs[0]):
        secs = [r[k]["seconds"] for r in runs if r[k]["seconds"] is not None]
        rss = [r[k]["peak_rss_mb"] for r in runs if r[k]["peak_rss_mb"] is not None]

        def fmt(xs: list[float], spec: str) -> str:
            if not xs:
                return "–"
            m = format(statistics.median(xs), spec)
            return m if len(xs) == 1 else f"{m} [{format(min(xs), spec)}–{format(max(xs), spec)}]"

        notes = first["notes"]
        if a.runs > 1 and "late_s" in first:
            late = [r[k]["late_s"] for r in runs]
            stat = [r[k]["first_stat_s"] for r in runs if r[k]["first_stat_s"] is not None]
            notes += f" (all runs: late {fmt(late, '+.1f')} s, first STAT {fmt(stat, '.2f')} s)"
        print(f"| {first['step']} | {fmt(secs, '.2f')} | {fmt(rss, '.0f')} | {notes} |")
    total = time.monotonic() - t_start
    print(f"\n{a.runs} run(s), {total / 60:.1f} min; 1-minute load {min(loads):.1f}–{max(loads):.1f}; "
          f"sink totals {totals}")
    if a.json:
        for i, rows in enumerate(runs):
            for r in rows:
                print(json.dumps({"bench": "bench_scale", "run": i + 1, **r}, sort_keys=True))
        print(json.dumps({"bench": "bench_scale", "summary": True, "tree": meta, "runs": a.runs,
                          "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                      "platform": platform.platform()},
                          "total_s": round(total, 1), "load": loads, "sink_totals": totals}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
