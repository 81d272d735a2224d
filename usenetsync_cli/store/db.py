"""SQLite connections (apsw) and schema migrations.

Owns: how every database file of the state is opened (WAL,
``synchronous=NORMAL``, bounded page cache), the ``PRAGMA user_version``
migration runner, and the translation of SQLite failures into the exception
family.

Invariants:
- A migration step runs in one transaction together with its
  ``user_version`` bump: a crash leaves the file at the old or the new
  version, never between.
- A file whose version is newer than this program knows is refused, never
  downgraded.
- Page caches are small and fixed (16 shards are open at once); memory does
  not grow with the size of the state.
"""

from __future__ import annotations

import errno
from contextlib import contextmanager
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from pathlib import Path

import apsw

from usenetsync_cli.errors import CorruptStateError, DiskFullError, StateError, UsenetSyncError

Migration = str | Callable[[apsw.Connection], None]

BUSY_TIMEOUT_MS = 30_000


WAL_AUTOCHECKPOINT_PAGES = 1000
JOURNAL_SIZE_LIMIT = 64 << 20


def connect(path: Path, *, cache_kib: int = 4096) -> apsw.Connection:
    """Open (creating if needed) one state database with our pragmas."""
    try:
        conn = apsw.Connection(str(path))
        conn.setbusytimeout(BUSY_TIMEOUT_MS)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # WAL bounds: checkpoint every WAL_AUTOCHECKPOINT_PAGES committed pages (SQLite's default), and cut
        # the file back to JOURNAL_SIZE_LIMIT when it restarts, so one long run (planning 26M segments)
        # does not leave a WAL the size of everything it wrote. Writers keep transactions bounded too
        # (pipeline/plan.py TXN_SEGMENTS): a WAL can never be smaller than one transaction.
        conn.execute(f"PRAGMA wal_autocheckpoint={int(WAL_AUTOCHECKPOINT_PAGES)}")
        conn.execute(f"PRAGMA journal_size_limit={int(JOURNAL_SIZE_LIMIT)}")
        conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA foreign_keys=OFF")
    except apsw.Error as e:
        raise translate(e, path) or StateError(f"cannot open the state database {path}: {e}") from None
    _chmod_private(path)
    return conn


def _chmod_private(path: Path) -> None:
    try:
        path.chmod(0o600)
    except OSError:
        pass


def user_version(conn: apsw.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchall()[0][0])


def migrate(conn: apsw.Connection, migrations: Sequence[Migration], *, name: str) -> int:
    """Bring ``conn`` to ``len(migrations)``; returns the version it started at."""
    start = user_version(conn)
    target = len(migrations)
    if start > target:
        raise StateError(
            f"{name} has schema version {start}, newer than this usenetsync knows ({target})",
            hint="upgrade usenetsync; the state was written by a newer version",
        )
    for version in range(start, target):
        step = migrations[version]
        with conn:  # one transaction: the step and its version bump commit together
            if callable(step):
                step(conn)
            else:
                conn.execute(step)
            conn.execute(f"PRAGMA user_version={version + 1}")
    return start


@contextmanager
def write_txn(conn: apsw.Connection) -> Iterator[None]:
    """One transaction that holds the write lock from its start (BEGIN IMMEDIATE).

    For a writer that reads first and shares the database with other writers:
    its reads see the latest commit and nothing commits between them and its
    writes (a deferred transaction would fail with BUSY_SNAPSHOT instead).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def keyset_pages(
    conn: apsw.Connection, query: str, params: Sequence[Any], limit: int, after: int = 0
) -> Iterator[list[tuple[Any, ...]]]:
    """Pages of ``query`` by keyset pagination: no cursor is held open across pages.

    ``query`` takes ``params``, then the last key seen (0 first) and ``limit``,
    and must return rows ordered by a positive integer key in their first
    column (``... AND key>? ORDER BY key LIMIT ?``), from ``after`` on. Rows a
    caller updates out of the predicate between pages are simply not seen again.
    """
    while True:
        rows = conn.execute(query, (*params, after, limit)).fetchall()
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def translate(exc: BaseException, where: Path | str | None = None) -> UsenetSyncError | None:
    """Map an SQLite or OS failure to our family; None if it is not one we expect."""
    place = f" ({where})" if where else ""
    if isinstance(exc, apsw.FullError) or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
        return DiskFullError(f"no space left on device while writing the state{place}")
    if isinstance(exc, (apsw.CantOpenError, apsw.ReadOnlyError, apsw.PermissionsError)):
        return StateError(f"cannot open or write the state database{place}: {exc}")
    if isinstance(exc, (apsw.CorruptError, apsw.NotADBError)):
        return CorruptStateError(f"the state database is corrupt{place}")
    if isinstance(exc, apsw.BusyError):
        return StateError(f"the state database stayed locked{place}", hint="is another program using it?")
    return None
