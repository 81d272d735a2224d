"""The reader's own state for one destination folder: kept in the home, never in DEST.

Owns ``<state_dir>/downloads/<key>/`` for one destination, where ``key`` is
the hex of the first 16 bytes of SHA-256 over the destination's absolute
path (so a downloaded folder holds nothing of ours and can itself be backed
up). It holds:

- ``reader.db`` (SQLite, WAL, migrations in ``_MIGRATIONS``):
  ``meta`` (the destination path, the index digest of the version in
  progress), ``files`` (every path a download wrote, with its lstat after
  writing: size, mtime_ns, inode, ctime_ns, and its content hash or symlink
  target, and the share version), ``done`` (segments already in a hidden
  temporary file, with their piece hash: a resumed run skips them),
  ``plan`` (this run's decision for paths that exist in DEST), ``deferred``
  and ``waiting`` (segments that failed and wait for PAR2, and the files
  they belong to: spilled here, never held in memory), ``seen`` (the paths
  of the version being written), and the recovery layouts ``rgroup`` /
  ``rmember`` the index lists;
- ``meta`` also pins, per share (a non-secret tag of its locator), the
  highest version verified here: a server offering an older one is refused
  (rollback) unless the user allows it;
- ``index-*.bin``: the verified index spool of the version being read (only
  the last one is kept);
- ``par2/``: scratch space of PAR2 rebuilds;
- ``lock``: one download per destination at a time.

"Ours" means: the path is in ``files`` and its lstat still equals the
recorded one (a file touched since is hashed: equal content is still ours).
A download may replace or delete only what is ours; anything else in DEST
belongs to the user (pipeline/destination.py decides what to do with it).

Migration: a ``DEST/.usenetsync/`` left by an earlier usenetsync (which kept
its state inside the destination) is imported — the paths it recorded as
written become ours with an unknown stat, so they count as ours only if
their content hash equals the share's — and then removed.

Commit points: ``files`` rows are written in the same transaction as the
``done`` rows of their last segments, after the rename into place (a crash
between the rename and the commit leaves a file whose content hash equals
the share's: it is adopted on the next run, never reported as a conflict).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import apsw

from usenetsync_cli.store import db
from usenetsync_cli.store.home import Home

LEGACY_DIR = b".usenetsync"

KIND_FILE, KIND_LINK, KIND_DIR = 0, 1, 2

_MIGRATIONS: list[db.Migration] = [
    """
    CREATE TABLE meta(k TEXT PRIMARY KEY, v BLOB);
    CREATE TABLE files(
        path BLOB PRIMARY KEY,      -- relative to DEST, raw bytes
        kind INTEGER NOT NULL,      -- 0 regular file, 1 symlink, 2 folder (created by a download)
        size INTEGER, mtime_ns INTEGER, ino INTEGER, ctime_ns INTEGER,  -- lstat after writing; NULL: unknown
        content BLOB,               -- file: BLAKE3 content hash; symlink: its target
        version INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE done(shard INTEGER, seg_id INTEGER, piece BLOB, PRIMARY KEY(shard, seg_id)) WITHOUT ROWID;
    CREATE TABLE plan(path BLOB PRIMARY KEY, action TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE seen(path BLOB PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE deferred(shard INTEGER, seg_id INTEGER, reason TEXT, task TEXT,
                          PRIMARY KEY(shard, seg_id)) WITHOUT ROWID;
    CREATE TABLE waiting(path BLOB PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE rgroup(shard INTEGER, group_id INTEGER, layout TEXT, PRIMARY KEY(shard, group_id)) WITHOUT ROWID;
    CREATE TABLE rmember(shard INTEGER, seg_id INTEGER, group_id INTEGER, PRIMARY KEY(shard, seg_id)) WITHOUT ROWID;
    """,
]


def dest_key(dest_abs: bytes) -> str:
    return hashlib.sha256(dest_abs).hexdigest()[:32]


@dataclass
class ReaderState:
    """The opened state of one destination (see the module docstring)."""

    dest: bytes  # absolute path of the destination, raw bytes
    dir: Path
    conn: apsw.Connection

    @classmethod
    def open(cls, home: Home, dest: Path) -> ReaderState:
        dest_abs = os.fsencode(os.path.abspath(dest))
        d = home.state_dir / "downloads" / dest_key(dest_abs)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        conn = db.connect(d / "reader.db", cache_kib=2048)
        try:
            db.migrate(conn, _MIGRATIONS, name="reader.db")
            with conn:
                conn.execute("INSERT OR REPLACE INTO meta VALUES('dest', ?)", (dest_abs,))
        except BaseException:
            conn.close()
            raise
        return cls(dest=dest_abs, dir=d, conn=conn)

    @staticmethod
    def lock_path(home: Home, dest: Path) -> Path:
        d = home.state_dir / "downloads" / dest_key(os.fsencode(os.path.abspath(dest)))
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return d / "lock"

    @property
    def spool_dir(self) -> Path:
        return self.dir

    @property
    def par2_dir(self) -> Path:
        return self.dir / "par2"

    def close(self) -> None:
        self.conn.close()

    def get(self, key: str) -> bytes | None:
        rows = self.conn.execute("SELECT v FROM meta WHERE k=?", (key,)).fetchall()
        return rows[0][0] if rows else None

    def put(self, key: str, value: bytes | int | str) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES(?, ?)", (key, value))

    def start_version(self, index_digest: bytes) -> None:
        """A new run over a verified index: keep resume progress only if it is the same version."""
        with self.conn:
            if self.get("index") != index_digest:
                self.conn.execute("DELETE FROM done")
                self.conn.execute("DELETE FROM deferred")
                self.conn.execute("DELETE FROM waiting")
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES('index', ?)", (index_digest,))
            for table in ("plan", "seen", "rgroup", "rmember"):
                self.conn.execute(f"DELETE FROM {table}")

    def pinned(self, share_tag: str) -> int:
        """The highest version of this share this destination has verified (0: none)."""
        value = self.get("pin:" + share_tag)
        return int(value) if value is not None else 0

    def pin(self, share_tag: str, version: int) -> None:
        """Remember that ``version`` of the share was verified here; the pin never goes down.

        Commit point: written as soon as a root verifies, before any file is
        touched, so even an interrupted run protects the next one.
        """
        if version > self.pinned(share_tag):
            self.put("pin:" + share_tag, version)

    def keep_only_spool(self, spool: Path) -> None:
        """Delete the index spools of other versions (the reader keeps the last one only)."""
        for old in self.dir.glob("index-*.bin"):
            if old != spool:
                old.unlink(missing_ok=True)

    # ------------------------------------------------------------ migration

    def migrate_legacy(self) -> int:
        """Import and remove ``DEST/.usenetsync/`` from an earlier version; returns paths imported."""
        legacy = os.path.join(self.dest, LEGACY_DIR)
        old_db = os.path.join(legacy, b"download.db")
        if not os.path.isdir(legacy) or os.path.islink(legacy):
            return 0
        imported = 0
        if os.path.isfile(old_db):
            try:
                old = apsw.Connection(os.fsdecode(old_db), flags=apsw.SQLITE_OPEN_READONLY)
                try:
                    paths = [r[0] for r in old.execute("SELECT path FROM files")]
                finally:
                    old.close()
            except apsw.Error:
                paths = []  # unreadable: nothing is ours, so nothing of the user's is at risk
            with self.conn:
                self.conn.executemany(
                    "INSERT OR IGNORE INTO files(path, kind) VALUES(?, ?)",
                    [(bytes(p), KIND_FILE) for p in paths if isinstance(p, (bytes, bytearray))],
                )
            imported = len(paths)
        shutil.rmtree(legacy, ignore_errors=True)
        return imported
