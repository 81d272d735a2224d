"""`state repair`: find damaged shard databases and rebuild them from the folders' newest backups.

Owns: telling a damaged shard from a sound one (it does not open, or
``PRAGMA quick_check`` is not "ok"), moving it aside, and refilling the new
empty shard: each folder is indexed again (the files of that shard come
back as rows) and its newest backup version's records of that shard are
adopted (pipeline/adopt.py), so the next upload posts only what changed
since that backup instead of the whole folder under a new key.

Commit points: a marker file ``shards/NN.repairing`` is written (and
fsynced) before the damaged file is moved aside and removed only after
every folder's rows are rebuilt; a run that finds a marker (killed
mid-way) rebuilds that shard again (the writes are idempotent replaces).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from usenetsync_cli.core.identity import Identity
from usenetsync_cli.errors import UsenetSyncError
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.adopt import AdoptSummary, adopt_records
from usenetsync_cli.pipeline.backup_read import no_password
from usenetsync_cli.pipeline.poster import open_connection
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import NSHARDS, State, shard_path


@dataclass
class RepairSummary:
    damaged: list[int] = field(default_factory=list)
    moved_to: list[str] = field(default_factory=list)
    folders: list[dict[str, Any]] = field(default_factory=list)
    not_backed_up: list[str] = field(default_factory=list)  # folders whose files in the shard are uploaded anew
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _marker(home: Home, n: int) -> Path:
    return home.shards_dir / f"{n:02d}.repairing"


def is_damaged(path: Path) -> bool:
    """True when the shard file exists and does not open or check as a sound SQLite database."""
    if not path.exists():
        return False
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error:
        return True
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        return rows != [("ok",)]
    except apsw.Error:
        return True
    finally:
        conn.close()


def damaged_shards(home: Home) -> list[int]:
    """Shards found damaged now, and shards whose repair was interrupted."""
    return sorted({n for n in range(NSHARDS)
                   if is_damaged(shard_path(home.shards_dir, n)) or _marker(home, n).exists()})


def _move_aside(home: Home, n: int, summary: RepairSummary) -> None:
    marker = _marker(home, n)
    if not marker.exists():
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        dfd = os.open(home.shards_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    path = shard_path(home.shards_dir, n)
    if path.exists() and is_damaged(path):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(path) + suffix)
            if src.exists():
                dst = Path(f"{path}{suffix}.damaged-{stamp}")
                os.replace(src, dst)
                if not suffix:
                    summary.moved_to.append(str(dst))


def repair_state(home: Home, identity: Identity, spec: ServerSpec, shards: list[int] | None = None) -> RepairSummary:
    """Move damaged shards aside and rebuild them; an empty list when every shard is sound."""
    from usenetsync_cli.pipeline.backup import backup_share_name
    from usenetsync_cli.pipeline.index import index_folder
    from usenetsync_cli.pipeline.shares import get_share, open_share

    t0 = time.monotonic()
    summary = RepairSummary(damaged=shards if shards is not None else damaged_shards(home))
    if not summary.damaged:
        return summary
    for n in summary.damaged:
        _move_aside(home, n, summary)
    with State.open(home) as state:
        tmp = state.home.state_dir / "tmp"
        tmp.mkdir(mode=0o700, exist_ok=True)
        for folder in list(catalog.list_folders(state.catalog)):
            if not os.path.isdir(folder.path):
                summary.not_backed_up.append(f"{folder.display_path} (the folder is gone)")
                continue
            index_folder(state, folder.display_path)
            folder = catalog.get_folder_by_id(state.catalog, folder.folder_id) or folder
            try:
                share = get_share(state, backup_share_name(folder.uid))
            except UsenetSyncError:
                share = None
            if share is None or not share.version:
                summary.not_backed_up.append(folder.display_path)
                continue
            conn = open_connection(spec)
            try:
                with tempfile.TemporaryDirectory(dir=tmp) as spool:
                    opened = open_share(conn, share.share_id, Path(spool), password=no_password,
                                        identity=lambda: identity, version=share.version)
                    conn.quit()
                    for n in summary.damaged:
                        s = AdoptSummary(folder=folder.display_path, label="", version=share.version)
                        records = opened.records()
                        next(records)
                        adopt_records(state, folder, records, s, only_shard=n)
                        summary.folders.append({"folder": folder.display_path, "shard": n, "version": share.version,
                                                "files_adopted": s.files_adopted, "segments": s.segments,
                                                "files_changed": s.files_changed})
            finally:
                conn.close()
            catalog.new_epoch(state.catalog, folder.folder_id, "repaired")
    for n in summary.damaged:
        _marker(home, n).unlink(missing_ok=True)
    summary.elapsed_s = time.monotonic() - t0
    return summary
