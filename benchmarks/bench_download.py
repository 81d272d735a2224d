#!/usr/bin/env python3
"""Benchmark of ``usenetsync download`` against INN and a bare pipelined-BODY socket loop.

Owns: publishing (once, cached) two public shares to the local INN and
measuring the real ``usenetsync download`` command on them, every run in a
fresh child process into an empty destination:

1. ours: ``usenetsync download SHARE_ID DEST --connections N --json``, run by a
   tiny launcher (``python3 -c``) that calls the CLI's ``main()`` (which calls
   ``_tune_allocator()`` first) and, at exit, prints the child's ``VmHWM``
   (peak RSS) and its own CPU time. The launcher also wraps
   ``download_records`` (the fetch/verify/write pipeline) to time it and its
   CPU alone. MB/s is plaintext payload over the ``download_records`` time;
   CPU-s/GB is the WHOLE child process (``RUSAGE_CHILDREN`` delta in the
   parent: interpreter start, imports, opening the share index, the pipeline).
2. baseline, in the same iteration: a bare pipelined BODY loop over the same
   Message-IDs (the data articles of the share, taken from the publisher's
   state) with the same connection count: plain ``socket``, one thread per
   connection, up to ``--window`` requests in flight (refilled at half; the
   download keeps up to 8 in flight too), ``recv_into`` a 1 MiB buffer and scanning
   for the ``\\r\\n.\\r\\n`` terminator, bytes discarded. It is what the server
   and the loopback can deliver to a client that does nothing with the bytes.

Kinds are interleaved per iteration and their order alternates. One untimed
warm-up of each comes first (it also checks the downloaded bytes against the
source). Before each run the destination is deleted and ``os.sync()`` flushes
the previous run's writes, so no run pays for another's writeback; the page
cache stays warm (INN's spool and the source are in memory).

Index scaling: a second share of ``--tiny-files`` one-byte files (they pack
into a few articles, so nearly all the share is its index) is downloaded
``--tiny-runs`` times; its peak RSS against the 1 GB share's shows whether the
index is streamed (flat memory) or held.

Coordination: the machine has 2 cores, and benchmarks/bench_upload.py (which
may also purge INN) and the other benchmarks/bench_*.py must not run at the
same time: before publishing and before every timed iteration this script
waits until ``pgrep -af 'bench_[a-z0-9_]+\.py'`` finds none but itself. If INN
lost the articles (a purge), the share is published anew and a failed
iteration is run again.

Where the time goes: ``--profile`` samples one more download with py-spy (all
threads); ``--breakdown`` runs one download with wrappers that record, per
call, wall time and thread CPU time of each stage (wall minus CPU is waiting,
mostly for the GIL), then ablations that leave out the file writes, or the
decryption, hashing and writes, interleaved with the bare loop.

Only one bench_download.py runs at a time on the machine (a lock file in /tmp).

Usage:
    python3 benchmarks/bench_download.py                       # 8 x 128 MiB, 200k tiny files, 5 runs
    python3 benchmarks/bench_download.py --runs 5 --tiny-files 20000 --tiny-files 200000 --json
    python3 benchmarks/bench_download.py --runs 3 --tiny-files 0 --profile --breakdown
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
INN_UP = REPO / "scripts" / "inn-up.sh"
HOST, PORT, GROUP = "127.0.0.1", 119, "alt.binaries.test"
LAYOUT_VERSION = 2  # bump when a folder's layout changes, so cached folders and shares are rebuilt
SEED = 20240611

LOCK_FILE = Path("/tmp/usenetsync-bench-download.lock")
TARGET_RATIO = 0.8  # ours / bare BODY loop
TARGET_CPU_PER_GB = 2.0  # CPU-seconds of the whole client process per GB (10^9 B) of payload
TARGET_PEAK_RSS_MB = 300.0  # MB = 10^6 bytes, the stricter reading


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Coordination with the other benchmark, INN
# --------------------------------------------------------------------------


def _peers() -> list[str]:
    """Other benchmarks running now: bench_upload.py (which may purge INN) and any other benchmarks/bench_*.py."""
    try:
        out = subprocess.run(["pgrep", "-af", r"bench_[a-z0-9_]+\.py"], capture_output=True, text=True).stdout
    except OSError:
        return []
    me = str(os.getpid())
    return [ln for ln in out.splitlines()
            if ln.split()[0] != me and "bench_download" not in ln and "pgrep" not in ln]


def wait_for_peers(allow: bool) -> float:
    """Block while another benchmark runs; returns the seconds waited."""
    if allow:
        return 0.0
    t0 = time.monotonic()
    announced = False
    while _peers():
        if not announced:
            log("  waiting for other benchmarks to finish (2 cores: concurrent benchmarks ruin each other): "
                + "; ".join(" ".join(p.split()[1:4])[:80] for p in _peers()[:3]) + " ...")
            announced = True
        time.sleep(10)
    waited = time.monotonic() - t0
    if announced:
        log(f"  ... they finished after {waited:.0f} s; settling 10 s")
        time.sleep(10)
    return waited


def _greets(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=timeout) as s:
            return s.recv(512).startswith((b"200", b"201"))
    except OSError:
        return False


def inn_up() -> None:
    if not _greets():
        log("  INN is not answering on 127.0.0.1:119: running scripts/inn-up.sh")
        subprocess.run(["bash", str(INN_UP)], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        if not _greets():
            raise SystemExit("INN does not answer on 127.0.0.1:119 after inn-up.sh")


def code_state() -> dict[str, Any]:
    """Which code was measured: HEAD and the files modified in the working tree (read-only git calls)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", "--no-optional-locks", *a], capture_output=True, text=True, cwd=REPO,
                                  timeout=20).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""
    dirty = [ln[3:] for ln in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    digest = hashlib.sha256()
    for rel in ("usenetsync_cli/pipeline/download.py", "usenetsync_cli/nntp/connection.py",
                "usenetsync_cli/nntp/response.py", "usenetsync_cli/core/article.py"):
        try:
            digest.update((REPO / rel).read_bytes())
        except OSError:
            pass
    return {"head": git("rev-parse", "--short", "HEAD"), "modified": dirty,
            "download_path_sha256": digest.hexdigest()[:12]}


def load() -> float:
    return os.getloadavg()[0]


# --------------------------------------------------------------------------
# The synthetic folders
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderSpec:
    name: str  # "large" or "tiny"
    files: int
    size: int  # every file has exactly this size
    per_dir: int = 1000

    @property
    def key(self) -> str:
        return f"{self.name}-{self.files}x{self.size}"

    @property
    def total(self) -> int:
        return self.files * self.size


def _file_path(root: Path, fs: FolderSpec, i: int) -> Path:
    if fs.name == "large":
        return root / f"large{i:03d}.bin"
    return root / f"d{i // fs.per_dir:04d}" / f"f{i:06d}.txt"


def ensure_folder(workdir: Path, fs: FolderSpec) -> Path:
    """The folder for ``fs``, reused when its marker matches (its content is random and fixed once written)."""
    root = workdir / "data" / fs.key
    marker = workdir / "data" / f"{fs.key}.json"  # outside the folder, or it would be shared too
    want = {"layout": LAYOUT_VERSION, "files": fs.files, "size": fs.size}
    if marker.exists() and root.is_dir():
        try:
            if json.loads(marker.read_text()) == want and all(
                _file_path(root, fs, i).stat().st_size == fs.size for i in (0, fs.files - 1)
            ):
                return root
        except (OSError, ValueError):
            pass
    log(f"  building {fs.key} ({fs.files:,} files of {fs.size:,} B) in {root}")
    shutil.rmtree(root, ignore_errors=True)
    marker.unlink(missing_ok=True)
    root.mkdir(parents=True)
    rng = random.Random(SEED + fs.files)
    for i in range(fs.files):
        p = _file_path(root, fs, i)
        if fs.name != "large" and i % fs.per_dir == 0:
            p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb", buffering=0) as f:
            if fs.size >= 1 << 20:
                left = fs.size
                while left:  # real, incompressible bytes without holding 128 MiB at once
                    n = min(8 << 20, left)
                    f.write(os.urandom(n))
                    left -= n
            else:
                f.write(rng.randbytes(fs.size))
    marker.write_text(json.dumps(want))
    return root


# --------------------------------------------------------------------------
# Publishing (cached), through the CLI as a user would
# --------------------------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["USENETSYNC_HOME"] = str(home)
    # The benchmark measures the working tree, installed or not.
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("USENETSYNC_DEBUG", None)
    return env


def cli(home: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "usenetsync_cli", *args], capture_output=True, text=True,
                          env=_env(home), cwd=str(REPO))
    if proc.returncode != 0:
        raise RuntimeError(f"usenetsync {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
    return proc.stdout


_CHILD_MSGIDS = r"""
import json, os, sys
from usenetsync_cli.core.msgid import segment_message_id
from usenetsync_cli.pipeline.upload import folder_context
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

# As tests/pipeline/upload_support.py message_ids(): every live segment of the folder (states 1, 2).
spec = json.loads(sys.argv[1])
with State.open(Home.resolve(spec["home"])) as state:
    folder = catalog.get_folder(state.catalog, os.fsencode(spec["root"]))
    assert folder is not None, "folder not indexed"
    ctx = folder_context(folder, (spec["group"],))
    ids = []
    for shard, conn in enumerate(state.shards):
        for seg_id, attempt, server_id in conn.execute(
            "SELECT seg_id, attempt, server_msgid FROM segments WHERE folder_id=? AND state IN (1,2) ORDER BY seg_id",
            (folder.folder_id,),
        ):
            ids.append(server_id or segment_message_id(ctx.keys.msgid_key, ctx.domains, shard, seg_id, attempt))
with open(spec["out"], "w") as f:
    f.write("\n".join(ids) + "\n")
print(json.dumps({"articles": len(ids)}))
"""


@dataclass
class Published:
    fs: FolderSpec
    root: Path
    share_id: str
    ids_file: Path
    articles: int
    publish_s: float | None = None  # None: reused from the cache

    @property
    def msgids(self) -> list[str]:
        return [ln for ln in self.ids_file.read_text().splitlines() if ln]


def stat_all(ids: list[str], window: int = 200) -> int:
    """How many of ``ids`` INN has (pipelined STAT over one raw socket)."""
    found = 0
    with socket.create_connection((HOST, PORT), timeout=30) as s:
        f = s.makefile("rb")
        f.readline()
        for i in range(0, len(ids), window):
            chunk = ids[i : i + window]
            s.sendall(b"".join(b"STAT " + m.encode() + b"\r\n" for m in chunk))
            for _ in chunk:
                found += f.readline().startswith(b"223")
        s.sendall(b"QUIT\r\n")
    return found


def ensure_published(workdir: Path, fs: FolderSpec, root: Path, *, force: bool) -> Published:
    home = workdir / f"home-{fs.key}"
    marker = workdir / f"published-{fs.key}.json"
    ids_file = workdir / f"msgids-{fs.key}.txt"
    if marker.exists() and not force:
        try:
            m = json.loads(marker.read_text())
            pub = Published(fs, root, m["share_id"], ids_file, m["articles"])
            if m.get("layout") == LAYOUT_VERSION and m.get("root") == str(root):
                ids = pub.msgids
                have = stat_all(ids)
                if have == len(ids) == pub.articles:
                    # Reading the index itself (open_share) is what the first download checks.
                    return pub
                log(f"  INN has {have:,} of the {len(ids):,} articles of {fs.key} (purged?): publishing anew")
        except (OSError, ValueError, KeyError) as e:
            log(f"  cache of {fs.key} unusable ({e}): publishing anew")
    shutil.rmtree(home, ignore_errors=True)
    marker.unlink(missing_ok=True)
    home.mkdir(parents=True)
    log(f"  publishing {fs.key} to {HOST}:{PORT} ({GROUP}) with USENETSYNC_HOME={home}")
    t0 = time.monotonic()
    cli(home, "server", "add", "local", "--host", HOST, "--group", GROUP)
    cli(home, "keys", "init", "--no-passphrase")
    cli(home, "index", str(root))
    name = fs.key
    cli(home, "share", "create", str(root), "--public", "--name", name)
    cli(home, "upload", str(root))
    share_id = cli(home, "share", "show", name, "--show-id").strip().splitlines()[-1].strip()
    if not share_id.startswith("us2"):
        raise RuntimeError(f"share show printed no share ID: {share_id!r}")
    publish_s = time.monotonic() - t0
    r = subprocess.run([sys.executable, "-c", _CHILD_MSGIDS,
                        json.dumps({"home": str(home), "root": str(root), "group": GROUP, "out": str(ids_file)})],
                       capture_output=True, text=True, env=_env(home), cwd=str(REPO))
    if r.returncode != 0:
        raise RuntimeError(f"reading the Message-IDs failed:\n{r.stderr[-3000:]}")
    articles = json.loads(r.stdout.strip().splitlines()[-1])["articles"]
    marker.write_text(json.dumps({"layout": LAYOUT_VERSION, "root": str(root), "share_id": share_id,
                                  "articles": articles, "publish_s": round(publish_s, 1),
                                  "published": time.strftime("%Y-%m-%d %H:%M:%S")}))
    log(f"  published {fs.key}: {articles:,} data articles in {publish_s:.0f} s")
    return Published(fs, root, share_id, ids_file, articles, publish_s)


# --------------------------------------------------------------------------
# The children
# --------------------------------------------------------------------------

# ours: the CLI's own main() (it calls _tune_allocator() first), with a report of VmHWM and CPU at exit.
# download_records is wrapped (looked up by name at call time in cli/download.py) to time the pipeline alone.
_LAUNCHER = r"""
import atexit, json, os, resource, sys, threading, time

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
    return r.ru_utime + r.ru_stime, r.ru_nvcsw + r.ru_nivcsw

inner = {}

def _report():
    m = _mem()
    cpu, csw = _cpu()
    sys.stderr.write("BENCH-CHILD " + json.dumps({
        "cpu_s": cpu, "ctx_switches": csw, "peak_rss": m["VmHWM"], "rss_at_exit": m["VmRSS"],
        "rss_after_imports": base, **inner}) + "\n")
    sys.stderr.flush()

import usenetsync_cli.cli.download as _dl
from usenetsync_cli.cli.app import main
base = _mem()["VmRSS"]
_orig = getattr(_dl, "download_records", None)
if _orig is not None:
    def download_records(*a, **kw):
        inner["rss_before_pipeline"] = _mem()["VmRSS"]
        c0, w0 = _cpu()
        t0 = time.perf_counter()
        try:
            return _orig(*a, **kw)
        finally:
            c1, w1 = _cpu()
            inner.update(pipeline_wall_s=time.perf_counter() - t0, pipeline_cpu_s=c1 - c0,
                         pipeline_ctx_switches=w1 - w0)
    _dl.download_records = download_records
atexit.register(_report)
_mode = os.environ.get("BENCH_DL_MODE", "")
if _mode:
    exec(compile(os.environ["BENCH_DL_PATCH"], "<bench_download patch>", "exec"))
main(sys.argv[1:])
"""

# --breakdown: instrumentation and ablations patched into the child (names looked up defensively: a
# refactor of pipeline/download.py makes them no-ops, reported as "n/a", instead of breaking the benchmark).
_PATCH = r"""
import collections, queue, time
import usenetsync_cli.pipeline.download as _pd
import usenetsync_cli.nntp.connection as _pc
if _mode == "stages":
    _st = collections.defaultdict(lambda: [0, 0, 0])

    def _wrap(name, fn):
        def w(*a, **k):
            t0 = time.perf_counter_ns(); c0 = time.thread_time_ns()
            try:
                return fn(*a, **k)
            finally:
                s = _st[name]; s[0] += 1; s[1] += time.perf_counter_ns() - t0; s[2] += time.thread_time_ns() - c0
        return w

    class _X:
        pass
    if hasattr(_pd, "open_segment"):
        _pd.open_segment = _wrap("AES-GCM decrypt (open_segment)", _pd.open_segment)
    if hasattr(_pd, "xxhash"):
        _x = _X(); _x.xxh3_128_digest = _wrap("xxh3_128 verify", _pd.xxhash.xxh3_128_digest); _pd.xxhash = _x
    os.pwrite = _wrap("os.pwrite", os.pwrite)
    os.open = _wrap("os.open", os.open)
    os.close = _wrap("os.close", os.close)
    if hasattr(_pc.Connection, "_recv_into"):
        _pc.Connection._recv_into = _wrap("socket recv (Connection._recv_into)", _pc.Connection._recv_into)
    if hasattr(_pc.Connection, "_send"):
        _pc.Connection._send = _wrap("socket send (Connection._send)", _pc.Connection._send)
    for _m in ("_apply_decoded", "_apply"):
        if hasattr(_pd._Run, _m):
            setattr(_pd._Run, _m, _wrap("one segment after receive (_Run." + _m + ")", getattr(_pd._Run, _m)))
    queue.Queue.put = _wrap("Queue.put", queue.Queue.put)
    queue.Queue.get = _wrap("Queue.get", queue.Queue.get)

    def _stages():
        inner["stages"] = {k: v for k, v in _st.items()}
    atexit.register(_stages)  # runs before _report (atexit is LIFO)
elif _mode in ("nowrite", "nocrypto") and hasattr(_pd._Run, "_write_sealed"):
    def _write_sealed(self, fs, task, sealed):
        if _mode == "nowrite":  # decrypt and hash as usual, then drop the bytes
            payload = _pd.open_segment(fs.aes, _pd.place_aad(fs.uid, task.shard, task.seg_id), sealed)
            if task.hash is not None and _pd.xxhash.xxh3_128_digest(payload) != task.hash:
                return "hash"
        return None
    _pd._Run._write_sealed = _write_sealed
    inner["patched"] = True
"""

_BASELINE = r"""
import itertools, json, os, resource, socket, sys, threading, time

spec = json.loads(sys.argv[1])
with open(spec["ids_file"], "rb") as f:
    ids = [ln.strip() for ln in f if ln.strip()]
n, conns, window = len(ids), spec["connections"], spec["window"]
QUICKACK = getattr(socket, "TCP_QUICKACK", None) if spec["quickack"] else None
counter = itertools.count()  # next() on it is atomic under the GIL: a shared work list
stats = []
errors = []

def worker():
    try:
        s = socket.create_connection((spec["host"], spec["port"]), timeout=60)
        buf = bytearray(1 << 20)
        mv = memoryview(buf)
        wire = filled = 0

        def fill(start):
            nonlocal wire
            if QUICKACK is not None:  # as nntp/connection.py does: INN leaves Nagle on
                s.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
            r = s.recv_into(mv[start:])
            if not r:
                raise ConnectionError("server closed the connection")
            wire += r
            return start + r

        while (i := buf.find(b"\r\n", 0, filled)) < 0:
            filled = fill(filled)
        if buf[:3] not in (b"200", b"201"):
            raise RuntimeError(f"greeting {bytes(buf[:i])!r}")
        pos = i + 2
        more = True

        def send_more(want):
            nonlocal more
            cmds = []
            for _ in range(want):
                j = next(counter)
                if j >= n:
                    more = False
                    break
                cmds.append(b"BODY " + ids[j] + b"\r\n")
            if cmds:
                s.sendall(b"".join(cmds))
            return len(cmds)

        outstanding = send_more(window)
        arts = missing = 0
        in_body = False
        search = 0
        while outstanding:
            while True:  # parse what is in the buffer
                if not in_body:
                    i = buf.find(b"\r\n", pos, filled)
                    if i < 0:
                        break
                    if buf[pos:pos + 3] == b"222":
                        in_body = True
                        search = i  # an empty body's ".\r\n" follows the status line's CRLF
                    else:
                        missing += 1
                        outstanding -= 1
                    pos = i + 2
                else:
                    j = buf.find(b"\r\n.\r\n", search, filled)
                    if j < 0:
                        search = max(search, filled - 4)
                        break
                    in_body = False
                    arts += 1
                    outstanding -= 1
                    pos = j + 5
                if more and outstanding <= window // 2:
                    outstanding += send_more(window - outstanding)
            if not outstanding:
                break
            # keep only what is still needed (a partial status line, or the last 4 bytes of a body)
            keep = search if in_body else pos
            rest = filled - keep
            if keep:
                buf[:rest] = buf[keep:filled]
                search -= keep
                pos -= keep
                filled = rest
            if filled == len(buf):
                raise RuntimeError("status line longer than the buffer")
            filled = fill(filled)
        s.sendall(b"QUIT\r\n")
        s.close()
        stats.append((arts, missing, wire))
    except Exception as e:
        errors.append(repr(e))

r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
threads = [threading.Thread(target=worker) for _ in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.perf_counter() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
if errors:
    sys.exit("baseline failed: " + "; ".join(errors[:3]))
print(json.dumps({"wall_s": wall, "articles": sum(a for a, _, _ in stats), "missing": sum(m for _, m, _ in stats),
                  "wire_bytes": sum(w for _, _, w in stats),
                  "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)}))
"""


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU-seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    total = sum(v[:8])  # guest time is already inside user
    return (total - idle) / hz, total / hz


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _rm(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def run_ours(pub: Published, reader_home: Path, dest: Path, connections: int,
             prefix: list[str] | None = None, mode: str = "") -> dict[str, Any]:
    _rm(dest)
    env = _env(reader_home)
    if mode:
        env["BENCH_DL_MODE"] = mode
        env["BENCH_DL_PATCH"] = _PATCH
    os.sync()  # the previous run's writeback is not this run's cost
    c0 = _children_cpu()
    m0 = machine_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*(prefix or []), sys.executable, "-c", _LAUNCHER, "download", pub.share_id, str(dest),
         "--connections", str(connections), "--json"],
        capture_output=True, text=True, env=env, cwd=str(REPO),
    )
    wall = time.perf_counter() - t0
    m1 = machine_cpu()
    cpu = _children_cpu() - c0
    if proc.returncode != 0:
        raise RuntimeError(f"download failed ({proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr.strip()[-3000:]}")
    summary = None
    for ln in proc.stdout.splitlines():
        if ln.startswith("{"):
            d = json.loads(ln)
            if d.get("type") == "download.summary":
                summary = d
    child = None
    for ln in proc.stderr.splitlines():
        if ln.startswith("BENCH-CHILD "):
            child = json.loads(ln[len("BENCH-CHILD "):])
    if summary is None or child is None:
        raise RuntimeError(f"download printed no summary/report:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    if summary.get("damaged") or summary["files_written"] != pub.fs.files or summary["bytes_written"] != pub.fs.total:
        raise RuntimeError(f"download incomplete: {json.dumps(summary)[:1500]}")
    payload = summary["bytes_written"]
    elapsed = summary["elapsed_s"]
    out = {
        "mb_s": payload / 1e6 / elapsed,
        "elapsed_s": elapsed,
        "process_wall_s": wall,
        "process_mb_s": payload / 1e6 / wall,
        "cpu_s": cpu,
        "cpu_s_per_gb": cpu / (payload / 1e9),
        "peak_rss_mb": child["peak_rss"] / 1e6,
        "rss_after_imports_mb": child["rss_after_imports"] / 1e6,
        "segments": summary["segments_fetched"],
        "payload_bytes": payload,
        "files": summary["files_written"],
        # Everything else the machine did meanwhile: INN's nnrpd serving the reads, plus other users' work.
        "other_cpu_s_per_gb": max(0.0, (m1[0] - m0[0]) - cpu) / (payload / 1e9),
        "machine_busy_pct": 100 * (m1[0] - m0[0]) / max(1e-9, m1[1] - m0[1]),
    }
    if "pipeline_cpu_s" in child:
        out["pipeline_cpu_s"] = child["pipeline_cpu_s"]
        out["pipeline_cpu_s_per_gb"] = child["pipeline_cpu_s"] / (payload / 1e9)
        out["outside_pipeline_cpu_s"] = cpu - child["pipeline_cpu_s"]
        out["rss_before_pipeline_mb"] = child["rss_before_pipeline"] / 1e6
        out["ctxsw_per_segment"] = child["pipeline_ctx_switches"] / max(1, summary["segments_fetched"])
    if "stages" in child:
        out["stages"] = child["stages"]
    if mode in ("nowrite", "nocrypto") and not child.get("patched"):
        out["patch_missing"] = True
    return out


def run_baseline(pub: Published, connections: int, window: int, quickack: bool) -> dict[str, Any]:
    c0 = _children_cpu()
    m0 = machine_cpu()
    proc = subprocess.run(
        [sys.executable, "-c", _BASELINE,
         json.dumps({"ids_file": str(pub.ids_file), "host": HOST, "port": PORT, "connections": connections,
                     "window": window, "quickack": quickack})],
        capture_output=True, text=True, cwd=str(REPO),
    )
    m1 = machine_cpu()
    cpu = _children_cpu() - c0
    if proc.returncode != 0:
        raise RuntimeError(f"baseline failed ({proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    if r["articles"] != pub.articles or r["missing"]:
        raise RuntimeError(f"baseline got {r['articles']} articles, {r['missing']} missing, of {pub.articles}")
    payload = pub.fs.total  # the same articles carry the same plaintext as ours writes
    return {
        "mb_s": payload / 1e6 / r["wall_s"],
        "wire_mb_s": r["wire_bytes"] / 1e6 / r["wall_s"],
        "elapsed_s": r["wall_s"],
        "cpu_s": cpu,
        "loop_cpu_s": r["cpu_s"],
        "cpu_s_per_gb": cpu / (payload / 1e9),
        "wire_bytes": r["wire_bytes"],
        "other_cpu_s_per_gb": max(0.0, (m1[0] - m0[0]) - cpu) / (payload / 1e9),
        "machine_busy_pct": 100 * (m1[0] - m0[0]) / max(1e-9, m1[1] - m0[1]),
    }


def verify(pub: Published, dest: Path, sample: int = 200) -> None:
    """The downloaded tree equals the source (large: every byte; tiny: a sample of files)."""
    import filecmp

    idx = range(pub.fs.files) if pub.fs.name == "large" else random.Random(1).sample(range(pub.fs.files), sample)
    for i in idx:
        src = _file_path(pub.root, pub.fs, i)
        dst = dest / src.relative_to(pub.root)
        if not filecmp.cmp(src, dst, shallow=False):
            raise RuntimeError(f"{dst} differs from {src}")
        if src.stat().st_mtime_ns != dst.stat().st_mtime_ns:
            raise RuntimeError(f"{dst}: mtime not restored")


# --------------------------------------------------------------------------
# Statistics, profile
# --------------------------------------------------------------------------


@dataclass
class Series:
    runs: list[dict[str, Any]] = field(default_factory=list)

    def stat(self, key: str, nd: int = 3) -> dict[str, float] | None:
        v = [r[key] for r in self.runs if r.get(key) is not None]
        if not v:
            return None
        return {"median": round(statistics.median(v), nd), "min": round(min(v), nd), "max": round(max(v), nd)}


def _fmt(st: dict[str, float] | None, fmt: str = "{:,.0f}") -> str:
    if not st:
        return "–"
    return f"{fmt.format(st['median'])} [{fmt.format(st['min'])}–{fmt.format(st['max'])}]"


def profile_run(pub: Published, reader_home: Path, dest: Path, connections: int, out_dir: Path) -> dict[str, Any]:
    """One ours run under py-spy (all threads, native frames off); returns self-time by function and by thread."""
    if shutil.which("py-spy") is None:
        return {"error": "py-spy not installed (pip install py-spy)"}
    raw = out_dir / "download.pyspy.txt"
    prefix = ["py-spy", "record", "--format", "raw", "--threads", "--rate", "250", "--nonblocking",
              "-o", str(raw), "--"]
    r = run_ours(pub, reader_home, dest, connections, prefix=prefix)
    return {"run": r, **summarize_pyspy(raw)}


def _role(frames: list[str]) -> str:
    """Which of download's threads a py-spy stack belongs to (py-spy names threads by id only)."""
    text = ";".join(frames[:6])
    if "work (" in text and "download.py" in text:
        return "fetch workers"
    if "feed (" in text or "_feed (" in text:
        return "index feeder"
    if frames and "Thread" in frames[0]:
        return "other thread"
    return "main thread"


def summarize_pyspy(raw: Path, top: int = 20) -> dict[str, Any]:
    leaf: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        fr = frames[1:]
        threads[_role(fr)] += n
        if fr:
            leaf[fr[-1]] += n
        for f in set(fr):
            incl[f] += n
    pct = lambda c: [(k, round(100 * v / total, 1)) for k, v in c.most_common(top)]  # noqa: E731
    return {"samples": total, "by_thread_pct": pct(threads), "self_pct": pct(leaf), "inclusive_pct": pct(incl),
            "raw": str(raw)}


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


class Shares:
    """The published shares; re-checked (and republished if INN lost them) after waiting for a peer."""

    def __init__(self, workdir: Path, specs: dict[str, FolderSpec], force: bool) -> None:
        self.workdir = workdir
        self.pubs = {key: ensure_published(workdir, fs, ensure_folder(workdir, fs), force=force)
                     for key, fs in specs.items()}

    def revalidate(self) -> None:
        for key, old in list(self.pubs.items()):
            new = ensure_published(self.workdir, old.fs, old.root, force=False)
            if new.publish_s is None:
                new.publish_s = old.publish_s
            self.pubs[key] = new


def guarded(shares: Shares, args: argparse.Namespace, fn: Any) -> Any:
    """``fn()``, retried after a failure that a peer benchmark's purge/restart of INN explains."""
    for attempt in range(4):
        if wait_for_peers(args.ignore_peers) > 0:
            inn_up()
            shares.revalidate()
        try:
            return fn()
        except RuntimeError as e:
            if attempt == 3:
                raise
            log(f"  run failed ({str(e).strip().splitlines()[0][:200]}); re-checking INN and the shares, retrying")
            time.sleep(5)
            wait_for_peers(args.ignore_peers)
            inn_up()
            shares.revalidate()
    raise AssertionError("unreachable")


def bench_large(shares: Shares, reader_home: Path, dest: Path, args: argparse.Namespace) -> dict[str, Any]:
    ours, base = Series(), Series()
    ratios: list[float] = []
    loads: list[float] = []
    pub = shares.pubs["large"]
    log(f"\n== large: {pub.fs.files} x {pub.fs.size / 2**20:.0f} MiB = {pub.fs.total / 1e9:.3f} GB, "
        f"{pub.articles:,} articles, {args.connections} connections")

    def warm() -> tuple[dict[str, Any], dict[str, Any]]:
        p = shares.pubs["large"]
        w = run_ours(p, reader_home, dest, args.connections)
        verify(p, dest)
        return w, run_baseline(p, args.connections, args.window, not args.no_quickack)

    w, b = guarded(shares, args, warm)
    log(f"  warm-up (untimed; bytes verified against the source): ours {w['mb_s']:,.0f} MB/s, "
        f"bare BODY loop {b['mb_s']:,.0f} MB/s")
    for i in range(args.runs):
        order = ("ours", "base") if i % 2 == 0 else ("base", "ours")

        def iteration() -> dict[str, dict[str, Any]]:
            p = shares.pubs["large"]
            got: dict[str, dict[str, Any]] = {"load": {"1min": load()}}
            for kind in order:
                if kind == "ours":
                    got[kind] = run_ours(p, reader_home, dest, args.connections)
                else:
                    got[kind] = run_baseline(p, args.connections, args.window, not args.no_quickack)
            return got

        got = guarded(shares, args, iteration)
        loads.append(got["load"]["1min"])
        ours.runs.append(got["ours"])
        base.runs.append(got["base"])
        ratios.append(got["ours"]["mb_s"] / got["base"]["mb_s"])
        o = got["ours"]
        log(f"  run {i + 1}/{args.runs}: ours {o['mb_s']:,.0f} MB/s, {o['cpu_s_per_gb']:.2f} CPU-s/GB, "
            f"{o['peak_rss_mb']:.0f} MB peak | bare {got['base']['mb_s']:,.0f} MB/s | ratio {ratios[-1]:.2f} "
            f"(load {loads[-1]:.1f})")
    _rm(dest)
    return {
        "files": pub.fs.files, "bytes": pub.fs.total, "articles": pub.articles, "connections": args.connections,
        "ours": {k: ours.stat(k) for k in ("mb_s", "elapsed_s", "process_wall_s", "process_mb_s", "cpu_s",
                                           "cpu_s_per_gb", "pipeline_cpu_s_per_gb", "outside_pipeline_cpu_s",
                                           "peak_rss_mb", "rss_after_imports_mb", "rss_before_pipeline_mb",
                                           "ctxsw_per_segment", "other_cpu_s_per_gb", "machine_busy_pct")},
        "baseline": {k: base.stat(k) for k in ("mb_s", "wire_mb_s", "elapsed_s", "cpu_s", "cpu_s_per_gb",
                                               "other_cpu_s_per_gb", "machine_busy_pct")},
        "ratio_paired": {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
                         "max": round(max(ratios), 3)},
        "ratio_of_medians": round(ours.stat("mb_s")["median"] / base.stat("mb_s")["median"], 3),  # type: ignore[index]
        "warmup": {"ours_mb_s": round(w["mb_s"], 1), "base_mb_s": round(b["mb_s"], 1)},
        "load_1min": {"median": round(statistics.median(loads), 2), "min": round(min(loads), 2),
                      "max": round(max(loads), 2)},
        "runs": {"ours": ours.runs, "baseline": base.runs, "ratios": ratios},
    }


def bench_tiny(shares: Shares, key: str, reader_home: Path, dest: Path, args: argparse.Namespace) -> dict[str, Any]:
    pub = shares.pubs[key]
    log(f"\n== tiny: {pub.fs.files:,} files of {pub.fs.size} B, {pub.articles:,} data articles")
    s = Series()
    for i in range(args.tiny_runs):
        def one() -> dict[str, Any]:
            p = shares.pubs[key]
            r = run_ours(p, reader_home, dest, args.connections)
            if i == 0:
                verify(p, dest)
            return r

        r = guarded(shares, args, one)
        s.runs.append(r)
        log(f"  run {i + 1}/{args.tiny_runs}: {r['process_wall_s']:.1f} s ({r['files'] / r['elapsed_s']:,.0f} files/s "
            f"in the pipeline), peak RSS {r['peak_rss_mb']:.1f} MB")
    _rm(dest)
    for r in s.runs:
        r["files_s"] = r["files"] / r["elapsed_s"]
    pub = shares.pubs[key]
    return {"files": pub.fs.files, "articles": pub.articles,
            **{k: s.stat(k) for k in ("peak_rss_mb", "rss_after_imports_mb", "rss_before_pipeline_mb", "elapsed_s",
                                      "process_wall_s", "files_s", "cpu_s")},
            "runs": s.runs}


def breakdown(shares: Shares, reader_home: Path, dest: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Where the time goes: one instrumented run (per-call wall and thread CPU), then ablations that
    drop the file writes, or decryption + hashing + writes, interleaved with the bare loop."""
    log("\n== breakdown: stage timings, then ablations")
    st = guarded(shares, args, lambda: run_ours(shares.pubs["large"], reader_home, dest, args.connections,
                                                mode="stages"))
    kinds = ("as is", "nowrite", "nocrypto", "bare")
    got: dict[str, list[float]] = {k: [] for k in kinds}
    missing = False
    for i in range(args.breakdown_runs):
        def one() -> dict[str, float]:
            p = shares.pubs["large"]
            r: dict[str, float] = {}
            for k in kinds:
                if k == "bare":
                    r[k] = run_baseline(p, args.connections, args.window, not args.no_quickack)["mb_s"]
                else:
                    o = run_ours(p, reader_home, dest, args.connections, mode="" if k == "as is" else k)
                    r[k] = o["mb_s"]
                    r["missing"] = r.get("missing", 0) or float(bool(o.get("patch_missing")))
            return r
        r = guarded(shares, args, one)
        missing = missing or bool(r.pop("missing", 0))
        for k in kinds:
            got[k].append(r[k])
        log(f"  ablation {i + 1}/{args.breakdown_runs}: " + ", ".join(f"{k} {r[k]:,.0f}" for k in kinds) + " MB/s")
    _rm(dest)
    bare = statistics.median(got["bare"])
    return {
        "stages_run_mb_s": round(st["mb_s"], 1),
        "stages": {k: {"calls": v[0], "wall_s": round(v[1] / 1e9, 3), "cpu_s": round(v[2] / 1e9, 3)}
                   for k, v in sorted(st.get("stages", {}).items(), key=lambda kv: -kv[1][2])},
        "ablation": {k: {"median": round(statistics.median(v), 1), "min": round(min(v), 1), "max": round(max(v), 1),
                         "x_bare": round(statistics.median(v) / bare, 3)} for k, v in got.items()},
        "ablation_patch_missing": missing,
    }


def report_breakdown(b: dict[str, Any]) -> None:
    print(f"\n### Breakdown: one instrumented download ({b['stages_run_mb_s']:,.0f} MB/s; the wrappers cost a little)\n")
    print("wall − CPU per call is time spent waiting: for the GIL after a call that released it, or for the socket.\n")
    print("| stage | calls | thread CPU s | wall s | CPU µs/call | wall µs/call |")
    print("|---|---:|---:|---:|---:|---:|")
    for k, v in b["stages"].items():
        n = max(1, v["calls"])
        print(f"| {k} | {v['calls']:,} | {v['cpu_s']:.3f} | {v['wall_s']:.3f} | {1e6 * v['cpu_s'] / n:,.0f} | "
              f"{1e6 * v['wall_s'] / n:,.0f} |")
    print("\nAblations (same children, patched): `nowrite` decrypts and hashes but writes nothing; `nocrypto` "
          "only receives and yEnc-decodes." + (" **The patch points were not found: ablations are n/a.**"
                                               if b["ablation_patch_missing"] else "") + "\n")
    print("| variant | MB/s median [min–max] | × bare loop |")
    print("|---|---|---:|")
    names = {"as is": "ours as is", "nowrite": "ours without the file writes",
             "nocrypto": "ours without decrypt, hash and writes", "bare": "bare pipelined BODY loop"}
    for k, v in b["ablation"].items():
        print(f"| {names[k]} | {v['median']:,.0f} [{v['min']:,.0f}–{v['max']:,.0f}] | {v['x_bare']:.2f} |")


def report(large: dict[str, Any] | None, tiny: list[dict[str, Any]]) -> list[dict[str, Any]]:
    verdicts: list[dict[str, Any]] = []
    if large:
        o, b = large["ours"], large["baseline"]
        print(f"\n### Large share: {large['files']} files, {large['bytes'] / 1e9:.3f} GB, {large['articles']:,} "
              f"articles, {large['connections']} connections, {len(large['runs']['ratios'])} runs "
              f"(load {large['load_1min']['median']} [{large['load_1min']['min']}–{large['load_1min']['max']}])\n")
        print("| run | MB/s payload median [min–max] | time s | client CPU-s per GB | INN + other CPU-s per GB "
              "| machine busy % | peak RSS MB |")
        print("|---|---|---|---|---|---|---|")
        print(f"| ours: `usenetsync download` (download_records time) | {_fmt(o['mb_s'])} | "
              f"{_fmt(o['elapsed_s'], '{:.2f}')} | {_fmt(o['cpu_s_per_gb'], '{:.2f}')} (whole process); pipeline "
              f"alone {_fmt(o['pipeline_cpu_s_per_gb'], '{:.2f}')} | {_fmt(o['other_cpu_s_per_gb'], '{:.2f}')} | "
              f"{_fmt(o['machine_busy_pct'])} | {_fmt(o['peak_rss_mb'], '{:.1f}')} |")
        print(f"| ours, whole command (process start to exit) | {_fmt(o['process_mb_s'])} | "
              f"{_fmt(o['process_wall_s'], '{:.2f}')} | – | – | – | – |")
        print(f"| bare pipelined BODY loop (raw socket, discard) | {_fmt(b['mb_s'])} (wire {_fmt(b['wire_mb_s'])}) | "
              f"{_fmt(b['elapsed_s'], '{:.2f}')} | {_fmt(b['cpu_s_per_gb'], '{:.2f}')} | "
              f"{_fmt(b['other_cpu_s_per_gb'], '{:.2f}')} | {_fmt(b['machine_busy_pct'])} | – |")
        rp = large["ratio_paired"]
        print(f"\nratio ours/baseline: {rp['median']:.2f} [{rp['min']:.2f}–{rp['max']:.2f}] (paired per run); "
              f"ratio of medians {large['ratio_of_medians']:.2f}")
        verdicts += [
            {"target": f"throughput >= {TARGET_RATIO} x bare BODY loop", "measured": rp["median"],
             "range": [rp["min"], rp["max"]], "met": rp["median"] >= TARGET_RATIO},
            {"target": f"CPU <= {TARGET_CPU_PER_GB} s per GB (whole client process)",
             "measured": o["cpu_s_per_gb"]["median"], "range": [o["cpu_s_per_gb"]["min"], o["cpu_s_per_gb"]["max"]],
             "met": o["cpu_s_per_gb"]["median"] <= TARGET_CPU_PER_GB},
            {"target": f"peak RSS <= {TARGET_PEAK_RSS_MB:.0f} MB (1 GB share)",
             "measured": o["peak_rss_mb"]["max"], "range": [o["peak_rss_mb"]["min"], o["peak_rss_mb"]["max"]],
             "met": o["peak_rss_mb"]["max"] <= TARGET_PEAK_RSS_MB},
        ]
    for t in tiny:
        verdicts.append({"target": f"peak RSS <= {TARGET_PEAK_RSS_MB:.0f} MB ({t['files']:,} tiny files)",
                         "measured": t["peak_rss_mb"]["max"],
                         "range": [t["peak_rss_mb"]["min"], t["peak_rss_mb"]["max"]],
                         "met": t["peak_rss_mb"]["max"] <= TARGET_PEAK_RSS_MB})
    if tiny:
        print("\n### Index scaling (peak RSS of `usenetsync download`)\n")
        print("| share | files | data articles | peak RSS MB median [min–max] | RSS after imports MB | "
              "RSS before pipeline MB | download s | files/s |")
        print("|---|---:|---:|---|---:|---:|---:|---:|")
        if large:
            o = large["ours"]
            print(f"| 1 GB | {large['files']} | {large['articles']:,} | {_fmt(o['peak_rss_mb'], '{:.1f}')} | "
                  f"{o['rss_after_imports_mb']['median']:.1f} | {o['rss_before_pipeline_mb']['median']:.1f} | "
                  f"{o['elapsed_s']['median']:.2f} | – |")
        for t in tiny:
            print(f"| tiny | {t['files']:,} | {t['articles']:,} | {_fmt(t['peak_rss_mb'], '{:.1f}')} | "
                  f"{t['rss_after_imports_mb']['median']:.1f} | {t['rss_before_pipeline_mb']['median']:.1f} | "
                  f"{t['elapsed_s']['median']:.1f} | {t['files_s']['median']:,.0f} |")
    print("\n### Targets\n")
    print("| target | measured median [min–max] | verdict |")
    print("|---|---|---|")
    for v in verdicts:
        print(f"| {v['target']} | {v['measured']:.2f} [{v['range'][0]:.2f}–{v['range'][1]:.2f}] | "
              f"{'met' if v['met'] else '**missed**'} |")
    return verdicts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/usenetsync-bench-download"))
    ap.add_argument("--runs", type=int, default=5, help="timed iterations of the 1 GB share (>= 3)")
    ap.add_argument("--connections", "-n", type=int, default=4)
    ap.add_argument("--window", type=int, default=8, help="BODY requests in flight per connection in the baseline "
                    "(pipeline/download.py uses window=8)")
    ap.add_argument("--no-quickack", action="store_true", help="baseline without TCP_QUICKACK before each recv")
    ap.add_argument("--large-files", type=int, default=8)
    ap.add_argument("--large-mib", type=int, default=128)
    ap.add_argument("--tiny-files", type=int, action="append", help="tiny-file share sizes (default 200000); 0 = skip")
    ap.add_argument("--tiny-runs", type=int, default=3)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--republish", action="store_true", help="ignore the cached shares")
    ap.add_argument("--ignore-peers", action="store_true", help="do not wait for other benchmarks/bench_*.py")
    ap.add_argument("--profile", action="store_true", help="py-spy one extra 1 GB download (all threads)")
    ap.add_argument("--breakdown", action="store_true", help="one instrumented download (per-stage wall and CPU) "
                    "and ablations without writes / without decrypt+hash+writes, interleaved with the bare loop")
    ap.add_argument("--breakdown-runs", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="end with one JSON line holding every figure")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    tiny_sizes = [n for n in (args.tiny_files or [200_000]) if n > 0]

    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    # One bench_download at a time on this machine (any workdir): they would share INN and the 2 cores.
    lock = open(LOCK_FILE, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"  another bench_download.py holds {LOCK_FILE}: waiting for it")
        fcntl.flock(lock, fcntl.LOCK_EX)
    wait_for_peers(args.ignore_peers)
    inn_up()
    reader_home = workdir / "reader-home"
    if not (reader_home / "config.toml").exists():  # a reader's home: only the server, no keys
        reader_home.mkdir(parents=True, exist_ok=True)
        cli(reader_home, "server", "add", "local", "--host", HOST, "--group", GROUP, "--replace")
    dest = workdir / f"dest-{os.getpid()}"
    state_before = code_state()

    specs: dict[str, FolderSpec] = {}
    if not args.skip_large:
        specs["large"] = FolderSpec("large", args.large_files, args.large_mib << 20)
    for n in tiny_sizes:
        fs = FolderSpec("tiny", n, 1)
        specs[fs.key] = fs
    shares = Shares(workdir, specs, args.republish)
    partial = workdir / "last-results.json"  # figures so far, in case a later phase fails

    large = bench_large(shares, reader_home, dest, args) if "large" in specs else None
    partial.write_text(json.dumps({"large": large}))
    tiny = []
    for n in tiny_sizes:
        tiny.append(bench_tiny(shares, FolderSpec("tiny", n, 1).key, reader_home, dest, args))
        partial.write_text(json.dumps({"large": large, "tiny": tiny}))
    prof = None
    if args.profile and "large" in specs:
        log("\n== profile: one more 1 GB download under py-spy")
        try:
            prof = guarded(shares, args, lambda: profile_run(shares.pubs["large"], reader_home, dest,
                                                             args.connections, workdir))
        except RuntimeError as e:
            prof = {"error": str(e)[:500]}
        _rm(dest)
    brk = None
    if args.breakdown and "large" in specs:
        brk = breakdown(shares, reader_home, dest, args)
        partial.write_text(json.dumps({"large": large, "tiny": tiny, "breakdown": brk}))
    pubs = shares.pubs

    state_after = code_state()
    print(f"\nmachine: {os.cpu_count()} cores, Python {platform.python_version()}, Linux {platform.release()}; "
          f"INN 2.7 on {HOST}:{PORT}")
    print(f"code: HEAD {state_before['head']}, modified in the tree: {', '.join(state_before['modified']) or 'none'}; "
          f"download path sha256 {state_before['download_path_sha256']}"
          + ("" if (state_after["head"], state_after["download_path_sha256"]) == (state_before["head"], state_before["download_path_sha256"]) else
             f" -> CHANGED during the run to {state_after['download_path_sha256']} (figures mix two versions)"))
    verdicts = report(large, tiny)
    if prof and "error" not in prof:
        print(f"\n### py-spy of one download ({prof['samples']:,} samples at 250 Hz, all threads; the profiled run: "
              f"{prof['run']['mb_s']:,.0f} MB/s)\n")
        print("by thread (% of samples):", ", ".join(f"{k} {v}%" for k, v in prof["by_thread_pct"][:8]))
        print("\nself time (% of samples):")
        for k, v in prof["self_pct"][:15]:
            print(f"  {v:5.1f}%  {k}")
    elif prof:
        print(f"\nprofile: {prof['error']}")
    if brk:
        report_breakdown(brk)
    if args.json:
        print(json.dumps({
            "type": "bench_download", "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                                  "kernel": platform.release()},
            "units": {"MB": "10^6 bytes of plaintext payload", "GB": "10^9 bytes", "rss": "VmHWM of the child, MB"},
            "shares": {k: {"files": p.fs.files, "bytes": p.fs.total, "articles": p.articles,
                           "publish_s": p.publish_s} for k, p in pubs.items()},
            "code": {"before": state_before, "after": state_after},
            "large": large, "tiny": tiny, "targets": verdicts, "breakdown": brk,
            "profile": {k: v for k, v in prof.items() if k != "run"} if prof else None,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
