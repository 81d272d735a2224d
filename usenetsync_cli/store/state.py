"""The opened state: catalog.db plus the 16 shard databases.

Owns: opening (and migrating) every database of a home in one place, and the
shard function. Commands open a ``State`` once and pass it down; nothing
else opens a database file.

Invariants:
- shard = xxh3_64(folder uid ‖ relative path) mod 16. It depends only on the
  folder's random uid and the path bytes, so it is stable across runs,
  machines and versions; a file and all its segments live in that shard.
- Opening is all-or-nothing: if any file cannot be opened or migrated, every
  connection opened so far is closed and a ``StateError`` is raised.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import apsw
import xxhash

from usenetsync_cli.store import db
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.schema import CATALOG_MIGRATIONS, SHARD_MIGRATIONS

NSHARDS = 16
# Measured (benchmarks/bench_index.py): with 4 MiB per shard, RSS grew +126% from
# 100k to 1M files as 16 caches filled; 512 KiB keeps growth under 3% at equal speed.
SHARD_CACHE_KIB = 512
_MASK = NSHARDS - 1
_hash = xxhash.xxh3_64_intdigest


def shard_of(folder_uid: bytes, relpath: bytes) -> int:
    return _hash(folder_uid + relpath) & _MASK


def shard_path(shards_dir: Path, n: int) -> Path:
    return shards_dir / f"{n:02d}.db"


def iter_mask(mask: int) -> Iterator[int]:
    """Shard numbers whose bit is set in ``mask``."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


@dataclass
class State:
    home: Home
    catalog: apsw.Connection
    shards: list[apsw.Connection] = field(default_factory=list)

    @classmethod
    def open(cls, home: Home) -> State:
        home.ensure()
        opened: list[apsw.Connection] = []
        try:
            catalog = db.connect(home.catalog_path, cache_kib=2048)
            opened.append(catalog)
            db.migrate(catalog, CATALOG_MIGRATIONS, name="catalog.db")
            shards = []
            for n in range(NSHARDS):
                path = shard_path(home.shards_dir, n)
                conn = db.connect(path, cache_kib=SHARD_CACHE_KIB)
                opened.append(conn)
                db.migrate(conn, SHARD_MIGRATIONS, name=path.name)
                shards.append(conn)
        except BaseException:
            for conn in opened:
                conn.close()
            raise
        return cls(home=home, catalog=catalog, shards=shards)

    def reopen(self) -> State:
        """Another set of connections to this (already opened and migrated) home, for another thread.

        apsw connections are not shared between threads that each run their
        own transactions; a planner thread (pipeline/plan_ahead.py) gets its own.
        """
        opened: list[apsw.Connection] = []
        try:
            catalog = db.connect(self.home.catalog_path, cache_kib=2048)
            opened.append(catalog)
            for n in range(NSHARDS):
                opened.append(db.connect(shard_path(self.home.shards_dir, n), cache_kib=SHARD_CACHE_KIB))
        except BaseException:
            for conn in opened:
                conn.close()
            raise
        return State(home=self.home, catalog=catalog, shards=opened[1:])

    def close(self) -> None:
        for conn in self.shards:
            conn.close()
        self.catalog.close()
        self.shards = []

    def __enter__(self) -> State:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
