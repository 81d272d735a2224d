#!/usr/bin/env python3
"""Benchmark of ``usenetsync index`` against a bare directory walk.

Owns: building (and caching) a synthetic tree of N small files, and measuring
on it, each in a fresh child process that does nothing but import and run:

- a bare ``os.scandir`` + ``entry.stat()`` recursive generator walk (the floor),
- the FIRST index of the tree into a fresh state,
- an UNCHANGED re-index of that state,

reporting files/s (median of >= 3 runs with min–max), the child's peak RSS,
the ratio of each index to the bare walk, and RSS growth from the smallest
to the largest size. The indexer's targets are printed beside the figures;
the walk is the floor measured in shared/peers/LIMITS.md §8. ``--json`` ends the output with one JSON line holding everything.

Peak RSS is the child's ``VmHWM`` from /proc/self/status, not
``ru_maxrss``: Linux carries ``ru_maxrss`` across ``execve`` and
``subprocess`` may vfork, so a child's ``ru_maxrss`` can start at the
parent's high-water mark. ``VmHWM`` belongs to the new address space only.

Usage:
    python3 benchmarks/bench_index.py                       # 100k and 1M
    python3 benchmarks/bench_index.py --files 100000 --runs 5 --json
    python3 benchmarks/bench_index.py --files 1000000 --profile
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILES_PER_DIR = 100
MAX_FILE_SIZE = 16 * 1024
LAYOUT_VERSION = 1  # bump when the tree layout changes, so cached trees are rebuilt
SEED = 20240601

TARGET_FIRST_RATIO = 3.0
TARGET_REINDEX_RATIO = 1.5
TARGET_PEAK_RSS_MB = 150.0  # decimal MB (10^6), the stricter reading of "150 MB"
TARGET_RSS_GROWTH_PCT = 10.0

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------
# The synthetic tree
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where file ``i`` lives: leaf ``i // 100`` under ``d<top>/s<sub>/``."""

    files: int

    @property
    def leaves(self) -> int:
        return max(1, math.ceil(self.files / FILES_PER_DIR))

    @property
    def fanout(self) -> int:
        # Square-ish: 100k -> 32 tops x 32 subs, 1M -> 100 x 100, so both sizes
        # have the same depth and directory size, and only the count scales.
        return max(1, math.ceil(math.sqrt(self.leaves)))

    @property
    def tops(self) -> int:
        return math.ceil(self.leaves / self.fanout)

    def leaves_of_top(self, top: int) -> range:
        return range(top * self.fanout, min((top + 1) * self.fanout, self.leaves))

    def files_of_leaf(self, leaf: int) -> range:
        return range(leaf * FILES_PER_DIR, min((leaf + 1) * FILES_PER_DIR, self.files))


def _tree_dir(workdir: Path, files: int) -> Path:
    return workdir / f"tree-{files}"


def _marker(workdir: Path, files: int) -> Path:
    # Outside the tree, or the index would count it as a file.
    return workdir / f"tree-{files}.json"


def _estimate_tree_bytes(files: int) -> int:
    # Uniform 0..16 KiB sizes rounded up to 4 KiB blocks average ~10 KiB per
    # file on ext4; add one 4 KiB block per directory and some slack.
    leaves = Layout(files).leaves
    return files * 10 * 1024 + (leaves + Layout(files).tops) * 8192


def _estimate_state_bytes(files: int) -> int:
    # files rows are ~120 B plus the UNIQUE index; WAL and free pages double it.
    return files * 600 + 64 * 2**20


def _make_top(args: tuple[str, int, int, int]) -> tuple[int, int]:
    """Write every file below one top-level directory; returns (files, bytes)."""
    root_s, files, top, seed = args
    layout = Layout(files)
    rng = random.Random(seed * 1_000_003 + top)
    # Real bytes, but cheap: every file is a slice of one random buffer.
    buf = memoryview(rng.randbytes(2 * MAX_FILE_SIZE))
    root = os.fsencode(root_s)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    n = nbytes = 0
    top_dir = root + b"/d%03d" % top
    os.mkdir(top_dir)
    for sub, leaf in enumerate(layout.leaves_of_top(top)):
        leaf_dir = top_dir + b"/s%03d" % sub
        os.mkdir(leaf_dir)
        for i in layout.files_of_leaf(leaf):
            size = rng.randrange(0, MAX_FILE_SIZE + 1)
            fd = os.open(leaf_dir + b"/f%07d.bin" % i, flags, 0o644)
            try:
                if size:
                    off = rng.randrange(0, MAX_FILE_SIZE)
                    os.write(fd, buf[off : off + size])
            finally:
                os.close(fd)
            n += 1
            nbytes += size
    return n, nbytes


def _count_files(root: str) -> int:
    """Untimed scandir+stat walk: warms the dentry/inode cache and counts files."""
    n = 0
    stack = [os.fsencode(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                e.stat(follow_symlinks=False)
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    n += 1
    return n


def ensure_tree(workdir: Path, files: int, *, jobs: int) -> tuple[Path, dict[str, Any]]:
    """The tree for ``files``, reused when its marker and file count match."""
    tree = _tree_dir(workdir, files)
    marker = _marker(workdir, files)
    want = {"files": files, "layout": LAYOUT_VERSION, "seed": SEED}
    if tree.is_dir() and marker.is_file():
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError):
            meta = {}
        if all(meta.get(k) == v for k, v in want.items()):
            t0 = time.perf_counter()
            counted = _count_files(str(tree))
            if counted == files:
                meta["reused"] = True
                meta["verify_s"] = round(time.perf_counter() - t0, 2)
                return tree, meta
            print(f"  cached tree {tree} has {counted:,} files, expected {files:,}: rebuilding", flush=True)
    if tree.exists():
        print(f"  removing incomplete tree {tree} ...", flush=True)
        shutil.rmtree(tree)
    marker.unlink(missing_ok=True)
    tree.mkdir(parents=True)
    layout = Layout(files)
    print(
        f"  building {files:,} files in {layout.leaves:,} directories ({layout.tops} x {layout.fanout}) "
        f"under {tree} with {jobs} processes ...",
        flush=True,
    )
    t0 = time.perf_counter()
    total_files = total_bytes = 0
    work = [(str(tree), files, top, SEED) for top in range(layout.tops)]
    # fork: the workers need nothing but this module's functions.
    with mp.get_context("fork").Pool(jobs) as pool:
        for n, nbytes in pool.imap_unordered(_make_top, work, chunksize=1):
            total_files += n
            total_bytes += nbytes
    os.sync()  # so writeback does not run during the timed walks
    build_s = time.perf_counter() - t0
    meta = {**want, "bytes": total_bytes, "dirs": layout.leaves + layout.tops + 1, "build_s": round(build_s, 1)}
    marker.write_text(json.dumps(meta) + "\n")
    print(f"  built in {build_s:.1f} s ({total_files / build_s:,.0f} files/s, {total_bytes / 1e9:.2f} GB)", flush=True)
    _count_files(str(tree))
    meta["reused"] = False
    return tree, meta


# --------------------------------------------------------------------------
# Child processes: each measurement runs alone in a fresh interpreter
# --------------------------------------------------------------------------

# Kept as source text so the child imports nothing of this module: its RSS
# is the interpreter, the code under test and its imports, nothing else.
_CHILD_PRELUDE = r"""
import json, os, sys, time

def _mem():
    out = {}
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith((b"VmHWM:", b"VmRSS:")):
                    k, v = line.split(b":", 1)
                    out[k.decode()] = int(v.split()[0]) * 1024
    except OSError:
        import resource
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r *= 1 if sys.platform == "darwin" else 1024
        out = {"VmHWM": r, "VmRSS": r}
    return out

spec = json.loads(sys.argv[1])
"""

_CHILD_WALK = _CHILD_PRELUDE + r"""
from os import scandir

def walk(path):
    with scandir(path) as it:
        for e in it:
            st = e.stat(follow_symlinks=False)
            if st.st_mode & 0o170000 == 0o040000:
                yield from walk(e.path)
            else:
                yield e.name, st.st_size, st.st_mtime_ns

root = os.fsencode(spec["root"])
base = _mem()
c0 = time.process_time()
t0 = time.perf_counter()
n = 0
for _ in walk(root):
    n += 1
elapsed = time.perf_counter() - t0
cpu = time.process_time() - c0
end = _mem()
print(json.dumps({"files": n, "elapsed_s": elapsed, "cpu_s": cpu, "rss_after_imports": base["VmRSS"],
                  "peak_rss": end["VmHWM"]}))
"""

_CHILD_INDEX = _CHILD_PRELUDE + r"""
import apsw
from usenetsync_cli.pipeline.index import index_folder
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

base = _mem()
t_open = time.perf_counter()
state = State.open(Home.resolve(spec["home"]))
if spec.get("sqlite_cache_kib"):
    for conn in [state.catalog, *state.shards]:
        conn.execute(f"PRAGMA cache_size=-{int(spec['sqlite_cache_kib'])}")
c0 = time.process_time()
t0 = time.perf_counter()
prof = None
if spec.get("profile"):
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
summary = index_folder(state, spec["root"])
if prof is not None:
    prof.disable()
    prof.dump_stats(spec["profile"])
elapsed = time.perf_counter() - t0
cpu = time.process_time() - c0
state.close()
total = time.perf_counter() - t_open
end = _mem()
print(json.dumps({"files": summary.files, "new": summary.new, "unchanged": summary.unchanged,
                  "changed": summary.changed, "deleted": summary.deleted,
                  "elapsed_s": elapsed, "cpu_s": cpu, "open_close_s": total - elapsed,
                  "rss_after_imports": base["VmRSS"], "peak_rss": end["VmHWM"],
                  "sqlite_mem_high_water": apsw.memory_high_water()}))
"""


def run_child(source: str, spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("USENETSYNC_HOME", None)
    # The benchmark measures the working tree, installed or not.
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, "-c", source, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(REPO),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec.get('kind')} failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# Measuring and reporting
# --------------------------------------------------------------------------


@dataclass
class Series:
    """One kind of run at one size: its per-run results."""

    kind: str
    files: int
    runs: list[dict[str, Any]] = field(default_factory=list)

    def times(self) -> list[float]:
        return [r["elapsed_s"] for r in self.runs]

    def rates(self) -> list[float]:
        return [self.files / t for t in self.times()]

    def peaks(self) -> list[int]:
        return [r["peak_rss"] for r in self.runs]

    def summary(self) -> dict[str, Any]:
        rates, times, peaks = self.rates(), self.times(), self.peaks()
        out = {
            "runs": len(self.runs),
            "elapsed_s_median": round(statistics.median(times), 3),
            "elapsed_s_min": round(min(times), 3),
            "elapsed_s_max": round(max(times), 3),
            "files_per_s_median": round(statistics.median(rates)),
            "files_per_s_min": round(min(rates)),
            "files_per_s_max": round(max(rates)),
            "cpu_s_median": round(statistics.median(r["cpu_s"] for r in self.runs), 3),
            "peak_rss_mb_median": round(statistics.median(peaks) / 1e6, 1),
            "peak_rss_mb_min": round(min(peaks) / 1e6, 1),
            "peak_rss_mb_max": round(max(peaks) / 1e6, 1),
            "rss_after_imports_mb": round(statistics.median(r["rss_after_imports"] for r in self.runs) / 1e6, 1),
        }
        if "sqlite_mem_high_water" in self.runs[0]:
            out["sqlite_mem_high_water_mb"] = round(
                statistics.median(r["sqlite_mem_high_water"] for r in self.runs) / 1e6, 1
            )
            out["open_close_s_median"] = round(statistics.median(r["open_close_s"] for r in self.runs), 3)
        return out


def check_space(workdir: Path, sizes: list[int]) -> None:
    """Refuse before writing anything if the trees and states would not fit."""
    probe = workdir
    while not probe.exists():
        probe = probe.parent
    need = 0
    need_inodes = 0
    for n in sizes:
        cached = _marker(workdir, n).is_file() and _tree_dir(workdir, n).is_dir()
        if not cached:
            need += _estimate_tree_bytes(n)
            need_inodes += n + Layout(n).leaves + Layout(n).tops + 1
    # Only one size's states exist at a time (each is removed after its re-index).
    need += max(_estimate_state_bytes(n) for n in sizes)
    need = int(need * 1.10)
    free = shutil.disk_usage(probe).free
    st = os.statvfs(probe)
    free_inodes = st.f_favail if st.f_files else None
    problems = []
    if free < need:
        problems.append(f"needs ~{need / 1e9:.1f} GB free, {free / 1e9:.1f} GB available")
    if free_inodes is not None and free_inodes < need_inodes * 1.05:
        problems.append(f"needs ~{need_inodes:,} inodes, {free_inodes:,} available")
    if problems:
        sys.exit(
            f"bench_index: refusing to run: {probe} " + "; ".join(problems)
            + f" (sizes {', '.join(f'{n:,}' for n in sizes)}; pass a smaller --files or another --workdir)"
        )
    print(f"disk: {free / 1e9:.1f} GB free at {probe}, this run needs ~{need / 1e9:.1f} GB", flush=True)


def bench_size(
    workdir: Path, files: int, runs: int, jobs: int, profile: bool, sqlite_cache_kib: int | None = None
) -> dict[str, Any]:
    print(f"\n== {files:,} files", flush=True)
    tree, meta = ensure_tree(workdir, files, jobs=jobs)
    if meta.get("reused"):
        print(f"  reusing cached tree {tree} (verified in {meta['verify_s']} s; that warmed the cache)", flush=True)
    # One untimed walk in a child too, so the first timed child is not the
    # one that pays for cold interpreter/library pages.
    run_child(_CHILD_WALK, {"kind": "walk", "root": str(tree)})
    walk, first, reindex = Series("walk", files), Series("first", files), Series("reindex", files)
    # Other processes on a shared machine skew wall times; the 1-minute load
    # average around each iteration says how much (2 = both cores busy).
    loads: list[float] = []
    for i in range(runs):
        loads.append(os.getloadavg()[0])
        # Interleaved, so drift on a shared machine spreads over all three kinds.
        home = Path(tempfile.mkdtemp(prefix=f"state-{files}-", dir=workdir))
        try:
            walk.runs.append(run_child(_CHILD_WALK, {"kind": "walk", "root": str(tree)}))
            spec = {"root": str(tree), "home": str(home), "sqlite_cache_kib": sqlite_cache_kib}
            r = run_child(_CHILD_INDEX, {"kind": "first", **spec})
            if r["new"] != files:
                raise RuntimeError(f"first index saw {r['new']:,} new files, expected {files:,}")
            first.runs.append(r)
            r = run_child(_CHILD_INDEX, {"kind": "reindex", **spec})
            if r["unchanged"] != files or r["changed"] or r["new"] or r["deleted"]:
                raise RuntimeError(f"re-index of an unchanged tree reported changes: {r}")
            reindex.runs.append(r)
            loads.append(os.getloadavg()[0])
            print(
                f"  run {i + 1}/{runs}: walk {walk.runs[-1]['elapsed_s']:.2f} s, "
                f"first {first.runs[-1]['elapsed_s']:.2f} s, re-index {r['elapsed_s']:.2f} s "
                f"(load {loads[-2]:.2f} -> {loads[-1]:.2f})",
                flush=True,
            )
        finally:
            shutil.rmtree(home, ignore_errors=True)
    result: dict[str, Any] = {
        "files": files,
        "tree": {k: meta.get(k) for k in ("bytes", "dirs", "build_s", "reused")},
        "loadavg_1min": {"min": min(loads), "max": max(loads), "median": round(statistics.median(loads), 2)},
        "walk": walk.summary(),
        "first": first.summary(),
        "reindex": reindex.summary(),
    }
    wt = result["walk"]["elapsed_s_median"]
    result["first"]["ratio_to_walk"] = round(result["first"]["elapsed_s_median"] / wt, 2)
    result["reindex"]["ratio_to_walk"] = round(result["reindex"]["elapsed_s_median"] / wt, 2)
    # Each iteration runs walk, first and re-index back to back, so the ratio
    # within one iteration is less exposed to load from other processes.
    for kind, series in (("first", first), ("reindex", reindex)):
        paired = [t / w for t, w in zip(series.times(), walk.times())]
        result[kind]["paired_ratio_median"] = round(statistics.median(paired), 2)
        result[kind]["cpu_ratio_to_walk"] = round(result[kind]["cpu_s_median"] / result["walk"]["cpu_s_median"], 2)
    if sqlite_cache_kib:
        result["sqlite_cache_kib"] = sqlite_cache_kib
    if profile:
        result["profile"] = profile_size(workdir, tree, files, sqlite_cache_kib)
    return result


def profile_size(workdir: Path, tree: Path, files: int, sqlite_cache_kib: int | None) -> dict[str, str]:
    """One extra first index and re-index under cProfile (not part of the timings)."""
    import pstats

    out: dict[str, str] = {}
    home = Path(tempfile.mkdtemp(prefix=f"state-{files}-prof-", dir=workdir))
    try:
        for kind in ("first", "reindex"):
            path = workdir / f"profile-{files}-{kind}.prof"
            run_child(
                _CHILD_INDEX,
                {"kind": kind, "root": str(tree), "home": str(home), "profile": str(path),
                 "sqlite_cache_kib": sqlite_cache_kib},
            )
            out[kind] = str(path)
            print(f"\n-- cProfile, {kind} index of {files:,} files (top 20 by own time; {path})")
            pstats.Stats(str(path)).sort_stats("tottime").print_stats(20)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return out


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Print the table and targets; return the derived figures for --json."""
    print("\n## bench_index results\n")
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    hdr = (
        f"| {'files':>9} | {'run':<8} | {'files/s median [min–max]':<30} | {'time s':>7} | "
        f"{'× walk':>6} | {'cpu s':>6} | {'peak RSS MB [min–max]':<22} | {'after imports MB':>16} |"
    )
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for r in results:
        for kind, label in (("walk", "walk"), ("first", "first"), ("reindex", "re-index")):
            s = r[kind]
            rate = f"{s['files_per_s_median']:,} [{s['files_per_s_min']:,}–{s['files_per_s_max']:,}]"
            ratio = f"{s['ratio_to_walk']:.2f}" if "ratio_to_walk" in s else "1.00"
            rss = f"{s['peak_rss_mb_median']:.1f} [{s['peak_rss_mb_min']:.1f}–{s['peak_rss_mb_max']:.1f}]"
            print(
                f"| {r['files']:>9,} | {label:<8} | {rate:<30} | {s['elapsed_s_median']:>7.2f} | {ratio:>6} | "
                f"{s['cpu_s_median']:>6.2f} | {rss:<22} | {s['rss_after_imports_mb']:>16.1f} |"
            )
    for r in results:
        la = r["loadavg_1min"]
        print(f"{r['files']:,} files: 1-min load average during the runs {la['min']:.2f}–{la['max']:.2f} (2 cores)")
    derived: dict[str, Any] = {"targets": {}}

    def target(key: str, value: float, limit: float, ok: bool, line: str) -> None:
        derived["targets"][key] = {"value": value, "target": limit, "met": ok}
        print(f"  {line}: {_verdict(ok)}")

    print("\ntargets (× = ratio of median wall times; paired = median of per-iteration ratios; cpu = CPU time):")
    for r in results:
        n = r["files"]
        for kind, label, limit in (("first", "first index", TARGET_FIRST_RATIO),
                                   ("reindex", "re-index", TARGET_REINDEX_RATIO)):
            s = r[kind]
            x = s["ratio_to_walk"]
            target(
                f"{kind}_ratio_{n}", x, limit, x <= limit,
                f"{n:>9,} files: {label:<11} {x:.2f}× walk (paired {s['paired_ratio_median']:.2f}×, "
                f"cpu {s['cpu_ratio_to_walk']:.2f}×; target ≤ {limit}×)",
            )
    big = max(results, key=lambda r: r["files"])
    informational = big["files"] < 1_000_000
    for kind in ("first", "reindex"):
        peak = big[kind]["peak_rss_mb_max"]
        target(
            f"peak_rss_{kind}_{big['files']}", peak, TARGET_PEAK_RSS_MB, peak <= TARGET_PEAK_RSS_MB,
            f"{big['files']:>9,} files: {kind:<11} peak RSS {peak:.1f} MB (worst run; target ≤ "
            f"{TARGET_PEAK_RSS_MB:.0f} MB at 1M files{'; informational here' if informational else ''})",
        )
    if len(results) >= 2:
        small = min(results, key=lambda r: r["files"])
        derived["rss_growth_pct"] = {}
        for kind in ("walk", "first", "reindex"):
            a, b = small[kind]["peak_rss_mb_median"], big[kind]["peak_rss_mb_median"]
            g = (b - a) / a * 100
            derived["rss_growth_pct"][kind] = round(g, 1)
            line = (
                f"RSS growth {small['files']:,} -> {big['files']:,} files, {kind:<8}: "
                f"{a:.1f} -> {b:.1f} MB = {g:+.1f}%"
            )
            if kind == "walk":
                print(f"  {line} (reference)")
            else:
                target(f"rss_growth_{kind}", round(g, 1), TARGET_RSS_GROWTH_PCT, g < TARGET_RSS_GROWTH_PCT,
                       f"{line} (target < {TARGET_RSS_GROWTH_PCT:.0f}%)")
    return derived


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--files", type=int, nargs="+", default=[100_000, 1_000_000], metavar="N",
                   help="tree sizes to run (default: 100000 1000000)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per measurement (default 3; medians need >= 3)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/usenetsync-bench"),
                   help="where trees are cached and states are made (default /tmp/usenetsync-bench)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="processes for building a tree")
    p.add_argument("--profile", action="store_true",
                   help="after timing, run one first index and one re-index per size under cProfile and print the top")
    p.add_argument("--json", action="store_true", help="end with one JSON line holding every figure")
    p.add_argument("--sqlite-cache-kib", type=int, default=None, metavar="KIB",
                   help="what-if: set PRAGMA cache_size=-KIB on the catalog and every shard after opening"
                   " (default: leave them as the code opens them)")
    a = p.parse_args(argv)
    if a.runs < 1 or any(n < 1 for n in a.files):
        p.error("--runs and --files must be positive")
    if a.runs < 3:
        print(f"note: --runs {a.runs} < 3: medians are not meaningful", file=sys.stderr)
    sizes = sorted(set(a.files))
    a.workdir = a.workdir.absolute()
    check_space(a.workdir, sizes)
    a.workdir.mkdir(parents=True, exist_ok=True)
    if a.sqlite_cache_kib:
        print(f"what-if: SQLite page cache forced to {a.sqlite_cache_kib} KiB per connection", flush=True)
    results = [bench_size(a.workdir, n, a.runs, a.jobs, a.profile, a.sqlite_cache_kib) for n in sizes]
    derived = report(results)
    if a.json:
        doc = {
            "bench": "bench_index",
            "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "runs": a.runs,
            "sqlite_cache_kib": a.sqlite_cache_kib,
            "workdir": str(a.workdir),
            "rss_unit": "MB (10^6 bytes), VmHWM of the child",
            "results": results,
            **derived,
        }
        print(json.dumps(doc, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
