#!/usr/bin/env python3
"""Benchmark of posting and fetching over implicit TLS (INN's port 563, TLS + AUTHINFO) against bare TLS loops.

Owns: measuring, turn by turn, four things on one random folder (``--mib``,
default 256 MiB, files of at most 128 MiB), each in a fresh child process:

1. ours, upload: the real ``usenetsync upload FOLDER --redundancy 0 --no-backup --json``
   to a server added with ``--tls --ca-file /etc/news/cert.pem --user ...
   --password-file ...`` (port 563), in ``benchmarks/cli_child.py``'s child
   with ``upload_folder`` wrapped to time it and its CPU alone. A fresh
   publisher home per iteration (``server add``, ``keys init``, ``index``,
   ``share create --public``: untimed), so the upload posts everything and
   publishes the share.
2. bare TLS POST loop, in the same iteration: ``ssl``-wrapped sockets (the same
   CA file, hostname checked), AUTHINFO, then POST / 340 / sendall / 240, one
   thread per connection, the same number of articles of the same size as
   ours posted (mean payload + the 29-byte seal), yEnc-encoded before the
   clock starts, with headers like ours.
3. ours, download: ``usenetsync download SHARE_ID DEST --connections N --json`` of
   the share the iteration's upload published, through bench_download's
   launcher (its ``run_ours``: ``download_records`` timed alone, whole-process
   CPU from ``RUSAGE_CHILDREN``), a reader home whose only server is the TLS one.
4. bare pipelined TLS BODY loop, in the same iteration: the share's data
   articles (Message-IDs from the publisher's state, as bench_download does),
   ``ssl``-wrapped sockets, AUTHINFO, up to ``--window`` BODY requests in flight
   per connection (refilled at half), ``recv_into`` a 1 MiB buffer, scanning
   for the terminator, bytes discarded.

Order alternates per iteration (ours first, then bare first). Before every
upload the folder is read again and ``os.sync()`` runs (bench_upload's
``warm``/``settle``: DAMON reclaim and INN's writeback). MiB/s is plaintext
payload (MiB = 2^20 B) over the pipeline's wall time (``upload_folder`` /
``download_records``; the bare loops' own timed part); CPU-s/GiB is the client's
CPU over that same part (pipeline alone for ours; the whole process is
reported too). The ratios are medians of the per-iteration ratios. Server CPU
(innd + both nnrpd daemons and their reaped children, from /proc) is given
per article.

Coordination: waits while any other ``benchmarks/bench_*.py`` runs (as
bench_download does), before the setup and before every iteration.

INN keeps every article: each iteration stores ~2 x ``--mib`` in the spool.

Usage:
    python3 benchmarks/bench_tls.py                      # 256 MiB, 3 iterations, 4 connections
    python3 benchmarks/bench_tls.py --mib 256 --runs 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The sibling benchmarks are plain scripts: import their helpers from this folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_download as bd
import bench_upload as bu
import cli_child

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TLS_PORT = int(os.environ.get("INN_TLS_PORT", "563"))
USER = os.environ.get("INN_USER", "testuser")
PASSWORD = os.environ.get("INN_PASS", "testpass")
CA_FILE = "/etc/news/cert.pem"
GROUP = "alt.binaries.test"
MIB = 1 << 20
GIB = 1 << 30
FILE_MAX = 128 * MIB
RUN_NAMES = {"ours_up": "ours: usenetsync upload", "bare_post": "bare TLS POST loop",
             "plain_post": "(reference) bare plain POST loop, port 119",
             "ours_down": "ours: usenetsync download", "bare_body": "bare pipelined TLS BODY loop",
             "plain_body": "(reference) bare pipelined plain BODY loop, port 119"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Coordination, INN
# --------------------------------------------------------------------------


def _peers() -> list[str]:
    """Other benchmarks/bench_*.py running now (this script and its shell excluded)."""
    try:
        out = subprocess.run(["pgrep", "-af", r"bench_[a-z0-9_]+\.py"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return []
    me = str(os.getpid())
    return [ln for ln in out.splitlines() if ln.split()[0] != me and "bench_tls" not in ln and "pgrep" not in ln]


_PEER_BUDGET = [float("inf")]  # seconds of waiting left in this run (--max-peer-wait)


def wait_for_peers(ignore: bool) -> float:
    """Block while another benchmark runs (2 cores: concurrent benchmarks ruin each other); seconds waited.

    At most --max-peer-wait seconds in all (as bench_download): then it measures alongside and says so.
    """
    if ignore:
        return 0.0
    t0 = time.monotonic()
    announced = False
    while peers := _peers():
        if time.monotonic() - t0 >= _PEER_BUDGET[0]:
            log("  --max-peer-wait used up: measuring alongside the other benchmarks (figures are noisier)")
            break
        if not announced:
            log("  waiting for other benchmarks to finish: " + "; ".join(" ".join(p.split()[1:4])[:80] for p in peers[:3]))
            announced = True
        time.sleep(10)
    waited = time.monotonic() - t0
    _PEER_BUDGET[0] = max(0.0, _PEER_BUDGET[0] - waited)
    if announced and not _peers():
        log(f"  ... they finished after {waited:.0f} s; settling 10 s")
        time.sleep(10)
    return waited


def _tls_greets() -> bool:
    import socket
    import ssl

    try:
        ctx = ssl.create_default_context(cafile=CA_FILE)
        with socket.create_connection((HOST, TLS_PORT), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=HOST) as s:
            return s.recv(64)[:3] in (b"200", b"201")
    except (OSError, ssl.SSLError):
        return False


def inn_up() -> None:
    bu.inn_up()
    if not _tls_greets():
        subprocess.run(["bash", str(bu.INN_UP)], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        if not _tls_greets():
            raise SystemExit(f"INN does not answer TLS on {HOST}:{TLS_PORT} (CA {CA_FILE})")


def _proc_total_cpu(pidfile: Path) -> float:
    """utime + stime + reaped children's (cutime + cstime) of the daemon in ``pidfile``, in seconds."""
    try:
        pid = int(pidfile.read_text().split()[0])
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def server_cpu_s() -> float:
    """innd plus every nnrpd daemon (the TLS one forks a child per connection and reaps it)."""
    run = Path("/run/news")
    return (bu.innd_cpu_s() or 0.0) + sum(_proc_total_cpu(p) for p in run.glob("nnrpd-*.pid"))


# --------------------------------------------------------------------------
# Publishing through the CLI (untimed) and ours, timed
# --------------------------------------------------------------------------


def add_tls_server(home: Path, pw: Path, connections: int) -> None:
    bd.cli(home, "server", "add", "tls", "--host", HOST, "--port", str(TLS_PORT), "--tls", "--ca-file", CA_FILE,
           "--user", USER, "--password-file", str(pw), "--group", GROUP, "--connections", str(connections),
           "--replace")


# cli_child.CLI runs the CLI's main() and writes code, wall, VmHWM and CPU of the whole process to argv[1];
# this prefix wraps upload_folder (looked up by name in cli/upload.py at call time) to time the pipeline alone.
_UPLOAD_WRAP = r"""
import atexit as _ae, json as _js, os as _os, resource as _rs, time as _tm
import usenetsync_cli.cli.upload as _up
_inner = {}
def _cpu():
    r = _rs.getrusage(_rs.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
_orig = _up.upload_folder
def upload_folder(*a, **kw):
    c0, t0 = _cpu(), _tm.perf_counter()
    try:
        return _orig(*a, **kw)
    finally:
        _inner.update(pipeline_wall_s=_tm.perf_counter() - t0, pipeline_cpu_s=_cpu() - c0)
_up.upload_folder = upload_folder
_ae.register(lambda: open(_os.environ["BENCH_TLS_INNER"], "w").write(_js.dumps(_inner)))
"""


def run_ours_upload(home: Path, root: Path, workdir: Path) -> dict[str, Any]:
    bu.warm(root)
    bu.settle()
    out = workdir / "upload-child.json"
    inner = workdir / "upload-inner.json"
    env = bd._env(home)
    env["BENCH_TLS_INNER"] = str(inner)
    s0 = server_cpu_s()
    proc = subprocess.run(
        [sys.executable, "-c", _UPLOAD_WRAP + cli_child.CLI, str(out), "upload", str(root), "--redundancy", "0",
         "--no-backup", "--json"],
        capture_output=True, text=True, env=env, cwd=str(REPO), check=False,
    )
    s1 = server_cpu_s()
    child = json.loads(out.read_text())
    if proc.returncode != 0 or child["code"] != 0:
        raise RuntimeError(f"upload failed ({proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
    summary = next(d for ln in proc.stdout.splitlines() if ln.startswith("{")
                   if (d := json.loads(ln)).get("type") == "upload.summary")
    if not summary["complete"] or summary["posted_now"] != summary["segments"] or summary["failed"]:
        raise RuntimeError(f"upload incomplete: {json.dumps(summary)[:1500]}")
    w = json.loads(inner.read_text())
    payload = summary["bytes_posted"]
    return {
        "mib_s": payload / MIB / w["pipeline_wall_s"],
        "wall_s": w["pipeline_wall_s"],
        "cpu_s_per_gib": w["pipeline_cpu_s"] / (payload / GIB),
        "process_cpu_s_per_gib": child["cpu_s"] / (payload / GIB),
        "process_wall_s": child["wall_s"],
        "peak_rss_mb": child["peak_rss"] / 1e6,
        "articles": summary["posted_now"],
        "payload_bytes": payload,
        "wire_bytes": summary["wire_bytes_posted"],
        "retries": summary["retries"],
        "server_cpu_ms_per_article": (s1 - s0) * 1000 / summary["posted_now"],
    }


def run_ours_download(pub: bd.Published, reader_home: Path, dest: Path, connections: int) -> dict[str, Any]:
    s0 = server_cpu_s()
    r = bd.run_ours(pub, reader_home, dest, connections)
    s1 = server_cpu_s()
    payload = r["payload_bytes"]
    return {
        "mib_s": payload / MIB / r["elapsed_s"],
        "wall_s": r["elapsed_s"],
        "cpu_s_per_gib": r.get("pipeline_cpu_s", r["cpu_s"]) / (payload / GIB),
        "process_cpu_s_per_gib": r["cpu_s"] / (payload / GIB),
        "process_wall_s": r["process_wall_s"],
        "peak_rss_mb": r["peak_rss_mb"],
        "articles": r["segments"],
        "payload_bytes": payload,
        "server_cpu_ms_per_article": (s1 - s0) * 1000 / max(1, r["segments"]),
    }


# --------------------------------------------------------------------------
# The bare TLS loops (children; bench_upload's prelude: _mem, _cpu, spec)
# --------------------------------------------------------------------------

_TLS_CONNECT = r"""
import socket, ssl

CTX = ssl.create_default_context(cafile=spec["cafile"])

def tls_login():
    raw = socket.create_connection((spec["host"], spec["port"]), timeout=60)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s = CTX.wrap_socket(raw, server_hostname=spec["host"])
    f = s.makefile("rb")
    if f.readline()[:3] not in (b"200", b"201"):
        raise RuntimeError("no greeting")
    s.sendall(b"AUTHINFO USER " + spec["user"].encode() + b"\r\n")
    if not f.readline().startswith(b"381"):
        raise RuntimeError("AUTHINFO USER")
    s.sendall(b"AUTHINFO PASS " + spec["password"].encode() + b"\r\n")
    if not f.readline().startswith(b"281"):
        raise RuntimeError("AUTHINFO PASS")
    return s, f
"""

_BARE_POST = bu._CHILD_PRELUDE + _TLS_CONNECT + r"""
import itertools, threading, uuid
import sabctools

n, size, conns = spec["articles"], spec["article_payload"], spec["connections"]
token = uuid.uuid4().hex
date = b"Date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()).encode() + b"\r\n"
articles = []
for i in range(n):  # pre-encoded before the clock starts
    data = os.urandom(size)
    enc, crc = sabctools.yenc_encode(data)
    head = (b"From: bench <bench@example.invalid>\r\nNewsgroups: " + spec["group"].encode() + b"\r\n"
            b"Subject: bench %d\r\nMessage-ID: <t%d.%s@baseline.invalid>\r\n" % (i, i, token.encode()) + date + b"\r\n")
    body = (b"=ybegin part=1 total=1 line=128 size=%d name=t%d.bin\r\n=ypart begin=1 end=%d\r\n" % (size, i, size)
            + enc + b"\r\n=yend size=%d part=1 pcrc32=%08x crc32=%08x\r\n.\r\n" % (size, crc, crc))
    articles.append(head + body)
wire = sum(len(a) for a in articles)
counter = itertools.count()
errors = []

def poster():
    try:
        s, f = tls_login()
        while (i := next(counter)) < n:
            s.sendall(b"POST\r\n")
            line = f.readline()
            if not line.startswith(b"340"):
                raise RuntimeError(f"POST: {line!r}")
            s.sendall(articles[i])
            line = f.readline()
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
    sys.exit("bare TLS POST loop failed: " + "; ".join(errors[:3]))
print(json.dumps({"wall_s": wall, "cpu_s": (u1 - u0) + (s1 - s0), "articles": n, "wire_bytes": wire}))
"""

_BARE_BODY = bu._CHILD_PRELUDE + _TLS_CONNECT + r"""
import itertools, threading

with open(spec["ids_file"], "rb") as fh:
    ids = [ln.strip() for ln in fh if ln.strip()]
n, conns, window = len(ids), spec["connections"], spec["window"]
QUICKACK = getattr(socket, "TCP_QUICKACK", None)
counter = itertools.count()  # next() is atomic under the GIL: a shared work list
stats, errors = [], []

def worker():
    try:
        s, _f = tls_login()  # nothing is buffered in _f: the server is silent after 281 until asked
        buf = bytearray(1 << 20)
        mv = memoryview(buf)
        filled = pos = search = wire = arts = missing = 0
        in_body, more = False, True

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
        while outstanding:
            while True:  # parse what is in the buffer
                if not in_body:
                    i = buf.find(b"\r\n", pos, filled)
                    if i < 0:
                        break
                    if buf[pos:pos + 3] == b"222":
                        in_body, search = True, i
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
            keep = search if in_body else pos  # a partial status line, or a body's last 4 bytes
            rest = filled - keep
            if keep:
                buf[:rest] = buf[keep:filled]
                search -= keep
                pos -= keep
                filled = rest
            if filled == len(buf):
                raise RuntimeError("status line longer than the buffer")
            if QUICKACK is not None:  # as nntp/connection.py does: INN leaves Nagle on
                s.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
            r = s.recv_into(mv[filled:])
            if not r:
                raise ConnectionError("server closed the connection")
            wire += r
            filled += r
        s.sendall(b"QUIT\r\n")
        s.close()
        stats.append((arts, missing, wire))
    except Exception as e:
        errors.append(repr(e))

u0, s0 = _cpu()
t0 = time.perf_counter()
threads = [threading.Thread(target=worker) for _ in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.perf_counter() - t0
u1, s1 = _cpu()
if errors:
    sys.exit("bare TLS BODY loop failed: " + "; ".join(errors[:3]))
print(json.dumps({"wall_s": wall, "cpu_s": (u1 - u0) + (s1 - s0), "articles": sum(a for a, _, _ in stats),
                  "missing": sum(m for _, m, _ in stats), "wire_bytes": sum(w for _, _, w in stats)}))
"""


def _tls_spec(connections: int) -> dict[str, Any]:
    return {"host": HOST, "port": TLS_PORT, "cafile": CA_FILE, "user": USER, "password": PASSWORD,
            "group": GROUP, "connections": connections}


def run_bare_post(articles: int, mean_payload: int, connections: int) -> dict[str, Any]:
    bu.settle()
    s0 = server_cpu_s()
    r = bu.run_child(_BARE_POST, {"kind": "bare-tls-post", **_tls_spec(connections), "articles": articles,
                                  "article_payload": mean_payload + bu.SEAL_OVERHEAD})
    s1 = server_cpu_s()
    payload = articles * mean_payload  # the same unit as ours: plaintext payload
    return {"mib_s": payload / MIB / r["wall_s"], "wall_s": r["wall_s"], "cpu_s_per_gib": r["cpu_s"] / (payload / GIB),
            "articles": articles, "wire_bytes": r["wire_bytes"],
            "server_cpu_ms_per_article": (s1 - s0) * 1000 / articles}


def run_plain_post(articles: int, mean_payload: int, connections: int) -> dict[str, Any]:
    """bench_upload's plain-socket POST loop into port 119: what TLS costs the bare loop."""
    r = bu.run_baseline(HOST, 119, connections, articles, mean_payload, server_cpu=server_cpu_s)
    payload = articles * mean_payload
    return {"mib_s": payload / MIB / r["wall_s"], "wall_s": r["wall_s"],
            "cpu_s_per_gib": r["cpu_s_per_gb"] * GIB / 1e9, "articles": articles,
            "server_cpu_ms_per_article": r.get("server_cpu_ms_per_article")}


def run_plain_body(pub: bd.Published, connections: int, window: int) -> dict[str, Any]:
    """bench_download's plain-socket pipelined BODY loop from port 119, over the same articles."""
    s0 = server_cpu_s()
    r = bd.run_baseline(pub, connections, window, True)
    s1 = server_cpu_s()
    payload = pub.fs.total
    return {"mib_s": payload / MIB / r["elapsed_s"], "wall_s": r["elapsed_s"],
            "cpu_s_per_gib": r.get("loop_cpu_s", r["cpu_s"]) / (payload / GIB), "articles": pub.articles,
            "server_cpu_ms_per_article": (s1 - s0) * 1000 / pub.articles}


def run_bare_body(pub: bd.Published, connections: int, window: int) -> dict[str, Any]:
    s0 = server_cpu_s()
    r = bu.run_child(_BARE_BODY, {"kind": "bare-tls-body", **_tls_spec(connections), "ids_file": str(pub.ids_file),
                                  "window": window})
    s1 = server_cpu_s()
    if r["articles"] != pub.articles or r["missing"]:
        raise RuntimeError(f"bare BODY loop got {r['articles']} articles, {r['missing']} missing, of {pub.articles}")
    payload = pub.fs.total
    return {"mib_s": payload / MIB / r["wall_s"], "wall_s": r["wall_s"], "cpu_s_per_gib": r["cpu_s"] / (payload / GIB),
            "articles": r["articles"], "wire_bytes": r["wire_bytes"],
            "server_cpu_ms_per_article": (s1 - s0) * 1000 / r["articles"]}


# --------------------------------------------------------------------------
# One iteration
# --------------------------------------------------------------------------


def publisher_home(workdir: Path, root: Path, pw: Path, connections: int) -> Path:
    home = Path(tempfile.mkdtemp(prefix="home-pub-", dir=workdir))
    add_tls_server(home, pw, connections)
    bd.cli(home, "keys", "init", "--no-passphrase")
    bd.cli(home, "index", str(root))
    bd.cli(home, "share", "create", str(root), "--public", "--name", "tls")
    return home


def published(home: Path, fs: bd.FolderSpec, root: Path, workdir: Path) -> bd.Published:
    share_id = bd.cli(home, "share", "show", "tls", "--show-id").strip().splitlines()[-1].strip()
    ids_file = home / "msgids.txt"
    r = subprocess.run([sys.executable, "-c", bd._CHILD_MSGIDS,
                        json.dumps({"home": str(home), "root": str(root), "group": GROUP, "out": str(ids_file)})],
                       capture_output=True, text=True, env=bd._env(home), cwd=str(REPO), check=False)
    if r.returncode != 0:
        raise RuntimeError(f"reading the Message-IDs failed:\n{r.stderr[-3000:]}")
    articles = json.loads(r.stdout.strip().splitlines()[-1])["articles"]
    return bd.Published(fs, root, share_id, ids_file, articles)


def iteration(i: int, args: argparse.Namespace, fs: bd.FolderSpec, root: Path, workdir: Path, pw: Path
              ) -> dict[str, dict[str, Any]]:
    inn_up()
    home = publisher_home(workdir, root, pw, args.connections)
    reader = Path(tempfile.mkdtemp(prefix="home-reader-", dir=workdir))
    dest = workdir / "dest"
    out: dict[str, dict[str, Any]] = {}
    try:
        first_ours = i % 2 == 0
        # Upload turn. The bare loop needs ours' article count and size: when it goes first, it uses the
        # previous iteration's (the folder and the segment size do not change, so neither do they).
        plan = args._plan
        for kind in (("ours", "bare") if first_ours or plan is None else ("bare", "ours")):
            if kind == "ours":
                out["ours_up"] = run_ours_upload(home, root, workdir)
                args._plan = plan = (out["ours_up"]["articles"], round(out["ours_up"]["payload_bytes"]
                                                                       / out["ours_up"]["articles"]))
            else:
                out["bare_post"] = run_bare_post(plan[0], plan[1], args.connections)
        if args.plain:
            out["plain_post"] = run_plain_post(plan[0], plan[1], args.connections)
        # Download turn, of the share this iteration published.
        pub = published(home, fs, root, workdir)
        add_tls_server(reader, pw, args.connections)
        for kind in (("ours", "bare") if first_ours else ("bare", "ours")):
            if kind == "ours":
                out["ours_down"] = run_ours_download(pub, reader, dest, args.connections)
                if i == 0:
                    bd.verify(pub, dest)  # every byte and mtime, once
            else:
                out["bare_body"] = run_bare_body(pub, args.connections, args.window)
        if args.plain:
            out["plain_body"] = run_plain_body(pub, args.connections, args.window)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(reader, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
    out["ours_up"]["ratio"] = out["ours_up"]["mib_s"] / out["bare_post"]["mib_s"]
    out["ours_up"]["cpu_ratio"] = out["ours_up"]["cpu_s_per_gib"] / out["bare_post"]["cpu_s_per_gib"]
    out["ours_down"]["ratio"] = out["ours_down"]["mib_s"] / out["bare_body"]["mib_s"]
    out["ours_down"]["cpu_ratio"] = out["ours_down"]["cpu_s_per_gib"] / out["bare_body"]["cpu_s_per_gib"]
    return out


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _stat(runs: list[dict[str, Any]], key: str) -> dict[str, float] | None:
    v = [r[key] for r in runs if r.get(key) is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


def _fmt(st: dict[str, float] | None, fmt: str) -> str:
    if not st:
        return "–"
    return f"{fmt.format(st['median'])} [{fmt.format(st['min'])}–{fmt.format(st['max'])}]"


def report(series: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n## bench_tls: {args.mib} MiB over TLS ({HOST}:{TLS_PORT}, TLS + AUTHINFO), {args.connections} "
          f"connections, {len(series['ours_up'])} iterations (median [min–max])\n")
    print("| run | MiB/s | seconds | client CPU-s/GiB | whole process CPU-s/GiB | peak RSS MB | server CPU ms/article |")
    print("|---|---|---|---|---|---|---|")
    summary: dict[str, Any] = {}
    for key, runs in series.items():
        if not runs:
            continue
        st = {k: _stat(runs, k) for k in ("mib_s", "wall_s", "cpu_s_per_gib", "process_cpu_s_per_gib",
                                           "peak_rss_mb", "server_cpu_ms_per_article", "ratio", "cpu_ratio")}
        summary[key] = {k: v for k, v in st.items() if v is not None}
        print(f"| {RUN_NAMES[key]} | {_fmt(st['mib_s'], '{:,.1f}')} | {_fmt(st['wall_s'], '{:.2f}')} | "
              f"{_fmt(st['cpu_s_per_gib'], '{:.2f}')} | {_fmt(st['process_cpu_s_per_gib'], '{:.2f}')} | "
              f"{_fmt(st['peak_rss_mb'], '{:.1f}')} | {_fmt(st['server_cpu_ms_per_article'], '{:.1f}')} |")
    print()
    for key, what in (("ours_up", "upload / bare POST"), ("ours_down", "download / bare BODY")):
        st = summary[key]
        print(f"- {what}: throughput ratio {_fmt(st.get('ratio'), '{:.3f}')}, "
              f"CPU-s/GiB ratio {_fmt(st.get('cpu_ratio'), '{:.2f}')} (per-iteration ratios)")
    for key, bare, what in (("plain_post", "bare_post", "bare POST"), ("plain_body", "bare_body", "bare BODY")):
        if series[key]:
            tax = [b["mib_s"] / p["mib_s"] for b, p in zip(series[bare], series[key])]
            summary[key]["tls_over_plain"] = _stat([{"x": t} for t in tax], "x")
            print(f"- {what}, TLS / plain throughput: {_fmt(summary[key]['tls_over_plain'], '{:.3f}')}")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=256, help="folder size in MiB (files of at most 128 MiB)")
    ap.add_argument("--runs", type=int, default=3, help="iterations (median reported)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--window", type=int, default=8, help="BODY requests in flight per connection (bare loop)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/usenetsync-bench-tls"))
    ap.add_argument("--ignore-peers", action="store_true", help="do not wait for other benchmarks/bench_*.py")
    ap.add_argument("--max-peer-wait", type=float, default=float("inf"),
                    help="seconds in all to wait for other benchmarks before measuring anyway (default: no limit)")
    ap.add_argument("--no-plain", dest="plain", action="store_false",
                    help="skip the reference bare loops on the plain port (119) after each turn")
    ap.add_argument("--json", action="store_true", help="end with one JSON line holding every figure and run")
    args = ap.parse_args(argv)
    if args.mib < 1 or args.runs < 1:
        ap.error("--mib and --runs must be at least 1")
    args._plan = None
    _PEER_BUDGET[0] = args.max_peer_wait
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    need = args.mib * MIB * (2 * args.runs + 2)  # the folder, INN's copies (ours + bare per iteration), a download
    free = min(shutil.disk_usage(workdir).free, shutil.disk_usage(bu.SPOOL if bu.SPOOL.exists() else "/").free)
    if free < need:
        raise SystemExit(f"not enough disk: {free / 1e9:.1f} GB free, this run needs ~{need / 1e9:.1f} GB")
    wait_for_peers(args.ignore_peers)
    inn_up()
    files = -(-args.mib * MIB // FILE_MAX)
    fs = bd.FolderSpec("large", files, args.mib * MIB // files)
    root = bd.ensure_folder(workdir, fs)
    pw = workdir / "nntp-pass"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    series: dict[str, list[dict[str, Any]]] = {k: [] for k in RUN_NAMES}
    loads = []
    for i in range(args.runs):
        wait_for_peers(args.ignore_peers)
        loads.append(os.getloadavg()[0])
        alongside = [" ".join(p.split()[1:3])[-60:] for p in _peers()]
        res = iteration(i, args, fs, root, workdir, pw)
        res["ours_up"]["peers_running"] = alongside
        for k, v in res.items():
            series[k].append(v)
        log(f"  run {i + 1}/{args.runs}: upload {res['ours_up']['mib_s']:.1f} vs bare {res['bare_post']['mib_s']:.1f}"
            f" MiB/s ({res['ours_up']['ratio']:.3f}); download {res['ours_down']['mib_s']:.1f} vs bare "
            f"{res['bare_body']['mib_s']:.1f} MiB/s ({res['ours_down']['ratio']:.3f}); load {loads[-1]:.2f}")
    summary = report(series, args)
    print(f"\nMachine: {os.cpu_count()} cores, Python {platform.python_version()}, 1-minute load "
          f"{min(loads):.2f}–{max(loads):.2f}; code: {json.dumps(bd.code_state())}")
    if args.json:
        print(json.dumps({"mib": args.mib, "connections": args.connections, "runs": args.runs, "summary": summary,
                          "series": series, "loadavg": loads, "code": bd.code_state()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
