"""Benchmark of `verify`: pipelined STAT sweep rate against the local INN.

Owns: measuring ``pipeline.verify.verify_folder`` over N real articles
(default 100,000) and, in the same run, a bare one-at-a-time STAT loop over
the same Message-IDs on one connection (the baseline the issue names:
~5,000-8,000/s here); then PAR2's cost: the same folder uploaded with
``--redundancy 0`` and ``10`` in the same run (MB/s of each, the recovery
stage's own MB/s) and the rebuild rate of a group that lost 10 articles.

Setup (cached in --workdir with a marker): a state whose one folder holds N
segment rows in state "verified", spread over the 16 shards, and N tiny
articles posted to INN under exactly the Message-IDs those rows derive
(``segment_message_id``), so the sweep STATs real, present articles. Tiny
articles keep the setup to about a minute; STAT cost does not depend on the
article size.

Prints a table (median [min-max] of --runs) and, with --json, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from usenetsync_cli.core.msgid import segment_message_id  # noqa: E402
from usenetsync_cli.nntp import ServerSpec  # noqa: E402
from usenetsync_cli.pipeline.upload import folder_context  # noqa: E402
from usenetsync_cli.pipeline.verify import VerifyOptions, verify_folder  # noqa: E402
from usenetsync_cli.store import catalog  # noqa: E402
from usenetsync_cli.store.home import Home  # noqa: E402
from usenetsync_cli.store.state import NSHARDS, State  # noqa: E402

HOST, PORT, GROUP = "127.0.0.1", 119, "alt.binaries.test"


def _readline(f) -> bytes:  # type: ignore[no-untyped-def]
    line = f.readline()
    if not line:
        raise ConnectionError("server closed the connection")
    return line


def _post_all(ids: list[str], conns: int) -> None:
    """Post one tiny article per Message-ID (POST is never pipelined: one per connection at a time)."""
    it = iter(ids)
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        s = socket.create_connection((HOST, PORT), timeout=60)
        f = s.makefile("rb")
        _readline(f)
        while True:
            with lock:
                mid = next(it, None)
            if mid is None:
                break
            s.sendall(b"POST\r\n")
            if not _readline(f).startswith(b"340"):
                errors.append("no 340")
                break
            s.sendall(
                b"From: b <b@example.invalid>\r\nNewsgroups: " + GROUP.encode() + b"\r\nSubject: x\r\nMessage-ID: "
                + mid.encode() + b"\r\n\r\nx\r\n.\r\n"
            )
            line = _readline(f)
            if not (line.startswith(b"240") or line.startswith(b"441 435")):
                errors.append(line.decode(errors="replace"))
                break
        s.sendall(b"QUIT\r\n")
        s.close()

    threads = [threading.Thread(target=worker) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit(f"posting failed: {errors[:3]}")


def setup(workdir: Path, n: int) -> tuple[State, catalog.Folder, list[str]]:
    home = Home.resolve(workdir / "home")
    marker = workdir / f"ready-{n}"
    state = State.open(home)
    src = workdir / "src"
    src.mkdir(parents=True, exist_ok=True)
    folder = catalog.get_or_create_folder(state.catalog, os.fsencode(src.resolve()))
    ctx = folder_context(folder, (GROUP,))
    if not marker.exists():
        for conn in state.shards:
            with conn:
                conn.execute("DELETE FROM segments WHERE folder_id=?", (folder.folder_id,))
        per = [n // NSHARDS + (1 if i < n % NSHARDS else 0) for i in range(NSHARDS)]
        for shard, count in enumerate(per):
            with state.shards[shard]:
                state.shards[shard].executemany(
                    "INSERT INTO segments(folder_id, file_id, idx, offset, length, state, attempt, checked_ns)"
                    " VALUES(?, NULL, 0, 0, 1, 2, 0, 0)",
                    [(folder.folder_id,)] * count,
                )
    ids = []
    for shard, conn in enumerate(state.shards):
        for (seg_id,) in conn.execute("SELECT seg_id FROM segments WHERE folder_id=? ORDER BY seg_id", (folder.folder_id,)):
            ids.append(segment_message_id(ctx.keys.msgid_key, ctx.domains, shard, seg_id, 0))
    if not marker.exists():
        t = time.perf_counter()
        _post_all(ids, 4)
        print(f"posted {len(ids):,} tiny articles in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        marker.write_text("ok")
    return state, folder, ids


def bare_stat_loop(ids: list[str]) -> float:
    s = socket.create_connection((HOST, PORT), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    _readline(f)
    t = time.perf_counter()
    for mid in ids:
        s.sendall(b"STAT " + mid.encode() + b"\r\n")
        _readline(f)
    dt = time.perf_counter() - t
    s.close()
    return len(ids) / dt


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "USENETSYNC_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "usenetsync_cli", *args], env=env, capture_output=True, text=True,
                          check=True)


def par2_costs(workdir: Path, mib: int, runs: int) -> dict[str, object]:
    """Upload the same folder with --redundancy 0 and 10 (fresh homes, same run); then rebuild 10% of a group."""
    src = workdir / f"par2-src-{mib}"
    if not src.exists():
        src.mkdir(parents=True)
        for i in range(4):
            with open(src / f"f{i}.bin", "wb") as f:
                for _ in range(mib // 4):
                    f.write(os.urandom(1 << 20))
    results: dict[str, list[float]] = {"upload_mb_s_r0": [], "upload_mb_s_r10": [], "recovery_mb_s": [],
                                       "repair_mb_s": []}
    for run in range(runs):
        for red in (0, 10):
            home = workdir / f"par2-home-{run}-{red}"
            shutil.rmtree(home, ignore_errors=True)
            _cli(home, "server", "add", "local", "--host", HOST, "--group", GROUP)
            _cli(home, "index", str(src))
            t = time.perf_counter()
            out = _cli(home, "upload", str(src), "--redundancy", str(red), "--json").stdout
            wall = time.perf_counter() - t
            summ = [json.loads(x) for x in out.splitlines() if '"upload.summary"' in x][0]
            results[f"upload_mb_s_r{red}"].append(summ["bytes_posted"] / 1e6 / wall)
            if red:
                rec = [json.loads(x) for x in out.splitlines() if '"upload.recovery"' in x][0]
                results["recovery_mb_s"].append(rec["source_bytes"] / 1e6 / max(rec["elapsed_s"], 1e-9))
                results["repair_mb_s"].append(_repair_rate(home, src))
    return {k: (statistics.median(v), min(v), max(v)) for k, v in results.items() if v}


def _repair_rate(home: Path, src: Path) -> float:
    """Cancel as many articles of the largest recovery group as it has recovery blocks, rebuild them; MB/s of the group."""
    from usenetsync_cli.pipeline.recovery import iter_layouts, rebuild_group

    st = State.open(Home.resolve(home))
    try:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        lay = max(iter_layouts(st, folder), key=lambda g: len(g.members))
        victims = list(lay.members)[: len(lay.recovery)]
        for m in victims:
            subprocess.run(["ctlinnd", "cancel", m.msgid], capture_output=True, check=True)
        t = time.perf_counter()
        rb = rebuild_group(st, folder, ServerSpec(name="b", host=HOST, port=PORT), lay.group_id,
                           [m.seg_id for m in victims], workdir=home / "tmp")
        dt = time.perf_counter() - t
        assert len(rb) == len(victims)
        return sum(m.sealed_len for m in lay.members) / 1e6 / dt
    finally:
        st.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--articles", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/usenetsync-bench-verify"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--par2-mib", type=int, default=256, help="folder size for the PAR2 cost runs (0 skips them)")
    a = ap.parse_args()
    state, folder, ids = setup(a.workdir, a.articles)
    spec = ServerSpec(name="bench", host=HOST, port=PORT, connections=a.connections, groups=(GROUP,))
    ours, bare = [], []
    for _ in range(a.runs):
        r = verify_folder(state, folder, spec, VerifyOptions(connections=a.connections))
        assert r.checked == len(ids) and r.present == len(ids), (r.checked, r.present, r.errors)
        ours.append(r.rate)
        bare.append(bare_stat_loop(ids))
    med_o, med_b = statistics.median(ours), statistics.median(bare)
    rows = [
        ("verify sweep (pipelined)", med_o, min(ours), max(ours)),
        ("bare STAT loop, 1 conn, 1 at a time", med_b, min(bare), max(bare)),
    ]
    print(f"\n## bench_verify: {len(ids):,} articles, {a.connections} connections, {a.runs} runs")
    print("| measure | STAT/s median [min–max] |\n|---|---|")
    for name, med, lo, hi in rows:
        print(f"| {name} | {med:,.0f} [{lo:,.0f}–{hi:,.0f}] |")
    ratio = med_o / med_b
    print(f"ratio ours/bare: {ratio:.2f}x; target >= 10,000 STAT/s: {'met' if med_o >= 10_000 else 'MISSED'}")
    par2 = par2_costs(a.workdir, a.par2_mib, a.runs) if a.par2_mib else {}
    if par2:
        print(f"\n## PAR2 costs: {a.par2_mib} MiB folder, upload to INN, {a.runs} runs (same run, fresh homes)")
        print("| measure | MB/s median [min–max] |\n|---|---|")
        for k, (med, lo, hi) in par2.items():
            print(f"| {k} | {med:,.1f} [{lo:,.1f}–{hi:,.1f}] |")
        r0, r10 = par2["upload_mb_s_r0"][0], par2["upload_mb_s_r10"][0]
        print(f"upload throughput with 10% PAR2 / without: {r10 / r0:.2f}x (target: not halved, > 0.5x)")
    if a.json:
        print(json.dumps({"articles": len(ids), "connections": a.connections, "verify_stat_per_s": ours,
                          "bare_stat_per_s": bare, "median_verify": med_o, "median_bare": med_b, "ratio": ratio,
                          "par2": par2}))
    state.close()


if __name__ == "__main__":
    main()
