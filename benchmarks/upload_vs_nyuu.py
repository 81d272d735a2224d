"""The ``--vs-nyuu`` mode of bench_upload.py: usenetsync against Nyuu 0.4.0 and the stage floor, on one file.

Owns: one 1 GiB ``os.urandom`` file (cached in the workdir as the one-file
"large" folder ``large-1x1073741824-1073741824/large00.bin``), a private
install of Nyuu 0.4.0 from the npm registry (``<workdir>/nyuu-0.4.0``), and
four kinds of run into the same discard sink (``discard_sink.py``), turn by
turn in one process tree:

1. **ours**: ``upload_folder`` in a fresh child, exactly as the default mode
   runs it (``bench_upload.run_ours``): encryption, BLAKE3 hashing and the
   STAT post-check on, ``check_delay`` 0 (the sink answers every STAT 223),
   4 connections. ``upload_folder`` makes no PAR2 (``cli/upload.py`` does,
   after it), so this is ``usenetsync upload --redundancy 0``. Figures: wall
   and CPU (``RUSAGE_SELF``) around ``upload_folder`` as the default mode
   reports them, and the whole child (interpreter start, imports, opening
   the state) from the parent: wall from spawn to reap and the child's
   rusage (``RUSAGE_CHILDREN`` delta). Peak RSS is the child's ``VmHWM``.
2. **nyuu**: ``node nyuu.js`` on the same file, 4 connections, articles of
   768,000 bytes (ours' segment size, so both post the same 1,399 articles),
   ``--post-chunk-size 0`` (one write per article instead of 192 KiB
   chunks), an NZB written (``-o``: its job, as ours writes its state), and
   the post-check on (``-k1 --check-delay 0 --check-tries 1
   --check-post-tries 0``: one extra connection that STATs every article at
   once, as ours does). A second series, **nyuu (no check)**, drops ``-k1``:
   Nyuu's default, and the cheapest Nyuu can be. Wall is spawn to reap, CPU
   the child's rusage from ``wait4``; Nyuu's own "Finished uploading ... in"
   time (without node's start) is kept too. Peak RSS is its ``VmHWM``,
   sampled every 0.1 s.
3. **floor**: one Python child (allocator tuned as ``main()`` does) runs the
   stages on ~768 KB segments of the same file on ONE thread and sums each
   stage's ``time.thread_time``: read (``os.preadv`` into a reused buffer),
   BLAKE3 (``max_threads=1``, as core/hashing.py), AES-256-GCM seal
   (``AESGCM.encrypt`` with a 12-byte nonce and 45-byte AAD, joined behind
   the version byte and nonce, as core/crypto.py), yEnc (``sabctools``, as
   core/article.py) and the send (POST / 340 / header, ybegin, data, yend
   / 240 over one bare socket into the sink, framing included). The sum in
   CPU-s/GiB is the least CPU any pipeline doing these stages can spend.
4. **baseline**: bench_upload's bare POST loop (4 threads, pre-encoded
   articles of ours' mean size) into the sink: how fast the sink can take
   articles at all, so a Nyuu figure near it means the sink, not Nyuu, is the
   ceiling. The sink's own CPU is measured per run as well.

Iterations: ``--runs``; the kinds run in a fixed list whose order is
reversed every other iteration. Before every run the file is read again and
``os.sync`` runs (bench_upload's ``warm`` / ``settle``). Before every
iteration (and before building the file) the script waits, up to
``--max-peer-wait`` seconds in all, while another benchmarks/bench_*.py that
started before this one is busy (its process tree uses >= 5% of a core): two
benchmarks on 2 cores ruin each other. Waiting only for older, busy peers
means it never waits for a script that is itself waiting for it.

Targets: ours/Nyuu throughput >= 1.0 (whole processes, Nyuu with its check),
ours CPU-s/GiB (inside ``upload_folder``) / floor <= 1.3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_upload as bu

NYUU_VERSION = "0.4.0"
NODE = "/usr/bin/node"
GIB = 1 << 30
MIB = 1 << 20
TARGET_VS_NYUU = 1.0  # ours / Nyuu throughput
TARGET_CPU_VS_FLOOR = 1.3  # ours CPU-s/GiB / the floor's
AAD_SIZE = 45  # core.crypto.AAD_SIZE (epoch 0)
KINDS = ("ours", "nyuu", "nyuu_nocheck", "floor", "baseline")
_NYUU_DONE = re.compile(r"Finished uploading .* in (\d+):(\d+):(\d+(?:\.\d+)?)")


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------
# Waiting for other benchmarks
# --------------------------------------------------------------------------


def _start_ticks(pid: int) -> int:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _ancestors() -> set[int]:
    """This process and its ancestors (a shell that runs the script is no peer)."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def _tree_cpu_ticks(roots: set[int]) -> dict[int, int]:
    """Per root: CPU ticks (user+sys, and of reaped children) of it and every live descendant."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(d)] = int(f[1])
        ticks[int(d)] = sum(int(x) for x in f[11:15])
    out = dict.fromkeys(roots, 0)
    for pid, t in ticks.items():
        p, seen = pid, 0
        while p not in roots and p > 1 and seen < 64:
            p, seen = parent.get(p, 0), seen + 1
        if p in roots:
            out[p] += t
    return out


def older_peers(window: float = 5.0) -> list[str]:
    """Other benchmarks/bench_*.py processes that started before this one and are busy.

    Busy: the process and its descendants used >= 5% of a core over ``window``
    seconds. A peer that sits in its own wait for other benchmarks (some wait
    for every bench_*.py, this one included, without a limit) is idle, so
    it is not waited for: otherwise the two would wait for each other.
    """
    try:
        out = subprocess.run(["pgrep", "-af", r"bench_[a-z0-9_]+\.py"], capture_output=True, text=True,
                             check=False).stdout
    except OSError:
        return []
    mine, me = _ancestors(), _start_ticks(os.getpid())
    lines: dict[int, str] = {}
    for line in out.splitlines():
        try:
            pid = int(line.split()[0])
            if pid in mine or _start_ticks(pid) > me:
                continue
        except (OSError, ValueError, IndexError):
            continue  # gone already
        lines[pid] = line
    if not lines:
        return []
    before = _tree_cpu_ticks(set(lines))
    time.sleep(window)
    after = _tree_cpu_ticks(set(lines))
    hz = os.sysconf("SC_CLK_TCK")
    return [ln for pid, ln in lines.items() if (after[pid] - before[pid]) / hz >= 0.05 * window]


class PeerWait:
    """Waits while busy older benchmarks run, up to ``budget`` seconds in all."""

    def __init__(self, budget: float) -> None:
        self.left = budget
        self.waited = 0.0

    def __call__(self) -> None:
        if self.left <= 0 or not (peers := older_peers()):
            return
        log("  waiting for other benchmarks (2 cores: concurrent benchmarks ruin each other): "
            + "; ".join(" ".join(p.split()[1:4])[:80] for p in peers[:3]) + " ...")
        t0 = time.monotonic()
        while (still := bool(older_peers())) and time.monotonic() - t0 < self.left:
            pass  # older_peers() itself watches for 5 s
        dt = time.monotonic() - t0
        self.left -= dt
        self.waited += dt
        log(f"  ... waited {dt:.0f} s" + ("; budget spent, going on beside them" if still else "; settling 5 s"))
        if not still:
            time.sleep(5)


# --------------------------------------------------------------------------
# Nyuu
# --------------------------------------------------------------------------


def ensure_nyuu(workdir: Path) -> Path:
    """nyuu.js of Nyuu 0.4.0 under ``workdir``, installed with npm if it is not there yet."""
    home = workdir / f"nyuu-{NYUU_VERSION}"
    js = home / "node_modules" / "nyuu" / "bin" / "nyuu.js"
    pkg = home / "node_modules" / "nyuu" / "package.json"
    try:
        ok = json.loads(pkg.read_text()).get("version") == NYUU_VERSION and js.is_file()
    except (OSError, ValueError):
        ok = False
    if not ok:
        home.mkdir(parents=True, exist_ok=True)
        log(f"  installing nyuu@{NYUU_VERSION} into {home} (npm) ...")
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", f"nyuu@{NYUU_VERSION}"], cwd=home,
                           capture_output=True, text=True, check=False)
        if r.returncode != 0 or not js.is_file():
            sys.exit(f"bench_upload: npm install nyuu@{NYUU_VERSION} failed:\n{r.stderr[-2000:]}")
    # Nyuu needs the native yencode module; npm may skip its build (install scripts not allowed).
    r = subprocess.run([NODE, "-e", "require('yencode')"], cwd=home, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"bench_upload: Nyuu's yencode module does not load (was its node-gyp build skipped?):\n"
                 f"{r.stderr[-1500:]}")
    return js


def nyuu_args(js: Path, path: Path, port: int, connections: int, nzb: Path, check: bool) -> list[str]:
    args = [NODE, str(js), "-h", "127.0.0.1", "-P", str(port), "-n", str(connections),
            "-a", str(bu.SEGMENT_SIZE), "--post-chunk-size", "0", "-g", bu.GROUP,
            "-o", str(nzb), "-O", "-l", "3", "--progress", "none"]
    if check:
        args += ["-k1", "--check-delay", "0", "--check-tries", "1", "--check-post-tries", "0"]
    return [*args, str(path)]


def run_nyuu(js: Path, path: Path, sink: bu.Sink, connections: int, workdir: Path, check: bool) -> dict[str, Any]:
    bu.warm(path.parent)
    bu.settle()
    size = path.stat().st_size
    nzb = workdir / "nyuu-run.nzb"
    errf = workdir / "nyuu-run.log"
    c0 = sink.cpu_s()
    with open(errf, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(nyuu_args(js, path, sink.port, connections, nzb, check), cwd=js.parent,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        hwm = 0
        while True:
            # wait4, not Popen.wait: the rusage is the child's own. VmHWM is sampled while it runs, because
            # ru_maxrss after a vfork+exec can carry this parent's peak.
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]) * 1024)
            except OSError:
                pass
            time.sleep(0.1)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    c1 = sink.cpu_s()
    text = errf.read_text(errors="replace")
    if proc.returncode != 0 or "[ERR" in text:
        raise RuntimeError(f"nyuu failed ({proc.returncode}):\n{text[-2000:]}")
    m = _NYUU_DONE.search(text)
    own = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else None
    articles = nzb.read_text().count("<segment ")
    cpu = ru.ru_utime + ru.ru_stime
    return {
        "wall_s": round(wall, 3), "mib_s": size / MIB / wall, "cpu_s": cpu, "cpu_user_s": ru.ru_utime,
        "cpu_sys_s": ru.ru_stime, "cpu_s_per_gib": cpu / (size / GIB), "peak_rss_mb": hwm / 1e6 if hwm else None,
        "own_s": own, "own_mib_s": size / MIB / own if own else None, "articles": articles,
        "sink_cpu_s": c1 - c0, "sink_cpu_s_per_gib": (c1 - c0) / (size / GIB), "sink_cores": (c1 - c0) / (own or wall),
    }


# --------------------------------------------------------------------------
# The stage floor: one thread, every stage once, timed on its own
# --------------------------------------------------------------------------

_CHILD_FLOOR = bu._CHILD_PRELUDE + r"""
# As main() does first (the allocator changes what seal + yEnc cost).
from usenetsync_cli.cli.app import _tune_allocator
_tune_allocator()
import socket
import sabctools
from blake3 import blake3
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

seg = spec["segment_size"]
aes = AESGCM(os.urandom(32))
aad = os.urandom(spec["aad_size"])
version = b"\x01"
group = spec["group"].encode()
buf = bytearray(seg)
view = memoryview(buf)
fd = os.open(spec["path"], os.O_RDONLY)
size = os.fstat(fd).st_size
date = b"Date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()).encode() + b"\r\n"

sock = socket.create_connection((spec["host"], spec["port"]), timeout=60)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rbuf = bytearray(4096)

def reply(code):
    n = sock.recv_into(rbuf)
    while not rbuf[:n].endswith(b"\r\n"):
        k = sock.recv_into(memoryview(rbuf)[n:])
        if not k:
            raise ConnectionError("sink closed")
        n += k
    if not rbuf[:n].startswith(code):
        raise RuntimeError(bytes(rbuf[:n]))

def sendv(parts):
    views = [memoryview(p) for p in parts]
    while views:
        n = sock.sendmsg(views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]

reply(b"200")
tt = time.thread_time
st = {"read": 0.0, "hash": 0.0, "seal": 0.0, "yenc": 0.0, "send": 0.0}
off = i = 0
u0, s0 = _cpu()
t0 = time.perf_counter()
while off < size:
    c0 = tt()
    want = min(seg, size - off)
    data = view[:want]
    got = 0
    while got < want:
        n = os.preadv(fd, [data[got:]], off + got)
        if not n:
            raise RuntimeError("short read")
        got += n
    c1 = tt()
    h = blake3(data, max_threads=1).digest()
    c2 = tt()
    nonce = os.urandom(12)
    sealed = b"".join((version, nonce, aes.encrypt(nonce, data, aad)))
    c3 = tt()
    enc, crc = sabctools.yenc_encode(sealed)
    c4 = tt()
    n = len(sealed)
    head = (b"From: floor <floor@example.invalid>\r\nNewsgroups: " + group + b"\r\nSubject: floor %d\r\n"
            b"Message-ID: <f%d.%d@floor.invalid>\r\n" % (i, i, os.getpid()) + date + b"\r\n"
            b"=ybegin part=1 total=1 line=128 size=%d name=f%d.bin\r\n=ypart begin=1 end=%d\r\n" % (n, i, n))
    tail = b"\r\n=yend size=%d part=1 pcrc32=%08x crc32=%08x\r\n.\r\n" % (n, crc, crc)
    sock.sendall(b"POST\r\n")
    reply(b"340")
    sendv((head, enc, tail))
    reply(b"240")
    c5 = tt()
    st["read"] += c1 - c0
    st["hash"] += c2 - c1
    st["seal"] += c3 - c2
    st["yenc"] += c4 - c3
    st["send"] += c5 - c4
    off += want
    i += 1
wall = time.perf_counter() - t0
u1, s1 = _cpu()
sock.sendall(b"QUIT\r\n")
sock.close()
print(json.dumps({"stages": st, "bytes": size, "segments": i, "wall_s": wall, "cpu_s": (u1 - u0) + (s1 - s0)}))
"""


def run_floor(path: Path, sink: bu.Sink) -> dict[str, Any]:
    bu.warm(path.parent)
    bu.settle()
    c0 = sink.cpu_s()
    r = bu.run_child(_CHILD_FLOOR, {"kind": "floor", "path": str(path), "host": "127.0.0.1", "port": sink.port,
                                    "segment_size": bu.SEGMENT_SIZE, "aad_size": AAD_SIZE, "group": bu.GROUP})
    c1 = sink.cpu_s()
    gib = r["bytes"] / GIB
    out: dict[str, Any] = {f"{k}_s_per_gib": v / gib for k, v in r["stages"].items()}
    out["sum_s_per_gib"] = sum(r["stages"].values()) / gib
    # The loop's own cost (thread_time calls, framing outside the stages) and anything not in a stage.
    out["process_cpu_s_per_gib"] = r["cpu_s"] / gib
    out["wall_s"] = round(r["wall_s"], 3)
    out["segments"] = r["segments"]
    out["sink_cpu_s"] = c1 - c0
    out["sink_cpu_s_per_gib"] = (c1 - c0) / gib
    out["sink_cores"] = (c1 - c0) / r["wall_s"]
    return out


# --------------------------------------------------------------------------
# Ours and the baseline (bench_upload's own runners)
# --------------------------------------------------------------------------


def run_ours(workdir: Path, root: Path, sink: bu.Sink, connections: int) -> dict[str, Any]:
    c0 = sink.cpu_s()
    r = bu.run_ours(workdir, root, "nyuu-ours", "127.0.0.1", sink.port, connections, bu.SINK_CHECK_DELAY)
    c1 = sink.cpu_s()
    gib = r["payload_bytes"] / GIB
    return {
        "wall_s": r["wall_s"], "mib_s": gib * 1024 / r["wall_s"], "cpu_s": r["cpu_s"],
        "cpu_s_per_gib": r["cpu_s"] / gib,
        "proc_wall_s": round(r["proc_wall_s"], 3), "proc_mib_s": gib * 1024 / r["proc_wall_s"],
        "proc_cpu_s": r["proc_cpu_s"], "proc_cpu_s_per_gib": r["proc_cpu_s"] / gib,
        "peak_rss_mb": r["peak_rss_mb"], "articles": r["articles"], "payload_bytes": r["payload_bytes"],
        "efficiency": r["efficiency"], "threads": r["threads"], "sink_cpu_s": c1 - c0,
        "sink_cpu_s_per_gib": (c1 - c0) / gib, "sink_cores": (c1 - c0) / r["wall_s"],
    }


def run_baseline(sink: bu.Sink, connections: int, articles: int, mean_payload: int) -> dict[str, Any]:
    c0 = sink.cpu_s()
    r = bu.run_baseline("127.0.0.1", sink.port, connections, articles, mean_payload)
    c1 = sink.cpu_s()
    gib = articles * mean_payload / GIB
    return {"wall_s": r["wall_s"], "mib_s": gib * 1024 / r["wall_s"], "cpu_s_per_gib": r["cpu_s"] / gib,
            "sink_cpu_s": c1 - c0, "sink_cpu_s_per_gib": (c1 - c0) / gib, "sink_cores": (c1 - c0) / r["wall_s"]}


# --------------------------------------------------------------------------
# The mode
# --------------------------------------------------------------------------


def _stat(values: list[float], nd: int = 3) -> dict[str, float] | None:
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": round(statistics.median(v), nd), "min": round(min(v), nd), "max": round(max(v), nd)}


def _fmt(st: dict[str, float] | None, fmt: str = "{:,.1f}") -> str:
    if not st:
        return "–"
    return f"{fmt.format(st['median'])} [{fmt.format(st['min'])}–{fmt.format(st['max'])}]"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vs-nyuu", action="store_true",
                   help="instead of the INN/sink series: usenetsync vs Nyuu 0.4.0 vs the one-thread stage floor, "
                        "one 1 GiB file into the discard sink (installs Nyuu with npm into the workdir)")
    p.add_argument("--nyuu-file-mib", type=int, default=1024, help="with --vs-nyuu: size of the file (default 1024)")
    p.add_argument("--max-peer-wait", type=float, default=900.0,
                   help="with --vs-nyuu: seconds in all to wait for older benchmarks/bench_*.py (default 900)")


def run(a: argparse.Namespace, runs: int) -> dict[str, Any]:
    """The whole --vs-nyuu mode; returns the JSON document."""
    t_start = time.perf_counter()
    wait = PeerWait(a.max_peer_wait)
    wait()  # before building the file or installing Nyuu too: both load the machine
    workdir = a.workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    js = ensure_nyuu(workdir)
    fs = bu.FolderSpec("large", 1, a.nyuu_file_mib * MIB, a.nyuu_file_mib * MIB)
    root, meta = bu.ensure_folder(workdir, fs)
    path = root / "large00.bin"
    log(f"  file: {path} ({meta['bytes'] / MIB:,.0f} MiB, {'cached' if meta['reused'] else 'built'}); "
        f"nyuu: {js}")
    for stale in workdir.glob("home-*"):
        shutil.rmtree(stale, ignore_errors=True)
    sink = bu.Sink()
    series: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    loads: list[float] = []
    try:
        # Untimed warm-up of each program (page cache of interpreters and libraries), and ours' article plan.
        w = bu.run_ours(workdir, root, "nyuu-warm", "127.0.0.1", sink.port, a.connections, bu.SINK_CHECK_DELAY)
        run_nyuu(js, path, sink, a.connections, workdir, True)
        n_art, mean_payload = w["articles"], round(w["payload_bytes"] / w["articles"])
        log(f"  plan: {n_art:,} articles, mean payload {mean_payload:,} B; warm-up ours {w['mb_s'] / 1.048576:.0f} "
            f"MiB/s")
        for i in range(runs):
            wait()
            loads.append(os.getloadavg()[0])
            order = KINDS if i % 2 == 0 else tuple(reversed(KINDS))
            for kind in order:
                if kind == "ours":
                    r = run_ours(workdir, root, sink, a.connections)
                elif kind == "nyuu":
                    r = run_nyuu(js, path, sink, a.connections, workdir, True)
                elif kind == "nyuu_nocheck":
                    r = run_nyuu(js, path, sink, a.connections, workdir, False)
                elif kind == "floor":
                    r = run_floor(path, sink)
                else:
                    r = run_baseline(sink, a.connections, n_art, mean_payload)
                series[kind].append(r)
            loads.append(os.getloadavg()[0])
            o, n, nn, f = (series[k][-1] for k in ("ours", "nyuu", "nyuu_nocheck", "floor"))
            o["vs_nyuu"] = o["proc_mib_s"] / n["mib_s"]
            o["vs_nyuu_nocheck"] = o["proc_mib_s"] / nn["mib_s"]
            o["inner_vs_nyuu_own"] = o["mib_s"] / n["own_mib_s"] if n.get("own_mib_s") else None
            o["cpu_vs_floor"] = o["cpu_s_per_gib"] / f["sum_s_per_gib"]
            o["proc_cpu_vs_nyuu"] = o["proc_cpu_s"] / n["cpu_s"]
            log(f"  run {i + 1}/{runs}: ours {o['proc_mib_s']:.0f} MiB/s ({o['mib_s']:.0f} in upload_folder), "
                f"{o['cpu_s_per_gib']:.2f} CPU-s/GiB; nyuu {n['mib_s']:.0f} MiB/s, {n['cpu_s_per_gib']:.2f} "
                f"CPU-s/GiB (no check {nn['mib_s']:.0f}); floor {f['sum_s_per_gib']:.2f} CPU-s/GiB; "
                f"baseline {series['baseline'][-1]['mib_s']:.0f} MiB/s (load {loads[-2]:.2f} -> {loads[-1]:.2f})")
    finally:
        sink_totals = sink.close()
    res: dict[str, Any] = {"file_bytes": meta["bytes"], "articles": n_art, "mean_payload": mean_payload,
                           "nyuu_version": NYUU_VERSION,
                           "nyuu_args": [x.replace("65536", "SINK_PORT") for x in
                                         nyuu_args(js, path, 65536, a.connections, Path("NZB"), True)[2:]],
                           "loadavg_1min": _stat(loads, 2), "peer_wait_s": round(wait.waited),
                           "sink_totals": sink_totals}
    for kind, rs in series.items():
        keys = sorted({k for r in rs for k, v in r.items() if isinstance(v, (int, float)) and v is not None})
        res[kind] = {k: st for k in keys if (st := _stat([r.get(k) for r in rs], 4)) is not None}
        res[kind]["runs"] = rs
    res["targets"] = report(res, runs, a.connections)
    res["total_s"] = round(time.perf_counter() - t_start, 1)
    return res


def report(res: dict[str, Any], runs: int, connections: int) -> dict[str, Any]:
    print(f"\n## bench_upload --vs-nyuu ({res['file_bytes'] / MIB:,.0f} MiB file, {res['articles']:,} articles, "
          f"{connections} connections, {runs} runs; median [min–max])\n")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, node {_node_version()}, "
          f"Nyuu {NYUU_VERSION}; load {_fmt(res['loadavg_1min'], '{:.2f}')}")
    print("\n| run | MiB/s | wall s | CPU-s/GiB | peak RSS MB | sink CPU-s/GiB | sink cores busy |")
    print("|---|---|---|---|---|---|---|")
    o, n, nn, b, f = (res[k] for k in ("ours", "nyuu", "nyuu_nocheck", "baseline", "floor"))

    def row(label: str, s: dict[str, Any], mib: str, wall: str, cpu: str, rss: bool = True, sink: bool = True) -> None:
        print(f"| {label} | {_fmt(s.get(mib), '{:,.0f}')} | {_fmt(s.get(wall), '{:.2f}')} | "
              f"{_fmt(s.get(cpu), '{:.2f}')} | {_fmt(s.get('peak_rss_mb')) if rss else '–'} | "
              f"{_fmt(s.get('sink_cpu_s_per_gib'), '{:.2f}') if sink else '–'} | "
              f"{_fmt(s.get('sink_cores'), '{:.2f}') if sink else '–'} |")

    row("ours, whole child", o, "proc_mib_s", "proc_wall_s", "proc_cpu_s_per_gib")
    row("ours, upload_folder only", o, "mib_s", "wall_s", "cpu_s_per_gib", rss=False, sink=False)
    row("Nyuu, check on", n, "mib_s", "wall_s", "cpu_s_per_gib")
    row("Nyuu, check on, its own timer", n, "own_mib_s", "own_s", "-", rss=False, sink=False)
    row("Nyuu, no check", nn, "mib_s", "wall_s", "cpu_s_per_gib")
    row("baseline (bare POST loop, pre-encoded)", b, "mib_s", "wall_s", "cpu_s_per_gib", rss=False)
    row("stage floor (one thread, one connection)", f, "-", "wall_s", "process_cpu_s_per_gib", rss=False)
    print("\nstage floor, one thread (CPU-s/GiB):")
    for k in ("read", "hash", "seal", "yenc", "send"):
        print(f"  {k:5s} {_fmt(f.get(f'{k}_s_per_gib'), '{:.3f}')}")
    print(f"  sum   {_fmt(f.get('sum_s_per_gib'), '{:.3f}')}  (whole floor process "
          f"{_fmt(f.get('process_cpu_s_per_gib'), '{:.3f}')}, wall {_fmt(f.get('wall_s'), '{:.2f}')} s)")
    print(f"\nours/Nyuu (paired per run): whole processes {_fmt(o.get('vs_nyuu'), '{:.3f}')}, vs Nyuu without check "
          f"{_fmt(o.get('vs_nyuu_nocheck'), '{:.3f}')}, upload_folder vs Nyuu's own timer "
          f"{_fmt(o.get('inner_vs_nyuu_own'), '{:.3f}')}; CPU of the whole child, ours/Nyuu "
          f"{_fmt(o.get('proc_cpu_vs_nyuu'), '{:.3f}')}")
    sink_limit = b["mib_s"]["median"] if b.get("mib_s") else None
    if sink_limit and n.get("mib_s"):
        share = n["mib_s"]["median"] / sink_limit
        print(f"sink: the bare baseline gets {sink_limit:,.0f} MiB/s into it; Nyuu reaches {share:.0%} of that, ours "
              f"{o['proc_mib_s']['median'] / sink_limit:.0%}: "
              + ("the sink's speed is NOT what limits them" if share < 0.7 else "the sink may be what limits Nyuu"))
        # Client and sink share the 2 cores: what both spend per GiB bounds the rate however they overlap.
        for label, s, cpu in (("Nyuu", n, "cpu_s_per_gib"), ("ours", o, "proc_cpu_s_per_gib")):
            if s.get(cpu) and s.get("sink_cpu_s_per_gib"):
                both = s[cpu]["median"] + s["sink_cpu_s_per_gib"]["median"]
                print(f"  {label}: client {s[cpu]['median']:.2f} + sink {s['sink_cpu_s_per_gib']['median']:.2f} "
                      f"CPU-s/GiB on {os.cpu_count()} cores -> at most {(os.cpu_count() or 1) / both * 1024:,.0f} MiB/s")
    targets: dict[str, Any] = {}
    print("\n| target | measured: median [min–max] | target | verdict |")
    print("|---|---|---|---|")
    for key, label, st, limit, higher in (
        ("vs_nyuu", "throughput ours/Nyuu (whole processes, both checking)", o.get("vs_nyuu"), TARGET_VS_NYUU, True),
        ("cpu_vs_floor", "CPU-s/GiB ours (upload_folder) / stage floor", o.get("cpu_vs_floor"), TARGET_CPU_VS_FLOOR,
         False),
    ):
        if not st:
            continue
        ok = st["median"] >= limit if higher else st["median"] <= limit
        targets[key] = {"value": st, "target": limit, "met": ok, "margin_pct": round((st["median"] / limit - 1) * 100, 1)}
        print(f"| {label} | {_fmt(st, '{:.3f}')} | {'≥' if higher else '≤'} {limit:g} | "
              f"{'met' if ok else 'missed'} ({(st['median'] / limit - 1) * 100:+.0f}%) |")
    return targets


def _node_version() -> str:
    try:
        return subprocess.run([NODE, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "?"
