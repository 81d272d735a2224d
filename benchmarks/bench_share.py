"""bench_share: what a share version costs to publish and to read, whole index vs. chunked (format 4).

A synthetic record stream of N files (the shape ``publish.iter_records``
writes: one F record per file with one segment) goes through the real
publishing code (``publish_index.post_index``) with the articles collected
in memory instead of posted (the STAT of reused packs answers "present").
Then ``--change`` files (10) are deleted at random and version 2 is
published from version 1's chunk rows.

Printed per size (median of ``--runs``; min-max):
- v1 bytes: index bytes version 1 posts (all chunks, table);
- v2 bytes and articles: what version 2 posts after the change (new chunks, table);
- baseline: the whole stream zstd-compressed, what format 3 posted every version;
- ratio v2 / baseline, and the reader's chunks to fetch for version 2;
- seconds to chunk, seal and pack version 1 (CPU-bound), and MB/s of record stream;
- a fresh reader in its own process (articles served from files): seconds to
  fetch, verify and stream every record of version 1, and its peak RSS.

    python3 benchmarks/bench_share.py --files 100000 300000 --runs 3 [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
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


def _stream(n: int, changed: set[int], seed: int = 1) -> bytes:
    """Records as a real folder gives them: random names in 300 folders, random content hashes (BLAKE3 of
    distinct files does not compress); the files in ``changed`` are deleted."""
    rnd = random.Random(seed)
    out = io.BytesIO()
    out.write(dumps_record(["H", {"format": 4, "files": n - len(changed), "bytes": n * 1000}]))
    for i in range(n):
        name = "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789_", k=rnd.randint(8, 24)))
        h, piece, size = rnd.randbytes(32).hex(), rnd.randbytes(32).hex(), rnd.randint(10**5, 10**7)
        if i in changed:
            continue  # after the draws: the other files stay exactly as they were
        out.write(dumps_record(["F", f"dir{i % 300:03d}/{name}.jpg", size,
                                1_700_000_000_000_000_000 + i, 0o644, h, [[i % 16, i, 0, 750_000, piece, None, 1]]]))
    out.write(dumps_record(["T", n + 2 - len(changed)]))
    return out.getvalue()


KEY = os.urandom(32)


def _publish(stream: bytes, known: dict, packs: dict, keep: dict | None = None) -> tuple[int, float, object]:  # type: ignore[type-arg]
    sizes: list[int] = []

    def post(mid: str, payload: bytes) -> None:
        sizes.append(len(payload))
        if keep is not None:
            keep[mid] = payload

    t0 = time.perf_counter()
    posting = post_index(_Present(), post, io.BytesIO(stream),  # type: ignore[arg-type]
                         share_key=KEY, locator_key=bytes(32), known=known, packs=packs)
    return sum(sizes), time.perf_counter() - t0, posting


_READER = r"""
import json, sys, time, pathlib, hashlib
from usenetsync_cli.core.share_root import IndexRef, Root
from usenetsync_cli.pipeline.share_index import iter_records, open_index
d = pathlib.Path(sys.argv[1])
meta = json.loads((d / "meta.json").read_text())
class Conn:
    def body_many(self, ids, window=4, max_bytes=0):
        for mid in ids:
            yield mid, (d / hashlib.sha256(mid.encode()).hexdigest()).read_bytes()
root = Root("public", 1, 0, bytes(32), bytes(32), b"", IndexRef.from_doc(meta["ref"]))
t0 = time.perf_counter()
index = open_index(Conn(), bytes(32), bytes.fromhex(meta["key"]), root, d / "reader")
n = sum(1 for _ in iter_records(index))
el = time.perf_counter() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"records": n, "seconds": round(el, 2), "peak_rss_mb": round(int(hwm) / 1000, 1)}))
"""


def _reader(articles: dict[str, bytes], posting: object, workdir: Path) -> dict[str, object]:
    """A fresh reader of version 1 in its own process: fetch (from files), verify, stream every record."""
    import hashlib
    import shutil
    import subprocess

    from usenetsync_cli.core.article import build_article, format_date

    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for mid, payload in articles.items():
        _head, body = build_article(message_id=mid, subject="s", poster="a <a@b.example>", newsgroups=("a.b",),
                                    date=format_date(0), payload=payload, yenc_name="x")
        (workdir / hashlib.sha256(mid.encode()).hexdigest()).write_bytes(body)
    (workdir / "meta.json").write_text(json.dumps({"ref": posting.ref.doc(), "key": KEY.hex()}))  # type: ignore[attr-defined]
    out = subprocess.run([sys.executable, "-c", _READER, str(workdir)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    shutil.rmtree(workdir)
    return json.loads(out.stdout)


def run(n: int, runs: int, change: int, workdir: str) -> dict[str, object]:
    v1 = _stream(n, set())
    v2 = _stream(n, set(random.Random(7).sample(range(n), change)))
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
    arts = (len(p1.posted_ids), len(p2.posted_ids))  # type: ignore[attr-defined]
    articles: dict[str, bytes] = {}
    _b, _s, p1 = _publish(v1, {}, {}, keep=articles)
    reader = _reader(articles, p1, Path(workdir) / f"reader-{n}")
    med = statistics.median
    return {
        "files": n, "stream_mb": round(len(v1) / 1e6, 1), "v1_bytes": med(v1_bytes), "v2_bytes": med(v2_bytes),
        "baseline_bytes": baseline, "ratio_v2_baseline": round(med(v2_bytes) / baseline, 4),
        "chunks": len(p2.entries), "reader_fetches_chunks": med(fetch),  # type: ignore[attr-defined]
        "v1_articles": arts[0], "v2_articles": arts[1], "ratio_v2_v1_bytes": round(med(v2_bytes) / med(v1_bytes), 4),
        "v1_seconds": round(med(secs), 2), "v1_seconds_range": [round(min(secs), 2), round(max(secs), 2)],
        "mb_per_s": round(len(v1) / 1e6 / med(secs), 1),
        "reader_seconds": reader["seconds"], "reader_peak_rss_mb": reader["peak_rss_mb"],
        "reader_records": reader["records"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, nargs="+", default=[100_000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--change", type=int, default=10, help="files deleted at random between version 1 and 2")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--workdir", default="/tmp/usenetsync-bench")
    args = ap.parse_args()
    results = [run(n, args.runs, args.change, args.workdir) for n in args.files]
    for r in results:
        print(f"{r['files']:>9,} files ({r['stream_mb']} MB of records, {r['chunks']:,} chunks):"
              f" v1 posts {r['v1_bytes'] / 1e6:.2f} MB in {r['v1_articles']} articles, {r['v1_seconds']} s"
              f" {r['v1_seconds_range']} ({r['mb_per_s']} MB/s); after {args.change} deletion(s) v2 posts"
              f" {r['v2_bytes'] / 1e3:.1f} KB in {r['v2_articles']} articles ({r['ratio_v2_v1_bytes']:.2%} of v1;"
              f" whole index compressed at once: {r['baseline_bytes'] / 1e6:.2f} MB);"
              f" a reader of v1 fetches {r['reader_fetches_chunks']} chunk(s); a fresh reader fetches, verifies"
              f" and streams all {r['reader_records']:,} records in {r['reader_seconds']} s, peak RSS"
              f" {r['reader_peak_rss_mb']} MB")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
