#!/usr/bin/env python3
"""Benchmark of ``usenetsync upload`` against INN, a bare socket POST loop, and a discard sink.

Owns: building (and caching) two synthetic folders and measuring the upload
pipeline (``usenetsync_cli.pipeline.upload.upload_folder``) on each, every
run in a fresh child process with a fresh state, so CPU time and peak RSS are
that run's alone:

1. ours -> INN (127.0.0.1:119): the real path, post-check on. MB/s of payload,
   articles/s, client CPU-seconds per GB of payload (``getrusage(RUSAGE_SELF)``
   user+sys around ``upload_folder`` only), peak RSS (``VmHWM``), packing
   efficiency (payload bytes / wire bytes).
2. baseline -> INN, in the same iteration: a bare POST loop (plain ``socket``,
   one thread per connection, POST / wait 340 / sendall / read 240) of the
   same number of articles of the same size, pre-encoded with
   ``sabctools.yenc_encode`` before timing. The ratio ours/baseline says what
   our pipeline costs on top of the wire and the server.
3. ours -> discard sink (``discard_sink.py``, a separate process on an
   ephemeral port): the client's own ceiling, encryption on.
   A baseline into the sink is run too, as a reference for the sink's ceiling.
4. ``--vs-nyuu`` (a mode of its own, in ``upload_vs_nyuu.py``): ours against
   Nyuu 0.4.0 (installed with npm into the workdir) and against the
   one-thread "stage floor" (read + BLAKE3 + AES-GCM seal + yEnc + bare
   socket send, CPU-s/GiB each), one 1 GiB file into the discard sink, with a
   bare baseline into the sink as the sink's ceiling. It prints ours/Nyuu
   throughput and ours CPU-s/GiB / floor with "met"/"missed", waits for older
   benchmarks/bench_*.py first (``--max-peer-wait``), and touches no INN.

Each figure is the median of ``--runs`` iterations with [min–max]. Kinds are
interleaved per iteration and the order of ours/baseline alternates, so
drift on the shared machine spreads over both. Before every timed run the
folder is read again (this VM's DAMON reclaim evicts idle page cache) and
dirty pages are flushed (``os.sync``), so INN's writes of the previous run
are not paid for by the next.

INN keeps every article: a default run leaves ~8 GB in /var/spool/news. With
``--purge`` (the default) the script starts by emptying the spool
(``scripts/inn-down.sh --purge && scripts/inn-up.sh``), unless other clients
are connected to INN (other engineers' tests): then it waits up to 60 s and,
if they are still there, skips the purge with a warning. It always refuses to
start if the spool's disk lacks room for this run.

Usage:
    python3 benchmarks/bench_upload.py                    # 1 GiB + 10k small files, 5 runs
    python3 benchmarks/bench_upload.py --quick            # 256 MiB + 10k small files, 3 runs
    python3 benchmarks/bench_upload.py --runs 3 --json --profile
    python3 benchmarks/bench_upload.py --vs-nyuu --runs 5 --json   # ours vs Nyuu vs the stage floor; ~4 min
    git worktree add /tmp/prev HEAD~1 && python3 benchmarks/bench_upload.py --quick --compare-code /tmp/prev
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SINK = Path(__file__).resolve().parent / "discard_sink.py"
INN_UP = REPO / "scripts" / "inn-up.sh"
INN_DOWN = REPO / "scripts" / "inn-down.sh"
INND_PID = Path("/run/news/innd.pid")
SPOOL = Path("/var/spool/news")
INN_PORTS = (119, 1190, 563)

SEGMENT_SIZE = 768_000  # the CLI's default (core.packing.DEFAULT_SEGMENT_SIZE)
SEAL_OVERHEAD = 29  # version byte + nonce + GCM tag (core.crypto.SEAL_OVERHEAD)
CHECK_DELAY = 0.0  # the CLI's default UploadOptions.check_delay (a miss is re-checked after recheck_delay)
# Into the sink the STATs still run, but without the wait: a sleep is no client work, and 1 s on a
# 2.7 s (1 GB at 400 MB/s) run would hide the ceiling this measures.
SINK_CHECK_DELAY = 0.0
GROUP = "alt.binaries.test"
LAYOUT_VERSION = 1  # bump when a folder's layout changes, so cached folders are rebuilt
SEED = 20240602

TARGET_RATIO = 0.9  # ours / baseline into INN
TARGET_SINK_MBPS = 400.0
TARGET_SINK_CPU_PER_GB = 2.0
TARGET_PEAK_RSS_MB = 300.0  # decimal MB, the stricter reading


# --------------------------------------------------------------------------
# The synthetic folders
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderSpec:
    name: str  # "large" or "small"
    files: int
    min_size: int
    max_size: int  # large: every file is exactly this size

    @property
    def key(self) -> str:
        return f"{self.name}-{self.files}x{self.min_size}-{self.max_size}"


def _sizes(fs: FolderSpec) -> list[int]:
    rng = random.Random(SEED + fs.files)
    return [rng.randint(fs.min_size, fs.max_size) for _ in range(fs.files)]


def _write_random(path: Path, size: int, chunk: int = 8 << 20) -> None:
    # os.urandom in chunks: real, incompressible bytes without holding 128 MiB at once.
    with open(path, "wb", buffering=0) as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def ensure_folder(workdir: Path, fs: FolderSpec) -> tuple[Path, dict[str, Any]]:
    """The folder for ``fs``, reused when its marker and file sizes match."""
    root = workdir / fs.key
    marker = workdir / f"{fs.key}.json"  # outside the folder, or it would be uploaded too
    sizes = _sizes(fs)
    want = {"layout": LAYOUT_VERSION, "seed": SEED, "files": fs.files, "bytes": sum(sizes)}
    if root.is_dir() and marker.is_file():
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError):
            meta = {}
        if all(meta.get(k) == v for k, v in want.items()) and _check_sizes(root, fs, sizes):
            meta["reused"] = True
            return root, meta
        print(f"  cached folder {root} does not match: rebuilding", flush=True)
    if root.exists():
        shutil.rmtree(root)
    marker.unlink(missing_ok=True)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    print(f"  building {fs.files:,} files ({sum(sizes) / 1e9:.2f} GB) under {root} ...", flush=True)
    for i, size in enumerate(sizes):
        _write_random(_file_path(root, fs, i, create=True), size)
    os.sync()  # so writeback does not run during the timed runs
    meta = {**want, "build_s": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(meta) + "\n")
    meta["reused"] = False
    return root, meta


def _file_path(root: Path, fs: FolderSpec, i: int, *, create: bool = False) -> Path:
    if fs.name == "large":
        return root / f"large{i:02d}.bin"
    d = root / f"d{i // 100:03d}"  # 100 files per directory
    if create:
        d.mkdir(exist_ok=True)
    return d / f"f{i:05d}.bin"


def _check_sizes(root: Path, fs: FolderSpec, sizes: list[int]) -> bool:
    try:
        return all(_file_path(root, fs, i).stat().st_size == s for i, s in enumerate(sizes))
    except OSError:
        return False


def warm(root: Path) -> None:
    """Read every file once, so the run reads from the page cache, not the disk.

    Called before every upload, not once: this VM runs DAMON proactive reclaim
    (kdamond), which evicts page-cache pages left unused for a while even with
    GBs free; a folder idle during the other folder's series came back half
    evicted and its first upload read at disk speed (measured: 22 s instead of
    0.4 s to encode the small folder on one thread).
    """
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb", buffering=0) as f:
                while f.read(8 << 20):
                    pass


# --------------------------------------------------------------------------
# INN and the discard sink
# --------------------------------------------------------------------------


def _greets(port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            return s.recv(64)[:3] in (b"200", b"201")
    except OSError:
        return False


def _inn_clients() -> int:
    """Established client connections to INN's ports (other engineers' tests, say)."""
    try:
        out = subprocess.run(
            ["ss", "-Htn", "state", "established", "( sport = :119 or sport = :1190 or sport = :563 )"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.strip())


def inn_up() -> None:
    if _greets(119):
        return
    print("  INN is not answering on 127.0.0.1:119: running scripts/inn-up.sh", flush=True)
    subprocess.run(["bash", str(INN_UP)], check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def inn_purge() -> bool:
    """Empty INN's spool (inn-down.sh --purge, inn-up.sh); False if skipped because INN is in use."""
    deadline = time.monotonic() + 60
    while (busy := _inn_clients()) and time.monotonic() < deadline:
        print(f"  INN has {busy} client connection(s) open; waiting before the purge ...", flush=True)
        time.sleep(5)
    if _inn_clients():
        print("  WARNING: INN is still in use by another client: NOT purging its spool", flush=True)
        return False
    t0 = time.perf_counter()
    subprocess.run(["bash", str(INN_DOWN), "--purge"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    subprocess.run(["bash", str(INN_UP)], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    print(f"  INN spool purged and INN restarted in {time.perf_counter() - t0:.1f} s", flush=True)
    return True


def innd_cpu_s() -> float | None:
    """innd's CPU plus its reaped children's (the nnrpd of each POST connection), in seconds."""
    try:
        pid = int(INND_PID.read_text().split()[0])
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    # After ")": state is field 3, so utime/stime/cutime/cstime (14-17) are [11:15].
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sink:
    """The discard NNTP sink as a child process on an ephemeral loopback port."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SINK), "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 3 or line[0] != "LISTENING":
            self.close()
            raise RuntimeError(f"discard sink did not start: {line!r}")
        self.port = int(line[2])

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid)

    def close(self) -> dict[str, Any]:
        """Stop it (by its own pid) and return its totals."""
        if self.proc.poll() is not None:
            return {}
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        try:
            totals: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {}
        return totals


# --------------------------------------------------------------------------
# Child processes: each measurement runs alone in a fresh interpreter
# --------------------------------------------------------------------------

# Kept as source text so the child imports nothing of this module: its RSS
# is the interpreter, the code under test and its imports, nothing else.
_CHILD_PRELUDE = r"""
import json, os, resource, sys, time

def _mem():
    out = {}
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith((b"VmHWM:", b"VmRSS:")):
                k, v = line.split(b":", 1)
                out[k.decode()] = int(v.split()[0]) * 1024
    return out

def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime

def _csw():
    # All threads, ended ones included: each is a thread handoff (queue wake-up or GIL hand-over).
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_nvcsw + r.ru_nivcsw

spec = json.loads(sys.argv[1])
"""

_CHILD_INDEX = _CHILD_PRELUDE + r"""
from usenetsync_cli.pipeline.index import index_folder
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

with State.open(Home.resolve(spec["home"])) as state:
    s = index_folder(state, spec["root"])
print(json.dumps({"files": s.files, "bytes": s.bytes}))
"""

_CHILD_UPLOAD = _CHILD_PRELUDE + r"""
# Exactly as usenetsync's main() does first: without it seal + yEnc run ~8x slower.
from usenetsync_cli.cli.app import _tune_allocator
_tune_allocator()
import threading
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.upload import UploadOptions, upload_folder
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

state = State.open(Home.resolve(spec["home"]))
folder = catalog.get_folder(state.catalog, os.fsencode(spec["root"]))
assert folder is not None, "folder not indexed"
server = ServerSpec(name="bench", host=spec["host"], port=spec["port"], connections=spec["connections"],
                    timeout=60.0, groups=(spec["group"],))
opts = UploadOptions(servers=[server], segment_size=spec["segment_size"], check_delay=spec["check_delay"])
post_end = [0.0]
peak_threads = [0]

def progress(p):
    # The collector reports the last post result at once (done == total): that is the end of posting.
    if p.phase == "post" and p.segments_done >= p.segments_total:
        post_end[0] = time.perf_counter()
    peak_threads[0] = max(peak_threads[0], threading.active_count())

base = _mem()
u0, s0 = _cpu()
w0 = _csw()
t0 = time.perf_counter()
summary = upload_folder(state, folder, opts, progress=progress)
wall = time.perf_counter() - t0
u1, s1 = _cpu()
w1 = _csw()
state.close()
end = _mem()
print(json.dumps({
    "wall_s": wall, "post_s": (post_end[0] - t0) if post_end[0] else wall, "cpu_user_s": u1 - u0,
    "cpu_sys_s": s1 - s0, "peak_rss": end["VmHWM"], "rss_after_imports": base["VmRSS"],
    "threads": peak_threads[0], "ctx_switches": w1 - w0, "summary": summary.to_dict(),
}))
"""

_CHILD_BASELINE = _CHILD_PRELUDE + r"""
import itertools, socket, threading, uuid
import sabctools

n, size, conns = spec["articles"], spec["article_payload"], spec["connections"]
token = uuid.uuid4().hex
# Pre-encoded before timing: yEnc of random bytes of our sealed-segment size, with
# headers like ours (From, Newsgroups, Subject, Message-ID, Date), so INN does the same work.
date = b"Date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()).encode() + b"\r\n"
articles = []
for i in range(n):
    data = os.urandom(size)
    enc, crc = sabctools.yenc_encode(data)
    head = (b"From: bench <bench@example.invalid>\r\nNewsgroups: " + spec["group"].encode() + b"\r\n"
            b"Subject: bench %d\r\nMessage-ID: <b%d.%s@baseline.invalid>\r\n" % (i, i, token.encode()) + date + b"\r\n")
    body = (b"=ybegin part=1 total=1 line=128 size=%d name=b%d.bin\r\n=ypart begin=1 end=%d\r\n" % (size, i, size)
            + enc + b"\r\n=yend size=%d part=1 pcrc32=%08x crc32=%08x\r\n.\r\n" % (size, crc, crc))
    articles.append(head + body)
wire = sum(len(a) for a in articles)
counter = itertools.count()
errors = []

def readline(s):
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf

def poster():
    try:
        s = socket.create_connection((spec["host"], spec["port"]), timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        readline(s)
        while True:
            i = next(counter)
            if i >= n:
                break
            s.sendall(b"POST\r\n")
            line = readline(s)
            if not line.startswith(b"340"):
                raise RuntimeError(f"POST: {line!r}")
            s.sendall(articles[i])
            line = readline(s)
            if not line.startswith(b"240"):
                raise RuntimeError(f"article {i}: {line!r}")
        s.sendall(b"QUIT\r\n")
        s.close()
    except Exception as e:
        errors.append(repr(e))

u0, s0 = _cpu()
t0 = time.perf_counter()
threads = [threading.Thread(target=poster) for _ in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.perf_counter() - t0
u1, s1 = _cpu()
if errors:
    sys.exit("baseline failed: " + "; ".join(errors[:3]))
print(json.dumps({"wall_s": wall, "cpu_user_s": u1 - u0, "cpu_sys_s": s1 - s0, "articles": n,
                  "wire_bytes": wire, "peak_rss": _mem()["VmHWM"]}))
"""


def _child_env(code: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("USENETSYNC_HOME", None)
    # The benchmark measures the working tree (or, with --compare-code, another checkout), installed or not.
    env["PYTHONPATH"] = str(code or REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_child(source: str, spec: dict[str, Any], *, prefix: list[str] | None = None,
              code: Path | None = None) -> dict[str, Any]:
    # The whole child, seen from here (interpreter start, imports, exit): spawn-to-reap wall and its rusage.
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*(prefix or []), sys.executable, "-c", source, json.dumps(spec)],
        capture_output=True, text=True, env=_child_env(code), cwd=str(code or REPO), check=False,
    )
    proc_wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec.get('kind')} failed ({proc.returncode}):\n{proc.stderr.strip()[-4000:]}")
    # The last JSON line: a profiler wrapping the child may print its own lines after it.
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"child {spec.get('kind')} printed no result:\n{proc.stdout[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["proc_wall_s"] = proc_wall
    result["proc_cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return result


# --------------------------------------------------------------------------
# One measurement of each kind
# --------------------------------------------------------------------------


@dataclass
class Series:
    """One kind of run on one folder: its per-run results, reduced to per-run figures."""

    kind: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.runs if r.get(key) is not None]

    def stat(self, key: str, nd: int = 2) -> dict[str, float] | None:
        v = self.values(key)
        if not v:
            return None
        return {"median": round(statistics.median(v), nd), "min": round(min(v), nd), "max": round(max(v), nd)}


def settle() -> None:
    """Flush dirty pages before a timed run.

    INN writes ~1.1 GB per large run; left to the flusher, that writeback (CPU
    in kworkers and virtio on this 2-core VM) lands in whichever run comes
    next, the sink runs included. Measured: ours -> sink fell from ~440 to
    ~375 MB/s when it followed an INN run without this.
    """
    os.sync()


def fresh_home(workdir: Path, root: Path, tag: str, code: Path | None = None) -> Path:
    """A new state home with ``root`` indexed (indexing is not part of any timing)."""
    home = Path(tempfile.mkdtemp(prefix=f"home-{tag}-", dir=workdir))
    run_child(_CHILD_INDEX, {"kind": "index", "home": str(home), "root": str(root)}, code=code)
    return home


def run_ours(
    workdir: Path, root: Path, tag: str, host: str, port: int, connections: int, check_delay: float,
    *, server_cpu: Callable[[], float | None] | None = None, prefix: list[str] | None = None,
    code: Path | None = None,
) -> dict[str, Any]:
    home = fresh_home(workdir, root, tag, code)
    warm(root)
    settle()
    try:
        c0 = server_cpu() if server_cpu else None
        r = run_child(
            _CHILD_UPLOAD,
            {"kind": f"ours-{tag}", "home": str(home), "root": str(root), "host": host, "port": port,
             "connections": connections, "group": GROUP, "segment_size": SEGMENT_SIZE, "check_delay": check_delay},
            prefix=prefix, code=code,
        )
        c1 = server_cpu() if server_cpu else None
    finally:
        shutil.rmtree(home, ignore_errors=True)
    s = r["summary"]
    if not s["complete"] or s["posted_now"] != s["segments"] or s["failed"] or s["rejected"]:
        raise RuntimeError(f"upload {tag} did not complete cleanly: {json.dumps(s)[:2000]}")
    payload = s["bytes_posted"]
    cpu = r["cpu_user_s"] + r["cpu_sys_s"]
    out = {
        "wall_s": round(r["wall_s"], 3),
        "post_s": round(r["post_s"], 3),
        "mb_s": payload / 1e6 / r["wall_s"],
        "post_mb_s": payload / 1e6 / r["post_s"],
        "art_s": s["posted_now"] / r["wall_s"],
        "cpu_s": cpu,
        "cpu_user_s": r["cpu_user_s"],
        "cpu_sys_s": r["cpu_sys_s"],
        "cpu_s_per_gb": cpu / (payload / 1e9),
        "peak_rss_mb": r["peak_rss"] / 1e6,
        "rss_after_imports_mb": r["rss_after_imports"] / 1e6,
        "efficiency": s["efficiency"],
        "articles": s["posted_now"],
        "payload_bytes": payload,
        "wire_bytes": s["wire_bytes_posted"],
        "threads": r["threads"],
        "ctxsw_per_article": r["ctx_switches"] / s["posted_now"],
        "retries": s["retries"],
        "reconnects": s["reconnects"],
        "proc_wall_s": r["proc_wall_s"],  # the whole child: interpreter start, imports, state open/close
        "proc_cpu_s": r["proc_cpu_s"],
    }
    if c0 is not None and c1 is not None:
        out["server_cpu_ms_per_article"] = (c1 - c0) * 1000 / s["posted_now"]
    return out


def run_baseline(
    host: str, port: int, connections: int, articles: int, payload: int, *,
    server_cpu: Callable[[], float | None] | None = None,
) -> dict[str, Any]:
    # Same article size as ours: the mean plaintext payload plus the seal overhead.
    settle()
    c0 = server_cpu() if server_cpu else None
    r = run_child(
        _CHILD_BASELINE,
        {"kind": "baseline", "host": host, "port": port, "connections": connections, "group": GROUP,
         "articles": articles, "article_payload": payload + SEAL_OVERHEAD},
    )
    c1 = server_cpu() if server_cpu else None
    total = articles * payload  # in the same unit as ours: plaintext payload bytes
    cpu = r["cpu_user_s"] + r["cpu_sys_s"]
    out = {
        "wall_s": round(r["wall_s"], 3),
        "mb_s": total / 1e6 / r["wall_s"],
        "art_s": articles / r["wall_s"],
        "cpu_s": cpu,
        "cpu_s_per_gb": cpu / (total / 1e9),
        "wire_bytes": r["wire_bytes"],
        "articles": articles,
    }
    if c0 is not None and c1 is not None:
        out["server_cpu_ms_per_article"] = (c1 - c0) * 1000 / articles
    return out


def bench_folder(
    workdir: Path, fs: FolderSpec, root: Path, runs: int, connections: int, check_delay: float,
    sink_check_delay: float, sink: Sink, compare: Path | None = None,
) -> dict[str, Any]:
    print(f"\n== {fs.name}: {fs.files:,} files", flush=True)
    # Untimed warm-up into the sink: loads the interpreter and libraries into
    # the page cache, and tells the baseline how many articles of what size to post.
    w = run_ours(workdir, root, f"{fs.name}-warm", "127.0.0.1", sink.port, connections, sink_check_delay)
    n_art = w["articles"]
    mean_payload = round(w["payload_bytes"] / n_art)
    print(f"  plan: {n_art:,} articles, mean payload {mean_payload:,} B (warm-up into the sink: "
          f"{w['mb_s']:.0f} MB/s)", flush=True)
    series = {k: Series(k) for k in ("ours_inn", "base_inn", "ours_sink", "base_sink")}
    if compare is not None:
        series["prev_sink"] = Series("prev_sink")
    loads: list[float] = []
    for i in range(runs):
        loads.append(os.getloadavg()[0])
        inn_up()
        order = ("ours", "base") if i % 2 == 0 else ("base", "ours")
        for kind in order:
            if kind == "ours":
                series["ours_inn"].runs.append(
                    run_ours(workdir, root, f"{fs.name}-inn", "127.0.0.1", 119, connections, check_delay,
                             server_cpu=innd_cpu_s))
            else:
                series["base_inn"].runs.append(
                    run_baseline("127.0.0.1", 119, connections, n_art, mean_payload, server_cpu=innd_cpu_s))
        for kind in order:
            if kind == "ours":
                series["ours_sink"].runs.append(
                    run_ours(workdir, root, f"{fs.name}-sink", "127.0.0.1", sink.port, connections, sink_check_delay,
                             server_cpu=sink.cpu_s))
            else:
                series["base_sink"].runs.append(
                    run_baseline("127.0.0.1", sink.port, connections, n_art, mean_payload, server_cpu=sink.cpu_s))
        if compare is not None:
            # The other checkout's upload into the same sink, in the same iteration.
            series["prev_sink"].runs.append(
                run_ours(workdir, root, f"{fs.name}-prev", "127.0.0.1", sink.port, connections, sink_check_delay,
                         server_cpu=sink.cpu_s, code=compare))
            prev, cur = series["prev_sink"].runs[-1], series["ours_sink"].runs[-1]
            cur["vs_prev"] = cur["mb_s"] / prev["mb_s"]
            cur["cpu_vs_prev"] = cur["cpu_s_per_gb"] - prev["cpu_s_per_gb"]
        oi, bi = series["ours_inn"].runs[-1], series["base_inn"].runs[-1]
        oi["ratio"] = oi["mb_s"] / bi["mb_s"]
        oi["post_ratio"] = oi["post_mb_s"] / bi["mb_s"]
        loads.append(os.getloadavg()[0])
        os_, bs = series["ours_sink"].runs[-1], series["base_sink"].runs[-1]
        print(
            f"  run {i + 1}/{runs}: INN ours {oi['mb_s']:.1f} MB/s vs baseline {bi['mb_s']:.1f} MB/s "
            f"(ratio {oi['ratio']:.3f}); sink ours {os_['mb_s']:.0f} MB/s, {os_['cpu_s_per_gb']:.2f} CPU-s/GB, "
            f"RSS {os_['peak_rss_mb']:.0f} MB; sink baseline {bs['mb_s']:.0f} MB/s (load {loads[-2]:.2f} -> "
            f"{loads[-1]:.2f})",
            flush=True,
        )
    result: dict[str, Any] = {
        "folder": fs.name,
        "files": fs.files,
        "articles": n_art,
        "mean_payload": mean_payload,
        "payload_bytes": w["payload_bytes"],
        "loadavg_1min": {"min": min(loads), "max": max(loads), "median": round(statistics.median(loads), 2)},
    }
    keys = ("mb_s", "post_mb_s", "art_s", "cpu_s_per_gb", "peak_rss_mb", "rss_after_imports_mb", "efficiency",
            "wall_s", "post_s", "ratio", "post_ratio", "server_cpu_ms_per_article", "threads", "ctxsw_per_article",
            "vs_prev", "cpu_vs_prev")
    for name, s in series.items():
        result[name] = {k: st for k in keys
                        if (st := s.stat(k, 4 if k in ("efficiency", "ratio", "post_ratio", "vs_prev") else 2))
                        is not None}
        result[name]["runs"] = s.runs
    om, bm = result["ours_inn"]["mb_s"]["median"], result["base_inn"]["mb_s"]["median"]
    result["ratio_of_medians"] = round(om / bm, 4)
    return result


# --------------------------------------------------------------------------
# Profiling
# --------------------------------------------------------------------------


def profile_runs(workdir: Path, root: Path, fs: FolderSpec, sink: Sink, connections: int, check_delay: float,
                 sink_check_delay: float, native: bool, gil: bool) -> dict[str, Any]:
    """One extra upload of ``root`` into the sink and one into INN under py-spy; print where the time goes."""
    if shutil.which("py-spy") is None:
        print("  py-spy not found (pip install py-spy): skipping the profile", flush=True)
        return {}
    out: dict[str, Any] = {}
    for target, port, delay in (("sink", sink.port, sink_check_delay), ("inn", 119, check_delay)):
        raw = workdir / f"profile-{fs.name}-{target}.txt"
        prefix = ["py-spy", "record", "--rate", "250", "--format", "raw", "--threads",
                  "--output", str(raw), *(["--native"] if native else []),
                  *(["--gil"] if gil else []), "--"]
        r = run_ours(workdir, root, f"{fs.name}-prof", "127.0.0.1", port, connections, delay, prefix=prefix)
        what = "samples of the thread holding the GIL" if gil else "samples of non-idle threads"
        print(f"\n-- py-spy, {fs.name} -> {target}: {what} ({r['mb_s']:.0f} MB/s under the profiler; "
              f"raw stacks: {raw})")
        out[target] = {"file": str(raw), "mb_s": round(r["mb_s"], 1), "mode": "gil" if gil else "active",
                       "top": summarize_profile(raw, gil=gil)}
    return out


def summarize_profile(raw: Path, top: int = 12, *, gil: bool = True) -> dict[str, Any]:
    """Samples per thread, and the top functions by own and by inclusive samples, from py-spy raw output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    own_by_thread: dict[str, Counter[str]] = defaultdict(Counter)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        try:
            count = int(count_s)
        except ValueError:
            continue
        frames = stack.split(";")
        frames = [f for f in frames[1:] if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        # Thread names are like 'thread (0x7f..)'; the pipeline names them via threading, which py-spy
        # cannot see, so the outermost function tells which stage the thread is.
        role = _role(frames)
        by_thread[role] += count
        leaf = frames[-1]
        own[leaf] += count
        own_by_thread[role][leaf] += count
        for f in set(frames):
            incl[f] += count
    if not total:
        return {}
    if gil:
        print(f"   {total} samples of the GIL holder, by thread role (share of GIL-held time):")
    else:
        print(f"   {total} samples by thread role (py-spy's idle detection misses some lock and recv waits, e.g. "
              f"Condition.wait, _recv_into):")
    for role, c in by_thread.most_common():
        print(f"     {c / total:6.1%}  {role}")
        for leaf, lc in own_by_thread[role].most_common(4):
            print(f"               {lc / total:6.1%}  {leaf}")
    print("   top own-time functions:")
    for f, c in own.most_common(top):
        print(f"     {c / total:6.1%}  {f}")
    return {
        "samples": total,
        "by_role": {k: round(v / total, 4) for k, v in by_thread.most_common()},
        "own": {k: round(v / total, 4) for k, v in own.most_common(top)},
        "inclusive": {k: round(v / total, 4) for k, v in incl.most_common(top * 2)},
    }


def _role(frames: list[str]) -> str:
    text = ";".join(frames)
    for key, role in (("encoder (usenetsync_cli/pipeline/upload.py", "encoder"),
                      ("feeder (usenetsync_cli/pipeline/upload.py", "feeder"),
                      ("_run (usenetsync_cli/pipeline/poster.py", "poster"),
                      ("check_round", "collector: check (STAT)"),
                      ("post_round", "collector: post round"),
                      ("plan_folder", "collector: plan"),
                      ("upload_folder", "collector: other")):
        if key in text:
            return role
    return "other (imports, state open/close)"


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def _fmt(st: dict[str, float] | None, fmt: str = "{:,.1f}") -> str:
    if not st:
        return "–"
    return f"{fmt.format(st['median'])} [{fmt.format(st['min'])}–{fmt.format(st['max'])}]"


def report(results: list[dict[str, Any]], connections: int, check_delay: float, sink_check_delay: float
           ) -> dict[str, Any]:
    print("\n## bench_upload results\n")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} "
          f"{platform.release()}; {connections} connections; check_delay {check_delay:g} s into INN, "
          f"{sink_check_delay:g} s into the sink; "
          f"segment {SEGMENT_SIZE:,} B")
    print("\n| folder | run | MB/s | art/s | client CPU-s/GB | peak RSS MB | efficiency | INN/sink CPU ms/art |")
    print("|---|---|---|---|---|---|---|---|")
    labels = (("ours_inn", "ours -> INN"), ("base_inn", "baseline -> INN"),
              ("ours_sink", "ours -> sink"), ("base_sink", "baseline -> sink"), ("prev_sink", "--compare-code -> sink"))
    for r in results:
        for key, label in labels:
            if key not in r:
                continue
            s = r[key]
            print(f"| {r['folder']} | {label} | {_fmt(s.get('mb_s'))} | {_fmt(s.get('art_s'))} | "
                  f"{_fmt(s.get('cpu_s_per_gb'), '{:.2f}')} | {_fmt(s.get('peak_rss_mb'))} | "
                  f"{_fmt(s.get('efficiency'), '{:.4f}') if key.startswith(('ours', 'prev')) else '–'} | "
                  f"{_fmt(s.get('server_cpu_ms_per_article'), '{:.2f}')} |")
    for r in results:
        o = r["ours_inn"]
        print(f"{r['folder']}: {r['articles']:,} articles of {r['mean_payload']:,} B mean payload; "
              f"ours INN post phase alone {_fmt(o.get('post_mb_s'))} MB/s (check {o['wall_s']['median'] - o['post_s']['median']:.2f} s); "
              f"context switches per article {_fmt(o.get('ctxsw_per_article'))} (INN), "
              f"{_fmt(r['ours_sink'].get('ctxsw_per_article'))} (sink); "
              f"load {r['loadavg_1min']['min']:.2f}–{r['loadavg_1min']['max']:.2f}")
    for r in results:
        if "prev_sink" in r:
            o = r["ours_sink"]
            print(f"{r['folder']}: into the sink, this code / --compare-code (paired per iteration): throughput "
                  f"{_fmt(o.get('vs_prev'), '{:.3f}')}x, CPU-s/GB {_fmt(o.get('cpu_vs_prev'), '{:+.2f}')}")
    derived: dict[str, Any] = {"targets": {}}
    print("\n| target | folder | measured: median [min–max] | target | verdict |")
    print("|---|---|---|---|---|")

    def target(key: str, folder: str, st: dict[str, float], limit: float, higher: bool, fmt: str) -> None:
        ok = st["median"] >= limit if higher else st["median"] <= limit
        margin = (st["median"] / limit - 1) * 100
        derived["targets"][f"{key}_{folder}"] = {"value": st, "target": limit, "met": ok,
                                                 "margin_pct": round(margin, 1)}
        print(f"| {key} | {folder} | {_fmt(st, fmt)} | {'≥' if higher else '≤'} {limit:g} | "
              f"{'met' if ok else '**MISSED**'} ({margin:+.0f}%) |")

    for r in results:
        f = r["folder"]
        target("ratio ours/baseline into INN (paired)", f, r["ours_inn"]["ratio"], TARGET_RATIO, True, "{:.3f}")
        target("MB/s into sink", f, r["ours_sink"]["mb_s"], TARGET_SINK_MBPS, True, "{:,.0f}")
        target("client CPU-s/GB into sink", f, r["ours_sink"]["cpu_s_per_gb"], TARGET_SINK_CPU_PER_GB, False, "{:.2f}")
        worst = {k: max(r["ours_inn"]["peak_rss_mb"][k], r["ours_sink"]["peak_rss_mb"][k])
                 for k in ("median", "min", "max")}
        target("peak RSS MB (ours, INN and sink)", f, worst, TARGET_PEAK_RSS_MB, False, "{:.0f}")
    return derived


def check_spool_space(large_bytes: int, small_bytes: int, runs: int, profile: bool) -> None:
    # Per iteration INN stores ours + baseline of each folder; yEnc adds ~3.2 %, tradspool a block per article.
    need = int((large_bytes + small_bytes) * 2 * runs * 1.08) + (large_bytes * 2 if profile else 0) + (2 << 30)
    free = shutil.disk_usage(SPOOL if SPOOL.exists() else "/").free
    if free < need:
        sys.exit(f"bench_upload: refusing to run: INN's spool needs ~{need / 1e9:.1f} GB, {free / 1e9:.1f} GB free "
                 f"(purge it: bash scripts/inn-down.sh --purge && bash scripts/inn-up.sh)")
    print(f"disk: {free / 1e9:.1f} GB free for the INN spool, this run stores ~{need / 1e9:.1f} GB", flush=True)


def main(argv: list[str] | None = None) -> int:
    # Imported here, not at the top: it imports this module (by name) for the runners it shares.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import upload_vs_nyuu

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=None, help="timed iterations (default 5, --quick 3)")
    p.add_argument("--quick", action="store_true", help="256 MiB large folder and 3 runs")
    p.add_argument("--large-files", type=int, default=None, help="files in the large folder (default 8, --quick 2)")
    p.add_argument("--large-mib", type=int, default=128, help="size of each large file in MiB (default 128)")
    p.add_argument("--small-files", type=int, default=10_000, help="files in the small folder (default 10000)")
    p.add_argument("--only", choices=("large", "small"), default=None, help="run one folder only")
    p.add_argument("--connections", type=int, default=4, help="NNTP connections, ours and baseline (default 4)")
    p.add_argument("--check-delay", type=float, default=CHECK_DELAY,
                   help=f"UploadOptions.check_delay (default {CHECK_DELAY:g} s, the CLI's)")
    p.add_argument("--sink-check-delay", type=float, default=SINK_CHECK_DELAY,
                   help=f"check_delay for the runs into the sink (default {SINK_CHECK_DELAY:g} s)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/usenetsync-bench-upload"),
                   help="where folders are cached and states are made (default /tmp/usenetsync-bench-upload)")
    p.add_argument("--purge", action=argparse.BooleanOptionalAction, default=True,
                   help="empty INN's spool before starting (default on; skipped while INN has other clients)")
    p.add_argument("--profile", action="store_true",
                   help="after timing, one upload per folder into the sink and into INN under py-spy")
    p.add_argument("--native", action="store_true", help="with --profile: include native (C) frames")
    p.add_argument("--profile-mode", choices=("gil", "active"), default="gil",
                   help="with --profile: 'gil' samples only the thread holding the GIL (what serializes the "
                   "pipeline; default), 'active' every thread py-spy thinks is not idle (it counts lock and "
                   "recv waits as busy, so it misleads here)")
    p.add_argument("--json", action="store_true", help="end with one JSON line holding every figure")
    p.add_argument("--compare-code", type=Path, default=None, metavar="DIR",
                   help="also upload into the sink with the usenetsync_cli of another checkout (e.g. a `git worktree`"
                        " of an older commit), interleaved, and print the paired throughput ratio and CPU-s/GB change")
    upload_vs_nyuu.add_arguments(p)
    a = p.parse_args(argv)
    runs = a.runs or (3 if a.quick else 5)
    if a.vs_nyuu:
        a.workdir = a.workdir.absolute()
        doc = upload_vs_nyuu.run(a, runs)
        print(f"\ntotal time {doc['total_s'] / 60:.1f} min; waited {doc['peer_wait_s']} s for other benchmarks")
        if a.json:
            print(json.dumps({"bench": "bench_upload", "mode": "vs_nyuu",
                              "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                          "platform": platform.platform()},
                              "runs": runs, "connections": a.connections, "segment_size": SEGMENT_SIZE,
                              "sink_check_delay": SINK_CHECK_DELAY,
                              "units": {"MiB": "2^20 bytes of plaintext payload (the file's bytes)",
                                        "cpu_s_per_gib": "user+sys CPU-seconds per 2^30 bytes of the file",
                                        "rss": "VmHWM, MB = 10^6 bytes"},
                              **doc}, sort_keys=True))
        return 0
    large_files = a.large_files or (2 if a.quick else 8)
    if runs < 3:
        print(f"note: --runs {runs} < 3: medians are not meaningful", file=sys.stderr)
    large = FolderSpec("large", large_files, a.large_mib << 20, a.large_mib << 20)
    small = FolderSpec("small", a.small_files, 1 << 10, 64 << 10)
    folders = [fs for fs in (large, small) if a.only in (None, fs.name)]
    t_start = time.perf_counter()
    a.workdir = a.workdir.absolute()
    a.workdir.mkdir(parents=True, exist_ok=True)
    check_spool_space(sum(_sizes(large)) if large in folders else 0,
                      sum(_sizes(small)) if small in folders else 0, runs, a.profile)
    purged = inn_purge() if a.purge else False
    inn_up()
    roots: dict[str, Path] = {}
    for fs in folders:
        root, meta = ensure_folder(a.workdir, fs)
        print(f"  {fs.name}: {root} ({meta['bytes'] / 1e9:.3f} GB, {'cached' if meta['reused'] else 'built'})",
              flush=True)
        roots[fs.name] = root
    # Stale states of an interrupted run would only eat disk.
    for stale in a.workdir.glob("home-*"):
        shutil.rmtree(stale, ignore_errors=True)
    sink = Sink()
    results = []
    profiles: dict[str, Any] = {}
    try:
        for fs in folders:
            results.append(bench_folder(a.workdir, fs, roots[fs.name], runs, a.connections, a.check_delay,
                                        a.sink_check_delay, sink, a.compare_code))
        derived = report(results, a.connections, a.check_delay, a.sink_check_delay)
        if a.profile:
            for fs in folders:
                profiles[fs.name] = profile_runs(a.workdir, roots[fs.name], fs, sink, a.connections,
                                                 a.check_delay, a.sink_check_delay, a.native, a.profile_mode == "gil")
    finally:
        sink_totals = sink.close()
    total_s = time.perf_counter() - t_start
    print(f"\ntotal time {total_s / 60:.1f} min; INN spool purged at start: {purged}")
    if a.json:
        doc = {
            "bench": "bench_upload",
            "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "runs": runs, "connections": a.connections, "check_delay": a.check_delay,
            "sink_check_delay": a.sink_check_delay,
            "segment_size": SEGMENT_SIZE, "purged": purged, "total_s": round(total_s, 1),
            "units": {"MB": "10^6 bytes of plaintext payload", "rss": "VmHWM of the child, MB",
                      "cpu_s_per_gb": "client user+sys around upload_folder / GB payload"},
            "results": results, "sink_totals": sink_totals, "profiles": profiles, **derived,
        }
        print(json.dumps(doc, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
