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

3. the same-run stage floor: the same child with its fetch pool replaced by
   one thread on one connection that times each stage alone with thread CPU
   (receive, sabctools decode, AES-GCM open, BLAKE3, pwrite; and the fsync of
   what it wrote, which only ``--nzb`` pays). Printed: CPU of ours / floor.
4. ``usenetsync download --nzb`` of the same articles (an NZB from ``nzb
   export``), against the same bare loop and the floor's receive + decode +
   write (``--no-nzb`` skips it).
5. with ``--compare-tree DIR``: 1 and 4 again with another checkout's code
   (same iterations, interleaved): a same-run before/after.

Kinds are interleaved per iteration and their order rotates. One untimed
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
waits until ``pgrep -af 'bench_[a-z0-9_]+\.py'`` finds none but itself (at
most ``--max-peer-wait`` seconds in all, then it measures anyway). If INN
lost the articles (a purge), the share is published anew and a failed
iteration is run again.

Where the time goes: ``--profile`` samples one more download with py-spy (all
threads), and one more with ``py-spy --gil`` (only the GIL holder: the share
of the wall during which the GIL is held, and by what); ``--breakdown`` runs one download with wrappers that record, per
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
TARGET_CPU_X_FLOOR = 1.3  # CPU of the pipeline / the same-run single-thread stage floor
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


_PEER_BUDGET = [float("inf")]  # seconds of waiting left in this run (--max-peer-wait)


def wait_for_peers(allow: bool) -> float:
    """Block while another benchmark runs (at most --max-peer-wait seconds in all); returns the seconds waited."""
    if allow:
        return 0.0
    t0 = time.monotonic()
    announced = False
    while _peers():
        if time.monotonic() - t0 >= _PEER_BUDGET[0]:
            log("  --max-peer-wait used up: measuring alongside the other benchmarks (figures are noisier)")
            break
        if not announced:
            log("  waiting for other benchmarks to finish (2 cores: concurrent benchmarks ruin each other): "
                + "; ".join(" ".join(p.split()[1:4])[:80] for p in _peers()[:3]) + " ...")
            announced = True
        time.sleep(10)
    waited = time.monotonic() - t0
    _PEER_BUDGET[0] = max(0.0, _PEER_BUDGET[0] - waited)
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
                "usenetsync_cli/nntp/response.py", "usenetsync_cli/core/article.py",
                "usenetsync_cli/pipeline/download_write.py", "usenetsync_cli/core/gcm_nogil.py",
                "usenetsync_cli/pipeline/fetch.py", "usenetsync_cli/pipeline/nzb_download.py",
                "usenetsync_cli/nntp/bodies.py"):
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


def _env(home: Path, tree: Path = REPO) -> dict[str, str]:
    env = dict(os.environ)
    env["USENETSYNC_HOME"] = str(home)
    # The benchmark measures the working tree (or --compare-tree's), installed or not.
    env["PYTHONPATH"] = str(tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
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
        for seg_id, attempt, server_id, epoch in conn.execute(
            "SELECT seg_id, attempt, server_msgid, epoch FROM segments WHERE folder_id=? AND state IN (1,2)"
            " ORDER BY seg_id",
            (folder.folder_id,),
        ):
            ids.append(server_id or ctx.message_id(shard, seg_id, attempt, epoch))
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
import usenetsync_cli.pipeline.nzb_download as _nd
from usenetsync_cli.cli.app import main
base = _mem()["VmRSS"]

def _timed(orig):
    def timed(*a, **kw):
        inner["rss_before_pipeline"] = _mem()["VmRSS"]
        c0, w0 = _cpu()
        t0 = time.perf_counter()
        try:
            return orig(*a, **kw)
        finally:
            c1, w1 = _cpu()
            inner.update(pipeline_wall_s=time.perf_counter() - t0, pipeline_cpu_s=c1 - c0,
                         pipeline_ctx_switches=w1 - w0)
    return timed

if getattr(_dl, "download_records", None) is not None:
    _dl.download_records = _timed(_dl.download_records)
if getattr(_nd, "download_nzb", None) is not None:  # imported by name at call time in cli/download.py
    _nd.download_nzb = _timed(_nd.download_nzb)
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

    import usenetsync_cli.core.epochs as _pe
    _pe.FolderContext.open_into = _wrap("AES-GCM open (FolderContext.open_into)", _pe.FolderContext.open_into)
    if hasattr(_pd, "piece_hash"):
        _pd.piece_hash = _wrap("BLAKE3 verify (piece_hash)", _pd.piece_hash)
    if hasattr(_pd, "pwrite_all"):
        _pd.pwrite_all = _wrap("write (pwrite_all: open, pwrite, close)", _pd.pwrite_all)
    os.pwrite = _wrap("os.pwrite", os.pwrite)
    os.open = _wrap("os.open", os.open)
    os.close = _wrap("os.close", os.close)
    if hasattr(_pc.Connection, "_recv_into"):
        _pc.Connection._recv_into = _wrap("socket recv (Connection._recv_into)", _pc.Connection._recv_into)
    if hasattr(_pc.Connection, "_send"):
        _pc.Connection._send = _wrap("socket send (Connection._send)", _pc.Connection._send)
    if hasattr(_pd._Run, "handle"):
        _pd._Run.handle = _wrap("one segment after receive (_Run.handle)", _pd._Run.handle)
    if hasattr(_pc, "article_from_response"):
        _pc.article_from_response = _wrap("article_from_response", _pc.article_from_response)

    def _stages():
        inner["stages"] = {k: v for k, v in _st.items()}
    atexit.register(_stages)  # runs before _report (atexit is LIFO)
elif _mode == "floor":
    # The same-run stage floor: the same articles, one thread, one connection, each stage timed alone
    # with thread CPU (no GIL waits, no hand-offs, no Python bookkeeping of ours between stages).
    import socket as _so
    import sabctools as _sab
    from usenetsync_cli.core.hashing import piece_hash as _ph
    _QA = getattr(_so, "TCP_QUICKACK", None)

    class _FloorPool:
        def __init__(self, specs, connections=None, **kw):
            self.spec = specs[0]

        def close(self):
            pass

        def run(self, jobs, handle, fail, tick=None, tick_every=0.1):
            run = handle.__self__  # pipeline.download._Run: its folder secrets open the seals
            T = time.thread_time_ns
            st = {"receive": 0, "decode": 0, "open": 0, "hash": 0, "write": 0, "flush": 0}
            nbytes = sealed_bytes = arts = 0
            sock = _so.create_connection((self.spec.host, self.spec.port), timeout=60)
            greet = b""
            while b"\r\n" not in greet:
                greet += sock.recv(4096)
            dec = _sab.Decoder(2 << 20)
            it = iter(jobs)  # makes the temporary files as the download does (not timed)
            inflight = collections.deque()
            fds = {}

            def send(k):
                lines = []
                for _ in range(k):
                    j = next(it, None)
                    if j is None:
                        break
                    dec.expect(j)
                    inflight.append(j)
                    lines.append(b"BODY " + j.message_id.encode() + b"\r\n")
                if lines:
                    sock.sendall(b"".join(lines))

            send(8)
            while inflight:
                c0 = T()
                with memoryview(dec) as room:
                    if _QA is not None:
                        sock.setsockopt(_so.IPPROTO_TCP, _QA, 1)
                    n = sock.recv_into(room)
                if not n:
                    raise RuntimeError("server closed the connection")
                c1 = T()
                dec.process(n)
                done = list(dec)
                c2 = T()
                st["receive"] += c1 - c0
                st["decode"] += c2 - c1
                for resp in done:
                    j = inflight.popleft()
                    if resp.context is not j or resp.status_code != 222 or resp.data is None:
                        raise RuntimeError(f"floor: bad reply {resp.status_code} for {j.message_id}")
                    task = j.tag
                    sealed_bytes += len(resp.data)
                    c0 = T()
                    payload = run.fs.ctx.open(task.shard, task.seg_id, task.epoch, resp.data)
                    c1 = T()
                    view = memoryview(payload)
                    if task.piece is not None and _ph(payload) != task.piece:
                        raise RuntimeError("floor: hash mismatch")
                    for _j, _fo, po, ln, mh, _i in task.writes:
                        if mh is not None and _ph(view[po:po + ln]) != mh:
                            raise RuntimeError("floor: member hash mismatch")
                    c2 = T()
                    for fj, fo, po, ln, _mh, _i in task.writes:
                        fd = fds.get(fj.tmp)
                        if fd is None:
                            fd = fds[fj.tmp] = os.open(fj.tmp, os.O_WRONLY)
                        os.pwrite(fd, view[po:po + ln], fo)
                    c3 = T()
                    st["open"] += c1 - c0
                    st["hash"] += c2 - c1
                    st["write"] += c3 - c2
                    nbytes += len(payload)
                    arts += 1
                if len(inflight) <= 4:
                    send(8 - len(inflight))
            # --nzb makes each file durable (fsync) before it gets its name; the share download does not.
            st["flush"] = 0
            for fd in fds.values():
                c0 = T()
                os.fsync(fd)
                st["flush"] += T() - c0
                os.close(fd)
            sock.close()
            inner["floor"] = {"articles": arts, "payload_bytes": nbytes, "sealed_bytes": sealed_bytes,
                              **{k: v / 1e9 for k, v in st.items()}}
            _report()
            sys.stdout.flush()
            os._exit(0)  # the download is not finished on purpose: nothing else to measure

    _pd.FetchPool = _FloorPool
elif _mode == "nowrite" and hasattr(_pd, "pwrite_all"):
    # Decrypt and hash as usual, then drop the bytes (the .uspart files keep their holes).
    _pd.pwrite_all = lambda *a, **k: None
    inner["patched"] = True
elif _mode == "nocrypto" and hasattr(_pd._Run, "write_sealed"):
    # Receive and yEnc-decode only: the bookkeeping of write_sealed, trusting the index's piece hashes.
    def write_sealed(self, task, sealed):
        with self.lock:
            for job, _off, _po, _len, mh, i in task.writes:
                job.pieces[i] = task.piece if mh is None else mh
                job.remaining -= 1
                if job.remaining == 0 and not job.waiting:
                    self.finished.append(job)
            self.s.segments_fetched += 1
        return None
    _pd._Run.write_sealed = write_sealed
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
             prefix: list[str] | None = None, mode: str = "", nzb: Path | None = None,
             tree: Path = REPO) -> dict[str, Any]:
    """One ``usenetsync download`` child (of the share, or ``--nzb`` of its articles when ``nzb`` is given).

    ``mode="floor"``: the same child measures the stage floor instead (see ``_PATCH``) and returns it.
    """
    _rm(dest)
    env = _env(reader_home, tree)
    if mode:
        env["BENCH_DL_MODE"] = mode
        env["BENCH_DL_PATCH"] = _PATCH
    os.sync()  # the previous run's writeback is not this run's cost
    what = ["--nzb", str(nzb), str(dest)] if nzb is not None else [pub.share_id, str(dest)]
    c0 = _children_cpu()
    m0 = machine_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*(prefix or []), sys.executable, "-c", _LAUNCHER, "download", *what,
         "--connections", str(connections), "--json"],
        capture_output=True, text=True, env=env, cwd=str(tree),
    )
    wall = time.perf_counter() - t0
    m1 = machine_cpu()
    cpu = _children_cpu() - c0
    child = None
    for ln in proc.stderr.splitlines():
        if ln.startswith("BENCH-CHILD "):
            child = json.loads(ln[len("BENCH-CHILD "):])
    if mode == "floor":
        if proc.returncode != 0 or child is None or "floor" not in child:
            raise RuntimeError(f"floor run failed ({proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
        f = child["floor"]
        if f["articles"] != pub.articles or f["payload_bytes"] != pub.fs.total:
            raise RuntimeError(f"floor run saw {f['articles']} articles, {f['payload_bytes']} B")
        return f
    if proc.returncode != 0:
        raise RuntimeError(f"download failed ({proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr.strip()[-3000:]}")
    summary = None
    for ln in proc.stdout.splitlines():
        if ln.startswith("{"):
            d = json.loads(ln)
            if d.get("type") in ("download.summary", "nzb.summary"):
                summary = d
    if summary is None or child is None:
        raise RuntimeError(f"download printed no summary/report:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    if nzb is not None:
        # The NZB lists every article as a file of its own: sealed bytes, written as they are.
        if summary["files_damaged"] or summary["files_ok"] != pub.articles or summary["articles"] != pub.articles:
            raise RuntimeError(f"download --nzb incomplete: {json.dumps(summary)[:1500]}")
        summary = {"bytes_written": summary["bytes"], "elapsed_s": summary["elapsed_s"],
                   "segments_fetched": summary["articles"], "files_written": summary["files_ok"]}
    elif summary.get("damaged") or summary["files_written"] != pub.fs.files or summary["bytes_written"] != pub.fs.total:
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
    out = {"run": r, **summarize_pyspy(raw)}
    # --gil: only the samples of the thread that holds the GIL. Their count over rate x wall is the share of
    # the run during which some thread held it (the rest is time in GIL-free C: recv, decode, hash, pwrite).
    raw_gil = out_dir / "download.pyspy-gil.txt"
    prefix = ["py-spy", "record", "--format", "raw", "--threads", "--gil", "--rate", "250", "--nonblocking",
              "-o", str(raw_gil), "--"]
    rg = run_ours(pub, reader_home, dest, connections, prefix=prefix)
    gil = summarize_pyspy(raw_gil)
    gil["held_pct_of_wall"] = round(100 * gil["samples"] / (250 * rg["process_wall_s"]), 1)
    gil["run"] = rg
    out["gil"] = gil
    return out


def _role(frames: list[str]) -> str:
    """Which of download's threads a py-spy stack belongs to (py-spy names threads by id only)."""
    text = ";".join(frames[:6])
    if "_work (" in text and "fetch.py" in text:
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


def nzb_of(shares: Shares, key: str) -> Path:
    """An NZB of the share's articles (``usenetsync nzb export`` in the publisher's home), made once per run."""
    pub = shares.pubs[key]
    path = shares.workdir / f"{pub.fs.key}.nzb"
    cli(shares.workdir / f"home-{pub.fs.key}", "nzb", "export", pub.fs.key, "-o", str(path))
    return path


FLOOR_SHARE = ("receive", "decode", "open", "hash", "write")
FLOOR_NZB = ("receive", "decode", "write")  # --nzb writes the sealed bytes as they are: no open, no hash
# Informational: --nzb also fsyncs every file before naming it (its commit point); "flush" is the thread CPU
# of fsyncing what the floor wrote (the writeback the fsync starts runs partly in the caller).


def floor_sum(f: dict[str, Any], stages: tuple[str, ...]) -> float:
    return sum(f[k] for k in stages)


def bench_large(shares: Shares, reader_home: Path, dest: Path, args: argparse.Namespace) -> dict[str, Any]:
    ours, base, nzbs, floors = Series(), Series(), Series(), Series()
    ratios: list[float] = []
    nzb_ratios: list[float] = []
    cpu_x_floor: list[float] = []
    nzb_cpu_x_floor: list[float] = []
    loads: list[float] = []
    pub = shares.pubs["large"]
    log(f"\n== large: {pub.fs.files} x {pub.fs.size / 2**20:.0f} MiB = {pub.fs.total / 1e9:.3f} GB, "
        f"{pub.articles:,} articles, {args.connections} connections")
    nzb = None if args.no_nzb else guarded(shares, args, lambda: nzb_of(shares, "large"))

    def warm() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        p = shares.pubs["large"]
        w = run_ours(p, reader_home, dest, args.connections)
        verify(p, dest)
        wn = run_ours(p, reader_home, dest, args.connections, nzb=nzb) if nzb is not None else None
        return w, run_baseline(p, args.connections, args.window, not args.no_quickack), wn

    w, b, wn = guarded(shares, args, warm)
    log(f"  warm-up (untimed; bytes verified against the source): ours {w['mb_s']:,.0f} MB/s, "
        f"bare BODY loop {b['mb_s']:,.0f} MB/s" + (f", --nzb {wn['mb_s']:,.0f} MB/s" if wn else ""))
    other = args.compare_tree
    kinds = ["ours", "base", "floor"] + (["nzb"] if nzb is not None else []) + \
        (["other", "other_nzb"] if other is not None else [])
    others, other_nzbs = Series(), Series()
    other_ratios: list[float] = []
    other_nzb_ratios: list[float] = []
    for i in range(args.runs):
        order = kinds[i % len(kinds):] + kinds[:i % len(kinds)]  # rotated: no kind always runs first

        def iteration() -> dict[str, dict[str, Any]]:
            p = shares.pubs["large"]
            got: dict[str, dict[str, Any]] = {"load": {"1min": load()}}
            for kind in order:
                if kind == "ours":
                    got[kind] = run_ours(p, reader_home, dest, args.connections)
                elif kind == "nzb":
                    got[kind] = run_ours(p, reader_home, dest, args.connections, nzb=nzb)
                elif kind == "other":
                    got[kind] = run_ours(p, reader_home, dest, args.connections, tree=other)
                elif kind == "other_nzb":
                    if nzb is not None:
                        got[kind] = run_ours(p, reader_home, dest, args.connections, nzb=nzb, tree=other)
                elif kind == "floor":
                    got[kind] = run_ours(p, reader_home, dest, args.connections, mode="floor")
                else:
                    got[kind] = run_baseline(p, args.connections, args.window, not args.no_quickack)
            return got

        got = guarded(shares, args, iteration)
        loads.append(got["load"]["1min"])
        o, bb, fl = got["ours"], got["base"], got["floor"]
        fl["share_s"] = floor_sum(fl, FLOOR_SHARE)
        fl["nzb_s"] = floor_sum(fl, FLOOR_NZB)
        fl["nzb_durable_s"] = fl["nzb_s"] + fl.get("flush", 0.0)
        ours.runs.append(o)
        base.runs.append(bb)
        floors.runs.append(fl)
        # Time ratio (the bare loop over the time of ours): the same articles either way.
        ratios.append(bb["elapsed_s"] / o["elapsed_s"])
        cpu_x_floor.append(o["pipeline_cpu_s"] / fl["share_s"])
        o["cpu_x_floor"], o["process_cpu_x_floor"] = cpu_x_floor[-1], o["cpu_s"] / fl["share_s"]
        line = (f"  run {i + 1}/{args.runs}: ours {o['mb_s']:,.0f} MB/s, {o['cpu_s_per_gb']:.2f} CPU-s/GB, "
                f"{o['peak_rss_mb']:.0f} MB peak, CPU {cpu_x_floor[-1]:.2f}x floor | bare {bb['mb_s']:,.0f} MB/s "
                f"| ratio {ratios[-1]:.2f}")
        if "nzb" in got:
            n = got["nzb"]
            nzbs.runs.append(n)
            nzb_ratios.append(bb["elapsed_s"] / n["elapsed_s"])
            nzb_cpu_x_floor.append(n["pipeline_cpu_s"] / fl["nzb_s"])
            n["cpu_x_floor"], n["process_cpu_x_floor"] = nzb_cpu_x_floor[-1], n["cpu_s"] / fl["nzb_s"]
            n["cpu_x_durable_floor"] = n["pipeline_cpu_s"] / fl["nzb_durable_s"]
            line += f" | --nzb {n['mb_s']:,.0f} MB/s, ratio {nzb_ratios[-1]:.2f}, CPU {nzb_cpu_x_floor[-1]:.2f}x floor"
        if "other" in got:
            ot = got["other"]
            ot["cpu_x_floor"] = ot["pipeline_cpu_s"] / fl["share_s"]
            others.runs.append(ot)
            other_ratios.append(bb["elapsed_s"] / ot["elapsed_s"])
            line += f" | compare-tree {ot['mb_s']:,.0f} MB/s, ratio {other_ratios[-1]:.2f}, CPU {ot['cpu_x_floor']:.2f}x"
        if "other_nzb" in got:
            on = got["other_nzb"]
            on["cpu_x_floor"] = on["pipeline_cpu_s"] / fl["nzb_s"]
            other_nzbs.runs.append(on)
            other_nzb_ratios.append(bb["elapsed_s"] / on["elapsed_s"])
            line += f", --nzb {on['mb_s']:,.0f} MB/s, ratio {other_nzb_ratios[-1]:.2f}, CPU {on['cpu_x_floor']:.2f}x"
        log(line + f" | floor {fl['share_s']:.2f} CPU-s (load {loads[-1]:.1f})")
    _rm(dest)

    def med(v: list[float]) -> dict[str, float] | None:
        return {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3)} if v else None

    return {
        "nzb": {"ours": {k: nzbs.stat(k) for k in ("mb_s", "elapsed_s", "cpu_s", "cpu_s_per_gb",
                                                   "pipeline_cpu_s_per_gb", "peak_rss_mb", "cpu_x_floor",
                                                   "process_cpu_x_floor", "cpu_x_durable_floor")},
                "ratio_paired": med(nzb_ratios), "cpu_x_floor": med(nzb_cpu_x_floor)} if nzbs.runs else None,
        "compare_tree": {
            "tree": str(other),
            "ours": {k: others.stat(k) for k in ("mb_s", "cpu_s_per_gb", "pipeline_cpu_s_per_gb", "cpu_x_floor",
                                                 "peak_rss_mb")},
            "ratio_paired": med(other_ratios),
            "nzb": {k: other_nzbs.stat(k) for k in ("mb_s", "cpu_s_per_gb", "pipeline_cpu_s_per_gb", "cpu_x_floor",
                                                    "peak_rss_mb")},
            "nzb_ratio_paired": med(other_nzb_ratios),
        } if others.runs else None,
        "floor": {k: floors.stat(k) for k in (*FLOOR_SHARE, "flush", "share_s", "nzb_s", "nzb_durable_s")},
        "cpu_x_floor": med(cpu_x_floor),
        "process_cpu_x_floor": ours.stat("process_cpu_x_floor"),
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
        "runs": {"ours": ours.runs, "baseline": base.runs, "ratios": ratios, "floor": floors.runs,
                 "nzb": nzbs.runs, "nzb_ratios": nzb_ratios},
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
        nz = large.get("nzb")
        if nz:
            n = nz["ours"]
            print(f"| `usenetsync download --nzb` of the same articles (sealed bytes) | {_fmt(n['mb_s'])} | "
                  f"{_fmt(n['elapsed_s'], '{:.2f}')} | {_fmt(n['cpu_s_per_gb'], '{:.2f}')} (whole process); pipeline "
                  f"alone {_fmt(n['pipeline_cpu_s_per_gb'], '{:.2f}')} | – | – | {_fmt(n['peak_rss_mb'], '{:.1f}')} |")
        ct = large.get("compare_tree")
        if ct:
            c, cn = ct["ours"], ct["nzb"]
            print(f"| compare-tree `{ct['tree']}`: download (same runs) | {_fmt(c['mb_s'])} | – | "
                  f"{_fmt(c['cpu_s_per_gb'], '{:.2f}')} (whole process); pipeline alone "
                  f"{_fmt(c['pipeline_cpu_s_per_gb'], '{:.2f}')} | – | – | {_fmt(c['peak_rss_mb'], '{:.1f}')} |")
            if cn.get("mb_s"):
                print(f"| compare-tree: `download --nzb` | {_fmt(cn['mb_s'])} | – | "
                      f"{_fmt(cn['cpu_s_per_gb'], '{:.2f}')} (whole process); pipeline alone "
                      f"{_fmt(cn['pipeline_cpu_s_per_gb'], '{:.2f}')} | – | – | {_fmt(cn['peak_rss_mb'], '{:.1f}')} |")
            print(f"\ncompare-tree ratio to the bare loop: download {_fmt(ct['ratio_paired'], '{:.2f}')}, CPU "
                  f"{_fmt(c['cpu_x_floor'], '{:.2f}')}x floor; --nzb {_fmt(ct['nzb_ratio_paired'], '{:.2f}')}, CPU "
                  f"{_fmt(cn.get('cpu_x_floor'), '{:.2f}')}x floor")
        rp = large["ratio_paired"]
        print(f"\nratio ours/baseline (time of the bare loop over ours, paired per run): {rp['median']:.2f} "
              f"[{rp['min']:.2f}–{rp['max']:.2f}]; ratio of medians {large['ratio_of_medians']:.2f}"
              + (f"; --nzb {_fmt(nz['ratio_paired'], '{:.2f}')}" if nz else ""))
        fl = large["floor"]
        print("\nSame-run stage floor: the same articles in one thread over one connection, each stage's thread CPU "
              "alone (receive = recv_into, decode = sabctools, open = AES-GCM, hash = BLAKE3, write = pwrite):\n")
        print("| stage | CPU s median [min–max] |")
        print("|---|---|")
        for k in (*FLOOR_SHARE, "flush", "share_s", "nzb_s"):
            if fl.get(k) is None:
                continue
            name = {"share_s": "**floor, share** (all five)", "nzb_s": "**floor, --nzb** (receive, decode, write)",
                    "flush": "flush (fsync of the written files; not in either floor, --nzb pays it)"}
            print(f"| {name.get(k, k)} | {_fmt(fl[k], '{:.3f}')} |")
        print(f"\nCPU of ours / floor: download_records {_fmt(large['cpu_x_floor'], '{:.2f}')}, whole process "
              f"{_fmt(large['process_cpu_x_floor'], '{:.2f}')}"
              + (f"; --nzb: download_nzb {_fmt(nz['ours']['cpu_x_floor'], '{:.2f}')}, whole process "
                 f"{_fmt(nz['ours']['process_cpu_x_floor'], '{:.2f}')}, download_nzb over the floor plus its fsyncs "
                 f"{_fmt(nz['ours'].get('cpu_x_durable_floor'), '{:.2f}')}" if nz else ""))
        verdicts += [
            {"target": f"throughput >= {TARGET_RATIO} x bare BODY loop", "measured": rp["median"],
             "range": [rp["min"], rp["max"]], "met": rp["median"] >= TARGET_RATIO},
            {"target": f"CPU (download_records) <= {TARGET_CPU_X_FLOOR} x same-run stage floor",
             "measured": large["cpu_x_floor"]["median"],
             "range": [large["cpu_x_floor"]["min"], large["cpu_x_floor"]["max"]],
             "met": large["cpu_x_floor"]["median"] <= TARGET_CPU_X_FLOOR},
            {"target": f"CPU <= {TARGET_CPU_PER_GB} s per GB (whole client process)",
             "measured": o["cpu_s_per_gb"]["median"], "range": [o["cpu_s_per_gb"]["min"], o["cpu_s_per_gb"]["max"]],
             "met": o["cpu_s_per_gb"]["median"] <= TARGET_CPU_PER_GB},
            {"target": f"peak RSS <= {TARGET_PEAK_RSS_MB:.0f} MB (1 GB share)",
             "measured": o["peak_rss_mb"]["max"], "range": [o["peak_rss_mb"]["min"], o["peak_rss_mb"]["max"]],
             "met": o["peak_rss_mb"]["max"] <= TARGET_PEAK_RSS_MB},
        ]
    if large and large.get("nzb"):
        nz = large["nzb"]
        verdicts += [
            {"target": f"--nzb throughput >= {TARGET_RATIO} x bare BODY loop", "measured": nz["ratio_paired"]["median"],
             "range": [nz["ratio_paired"]["min"], nz["ratio_paired"]["max"]],
             "met": nz["ratio_paired"]["median"] >= TARGET_RATIO},
            {"target": f"--nzb CPU (download_nzb) <= {TARGET_CPU_X_FLOOR} x same-run stage floor",
             "measured": nz["cpu_x_floor"]["median"], "range": [nz["cpu_x_floor"]["min"], nz["cpu_x_floor"]["max"]],
             "met": nz["cpu_x_floor"]["median"] <= TARGET_CPU_X_FLOOR},
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
    ap.add_argument("--max-peer-wait", type=float, default=float("inf"),
                    help="seconds in all to wait for other benchmarks before measuring anyway (default: no limit)")
    ap.add_argument("--compare-tree", type=Path, default=None,
                    help="another checkout (e.g. a copy of the code before a change) measured in the same "
                    "iterations, interleaved: a same-run before/after")
    ap.add_argument("--no-nzb", action="store_true", help="skip `download --nzb` of the same articles")
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
    _PEER_BUDGET[0] = args.max_peer_wait

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
        g = prof.get("gil")
        if g:
            print(f"\nGIL held (py-spy --gil) {g['held_pct_of_wall']}% of the process wall "
                  f"({g['samples']:,} samples; that run {g['run']['mb_s']:,.0f} MB/s); by thread: "
                  + ", ".join(f"{k} {v}%" for k, v in g["by_thread_pct"][:6]))
            print("self time while holding the GIL (% of GIL samples):")
            for k, v in g["self_pct"][:15]:
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
            "profile": {k: ({kk: vv for kk, vv in v.items() if kk != "run"} if k == "gil" else v)
                        for k, v in prof.items() if k != "run"} if prof else None,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
