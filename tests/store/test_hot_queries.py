"""Every per-command hot query (store/counters.py lists them) searches its index; none scans a table.

SQLite picks a partial index only when the query's WHERE contains the index's
condition, so a harmless-looking edit of one of these queries can silently
turn a page of a few rows into a walk over 26 million. The plans are asked
from SQLite itself, on the real schema.
"""

from __future__ import annotations

import apsw
import pytest

from usenetsync_cli.pipeline import plan, settle, upload, verify
from usenetsync_cli.store import db, segments
from usenetsync_cli.store.schema import SHARD_MIGRATIONS

HOT = [
    ("files needing a plan", plan._NEEDS_PLAN, (1, 0, 10), "files_unplanned"),
    ("planned segments to post", segments._PENDING, (1, 0, 0, 10), "segments_work"),
    ("never-checked page", verify._UNCHECKED, (1, 10), "segments_due"),
    ("oldest-checked page", verify._PAGE, (1, 5, 10), "segments_due"),
    ("checked since the sweep began", verify._CHECKED_SINCE, (1, 5), "segments_due"),
    ("verified without a BLAKE3", settle._NEEDS_HASH, (1, 0, 10), "segments_nohash"),
    ("unsettled files", settle._UNSETTLED, (1, 0, 10), "files_unsettled"),
    ("re-epoch never-posted segments", plan._REEPOCH, (1, 1, 1), "segments_work"),
    ("failed segments retried on resume", upload._RETRY_FAILED, (1,), "segments_work"),
]


@pytest.fixture(scope="module")
def shard() -> apsw.Connection:
    conn = apsw.Connection(":memory:")
    db.migrate(conn, SHARD_MIGRATIONS, name="mem")
    return conn


@pytest.mark.parametrize(("what", "sql", "args", "index"), HOT, ids=[h[0] for h in HOT])
def test_hot_query_searches_its_index(shard: apsw.Connection, what: str, sql: str, args: tuple, index: str) -> None:  # type: ignore[type-arg]
    steps = [row[3] for row in shard.execute("EXPLAIN QUERY PLAN " + sql, args)]
    assert any(f"USING INDEX {index}" in s or f"USING COVERING INDEX {index}" in s for s in steps), (what, steps)
    assert not any(s.startswith("SCAN") for s in steps), (what, steps)
