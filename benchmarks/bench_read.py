#!/usr/bin/env python3
"""Benchmark of the upload's source reader: mmap segmentation against positional reads.

Owns: the figures behind the choice of reader in
``usenetsync_cli/pipeline/encode.py`` (the design card names "mmap
segmentation"; the code reads with ``os.pread``). Three readers, per segment
of ``SEGMENT_SIZE`` bytes of one large file and per small file of a tree:

1. **mmap**: the whole file mapped read-only (``MADV_SEQUENTIAL`` for the
   large file), ``memoryview`` slices fed straight to BLAKE3 and AES-GCM.
   A small file is mapped, copied into the pack buffer and unmapped.
2. **pread**: what encode.py does now, a fresh ``bytes`` per read (a small
   file's bytes are then copied into the pack buffer, as encode.py does).
3. **preadv** / **readinto**: into one reused, preallocated ``bytearray``
   (a small file is read straight into its place in the pack buffer).

Two operations: ``read`` (the bytes reach memory the CPU can use; for mmap
that means touching one byte of every 4 KiB page, which faults the page in)
and ``hash+seal`` (``read`` plus BLAKE3-256 as core/hashing.py calls it and
AESGCM.encrypt as core/crypto.py calls it, per segment; for a small file the
file's piece hash, and one seal per full 768,000-byte pack).

Every measurement is a fresh child process (``--child``) so that its
``getrusage(RUSAGE_SELF)`` (user+sys CPU, minor/major page faults) covers
that read loop only. The large file is measured warm (re-read by the parent
just before, because this VM's DAMON reclaim evicts idle page cache) and
cold (``os.sync()`` then ``posix_fadvise(POSIX_FADV_DONTNEED)``). Readers are
interleaved per iteration and their order rotates, so drift on the shared
2-core machine spreads over all of them. Before each iteration the script
waits (up to ``--max-peer-wait`` seconds in all) while another
``benchmarks/bench_*.py`` runs (not one that is idle, itself waiting).

It also checks, in children: whether ``AESGCM.encrypt`` copies a
``memoryview`` argument (page faults of encrypt(memoryview) vs encrypt(bytes)
vs bytes(view)+encrypt), and the shrink case: a file truncated while mapped
kills the reader with SIGBUS when it touches a lost page.

Usage:
    python3 benchmarks/bench_read.py                        # 1 GiB + small trees, 5 runs
    python3 benchmarks/bench_read.py --runs 7 --json
    python3 benchmarks/bench_read.py --small-count 20000 --no-cold
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import random
import resource
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SEGMENT_SIZE = 768_000  # the CLI's default (core.packing.DEFAULT_SEGMENT_SIZE)
GIB = 1 << 30
PAGE = mmap.PAGESIZE
DEFAULT_TREE = Path("/tmp/small300k/tree")  # 300,000 files of 150–249 B, built by an earlier benchmark
SEED = 20261130
AAD = b"\x00" * 45  # the size of core.crypto.place_aad for epoch 0

LARGE_METHODS = ("mmap", "pread", "preadv", "readinto")
SMALL_METHODS = ("mmap", "pread", "preadv")
OPS = ("read", "hash+seal")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Child: one measured loop
# --------------------------------------------------------------------------


def _usage() -> tuple[float, int, int]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_minflt, ru.ru_majflt


def _stalls() -> int:
    """Machine-wide direct-compaction + direct-reclaim stalls so far (/proc/vmstat).

    A cold read allocates its page cache as it goes; when free memory is
    fragmented the kernel compacts or reclaims in the reader's own context,
    which shows up as that run's system CPU whatever the reader. Counting
    them tells a slow run from a slow reader.
    """
    n = 0
    try:
        with open("/proc/vmstat") as f:
            for ln in f:
                k, v = ln.split()
                if k == "compact_stall" or k.startswith("allocstall_"):
                    n += int(v)
    except OSError:
        pass
    return n


def _sys_cpu() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def _crypto() -> tuple[Any, Any]:
    from blake3 import blake3
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return blake3, AESGCM(os.urandom(32))


def child_large(path: str, method: str, op: str) -> dict[str, Any]:
    """Read (and hash+seal) the whole file segment by segment with ``method``."""
    blake3, aes = _crypto()
    seal = op == "hash+seal"
    # One nonce for every segment: a benchmark key that never leaves this process, and urandom per
    # segment would only add noise. The real code draws a fresh one (core.crypto.new_nonce).
    nonce = os.urandom(12)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    size = os.fstat(fd).st_size
    touched = 0
    st0, s0 = _stalls(), _sys_cpu()
    c0, mn0, mj0 = _usage()
    t0 = time.perf_counter()
    if method == "mmap":
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        mm.madvise(mmap.MADV_SEQUENTIAL)
        view = memoryview(mm)
        for off in range(0, size, SEGMENT_SIZE):
            seg = view[off : off + SEGMENT_SIZE]
            if seal:
                blake3(seg, max_threads=1).digest()
                aes.encrypt(nonce, seg, AAD)
            else:
                touched += len(seg[::PAGE].tobytes())  # one byte per page: every page faulted in
            seg.release()
        view.release()
        mm.close()
    elif method == "pread":
        for off in range(0, size, SEGMENT_SIZE):
            data = os.pread(fd, SEGMENT_SIZE, off)
            if seal:
                blake3(data, max_threads=1).digest()
                aes.encrypt(nonce, data, AAD)
    else:
        buf = bytearray(SEGMENT_SIZE)
        mv = memoryview(buf)
        # A plain sequential read: the file object is this loop's only reader and dies with it.
        f = open(fd, "rb", buffering=0, closefd=False) if method == "readinto" else None  # noqa: SIM115
        for off in range(0, size, SEGMENT_SIZE):
            n = f.readinto(buf) if f is not None else os.preadv(fd, [buf], off)
            if seal:
                seg = mv[:n]
                blake3(seg, max_threads=1).digest()
                aes.encrypt(nonce, seg, AAD)
                seg.release()
    wall = time.perf_counter() - t0
    c1, mn1, mj1 = _usage()
    s1, st1 = _sys_cpu(), _stalls()
    os.close(fd)
    return {"bytes": size, "wall": wall, "cpu": c1 - c0, "sys": s1 - s0, "minflt": mn1 - mn0, "majflt": mj1 - mj0,
            "stalls": st1 - st0}


def child_small(listing: str, method: str, op: str) -> dict[str, Any]:
    """Read every file of ``listing`` into 768,000-byte packs, as encode.py builds a pack.

    Each file is opened, fstat'ed, read, fstat'ed again and closed (encode.py's
    two looks at the planned stat); mmap adds mmap + munmap.
    """
    blake3, aes = _crypto()
    seal = op == "hash+seal"
    nonce = os.urandom(12)
    paths = Path(listing).read_bytes().split(b"\n")
    paths = [p for p in paths if p]
    pack = bytearray(SEGMENT_SIZE)
    pmv = memoryview(pack)
    fill = 0
    total = 0
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    st0, s0 = _stalls(), _sys_cpu()
    c0, mn0, mj0 = _usage()
    t0 = time.perf_counter()
    for p in paths:
        fd = os.open(p, flags)
        n = os.fstat(fd).st_size
        if fill + n > SEGMENT_SIZE:
            if seal:
                aes.encrypt(nonce, pmv[:fill], AAD)
            fill = 0
        if method == "pread":
            data = os.pread(fd, n, 0)
            if seal:
                blake3(data, max_threads=1).digest()
                pmv[fill : fill + n] = data
        elif method == "preadv":
            dst = pmv[fill : fill + n]
            os.preadv(fd, [dst], 0)
            if seal:
                blake3(dst, max_threads=1).digest()
            dst.release()
        else:
            mm = mmap.mmap(fd, n, access=mmap.ACCESS_READ)
            v = memoryview(mm)
            if seal:
                blake3(v, max_threads=1).digest()
                pmv[fill : fill + n] = v
            else:
                v[::PAGE].tobytes()
            v.release()
            mm.close()
        os.fstat(fd)
        os.close(fd)
        fill += n
        total += n
    if seal and fill:
        aes.encrypt(nonce, pmv[:fill], AAD)
    wall = time.perf_counter() - t0
    c1, mn1, mj1 = _usage()
    s1, st1 = _sys_cpu(), _stalls()
    return {"bytes": total, "files": len(paths), "wall": wall, "cpu": c1 - c0, "sys": s1 - s0,
            "minflt": mn1 - mn0, "majflt": mj1 - mj0, "stalls": st1 - st0}


def child_aesgcm_copy() -> dict[str, Any]:
    """Does AESGCM.encrypt copy a memoryview argument? Count the page faults each call makes.

    The 64 MiB output is a fresh allocation (glibc mmaps anything this big), so
    every call faults in ~16,384 pages for it. A copy of the input would fault
    in as many again: compare with encrypt(bytes) (nothing to copy) and
    bytes(view) + encrypt (a known copy).
    """
    _blake3, aes = _crypto()
    n = 64 << 20
    src = bytearray(os.urandom(n))  # already faulted in
    ro = bytes(src)
    nonce = os.urandom(12)
    out: dict[str, Any] = {"pages": n // PAGE}
    cases = (
        ("bytes", lambda: aes.encrypt(nonce, ro, AAD)),
        ("memoryview(bytearray)", lambda: aes.encrypt(nonce, memoryview(src), AAD)),
        ("bytes(view) + encrypt", lambda: aes.encrypt(nonce, bytes(memoryview(src)), AAD)),
    )
    for name, fn in cases * 2:  # the second round counts: the first may reuse freed arenas differently
        _c, m0, _j = _usage()
        t0 = time.perf_counter()
        ct = fn()
        dt = time.perf_counter() - t0
        _c, m1, _j = _usage()
        del ct
        out[name] = {"minflt": m1 - m0, "ms": round(dt * 1e3, 1)}
    # The same through a file mapping whose pages are already touched.
    path = Path(os.environ.get("BENCH_READ_TMP", "/tmp")) / f"bench_read_aes_{os.getpid()}"
    path.write_bytes(ro)
    try:
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        view[::PAGE].tobytes()
        for _ in range(2):
            _c, m0, _j = _usage()
            ct = aes.encrypt(nonce, view, AAD)
            _c, m1, _j = _usage()
            out["memoryview(mmap)"] = {"minflt": m1 - m0}
            del ct
        view.release()
        mm.close()
    finally:
        path.unlink()
    return out


SHRINK_CHILD = textwrap.dedent("""
    import faulthandler, mmap, os, sys
    faulthandler.enable()
    path = sys.argv[1]
    with open(path, "wb") as f:
        f.write(os.urandom(16 * mmap.PAGESIZE))
    fd = os.open(path, os.O_RDONLY)
    mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    view = memoryview(mm)
    view[:mmap.PAGESIZE].tobytes()          # a page that stays: fine
    os.truncate(path, mmap.PAGESIZE)         # another writer shrinks the file to one page
    print("mapped, truncated; touching page 8", flush=True)
    try:
        view[8 * mmap.PAGESIZE:9 * mmap.PAGESIZE].tobytes()
    except BaseException as e:               # never reached: SIGBUS is not an exception
        print("caught", type(e).__name__, flush=True)
        sys.exit(3)
    print("survived", flush=True)
    sys.exit(0)
""")


def shrink_demo(workdir: Path) -> dict[str, Any]:
    """A file truncated while mapped: the child touches a lost page. Returns how it ended."""
    path = workdir / "shrink-demo.bin"
    p = subprocess.run([sys.executable, "-c", SHRINK_CHILD, str(path)], capture_output=True, text=True, timeout=60, check=False)
    path.unlink(missing_ok=True)
    rc = p.returncode
    sig = signal.Signals(-rc).name if rc < 0 else None
    return {"returncode": rc, "signal": sig, "stdout": p.stdout.strip(),
            "faulthandler": next((ln for ln in p.stderr.splitlines() if "Fatal Python error" in ln), "")}


# --------------------------------------------------------------------------
# Parent: data, coordination, runs
# --------------------------------------------------------------------------


def ensure_large(workdir: Path, size: int) -> Path:
    path = workdir / f"large-{size}.bin"
    if path.is_file() and path.stat().st_size == size:
        return path
    log(f"  writing {size / GIB:.2f} GiB of os.urandom to {path} ...")
    with open(path, "wb", buffering=0) as f:
        left = size
        while left:
            n = min(8 << 20, left)
            f.write(os.urandom(n))
            left -= n
    os.sync()
    return path


def ensure_small(workdir: Path, count: int) -> Path:
    """``count`` files of 1–64 KiB, 100 per directory; reused when the marker matches."""
    root = workdir / f"small-{count}"
    marker = workdir / f"small-{count}.json"
    rng = random.Random(SEED + count)
    sizes = [rng.randint(1024, 65536) for _ in range(count)]
    want = {"seed": SEED, "files": count, "bytes": sum(sizes)}
    if root.is_dir() and marker.is_file():
        try:
            if json.loads(marker.read_text()) == want:
                return root
        except ValueError:
            pass
    log(f"  building {count:,} files of 1–64 KiB ({sum(sizes) / 1e9:.2f} GB) under {root} ...")
    for i, n in enumerate(sizes):
        d = root / f"d{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i % 100:03d}").write_bytes(os.urandom(n))
    os.sync()
    marker.write_text(json.dumps(want) + "\n")
    return root


def listing_for(workdir: Path, root: Path) -> tuple[Path, int, int]:
    """A file listing the tree's files in walk order (the child reads it before timing)."""
    paths: list[bytes] = []
    total = 0
    stack = [os.fsencode(root)]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif e.is_file(follow_symlinks=False):
                n = e.stat(follow_symlinks=False).st_size
                if n:  # mmap cannot map an empty file; the upload packs none of their bytes anyway
                    paths.append(e.path)
                    total += n
    out = workdir / f"listing-{zlib.crc32(os.fsencode(root)):08x}.txt"
    out.write_bytes(b"\n".join(paths) + b"\n")
    return out, len(paths), total


def warm_large(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        off = 0
        while chunk := os.pread(fd, 8 << 20, off):
            off += len(chunk)
    finally:
        os.close(fd)


def warm_small(listing: Path) -> None:
    for p in listing.read_bytes().split(b"\n"):
        if p:
            with open(p, "rb") as f:
                f.read()


def drop_cache(path: Path) -> None:
    os.sync()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _cpu_ticks(pid: str) -> int:
    """utime+stime of ``pid`` and its reaped children, in clock ticks (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(x) for x in fields[11:15])


def _has_children(pid: str) -> bool:
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().strip())
    except OSError:
        return False


def _peers() -> list[str]:
    """Other benchmarks running now (any benchmarks/bench_*.py but this one and its children).

    A peer that is itself waiting (no child process, no CPU used over 2 s:
    bench_download.py waits for every other bench_*.py, this one included)
    does not count, or the two would wait for each other.
    """
    try:
        out = subprocess.run(["pgrep", "-af", r"bench_[a-z0-9_]+\.py"], capture_output=True, text=True,
                             check=False).stdout
    except OSError:
        return []
    cand = [ln for ln in out.splitlines() if "bench_read" not in ln and "pgrep" not in ln]
    if not cand:
        return []
    before = {ln: _cpu_ticks(ln.split()[0]) for ln in cand}
    time.sleep(2)
    tick = os.sysconf("SC_CLK_TCK")
    return [ln for ln in cand
            if _has_children(ln.split()[0]) or _cpu_ticks(ln.split()[0]) - before[ln] > 0.05 * tick]


class PeerWait:
    """Waits while other benchmarks run, up to ``budget`` seconds in all.

    The budget is a second guard against two scripts waiting for each other
    (``_peers`` already ignores a peer that is idle, waiting itself).
    """

    def __init__(self, budget: float) -> None:
        self.left = budget
        self.waited = 0.0

    def __call__(self) -> None:
        if self.left <= 0 or not (peers := _peers()):
            return
        log("  waiting for other benchmarks (2 cores: concurrent benchmarks ruin each other): "
            + "; ".join(" ".join(p.split()[1:4])[:80] for p in peers[:3]) + " ...")
        t0 = time.monotonic()
        while _peers() and time.monotonic() - t0 < self.left:
            time.sleep(5)
        dt = time.monotonic() - t0
        self.left -= dt
        self.waited += dt
        log(f"  ... waited {dt:.0f} s" + ("" if _peers() else "; settling 5 s"))
        if not _peers():
            time.sleep(5)


GLIBC_DEFAULTS = False  # set from --glibc-defaults


def run_child(kind: str, **kw: Any) -> dict[str, Any]:
    spec = json.dumps({"kind": kind, "glibc_defaults": GLIBC_DEFAULTS, **kw})
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", spec],
                       capture_output=True, text=True, timeout=900, check=False)
    if p.returncode != 0:
        raise SystemExit(f"bench_read: child {spec} failed (rc {p.returncode}): {p.stderr.strip()[-500:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["load1"] = os.getloadavg()[0]
    return res


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def _fmt_range(xs: list[float], fmt: str) -> str:
    return f"{fmt.format(_med(xs))} [{fmt.format(min(xs))}–{fmt.format(max(xs))}]"


def summarize_large(runs: list[dict[str, Any]]) -> dict[str, Any]:
    g = runs[0]["bytes"] / GIB
    wall = [r["wall"] / g for r in runs]
    cpu = [r["cpu"] / g for r in runs]
    return {"wall_s_per_gib": wall, "cpu_s_per_gib": cpu,
            "gib_per_s": [1 / w for w in wall],
            "minflt_per_gib": _med([r["minflt"] / g for r in runs]),
            "majflt_per_gib": _med([r["majflt"] / g for r in runs]),
            "sys_s_per_gib": _med([r["sys"] / g for r in runs]),
            "stalls": [r["stalls"] for r in runs],
            "load1": [r["load1"] for r in runs]}


def summarize_small(runs: list[dict[str, Any]]) -> dict[str, Any]:
    n = runs[0]["files"]
    g = runs[0]["bytes"] / GIB
    return {"files_per_s": [n / r["wall"] for r in runs],
            "cpu_us_per_file": [1e6 * r["cpu"] / n for r in runs],
            "cpu_s_per_gib": [r["cpu"] / g for r in runs],
            "minflt_per_file": _med([r["minflt"] / n for r in runs]),
            "majflt_per_file": _med([r["majflt"] / n for r in runs]),
            "sys_us_per_file": _med([1e6 * r["sys"] / n for r in runs]),
            "load1": [r["load1"] for r in runs]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/usenetsync-bench-read"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--large-size", type=int, default=GIB, help="bytes of the large file (default 1 GiB)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache runs of the large file")
    ap.add_argument("--small-tree", type=Path, action="append",
                    help=f"an existing tree of small files (default {DEFAULT_TREE} if present); repeatable")
    ap.add_argument("--small-count", type=int, default=10_000,
                    help="also build and measure this many files of 1–64 KiB (0: none)")
    ap.add_argument("--max-peer-wait", type=float, default=900.0,
                    help="seconds in all to wait for other benchmarks/bench_*.py (0: do not wait)")
    ap.add_argument("--glibc-defaults", action="store_true",
                    help="children skip the CLI's allocator tuning (cli.app._tune_allocator): a what-if")
    ap.add_argument("--json", action="store_true", help="end with one JSON line holding every figure")
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        if not spec.pop("glibc_defaults", False):
            # As main() does before any command: without it every fresh 768 KB bytes is mmapped,
            # freed and faulted back in, which is a cost of glibc's defaults, not of pread.
            sys.path.insert(0, str(REPO))
            from usenetsync_cli.cli.app import _tune_allocator

            _tune_allocator()
        kind = spec.pop("kind")
        fn = {"large": child_large, "small": child_small, "aes": child_aesgcm_copy}[kind]
        print(json.dumps(fn(**spec)))
        return 0
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    global GLIBC_DEFAULTS
    GLIBC_DEFAULTS = args.glibc_defaults
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    wait = PeerWait(args.max_peer_wait)
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "kernel": platform.release()},
                              "segment_size": SEGMENT_SIZE, "runs": args.runs,
                              "allocator": "glibc defaults" if args.glibc_defaults else "tuned as the CLI"}

    # --- the shrink case and AESGCM's handling of a memoryview, first: they are quick and not timed
    shrink = shrink_demo(workdir)
    result["shrink"] = shrink
    aes = run_child("aes")
    result["aesgcm_copy"] = aes

    # --- the large file
    large = ensure_large(workdir, args.large_size)
    caches = ("warm",) if args.no_cold else ("warm", "cold")
    large_runs: dict[str, list[dict[str, Any]]] = {}
    for it in range(args.runs):
        wait()
        log(f"  large file, iteration {it + 1}/{args.runs} (load {os.getloadavg()[0]:.2f})")
        rot = it % len(LARGE_METHODS)
        for cache in caches:
            for op in OPS:
                for m in LARGE_METHODS[rot:] + LARGE_METHODS[:rot]:
                    if cache == "cold":
                        drop_cache(large)
                    else:
                        warm_large(large)
                    large_runs.setdefault(f"{cache}|{op}|{m}", []).append(
                        run_child("large", path=str(large), method=m, op=op))
    result["large"] = {k: {**summarize_large(v), "raw": v} for k, v in large_runs.items()}
    result["large_bytes"] = args.large_size

    # --- small files
    trees: list[Path] = list(args.small_tree or ([DEFAULT_TREE] if DEFAULT_TREE.is_dir() else []))
    if args.small_count > 0:
        trees.append(ensure_small(workdir, args.small_count))
    result["small"] = {}
    for tree in trees:
        listing, nfiles, nbytes = listing_for(workdir, tree)
        log(f"  small files: {tree} ({nfiles:,} files, {nbytes / 1e6:.1f} MB)")
        runs: dict[str, list[dict[str, Any]]] = {}
        for it in range(args.runs):
            wait()
            rot = it % len(SMALL_METHODS)
            warm_small(listing)
            for op in OPS:
                for m in SMALL_METHODS[rot:] + SMALL_METHODS[:rot]:
                    runs.setdefault(f"{op}|{m}", []).append(run_child("small", listing=str(listing), method=m, op=op))
        result["small"][str(tree)] = {"files": nfiles, "bytes": nbytes,
                                      **{k: {**summarize_small(v), "raw": v} for k, v in runs.items()}}
    result["peer_wait_s"] = round(wait.waited)
    report(result)
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    return 0


def report(r: dict[str, Any]) -> None:
    print(f"\nmmap vs pread on the upload path: segment {SEGMENT_SIZE:,} B, {r['runs']} runs, "
          f"median [min–max]; {r['machine']['cpus']} cores, Python {r['machine']['python']}, "
          f"Linux {r['machine']['kernel']}, allocator {r['allocator']}")
    label = f"{r['large_bytes'] / GIB:g} GiB"
    print("\n| file | cache | op | reader | wall s/GiB | GiB/s | CPU-s/GiB | of it sys | minflt/GiB | majflt/GiB "
          "| reclaim stalls |")
    print("|---|---|---|---|---|---|---|---:|---:|---:|---|")
    for key, s in r["large"].items():
        cache, op, m = key.split("|")
        print(f"| {label} | {cache} | {op} | {m} | {_fmt_range(s['wall_s_per_gib'], '{:.3f}')} | "
              f"{_med(s['gib_per_s']):.2f} | {_fmt_range(s['cpu_s_per_gib'], '{:.3f}')} | "
              f"{s['sys_s_per_gib']:.3f} | {s['minflt_per_gib']:,.0f} | {s['majflt_per_gib']:,.0f} | "
              f"{' '.join(str(x) for x in s['stalls'])} |")
    for tree, t in r["small"].items():
        print(f"\n{tree}: {t['files']:,} files, {t['bytes'] / 1e6:.1f} MB")
        print("| op | reader | files/s | CPU µs/file | of it sys | CPU-s/GiB | minflt/file |")
        print("|---|---|---|---|---:|---|---:|")
        for key, s in t.items():
            if "|" not in key:
                continue
            op, m = key.split("|")
            print(f"| {op} | {m} | {_fmt_range(s['files_per_s'], '{:,.0f}')} | "
                  f"{_fmt_range(s['cpu_us_per_file'], '{:.1f}')} | {s['sys_us_per_file']:.1f} | "
                  f"{_med(s['cpu_s_per_gib']):.2f} | "
                  f"{s['minflt_per_file']:.2f} |")
    a = r["aesgcm_copy"]
    print(f"\nAESGCM.encrypt, 64 MiB ({a['pages']:,} pages) page faults per call: "
          + ", ".join(f"{k} {v['minflt']:,}" for k, v in a.items() if isinstance(v, dict))
          + " -> " + ("a memoryview is read in place (no copy)"
                      if a["memoryview(bytearray)"]["minflt"] < 1.5 * a["bytes"]["minflt"] + 100
                      else "a memoryview is COPIED"))
    s = r["shrink"]
    how = f"killed by {s['signal']} (rc {s['returncode']})" if s["signal"] else f"exited rc {s['returncode']}"
    print(f"shrink: a child that mapped a 16-page file, truncated it to 1 page and touched page 8 was {how}"
          + (f"; faulthandler only printed '{s['faulthandler']}'" if s["faulthandler"] else "")
          + "; Python cannot catch SIGBUS, so guarding needs a C SIGBUS handler with siglongjmp or a "
            "sacrificial worker process")
    print(verdict(r))
    if r.get("peer_wait_s"):
        print(f"(waited {r['peer_wait_s']} s for other benchmarks)")


def verdict(r: dict[str, Any]) -> str:
    L = r["large"]

    def cpu(key: str) -> float:
        return _med(L[key]["cpu_s_per_gib"]) if key in L else float("nan")

    def wall(key: str) -> float:
        return _med(L[key]["wall_s_per_gib"]) if key in L else float("nan")

    k = "warm|hash+seal|"
    best_pos = min(("pread", "preadv", "readinto"), key=lambda m: cpu(k + m))
    diff = cpu(k + "mmap") / cpu(k + best_pos) - 1
    label = f"{r['large_bytes'] / GIB:g} GiB"
    parts = [(f"{label} warm hash+seal: mmap {cpu(k + 'mmap'):.3f} vs {best_pos} {cpu(k + best_pos):.3f} "
              f"vs pread {cpu(k + 'pread'):.3f} CPU-s/GiB (mmap {abs(diff):.0%} {'more' if diff > 0 else 'less'} CPU "
              f"than {best_pos})")]
    if "cold|hash+seal|mmap" in L:
        parts.append(f"cold wall {wall('cold|hash+seal|mmap'):.2f} vs {wall('cold|hash+seal|' + best_pos):.2f} s/GiB")
    for tree, t in r["small"].items():
        if "hash+seal|mmap" in t:
            mm, pr = _med(t["hash+seal|mmap"]["cpu_us_per_file"]), _med(t["hash+seal|pread"]["cpu_us_per_file"])
            pv = _med(t["hash+seal|preadv"]["cpu_us_per_file"])
            parts.append(f"{Path(tree).name}: mmap {mm:.1f} vs pread {pr:.1f} vs preadv {pv:.1f} CPU µs/file")
    sig = r["shrink"]["signal"]
    return "verdict: " + "; ".join(parts) + (f"; a shrink under mmap is {sig}" if sig else "")


if __name__ == "__main__":
    sys.exit(main())
