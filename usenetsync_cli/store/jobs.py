"""Upload jobs in catalog.db: one row per (folder, kind), its state and last summary.

Owns: knowing whether a folder's upload is running, incomplete (resumable)
or done, for ``upload --resume`` without a path and for ``status``.
Commit point: each call commits on its own.
"""

from __future__ import annotations

import json
import time
from typing import Any

import apsw


def start(conn: apsw.Connection, folder_id: int, kind: str) -> int:
    now = time.time_ns()
    with conn:
        rows = conn.execute("SELECT job_id FROM jobs WHERE folder_id=? AND kind=?", (folder_id, kind)).fetchall()
        if rows:
            conn.execute("UPDATE jobs SET state='running', updated_ns=? WHERE job_id=?", (now, rows[0][0]))
            return int(rows[0][0])
        conn.execute(
            "INSERT INTO jobs(folder_id, kind, state, created_ns, updated_ns) VALUES(?,?,?,?,?)",
            (folder_id, kind, "running", now, now),
        )
        return int(conn.last_insert_rowid())


def finish(conn: apsw.Connection, job_id: int, state: str, summary: dict[str, Any] | None) -> None:
    with conn:
        conn.execute(
            "UPDATE jobs SET state=?, updated_ns=?, summary=? WHERE job_id=?",
            (state, time.time_ns(), json.dumps(summary) if summary is not None else None, job_id),
        )


def last_unfinished(conn: apsw.Connection, kind: str) -> int | None:
    """folder_id of the most recently touched job that is not done (a crash leaves 'running')."""
    rows = conn.execute(
        "SELECT folder_id FROM jobs WHERE kind=? AND state<>'done' ORDER BY updated_ns DESC LIMIT 1", (kind,)
    ).fetchall()
    return int(rows[0][0]) if rows else None


def list_jobs(conn: apsw.Connection) -> list[dict[str, Any]]:
    out = []
    for job_id, folder_id, kind, st, created, updated, summary in conn.execute(
        "SELECT job_id, folder_id, kind, state, created_ns, updated_ns, summary FROM jobs ORDER BY job_id"
    ):
        out.append(
            {"job_id": job_id, "folder_id": folder_id, "kind": kind, "state": st, "created_ns": created,
             "updated_ns": updated, "summary": json.loads(summary) if summary else None}
        )
    return out
