#!/usr/bin/env python3
"""Start-up time of the CLI installed from the wheel: ``--version``, ``--help``, ``status`` on a small home.

Owns: building the wheel of this checkout (``pip wheel --no-deps``),
installing it into a virtual environment of its own (cached under
``--workdir``; the wheel is reinstalled when the source changed), and timing
each command ``--runs`` times in a fresh process, hyperfine-style: a warm-up
run, then the median wall time and CPU time (user+sys of the child from
``wait4``) with [min–max]. The same run times the bare interpreter
(``python -c pass``) as the baseline, so the figure that belongs to us is
printed too (median minus the interpreter's), and the noisy shared machine
shows up in the baseline rather than as our regression.

Targets (issue 13): ``--version`` <= 150 ms, ``--help`` <= 250 ms,
``status`` on a small home <= 250 ms wall.

``--importtime`` adds the ten most expensive imports of each command
(``python -X importtime``, cumulative microseconds).

Usage:
    python3 benchmarks/bench_startup.py [--runs 21] [--workdir /tmp/usenetsync-bench-startup] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS_MS = {"--version": 150.0, "--help": 250.0, "status": 250.0}


def _source_digest() -> str:
    h = hashlib.sha256()
    for p in sorted([*REPO.joinpath("usenetsync_cli").rglob("*.py"), REPO / "pyproject.toml"]):
        h.update(str(p.relative_to(REPO)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def install(workdir: Path) -> Path:
    """The venv's console script, with the wheel of the current source installed."""
    venv = workdir / "venv"
    exe = venv / "bin" / "usenetsync"
    stamp = workdir / "installed-source"
    digest = _source_digest()
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not exe.exists() or not stamp.exists() or stamp.read_text() != digest:
        wheels = workdir / "wheels"
        shutil.rmtree(wheels, ignore_errors=True)
        with tempfile.TemporaryDirectory() as build:
            # Building in a copy keeps build/ out of the checkout.
            src = Path(build) / "src"
            shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__",
                                                                      ".hypothesis", ".pytest_cache"))
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)],
                           check=True)
        (wheel,) = wheels.glob("*.whl")
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, str(wheel)], check=True)  # dependencies from the index the first time
        subprocess.run([*pip, "--force-reinstall", "--no-deps", str(wheel)], check=True)
        stamp.write_text(digest)
    return exe


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, CPU s, exit code) of one run in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, ru.ru_utime + ru.ru_stime, proc.returncode


def series(argv: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    timed(argv, env)  # warm-up: page cache, .pyc
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu, code = timed(argv, env)
        if code != 0:
            raise SystemExit(f"{' '.join(argv)} exited {code}")
        walls.append(wall * 1000)
        cpus.append(cpu * 1000)
    return {"wall_ms": statistics.median(walls), "wall_min_ms": min(walls), "wall_max_ms": max(walls),
            "cpu_ms": statistics.median(cpus)}


def importtime(argv: list[str], env: dict[str, str], top: int = 10) -> list[tuple[int, str]]:
    r = subprocess.run(argv, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True, text=True)
    rows = []
    for line in r.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/usenetsync-bench-startup"))
    ap.add_argument("--importtime", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    exe = install(args.workdir)
    python = str(exe.parent / "python")
    home = Path(tempfile.mkdtemp(prefix="home-", dir=args.workdir))
    env = {**os.environ, "USENETSYNC_HOME": str(home), "COLUMNS": "100"}
    env.pop("PYTHONPATH", None)
    # A small home: one folder of 20 files indexed, so status has rows to show.
    folder = home.parent / "small-folder"
    folder.mkdir(exist_ok=True)
    for i in range(20):
        (folder / f"f{i}").write_bytes(os.urandom(1000))
    subprocess.run([str(exe), "index", str(folder)], env=env, check=True, capture_output=True)

    base = series([python, "-c", "pass"], env, args.runs)
    rows = {}
    for cmd in TARGETS_MS:
        rows[cmd] = series([str(exe), cmd], env, args.runs)
    print(f"start-up from the wheel ({args.runs} runs each, median [min-max]; interpreter alone"
          f" {base['wall_ms']:.0f} ms wall, {base['cpu_ms']:.0f} ms CPU)")
    print(f"{'command':<12}{'wall ms':>22}{'CPU ms':>9}{'ours (wall - python)':>22}{'target':>9}  verdict")
    for cmd, r in rows.items():
        verdict = "met" if r["wall_ms"] <= TARGETS_MS[cmd] else "missed"
        span = f"{r['wall_ms']:.0f} [{r['wall_min_ms']:.0f}-{r['wall_max_ms']:.0f}]"
        print(f"{cmd:<12}{span:>22}{r['cpu_ms']:>9.0f}{r['wall_ms'] - base['wall_ms']:>22.0f}"
              f"{TARGETS_MS[cmd]:>9.0f}  {verdict}")
    if args.importtime:
        for cmd in TARGETS_MS:
            print(f"\nslowest imports of `usenetsync {cmd}` (cumulative ms):")
            for us, name in importtime([python, "-m", "usenetsync_cli", cmd], env):
                print(f"  {us / 1000:7.1f}  {name.strip()}")
    if args.json:
        print(json.dumps({"type": "bench.startup", "python": base, "commands": rows}))
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
