#!/usr/bin/env python3
"""One huge directory (issue 12): index time and peak RSS, against the common case of directories of 1,000.

Owns: building (and caching) two trees of N empty files each, and timing the
first index and an unchanged rescan of each, every step in a fresh child
process (``python3 -c`` running ``usenetsync_cli.entry.main`` as ``python -m
usenetsync_cli`` does, ``index TREE --json``) with its own temporary
``USENETSYNC_HOME``, measuring its wall time, CPU time and peak RSS (the
child's own ``VmHWM`` from /proc/self/status, read at its end; MB = 10^6).

Trees, cached under ``--cache`` (default /tmp/bench-bigdir-cache/N, marker
``meta.json``):

- ``big/``: one directory of N empty files (``f0000000``...), made with
  ``os.open``/``os.close``: inodes only, no data block;
- ``small/``: the same N empty files in directories of 1,000
  (``d00000/f0000000``...): the common case, the baseline.

``--compare-code DIR`` runs every step a second time with another checkout's
code (e.g. ``git worktree add /tmp/bigdir-base HEAD`` before a change), the
two interleaved run by run, so load on the shared machine hits both alike.
Each figure is the median of ``--runs``; ratios are this code / the other code
and big / small, both from the same run.

Usage:
    python3 benchmarks/bench_bigdir.py --files 300000 --runs 3 --compare-code /tmp/bigdir-base
    python3 benchmarks/bench_bigdir.py --files 3000000 --runs 1 --json
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

REPO = Path(__file__).resolve().parent.parent
PER_DIR = 1_000
TREE_VERSION = 1

from cli_child import CLI as _CLI  # noqa: E402 - benchmarks/ is the script's own directory



def _make_files(d: Path, names: range, fmt: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    base = os.fsencode(d) + b"/"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for i in names:
        os.close(os.open(base + (fmt % i).encode(), flags, 0o644))


def build_trees(cache: Path, n: int) -> tuple[Path, Path]:
    meta = cache / "meta.json"
    want = {"version": TREE_VERSION, "files": n, "per_dir": PER_DIR}
    if meta.exists() and json.loads(meta.read_text()) == want:
        return cache / "small", cache / "big"
    if cache.exists():
        shutil.rmtree(cache)
    st = os.statvfs(cache.parent if cache.parent.exists() else "/tmp")
    need = 2 * n + 2 * (n // PER_DIR) + 100
    if st.f_favail < need * 1.2:
        sys.exit(f"bench_bigdir: {need:,} inodes needed, {st.f_favail:,} free on {cache.parent} (hint: lower --files)")
    t0 = time.perf_counter()
    _make_files(cache / "big", range(n), "f%07d")
    for d in range(0, n, PER_DIR):
        _make_files(cache / "small" / f"d{d // PER_DIR:05d}", range(d, min(n, d + PER_DIR)), "f%07d")
    meta.write_text(json.dumps(want))
    print(f"built 2 x {n:,} empty files in {time.perf_counter() - t0:.1f} s under {cache}", file=sys.stderr)
    return cache / "small", cache / "big"


def run_cli(code: Path, home: Path, args: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
        out = tf.name
    env = {**os.environ, "USENETSYNC_HOME": str(home), "PYTHONPATH": str(code)}
    try:
        p = subprocess.run([sys.executable, "-c", _CLI, out, *args], cwd=code, env=env, capture_output=True,
                           check=False)
        with open(out) as f:
            res: dict[str, Any] = json.load(f)
    finally:
        os.unlink(out)
    if p.returncode != 0:
        sys.exit(f"bench_bigdir: {' '.join(args)} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    res["summary"] = json.loads(p.stdout.decode().strip().splitlines()[-1])
    return res


def measure(code: Path, tree: Path, work: Path) -> dict[str, dict[str, Any]]:
    """First index into a fresh home, then an unchanged rescan of the same home."""
    home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
    try:
        first = run_cli(code, home, ["index", str(tree), "--json"])
        rescan = run_cli(code, home, ["index", str(tree), "--json"])
    finally:
        shutil.rmtree(home, ignore_errors=True)
    n = first["summary"]["files"]
    assert first["summary"]["new"] == n and rescan["summary"]["unchanged"] == n, (first["summary"], rescan["summary"])
    return {"first": first, "rescan": rescan}


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=300_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=None, help="default /tmp/bench-bigdir-cache/N")
    ap.add_argument("--code", type=Path, default=REPO, help="the checkout measured as 'this' (default: this one)")
    ap.add_argument("--compare-code", type=Path, default=None, help="another checkout to measure in the same run")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    cache = a.cache or Path("/tmp/bench-bigdir-cache") / str(a.files)
    cache.parent.mkdir(parents=True, exist_ok=True)
    small, big = build_trees(cache, a.files)
    codes = {"this": a.code.resolve()}
    if a.compare_code:
        codes["other"] = a.compare_code.resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-bigdir-"))
    # results[code][tree][step] = list of runs
    results: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
        c: {t: {"first": [], "rescan": []} for t in ("small", "big")} for c in codes
    }
    try:
        for r in range(a.runs):
            for c, path in codes.items():
                for t, tree in (("small", small), ("big", big)):
                    m = measure(path, tree, work)
                    for step, v in m.items():
                        results[c][t][step].append(v)
                        print(f"run {r + 1}/{a.runs} {c:5s} {t:5s} {step:6s} {v['wall_s']:7.2f} s"
                              f" cpu {v['cpu_s']:7.2f} s  peak {v['peak_rss'] / 1e6:7.1f} MB", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report: dict[str, Any] = {"files": a.files, "runs": a.runs, "python": platform.python_version(),
                              "load": os.getloadavg(), "codes": {c: str(p) for c, p in codes.items()}, "figures": {}}
    print(f"\n{a.files:,} empty files, {a.runs} run(s), median; load now {os.getloadavg()[0]:.1f}")
    print(f"{'code':5s} {'tree':5s} {'step':6s} {'wall s':>8s} {'cpu s':>8s} {'files/s':>9s} {'peak MB':>8s}")
    for c in codes:
        for t in ("small", "big"):
            for step in ("first", "rescan"):
                runs = results[c][t][step]
                fig = {"wall_s": _med([x["wall_s"] for x in runs]), "cpu_s": _med([x["cpu_s"] for x in runs]),
                       "peak_mb": _med([x["peak_rss"] for x in runs]) / 1e6,
                       "wall_all": [round(x["wall_s"], 2) for x in runs]}
                report["figures"][f"{c}/{t}/{step}"] = fig
                print(f"{c:5s} {t:5s} {step:6s} {fig['wall_s']:8.2f} {fig['cpu_s']:8.2f}"
                      f" {a.files / fig['wall_s']:9,.0f} {fig['peak_mb']:8.1f}")
    f = report["figures"]
    print("\nratios (wall, peak RSS)")
    for step in ("first", "rescan"):
        for c in codes:
            b, s = f[f"{c}/big/{step}"], f[f"{c}/small/{step}"]
            print(f"  {c:5s} big/small {step:6s}: wall x{b['wall_s'] / s['wall_s']:.2f},"
                  f" rss x{b['peak_mb'] / s['peak_mb']:.2f}")
        if "other" in codes:
            for t in ("small", "big"):
                n, o = f[f"this/{t}/{step}"], f[f"other/{t}/{step}"]
                print(f"  this/other {t:5s} {step:6s}: wall x{n['wall_s'] / o['wall_s']:.2f},"
                      f" cpu x{n['cpu_s'] / o['cpu_s']:.2f}, rss x{n['peak_mb'] / o['peak_mb']:.2f}")
    if a.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
