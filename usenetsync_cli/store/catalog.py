"""Queries over catalog.db: folders and command runs.

Owns: creating and finding folders (with their random uid and key) and
recording each command run (started, finished, status, JSON summary), so
``status`` can show the last runs and a crashed run is visible as one whose
PID is gone.

Commit point: each function here commits on its own (autocommit), except
where it is handed a connection inside a ``BatchWriter`` transaction.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apsw

from usenetsync_cli.core.excludes import Selection


@dataclass(frozen=True)
class Folder:
    folder_id: int
    path: bytes
    uid: bytes
    folder_key: bytes = b""
    files: int = 0
    bytes: int = 0
    dirs: int = 0
    last_index_run: int | None = None
    epoch: int = 0  # the key epoch new content is sealed in (core/epochs.py)
    epoch_keys: tuple[tuple[int, bytes], ...] = ()  # (epoch, key) of epochs >= 1

    def keys_by_epoch(self) -> dict[int, bytes]:
        """Every epoch's key: epoch 0 is the folder key."""
        return {0: self.folder_key, **dict(self.epoch_keys)}

    @property
    def display_path(self) -> str:
        return os.fsdecode(self.path)

    def __repr__(self) -> str:  # never show the key
        return f"Folder(id={self.folder_id}, path={self.display_path!r})"


_FOLDER_COLS = "folder_id, path, uid, folder_key, files, bytes, dirs, last_index_run, epoch"


def _folder(conn: apsw.Connection, row: tuple[Any, ...]) -> Folder:
    keys = tuple(
        (e, k) for e, k in conn.execute("SELECT epoch, key FROM epochs WHERE folder_id=? ORDER BY epoch", (row[0],))
    )
    return Folder(*row, epoch_keys=keys)


def get_folder(conn: apsw.Connection, path: bytes) -> Folder | None:
    rows = conn.execute(f"SELECT {_FOLDER_COLS} FROM folders WHERE path=?", (path,)).fetchall()
    return _folder(conn, rows[0]) if rows else None


def get_folder_by_id(conn: apsw.Connection, folder_id: int) -> Folder | None:
    rows = conn.execute(f"SELECT {_FOLDER_COLS} FROM folders WHERE folder_id=?", (folder_id,)).fetchall()
    return _folder(conn, rows[0]) if rows else None


def new_epoch(conn: apsw.Connection, folder_id: int, reason: str) -> int:
    """EDGE (reads the OS CSPRNG): start a new key epoch for the folder; returns its number.

    Commit point: the key row and the folder's current epoch in one transaction.
    """
    with conn:
        current = conn.execute("SELECT epoch FROM folders WHERE folder_id=?", (folder_id,)).fetchall()[0][0]
        epoch = current + 1
        conn.execute("INSERT INTO epochs(folder_id, epoch, key, created_ns, reason) VALUES(?,?,?,?,?)",
                     (folder_id, epoch, os.urandom(32), time.time_ns(), reason))
        conn.execute("UPDATE folders SET epoch=? WHERE folder_id=?", (epoch, folder_id))
    return epoch


def get_or_create_folder(conn: apsw.Connection, path: bytes) -> Folder:
    found = get_folder(conn, path)
    if found:
        return found
    with conn:
        conn.execute(
            "INSERT INTO folders(path, uid, folder_key, created_ns) VALUES(?,?,?,?)",
            (path, os.urandom(16), os.urandom(32), time.time_ns()),
        )
    created = get_folder(conn, path)
    assert created is not None
    # A new folder starts in epoch 1: its articles have the format of later epochs (no version byte,
    # padding, a generated domain per Message-ID); epoch 0 is kept for folders made before epochs.
    new_epoch(conn, created.folder_id, "created")
    again = get_folder(conn, path)
    assert again is not None
    return again


def folder_segment_size(conn: apsw.Connection, folder_id: int) -> int | None:
    """The folder's segment size, fixed by its first upload; None before it."""
    rows = conn.execute("SELECT segment_size FROM folders WHERE folder_id=?", (folder_id,)).fetchall()
    return int(rows[0][0]) if rows and rows[0][0] else None


def folder_xattrs(conn: apsw.Connection, folder_id: int, wanted: bool | None) -> bool:
    """Whether this folder's index carries extended attributes; ``wanted`` (not None) changes it for good."""
    if wanted is not None:
        with conn:
            conn.execute("UPDATE folders SET xattrs=? WHERE folder_id=?", (int(wanted), folder_id))
        return wanted
    rows = conn.execute("SELECT xattrs FROM folders WHERE folder_id=?", (folder_id,)).fetchall()
    return bool(rows and rows[0][0])


def folder_selection(conn: apsw.Connection, folder_id: int, wanted: Selection | None) -> Selection:
    """What ``index`` leaves out of this folder; ``wanted`` (not None) replaces the stored rules for good."""
    if wanted is not None:
        with conn:
            conn.execute("UPDATE folders SET selection=? WHERE folder_id=?", (wanted.to_json(), folder_id))
        return wanted
    rows = conn.execute("SELECT selection FROM folders WHERE folder_id=?", (folder_id,)).fetchall()
    return Selection.from_json(rows[0][0] if rows else None)


def list_folders(conn: apsw.Connection) -> Iterator[Folder]:
    for row in conn.execute(f"SELECT {_FOLDER_COLS} FROM folders ORDER BY folder_id").fetchall():
        yield _folder(conn, row)


def update_folder_totals(
    conn: apsw.Connection, folder_id: int, *, files: int, nbytes: int, dirs: int, run_id: int
) -> None:
    with conn:
        conn.execute(
            "UPDATE folders SET files=?, bytes=?, dirs=?, last_index_run=? WHERE folder_id=?",
            (files, nbytes, dirs, run_id, folder_id),
        )


def start_run(conn: apsw.Connection, command: str, folder_id: int | None = None) -> int:
    with conn:
        conn.execute(
            "INSERT INTO runs(command, folder_id, pid, started_ns) VALUES(?,?,?,?)",
            (command, folder_id, os.getpid(), time.time_ns()),
        )
        return int(conn.last_insert_rowid())


def finish_run(conn: apsw.Connection, run_id: int, status: str, summary: dict[str, Any] | None) -> None:
    with conn:
        conn.execute(
            "UPDATE runs SET finished_ns=?, status=?, summary=? WHERE run_id=?",
            (time.time_ns(), status, json.dumps(summary) if summary is not None else None, run_id),
        )


@dataclass(frozen=True)
class Run:
    run_id: int
    command: str
    folder_id: int | None
    pid: int
    started_ns: int
    finished_ns: int | None
    status: str
    summary: dict[str, Any] | None

    @property
    def effective_status(self) -> str:
        """'crashed' for a run still marked running whose process is gone."""
        if self.status == "running" and not _pid_alive(self.pid):
            return "crashed"
        return self.status


def last_runs(conn: apsw.Connection, limit: int = 5) -> list[Run]:
    rows = conn.execute(
        "SELECT run_id, command, folder_id, pid, started_ns, finished_ns, status, summary"
        " FROM runs ORDER BY run_id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [Run(*r[:7], json.loads(r[7]) if r[7] else None) for r in rows]


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
