#!/usr/bin/env python3
"""bench_backup: what a backup version costs to publish, and what `adopt` costs, for folders of N tiny files.

Owns: building (and caching) a real folder of N tiny files, uploading it into
the real INN (127.0.0.1:119, alt.binaries.test) with a real home, and timing
the backup publication (pipeline/backup.py ``publish_backup``) and `adopt`
(pipeline/adopt.py ``adopt_folder``) on it. Everything is posted to and read
back from INN: adopt reads the catalog and the index back, which the discard
sink cannot serve.

Setup, once per size and invocation (not timed as a figure, reported):
- the folder: N files of 20-100 random bytes, 1,000 per directory, cached at
  ``--cache``/N (marker ``N.json`` beside it), so reruns reuse it;
- a base home (``USENETSYNC_HOME``) with the server, no identity:
  ``usenetsync index`` then ``usenetsync upload --redundancy 0 --no-backup``
  (CLI subprocesses). Small files are packed: ~100 articles at 1M files.

Each run (``--runs``):
1. the base home is copied and ``keys init --no-passphrase`` makes a fresh
   identity there, so the folder's backup share and the catalog are new and
   the next publication is a FIRST version (every index chunk): the baseline;
2. FIRST: ``publish_backup`` (version 1, all chunks, plus catalog version 1);
3. UNCHANGED: ``publish_backup`` again: nothing may be posted; the time is the
   cost of deciding that (settle, spool every record, digest);
4. ``--change`` (10) files get new content, then ``usenetsync index`` and
   ``usenetsync upload --redundancy 0 --no-backup`` (CLI, timed for context);
5. CHANGED: ``publish_backup`` (version 2: the changed chunks, the chunk
   table, the root, and the catalog's next version);
6. `adopt`: a fresh home, ``keys restore --phrase-file F --no-passphrase``
   (phrase from ``keys phrase --json``, written 0600), the label from
   ``backups --json``, then ``usenetsync adopt PATH --from LABEL --json``;
   as its baseline in the same run, ``usenetsync index PATH`` into another
   fresh home (adopt indexes the folder first, then applies the records);
7. the changed files get their original bytes and mtime back (their ctime
   moves: the next run's index re-hashes them and posts nothing for them).

How each is measured:
- publications: ``publish_backup`` called directly, each in a fresh
  ``python3 -c`` child (so the benchmark process stays small and each child's
  memory is its own); the time is around ``publish_backup`` only (state open
  and imports excluded). ``Connection.post`` is wrapped in the child to count
  every article POSTed and its wire bytes, catalog articles included
  (``BackupResult.articles``/``index_bytes`` count the folder's index only).
- `adopt` and the baseline `index`: the CLI in a child process (a wrapper that
  runs ``usenetsync_cli.entry.main`` like ``python -m usenetsync_cli`` and
  then reads the child's own ``VmHWM`` from /proc/self/status: ``ru_maxrss``
  is not used because Linux carries it across ``execve`` and ``subprocess``
  may vfork). Times: the whole command (interpreter start included) and the
  command's own ``elapsed_s``. MB = 10^6 bytes.

Figures are the median of ``--runs`` with [min-max]; ratios to FIRST are the
median of per-run ratios. The machine is shared (2 cores): times are noisy.

    python3 benchmarks/bench_backup.py --files 100000 1000000 --runs 3 --json
    python3 benchmarks/bench_backup.py --files 100000 --runs 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
INN_UP = REPO / "scripts" / "inn-up.sh"
SPOOL = Path("/var/spool/news")
LAYOUT_VERSION = 1  # bump when the folder's layout changes, so cached folders are rebuilt
PER_DIR = 1_000
MIN_SIZE, MAX_SIZE = 20, 100
SEED = 20261201

# --------------------------------------------------------------------------
# The folder
# --------------------------------------------------------------------------


def _rel(i: int) -> str:
    return f"d{i // PER_DIR:04d}/f{i:07d}.bin"


def ensure_folder(cache: Path, n: int) -> tuple[Path, dict[str, Any]]:
    """``cache``/N with N files of 20-100 random bytes, 1,000 per directory; reused when its marker matches."""
    root = cache / str(n)
    marker = cache / f"{n}.json"  # outside the folder, or it would be uploaded too
    want = {"layout": LAYOUT_VERSION, "seed": SEED, "files": n, "per_dir": PER_DIR}
    if root.is_dir() and marker.is_file():
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError):
            meta = {}
        dirs = (n + PER_DIR - 1) // PER_DIR
        if (all(meta.get(k) == v for k, v in want.items()) and (root / _rel(n - 1)).is_file()
                and sum(1 for _ in os.scandir(root)) == dirs):
            meta["reused"] = True
            return root, meta
        print(f"  cached folder {root} does not match: rebuilding", flush=True)
    if root.exists():
        shutil.rmtree(root)
    marker.unlink(missing_ok=True)
    root.mkdir(parents=True)
    rng = random.Random(SEED + n)
    t0 = time.perf_counter()
    print(f"  building {n:,} files of {MIN_SIZE}-{MAX_SIZE} B under {root} ...", flush=True)
    total = 0
    for i in range(n):
        if i % PER_DIR == 0:
            (root / _rel(i)).parent.mkdir()
            if i and i % 100_000 == 0:
                print(f"    {i:,} files, {time.perf_counter() - t0:.0f} s", flush=True)
        data = rng.randbytes(rng.randint(MIN_SIZE, MAX_SIZE))
        fd = os.open(root / _rel(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        total += len(data)
    os.sync()
    meta = {**want, "bytes": total, "build_s": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(meta) + "\n")
    meta["reused"] = False
    return root, meta


def check_disk(cache: Path, workdir: Path, sizes: list[int]) -> None:
    """Refuse to start when /tmp lacks the blocks or inodes for the folders and the homes."""
    need_bytes = need_inodes = 0
    for n in sizes:
        if not (cache / f"{n}.json").is_file():
            need_bytes += n * 4096 + (n // PER_DIR + 1) * 4096  # a block per tiny file
            need_inodes += n + n // PER_DIR + 1
        # The base home, a run's copy of it, the adopt home and the index home: ~1.5 KB of state per file
        # each (measured ~1.1 KB), plus the INN spool's share (the index, ~100 B per file per version).
        need_bytes += n * 1500 * 4 + n * 400
    st = os.statvfs(workdir if workdir.exists() else workdir.parent)
    free, ifree = st.f_bavail * st.f_frsize, st.f_favail
    if free < need_bytes + (2 << 30) or ifree < need_inodes + 100_000:
        sys.exit(f"bench_backup: refusing to run: needs ~{need_bytes / 1e9:.1f} GB and {need_inodes:,} inodes,"
                 f" {free / 1e9:.1f} GB and {ifree:,} inodes free")
    print(f"disk: {free / 1e9:.1f} GB and {ifree:,} inodes free; this run needs ~{need_bytes / 1e9:.1f} GB and"
          f" {need_inodes:,} inodes", flush=True)


# --------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------

from cli_child import CLI as _CLI  # noqa: E402 - benchmarks/ is the script's own directory


# publish_backup called directly; every POST counted (catalog articles included).
_PUBLISH = r"""
import json, os, resource, sys, time
spec = json.loads(sys.argv[1])
from usenetsync_cli.cli.app import _tune_allocator
_tune_allocator()  # as main() does before any command
from usenetsync_cli.config import Config
from usenetsync_cli.nntp import connection as nntp_connection
from usenetsync_cli.pipeline.backup import publish_backup
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.keystore import load_identity
from usenetsync_cli.store.state import State

posts = [0, 0]
_post = nntp_connection.Connection.post

def post(self, article, expect_id=None, **kw):
    bufs = [article] if isinstance(article, (bytes, bytearray, memoryview)) else list(article)
    posts[0] += 1
    posts[1] += sum(len(b) for b in bufs)
    return _post(self, bufs, expect_id, **kw)

nntp_connection.Connection.post = post
home = Home.resolve(spec["home"])
identity = load_identity(home, None)
server = Config.load(home).posting_servers(None)[0].spec()
with State.open(home) as state:
    folder = catalog.get_folder(state.catalog, os.fsencode(spec["root"]))
    assert folder is not None, "folder not indexed"
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    result = publish_backup(state, folder, identity, server)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"result": result.to_dict(), "wall_s": wall,
                  "cpu_s": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
                  "posts": posts[0], "post_bytes": posts[1], "peak_rss": int(hwm) * 1024}))
"""


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["USENETSYNC_HOME"] = str(home)
    env["USENETSYNC_TESTONLY_WEAKEN_KDF"] = "1"  # key files made in a few ms, not Argon2id's seconds
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def cli(home: Path, *args: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run ``usenetsync ARGS --json`` in ``home``: (its JSON events, the wrapper's wall/CPU/peak RSS)."""
    with tempfile.NamedTemporaryFile(prefix="bench-backup-", suffix=".json", delete=False) as f:
        out = Path(f.name)
    try:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _CLI, str(out), *args, "--json"], capture_output=True,
                              text=True, env=_env(home), cwd=REPO, check=False)
        wall = time.perf_counter() - t0
        meta = json.loads(out.read_text()) if out.stat().st_size else {}
    finally:
        out.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"usenetsync {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
    events = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    meta["outer_wall_s"] = wall
    return events, meta


def event(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [e for e in events if e.get("type") == kind]
    if not found:
        raise RuntimeError(f"no {kind} event in {[e.get('type') for e in events]}")
    return found[-1]


def publish(home: Path, root: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", _PUBLISH, json.dumps({"home": str(home), "root": str(root)})],
                          capture_output=True, text=True, env=_env(home), cwd=REPO, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"publish_backup child failed ({proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# --------------------------------------------------------------------------
# INN
# --------------------------------------------------------------------------


def _greets(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            return s.recv(64)[:3] in (b"200", b"201")
    except OSError:
        return False


def inn_up(host: str, port: int) -> None:
    if _greets(host, port):
        return
    print(f"  INN is not answering on {host}:{port}: running scripts/inn-up.sh", flush=True)
    subprocess.run(["bash", str(INN_UP)], check=True, cwd=REPO, stdout=subprocess.DEVNULL)


# --------------------------------------------------------------------------
# One size
# --------------------------------------------------------------------------


def _tree_bytes(path: Path) -> int:
    return sum(e.stat().st_size for e in path.rglob("*") if e.is_file())


def base_home(workdir: Path, root: Path, n: int, host: str, port: int, group: str) -> tuple[Path, dict[str, Any]]:
    """A home with ``root`` indexed and fully uploaded (no identity, no backup yet)."""
    home = workdir / f"base-{n}"
    if home.exists():
        shutil.rmtree(home)
    cli(home, "server", "add", "main", "--host", host, "--port", str(port), "--group", group)
    print(f"  index of {n:,} files into the base home ...", flush=True)
    ev, m_index = cli(home, "index", str(root))
    idx = event(ev, "index.summary")
    print(f"  upload --redundancy 0 --no-backup ({idx['files']:,} files, {idx['bytes'] / 1e6:.1f} MB) ...", flush=True)
    ev, m_up = cli(home, "upload", str(root), "--redundancy", "0", "--no-backup")
    up = event(ev, "upload.summary")
    if not up["complete"] or up["failed"] or up["rejected"]:
        raise RuntimeError(f"the base upload did not complete: {json.dumps(up)[:2000]}")
    setup = {"index_s": round(m_index["outer_wall_s"], 1), "upload_s": round(m_up["outer_wall_s"], 1),
             "upload_articles": up["posted_now"], "payload_bytes": up["bytes_posted"],
             "wire_bytes": up["wire_bytes_posted"], "home_bytes": _tree_bytes(home)}
    print(f"  base home: index {setup['index_s']} s, upload {setup['upload_s']} s ({up['posted_now']:,} articles,"
          f" {up['wire_bytes_posted'] / 1e6:.1f} MB on the wire); state {setup['home_bytes'] / 1e6:.0f} MB", flush=True)
    return home, setup


def change_files(root: Path, n: int, count: int, seed: int) -> list[tuple[Path, bytes, int, int]]:
    """Give ``count`` random files new content (another size); returns what restores them."""
    rng = random.Random(seed)
    saved = []
    for i in rng.sample(range(n), count):
        p = root / _rel(i)
        st = p.stat()
        saved.append((p, p.read_bytes(), st.st_atime_ns, st.st_mtime_ns))
        p.write_bytes(b"changed " + rng.randbytes(rng.randint(MAX_SIZE + 1, 2 * MAX_SIZE)))
    return saved


def restore_files(saved: list[tuple[Path, bytes, int, int]]) -> None:
    for p, data, atime, mtime in saved:
        p.write_bytes(data)
        os.utime(p, ns=(atime, mtime))


def one_run(workdir: Path, base: Path, root: Path, n: int, change: int, r: int, host: str, port: int,
            group: str) -> dict[str, Any]:
    tag = f"{n}-{r}"
    home, adopt_home, index_home = workdir / f"run-{tag}", workdir / f"adopt-{tag}", workdir / f"index-{tag}"
    phrase = workdir / f"phrase-{tag}"
    for h in (home, adopt_home, index_home):
        if h.exists():
            shutil.rmtree(h)
    saved: list[tuple[Path, bytes, int, int]] = []
    try:
        shutil.copytree(base, home)
        cli(home, "keys", "init", "--no-passphrase")
        first = publish(home, root)
        unchanged = publish(home, root)
        saved = change_files(root, n, change, SEED + 1000 * n + r)
        ev, m_ci = cli(home, "index", str(root))
        ci = event(ev, "index.summary")
        ev, m_cu = cli(home, "upload", str(root), "--redundancy", "0", "--no-backup")
        cu = event(ev, "upload.summary")
        if not cu["complete"]:
            raise RuntimeError(f"the upload of the changed files did not complete: {json.dumps(cu)[:2000]}")
        changed = publish(home, root)
        for what, p, published, version in (("first", first, True, 1), ("unchanged", unchanged, False, 1),
                                            ("changed", changed, True, 2)):
            res = p["result"]
            if res["published"] != published or res["version"] != version:
                raise RuntimeError(f"{what} publication: expected published={published} version {version},"
                                   f" got {json.dumps(res)}")
        if unchanged["posts"]:
            raise RuntimeError(f"the unchanged publication posted {unchanged['posts']} article(s)")

        ev, _ = cli(home, "keys", "phrase")
        fd = os.open(phrase, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(event(ev, "keys.phrase")["phrase"] + "\n")
        cli(adopt_home, "server", "add", "main", "--host", host, "--port", str(port), "--group", group)
        cli(adopt_home, "keys", "restore", "--phrase-file", str(phrase), "--no-passphrase")
        phrase.unlink()
        ev, _ = cli(adopt_home, "backups")
        labels = [e["label"] for e in ev if e.get("type") == "backup.folder" and e.get("path") == str(root)]
        if len(labels) != 1:
            raise RuntimeError(f"`backups` lists {len(labels)} backups of {root}: {ev}")
        # The baseline, same run: a plain index of the same folder into a fresh home.
        cli(index_home, "server", "add", "main", "--host", host, "--port", str(port), "--group", group)
        ev, m_ix = cli(index_home, "index", str(root))
        ix = event(ev, "index.summary")
        ev, m_ad = cli(adopt_home, "adopt", str(root), "--from", labels[0])
        ad = event(ev, "adopt.summary")
        if ad["files_adopted"] != n or ad["files_changed"] or ad["files_missing"] or ad["version"] != 2:
            raise RuntimeError(f"adopt did not take every file: {json.dumps(ad)[:2000]}")
        adopt_state = _tree_bytes(adopt_home)
    except BaseException:
        # Kept for a post-mortem (the identity is in the home: the server's articles stay readable).
        for h in (home, adopt_home, index_home):
            if h.exists():
                h.rename(h.with_name("failed-" + h.name))
        print(f"  run failed: its homes are kept in {workdir} as failed-*", flush=True)
        raise
    finally:
        restore_files(saved)
        phrase.unlink(missing_ok=True)
        for h in (home, adopt_home, index_home):
            shutil.rmtree(h, ignore_errors=True)

    def pub(p: dict[str, Any]) -> dict[str, Any]:
        res = p["result"]
        return {"seconds": p["wall_s"], "cpu_s": p["cpu_s"], "articles": p["posts"], "wire_bytes": p["post_bytes"],
                "index_articles": res["articles"], "index_bytes": res["index_bytes"], "records": res["records"],
                "catalog_version": res["catalog_version"], "peak_rss_mb": p["peak_rss"] / 1e6}

    out = {
        "first": pub(first), "unchanged": pub(unchanged), "changed": pub(changed),
        "change_index": {"seconds": m_ci["outer_wall_s"], "changed": ci["changed"], "unchanged": ci["unchanged"]},
        "change_upload": {"seconds": m_cu["outer_wall_s"], "articles": cu["posted_now"],
                          "files_planned": cu["files_planned"], "files_rehashed_same": cu["files_rehashed_same"]},
        "adopt": {"seconds": m_ad["outer_wall_s"], "elapsed_s": ad["elapsed_s"], "peak_rss_mb": m_ad["peak_rss"] / 1e6,
                  "cpu_s": m_ad["cpu_s"], "files_adopted": ad["files_adopted"], "packs": ad["packs"],
                  "segments": ad["segments"], "state_mb": adopt_state / 1e6},
        "index": {"seconds": m_ix["outer_wall_s"], "elapsed_s": ix["elapsed_s"], "peak_rss_mb": m_ix["peak_rss"] / 1e6,
                  "cpu_s": m_ix["cpu_s"]},
        "loadavg_1min": os.getloadavg()[0],
    }
    for kind in ("unchanged", "changed"):
        for key in ("seconds", "cpu_s", "articles", "wire_bytes", "index_bytes"):
            out[kind][f"{key}_vs_first"] = out[kind][key] / out["first"][key] if out["first"][key] else None
    out["adopt"]["vs_index"] = out["adopt"]["seconds"] / out["index"]["seconds"]
    return out


def stat(runs: list[dict[str, Any]], *path: str) -> dict[str, float] | None:
    vals = []
    for r in runs:
        v: Any = r
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            vals.append(v)
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def bench_size(a: argparse.Namespace, n: int, runs: int) -> dict[str, Any]:
    print(f"\n== {n:,} files", flush=True)
    t0 = time.perf_counter()
    root, meta = ensure_folder(a.cache, n)
    how = "cached" if meta["reused"] else f"built in {meta['build_s']} s"
    print(f"  folder {root}: {meta['files']:,} files, {meta['bytes'] / 1e6:.1f} MB ({how})", flush=True)
    base, setup = base_home(a.workdir, root, n, a.host, a.port, a.group)
    results = []
    try:
        for r in range(runs):
            t1 = time.perf_counter()
            res = one_run(a.workdir, base, root, n, a.change, r, a.host, a.port, a.group)
            results.append(res)
            print(f"  run {r + 1}/{runs}: first {res['first']['seconds']:.2f} s ({res['first']['articles']} art.),"
                  f" unchanged {res['unchanged']['seconds']:.2f} s ({res['unchanged']['articles']} art.),"
                  f" {a.change} changed {res['changed']['seconds']:.2f} s ({res['changed']['articles']} art.),"
                  f" adopt {res['adopt']['seconds']:.1f} s / {res['adopt']['peak_rss_mb']:.0f} MB,"
                  f" index {res['index']['seconds']:.1f} s; run took {time.perf_counter() - t1:.0f} s", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    summary: dict[str, Any] = {"files": n, "runs": runs, "folder_bytes": meta["bytes"], "setup": setup,
                               "total_s": round(time.perf_counter() - t0, 1), "per_run": results}
    for kind in ("first", "unchanged", "changed"):
        summary[kind] = {k: stat(results, kind, k) for k in results[0][kind]}
    for kind in ("adopt", "index", "change_index", "change_upload"):
        summary[kind] = {k: stat(results, kind, k) for k in results[0][kind]}
    summary["loadavg_1min"] = stat(results, "loadavg_1min")
    return summary


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _f(st: dict[str, float] | None, fmt: str = "{:,.2f}", scale: float = 1.0) -> str:
    if not st:
        return "–"
    if st["min"] == st["max"]:
        return fmt.format(st["median"] * scale)
    return (f"{fmt.format(st['median'] * scale)} [{fmt.format(st['min'] * scale)}–"
            f"{fmt.format(st['max'] * scale)}]")


def report(results: list[dict[str, Any]], change: int) -> None:
    print("\n## bench_backup results\n")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
          f" {platform.release()}; server INN 127.0.0.1; median [min–max] of the runs")
    for r in results:
        if r["runs"] < 3:
            print(f"note: {r['files']:,} files: {r['runs']} run(s) only (a run takes"
                  f" ~{r['total_s'] / max(r['runs'], 1) / 60:.0f} min with its setup): no meaningful median")
    print("\nBackup publication (`publish_backup`, fresh child each; articles and bytes: every POST, catalog"
          " included; index: the folder's index alone):\n")
    print("| files | publication | articles | bytes posted | index articles / bytes | seconds | CPU s |"
          " × first: articles | × first: bytes | × first: seconds |")
    print("|---:|---|---|---|---|---|---|---|---|---|")
    labels = (("first", "first version (all chunks): baseline"), ("unchanged", "unchanged folder"),
              ("changed", f"{change} files changed"))
    for r in results:
        for key, label in labels:
            s = r[key]

            def ratio(k: str, fmt: str) -> str:
                return "1" if key == "first" else _f(s.get(f"{k}_vs_first"), fmt)  # noqa: B023

            print(f"| {r['files']:,} | {label} | {_f(s['articles'], '{:,.0f}')} |"
                  f" {_f(s['wire_bytes'], '{:,.1f}', 1e-3)} KB |"
                  f" {_f(s['index_articles'], '{:,.0f}')} / {_f(s['index_bytes'], '{:,.1f}', 1e-3)} KB |"
                  f" {_f(s['seconds'])} | {_f(s['cpu_s'])} | {ratio('articles', '{:.3f}')} |"
                  f" {ratio('wire_bytes', '{:.4f}')} | {ratio('seconds', '{:.3f}')} |")
    print("\n`adopt` (CLI in a child; baseline: `index` of the same folder into a fresh home, same run):\n")
    print("| files | adopt s (command) | adopt_folder s | adopt peak RSS MB | adopt CPU s | index s (command) |"
          " index peak RSS MB | adopt / index | adopted state MB |")
    print("|---:|---|---|---|---|---|---|---|---|")
    for r in results:
        a, i = r["adopt"], r["index"]
        print(f"| {r['files']:,} | {_f(a['seconds'], '{:,.1f}')} | {_f(a['elapsed_s'], '{:,.1f}')} |"
              f" {_f(a['peak_rss_mb'], '{:,.1f}')} | {_f(a['cpu_s'], '{:,.1f}')} | {_f(i['seconds'], '{:,.1f}')} |"
              f" {_f(i['peak_rss_mb'], '{:,.1f}')} | {_f(a['vs_index'], '{:.2f}')} |"
              f" {_f(a['state_mb'], '{:,.0f}')} |")
    print()
    for r in results:
        s, ci, cu = r["setup"], r["change_index"], r["change_upload"]
        print(f"{r['files']:,} files ({r['folder_bytes'] / 1e6:.1f} MB): setup index {s['index_s']} s, upload"
              f" {s['upload_s']} s ({s['upload_articles']:,} articles); records per version"
              f" {_f(r['first']['records'], '{:,.0f}')}; the {change} changed files: index"
              f" {_f(ci['seconds'], '{:,.1f}')} s, upload --no-backup {_f(cu['seconds'], '{:,.1f}')} s"
              f" ({_f(cu['articles'], '{:,.0f}')} articles); publication peak RSS first"
              f" {_f(r['first']['peak_rss_mb'], '{:,.0f}')} MB; load {r['loadavg_1min']['min']:.1f}–"
              f"{r['loadavg_1min']['max']:.1f}; {r['total_s'] / 60:.1f} min for this size")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, nargs="+", default=[100_000, 1_000_000], help="folder sizes (files)")
    p.add_argument("--runs", type=int, default=3, help="runs per size (default 3)")
    p.add_argument("--runs-large", type=int, default=None, metavar="R",
                   help="runs for sizes of 500,000 files and more (default: --runs)")
    p.add_argument("--change", type=int, default=10, help="files changed before the second version (default 10)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/bench-backup-cache"), help="where folders are cached")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/bench-backup-work"), help="where homes are made")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=119)
    p.add_argument("--group", default="alt.binaries.test")
    p.add_argument("--json", action="store_true", help="end with one JSON line holding every figure and run")
    a = p.parse_args(argv)
    a.cache, a.workdir = a.cache.absolute(), a.workdir.absolute()
    a.cache.mkdir(parents=True, exist_ok=True)
    a.workdir.mkdir(parents=True, exist_ok=True)
    for stale in a.workdir.iterdir():  # homes of an interrupted run (a failed run's are kept until removed by hand)
        if stale.name.startswith("failed-"):
            print(f"note: {stale} is a failed run's home, kept (remove it by hand)", flush=True)
        elif stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink()
    check_disk(a.cache, a.workdir, a.files)
    inn_up(a.host, a.port)
    t0 = time.perf_counter()
    results = []
    for n in a.files:
        runs = a.runs_large if (a.runs_large and n >= 500_000) else a.runs
        results.append(bench_size(a, n, runs))
    report(results, a.change)
    print(f"\ntotal time {(time.perf_counter() - t0) / 60:.1f} min")
    if a.json:
        print(json.dumps({"bench": "bench_backup", "machine": {"cores": os.cpu_count(),
                          "python": platform.python_version(), "platform": platform.platform()},
                          "change": a.change, "units": {"MB": "10^6 bytes", "KB": "10^3 bytes",
                          "peak_rss": "VmHWM of the child"}, "results": results}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
