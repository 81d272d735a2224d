"""Benchmark of `verify`: pipelined STAT sweep rate against the local INN.

Owns: measuring ``pipeline.verify.verify_folder`` over N real articles
(default 100,000) and, in the same run, a bare one-at-a-time STAT loop over
the same Message-IDs on one connection (the baseline the issue names:
~5,000-8,000/s here).

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
import socket
import statistics
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--articles", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/usenetsync-bench-verify"))
    ap.add_argument("--json", action="store_true")
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
    if a.json:
        print(json.dumps({"articles": len(ids), "connections": a.connections, "verify_stat_per_s": ours,
                          "bare_stat_per_s": bare, "median_verify": med_o, "median_bare": med_b, "ratio": ratio}))
    state.close()


if __name__ == "__main__":
    main()
