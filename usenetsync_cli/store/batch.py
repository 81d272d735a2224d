"""Batched writes into the catalog and the shards.

Owns: buffering rows per shard and committing them in one transaction per
shard per batch (every ``max_rows`` rows or ``max_seconds``, whichever comes
first), with the catalog's own open transaction committed first.

Commit point: ``flush()``. It commits the catalog transaction, then each
shard's pending rows in one transaction per shard. Rows added after the last
``flush()`` are lost by a crash, and only those; every writer using this
class must therefore be idempotent over a batch (re-running the command
redoes exactly the lost work). Because the catalog commits first, a shard
row never refers to a catalog row (such as a directory) that was not
committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from usenetsync_cli.store.state import NSHARDS, State


class BatchWriter:
    def __init__(
        self,
        state: State,
        *,
        max_rows: int = 50_000,
        max_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.clock = clock
        self._pending: list[dict[str, list[tuple[object, ...]]]] = [{} for _ in range(NSHARDS)]
        self._count = 0
        self._catalog_open = False
        self._started = clock()
        self.batches = 0

    def catalog(self) -> object:
        """The catalog connection inside this batch's transaction."""
        if not self._catalog_open:
            self.state.catalog.execute("BEGIN IMMEDIATE")
            self._catalog_open = True
        return self.state.catalog

    def add(self, shard: int, sql: str, row: tuple[object, ...]) -> None:
        rows = self._pending[shard].get(sql)
        if rows is None:
            self._pending[shard][sql] = rows = []
        rows.append(row)
        self._count += 1
        if self._count >= self.max_rows:
            self.flush()

    def maybe_flush(self) -> None:
        if self._count and self.clock() - self._started >= self.max_seconds:
            self.flush()

    @property
    def pending(self) -> int:
        return self._count

    def flush(self) -> None:
        if self._catalog_open:
            self.state.catalog.execute("COMMIT")
            self._catalog_open = False
        for shard, stmts in enumerate(self._pending):
            if not stmts:
                continue
            conn = self.state.shards[shard]
            with conn:
                for sql, rows in stmts.items():
                    conn.executemany(sql, rows)
            self._pending[shard] = {}
        self._count = 0
        self._started = self.clock()
        self.batches += 1

    def discard(self) -> None:
        """Drop everything not yet committed (after an error or Ctrl-C)."""
        if self._catalog_open:
            self._catalog_open = False
            self.state.catalog.execute("ROLLBACK")
        self._pending = [{} for _ in range(NSHARDS)]
        self._count = 0
