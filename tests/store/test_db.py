"""Tests of the migration runner and the state's opening."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from usenetsync_cli.errors import DiskFullError, StateError
from usenetsync_cli.store import db
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.schema import CATALOG_MIGRATIONS, SHARD_MIGRATIONS
from usenetsync_cli.store.state import NSHARDS, State, iter_mask, shard_of


def test_migrate_from_empty_and_idempotent(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "x.db")
    assert db.migrate(conn, SHARD_MIGRATIONS, name="x") == 0
    assert db.user_version(conn) == len(SHARD_MIGRATIONS)
    assert db.migrate(conn, SHARD_MIGRATIONS, name="x") == len(SHARD_MIGRATIONS)
    mode = conn.execute("PRAGMA journal_mode").fetchall()[0][0]
    assert mode == "wal"
    assert conn.execute("PRAGMA synchronous").fetchall()[0][0] == 1  # NORMAL


def test_older_schema_is_migrated_keeping_rows(tmp_path: Path) -> None:
    """A database written by an older version gains the new steps and keeps its data."""
    path = tmp_path / "old.db"
    old = [CATALOG_MIGRATIONS[0]]
    conn = db.connect(path)
    db.migrate(conn, old, name="old")
    conn.execute("INSERT INTO folders(path, uid, folder_key, created_ns) VALUES(?,?,?,?)", (b"/a", b"u" * 16, b"k" * 32, 1))
    conn.close()
    newer = [*old, "ALTER TABLE folders ADD COLUMN note TEXT DEFAULT 'hello'"]
    conn = db.connect(path)
    assert db.migrate(conn, newer, name="old") == 1
    assert conn.execute("SELECT path, note FROM folders").fetchall() == [(b"/a", "hello")]


def test_failed_migration_step_leaves_old_version(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "f.db")
    steps = ["CREATE TABLE a(x)", "CREATE TABLE b(y); THIS IS NOT SQL"]
    with pytest.raises(apsw.SQLError):
        db.migrate(conn, steps, name="f")
    assert db.user_version(conn) == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name='b'").fetchall() == []


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "n.db")
    conn.execute("PRAGMA user_version=99")
    with pytest.raises(StateError, match="newer than this usenetsync"):
        db.migrate(conn, SHARD_MIGRATIONS, name="n.db")


def test_state_open_creates_catalog_and_16_shards(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "home")
    with State.open(home) as st:
        assert len(st.shards) == NSHARDS
    files = sorted(p.name for p in home.shards_dir.glob("*.db"))
    assert files == [f"{i:02d}.db" for i in range(16)]
    assert home.catalog_path.exists()
    assert (home.state_dir.stat().st_mode & 0o777) == 0o700
    assert (home.catalog_path.stat().st_mode & 0o777) == 0o600


def test_state_open_refuses_unwritable_home(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(StateError, match="cannot create home folder"):
        State.open(Home.resolve(blocker / "home"))


def test_corrupt_shard_is_a_state_error(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "home")
    State.open(home).close()
    (home.shards_dir / "03.db-wal").unlink(missing_ok=True)
    (home.shards_dir / "03.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(StateError, match="corrupt.*03.db"):
        State.open(home)


def test_translate_disk_full() -> None:
    import errno

    assert isinstance(db.translate(apsw.FullError("full")), DiskFullError)
    assert isinstance(db.translate(OSError(errno.ENOSPC, "No space left")), DiskFullError)
    assert db.translate(ValueError("x")) is None


def test_shard_of_is_stable_and_spread() -> None:
    uid = bytes(range(16))
    # Fixed expectations: the shard function is part of the on-disk format.
    assert shard_of(uid, b"a/b.txt") == shard_of(uid, b"a/b.txt")
    counts = [0] * 16
    for i in range(16_000):
        counts[shard_of(uid, b"dir/file%d" % i)] += 1
    assert min(counts) > 800 and max(counts) < 1200
    assert shard_of(uid, b"x") != shard_of(b"\x01" * 16, b"x") or shard_of(uid, b"y") != shard_of(b"\x01" * 16, b"y")


def test_iter_mask() -> None:
    assert list(iter_mask(0)) == []
    assert list(iter_mask(0b1000_0000_0000_0101)) == [0, 2, 15]
