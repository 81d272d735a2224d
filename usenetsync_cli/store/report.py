"""Read-only figures about the state, for ``status``.

Owns: collecting sizes, row counts, folders and last runs into plain data.
Every count comes from the counters (store/counters.py): a few rows per
shard, whatever the size of the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from usenetsync_cli.store import catalog, counters, jobs
from usenetsync_cli.store.state import State, shard_path


SEGMENT_STATES = ("planned", "posted", "verified", "failed", "superseded")


@dataclass
class StatusReport:
    config_dir: str
    state_dir: str
    catalog_bytes: int
    shards: list[dict[str, Any]] = field(default_factory=list)
    folders: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    shares: list[dict[str, Any]] = field(default_factory=list)


def _file_bytes(path: Any) -> int:
    total = 0
    for suffix in ("", "-wal"):
        p = path.with_name(path.name + suffix)
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total


def collect_status(state: State, runs: int = 8) -> StatusReport:
    home = state.home
    rep = StatusReport(
        config_dir=str(home.config_dir),
        state_dir=str(home.state_dir),
        catalog_bytes=_file_bytes(home.catalog_path),
    )
    for n, conn in enumerate(state.shards):
        rows, present, by_state = counters.shard_overview(conn)
        rep.shards.append(
            {"shard": n, "bytes": _file_bytes(shard_path(home.shards_dir, n)), "file_rows": rows,
             "present_files": present,
             "segments": {name: by_state.get(code, 0) for code, name in enumerate(SEGMENT_STATES)}}
        )
    for f in catalog.list_folders(state.catalog):
        last = None
        if f.last_index_run:
            r = state.catalog.execute("SELECT finished_ns FROM runs WHERE run_id=?", (f.last_index_run,)).fetchall()
            last = r[0][0] if r else None
        rep.folders.append(
            {"folder_id": f.folder_id, "path": f.display_path, "files": f.files, "bytes": f.bytes, "dirs": f.dirs,
             "last_indexed_ns": last, **backup_status(state, f.folder_id, last)}
        )
    paths = {f["folder_id"]: f["path"] for f in rep.folders}
    for job in jobs.list_jobs(state.catalog):
        job["path"] = paths.get(job["folder_id"], "?")
        rep.jobs.append(job)
    health: dict[int, dict[str, Any]] = {}
    for sh_name, kind, version, folder_id in state.catalog.execute(
        "SELECT name, kind, version, folder_id FROM shares WHERE backup=0 ORDER BY share_pk"
    ).fetchall():
        if folder_id not in health:
            health[folder_id] = folder_health(state, folder_id)
        rep.shares.append({"name": sh_name, "kind": kind, "version": version, "folder_id": folder_id,
                           "path": paths.get(folder_id, "?"), **health[folder_id]})
    for run in catalog.last_runs(state.catalog, runs):
        rep.runs.append(
            {"run_id": run.run_id, "command": run.command, "folder_id": run.folder_id, "pid": run.pid,
             "started_ns": run.started_ns, "finished_ns": run.finished_ns, "status": run.effective_status,
             "summary": run.summary}
        )
    return rep


def backup_status(state: State, folder_id: int, last_indexed_ns: int | None) -> dict[str, Any]:
    """The folder's newest backup version and whether the state as last indexed is covered by it.

    Covered: a backup run (publishing, or finding nothing changed) finished
    after the last index run; an index run after it may have found changes.
    """
    rows = state.catalog.execute(
        "SELECT s.version, s.published_ns, f.backup_covered_ns FROM folders f LEFT JOIN shares s"
        " ON s.folder_id=f.folder_id AND s.backup=1 WHERE f.folder_id=?", (folder_id,)).fetchall()
    version, published, covered = rows[0] if rows else (None, None, None)
    return {"backup_version": version or 0, "backup_published_ns": published,
            "backup_covered": bool(covered and (last_indexed_ns is None or covered >= last_indexed_ns))}


def folder_health(state: State, folder_id: int) -> dict[str, Any]:
    """Live articles of a folder, how many were last seen present, and when the last check ran."""
    h = counters.health(state, folder_id)
    total, present, at_risk, last = h.articles, h.present, h.at_risk, h.last_checked_ns
    return {"articles": total, "present": present, "at_risk": at_risk,
            "pct_present": round(100.0 * present / total, 2) if total else 100.0, "last_verified_ns": last or None}
