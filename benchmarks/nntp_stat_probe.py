"""Measure STAT throughput on one connection: one at a time vs pipelined.

Owns nothing the product uses: a probe for the numbers quoted in reviews.
Posts N tiny articles (4 posting connections), warms INN's history cache with
one untimed pass, then times N STATs issued one request per round trip and N
STATs through ``Connection.stat_many``; each figure is the median of
``--runs`` runs on one connection. On loopback the round trip is ~50 us, so
the gap shows the per-request cost; over a real WAN (20 ms RTT) one-at-a-time
drops to ~50/s while the pipeline keeps ``window`` requests per round trip.

Usage: python3 benchmarks/nntp_stat_probe.py [--n 5000] [--window 64] [--port 119]
"""

from __future__ import annotations

import argparse
import email.utils
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usenetsync_cli.nntp import Connection, ServerSpec  # noqa: E402


def post_tiny(spec: ServerSpec, count: int, connections: int = 4) -> list[str]:
    ids = [f"<{uuid.uuid4().hex}@probe.invalid>" for _ in range(count)]
    date = email.utils.formatdate(usegmt=True)

    def worker(part: list[str]) -> None:
        with Connection(spec) as conn:
            for msgid in part:
                head = (
                    f"From: probe <probe@probe.invalid>\r\nNewsgroups: {spec.groups[0]}\r\n"
                    f"Subject: probe\r\nMessage-ID: {msgid}\r\nDate: {date}\r\n\r\n"
                ).encode()
                conn.post((head, b"probe\r\n"), msgid)

    threads = [threading.Thread(target=worker, args=(ids[i::connections],)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=119)
    ap.add_argument("--group", default="alt.binaries.test")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    spec = ServerSpec("probe", args.host, args.port, groups=(args.group,))

    t0 = time.perf_counter()
    ids = post_tiny(spec, args.n)
    dt = time.perf_counter() - t0
    print(f"posted {args.n} tiny articles in {dt:.1f} s ({args.n / dt:.0f} art/s, 4 connections)")

    single: list[float] = []
    piped: list[float] = []
    with Connection(spec) as conn:
        # One untimed pass: the first lookups of fresh IDs fault INN's history
        # file into the page cache, which would bias whichever mode ran first.
        assert sum(present for _, present in conn.stat_many(ids)) == args.n
        for _ in range(args.runs):
            t0 = time.perf_counter()
            ok = sum(conn.stat(m) for m in ids)
            single.append(args.n / (time.perf_counter() - t0))
            assert ok == args.n, f"{args.n - ok} articles missing"
            t0 = time.perf_counter()
            ok = sum(present for _, present in conn.stat_many(ids, window=args.window))
            piped.append(args.n / (time.perf_counter() - t0))
            assert ok == args.n, f"{args.n - ok} articles missing"
    s, p = statistics.median(single), statistics.median(piped)
    print(f"STAT one at a time : {s:9,.0f} /s  (runs: {', '.join(f'{x:,.0f}' for x in single)})")
    print(f"STAT pipelined w={args.window:<4}: {p:9,.0f} /s  (runs: {', '.join(f'{x:,.0f}' for x in piped)})")
    print(f"ratio pipelined/single: {p / s:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
