"""bench_share: what a share version costs to publish and to read, whole index vs. chunked (format 4).

A synthetic record stream of N files (the shape ``publish.iter_records``
writes: one F record per file with one segment) goes through the real
publishing code (``publish_index.post_index``) with the articles collected
in memory instead of posted (the STAT of reused packs answers "present").
Then one file changes (``--change`` records rewritten in the middle) and
version 2 is published from version 1's chunk rows.

Printed per size (median of ``--runs``; min-max):
- v1 bytes: index bytes version 1 posts (all chunks, table);
- v2 bytes: what version 2 posts after the change (new chunks, table);
- baseline: the whole stream zstd-compressed, what format 3 posted every version;
- ratio v2 / baseline, and the reader's chunks to fetch for version 2;
- seconds to chunk, seal and pack version 1 (CPU-bound), and MB/s of record stream.

    python3 benchmarks/bench_share.py --files 100000 300000 --runs 3 [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zstandard  # noqa: E402

from usenetsync_cli.core.manifest import dumps_record  # noqa: E402
from usenetsync_cli.pipeline.publish_index import post_index  # noqa: E402


class _Present:
    def stat_many(self, ids: Iterable[str], window: int = 64) -> Iterator[tuple[str, bool]]:
        for mid in ids:
            yield mid, True


def _stream(n: int, changed: set[int]) -> bytes:
    out = io.BytesIO()
    out.write(dumps_record(["H", {"format": 4, "files": n, "bytes": n * 1000}]))
    for i in range(n):
        h = ("ee" if i in changed else "ab") * 32
        out.write(dumps_record(["F", f"photos/{i // 1000:04d}/IMG_{i:08d}.jpg", 3_000_000 + i, 1_700_000_000 + i,
                                0o644, h, [[i % 16, i, 0, 750_000, h, None, 1]]]))
    out.write(dumps_record(["T", n + 2]))
    return out.getvalue()


def _publish(stream: bytes, known: dict, packs: dict) -> tuple[int, float, object]:  # type: ignore[type-arg]
    sizes: list[int] = []
    t0 = time.perf_counter()
    posting = post_index(_Present(), lambda mid, payload: sizes.append(len(payload)), io.BytesIO(stream),  # type: ignore[arg-type]
                         share_key=os.urandom(32), locator_key=bytes(32), known=known, packs=packs)
    return sum(sizes), time.perf_counter() - t0, posting


def run(n: int, runs: int, change: int) -> dict[str, object]:
    v1 = _stream(n, set())
    v2 = _stream(n, set(range(n // 2, n // 2 + change)))
    baseline = len(zstandard.ZstdCompressor(level=3).compress(v2))
    v1_bytes, v2_bytes, secs, fetch = [], [], [], []
    for _ in range(runs):
        b1, s1, p1 = _publish(v1, {}, {})
        known = {e.chunk_id: e for e in p1.entries}  # type: ignore[attr-defined]
        b2, _s2, p2 = _publish(v2, known, dict(p1.packs))  # type: ignore[attr-defined]
        v1_bytes.append(b1)
        v2_bytes.append(b2)
        secs.append(s1)
        fetch.append(len({e.chunk_id for e in p2.entries} - set(known)))  # type: ignore[attr-defined]
    med = statistics.median
    return {
        "files": n, "stream_mb": round(len(v1) / 1e6, 1), "v1_bytes": med(v1_bytes), "v2_bytes": med(v2_bytes),
        "baseline_bytes": baseline, "ratio_v2_baseline": round(med(v2_bytes) / baseline, 4),
        "chunks": len(p2.entries), "reader_fetches_chunks": med(fetch),  # type: ignore[attr-defined]
        "v1_seconds": round(med(secs), 2), "v1_seconds_range": [round(min(secs), 2), round(max(secs), 2)],
        "mb_per_s": round(len(v1) / 1e6 / med(secs), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, nargs="+", default=[100_000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--change", type=int, default=1, help="files changed between version 1 and 2")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [run(n, args.runs, args.change) for n in args.files]
    for r in results:
        print(f"{r['files']:>9,} files ({r['stream_mb']} MB of records, {r['chunks']:,} chunks):"
              f" v1 posts {r['v1_bytes'] / 1e6:.2f} MB in {r['v1_seconds']} s {r['v1_seconds_range']}"
              f" ({r['mb_per_s']} MB/s); after {args.change} change(s) v2 posts {r['v2_bytes'] / 1e3:.1f} KB"
              f" vs {r['baseline_bytes'] / 1e6:.2f} MB for the whole index (ratio {r['ratio_v2_baseline']});"
              f" a reader of v1 fetches {r['reader_fetches_chunks']} chunk(s)")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
