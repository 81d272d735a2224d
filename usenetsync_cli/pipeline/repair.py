"""Repair: bring back articles a verify sweep found missing or damaged.

Owns: re-posting such segments from the local source when it still holds
the same bytes (stat unchanged and the plaintext hash equal to what was
posted), else rebuilding them from their PAR2 recovery group (survivors plus
recovery articles fetched from the server), under ``attempt + 1`` (the old Message-ID may be remembered by the
server), confirming each with STAT, then publishing a new version of every
published share of the folder, since Message-IDs changed.

Commit point: resetting the segments to ``planned`` with ``attempt + 1`` is
one transaction per shard; from there the upload pipeline's own commit
points apply, so an interrupted repair resumes with ``verify --repair`` or
``upload --resume``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.upload import UploadOptions, UploadSummary, upload_folder
from usenetsync_cli.store import catalog, counters
from usenetsync_cli.store.segments import STATE_FAILED, STATE_PLANNED
from usenetsync_cli.store.state import State


@dataclass
class RepairSummary:
    folder: str
    to_repair: int = 0
    repaired: int = 0
    unrepairable: int = 0
    rebuilt_from_par2: int = 0
    errors: list[str] = field(default_factory=list)
    upload: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def rebuild_from_recovery(state: State, folder: catalog.Folder, spec: ServerSpec, workdir: Path) -> tuple[int, list[str]]:
    """Rebuild from PAR2 the segments the source could not give back; returns (rebuilt, problems)."""
    from usenetsync_cli.pipeline.recovery import RecoveryError, groups_for_segments, rebuild_group, repost_rebuilt

    rebuilt = 0
    problems: list[str] = []
    for shard, conn in enumerate(state.shards):
        failed = [r[0] for r in conn.execute(
            "SELECT seg_id FROM segments WHERE folder_id=? AND state=3", (folder.folder_id,)
        )]
        if not failed:
            continue
        for group_id, seg_ids in groups_for_segments(state, folder, shard, failed).items():
            try:
                rb = rebuild_group(state, folder, spec, group_id, seg_ids, workdir=workdir)
                rebuilt += repost_rebuilt(state, folder, spec, rb)
            except RecoveryError as e:
                problems.append(e.message)
    return rebuilt, problems


def mark_for_repair(state: State, folder_id: int) -> int:
    n = 0
    for conn in state.shards:
        with conn:
            conn.execute(
                "UPDATE segments SET state=0, attempt=attempt+1, check_result=NULL, server_msgid=NULL,"
                " error='missing on the server; repairing' WHERE folder_id=? AND state IN (1,2) AND check_result IN (0,2)",
                (folder_id,),
            )
            n += conn.changes()
    return n


def repair_folder(state: State, folder: catalog.Folder, specs: list[ServerSpec], **opts: Any) -> RepairSummary:
    s = RepairSummary(folder=folder.display_path)
    s.to_repair = mark_for_repair(state, folder.folder_id)
    # Segments reset by an interrupted repair are still planned: count them too.
    pending = counters.count(state, folder.folder_id, STATE_PLANNED)
    if not pending:
        return s
    # Message-IDs change from here: the newest backup version no longer names every article.
    with state.catalog:
        state.catalog.execute("UPDATE folders SET backup_covered_ns=NULL WHERE folder_id=?", (folder.folder_id,))
    result: UploadSummary = upload_folder(state, folder, UploadOptions(servers=specs, repair=True, **opts))
    s.upload = result.to_dict()
    s.repaired = result.posted_now
    s.errors = result.errors
    if result.failed:
        workdir = state.home.state_dir / "tmp"
        workdir.mkdir(mode=0o700, exist_ok=True)
        rebuilt, problems = rebuild_from_recovery(state, folder, specs[0], workdir)
        s.rebuilt_from_par2 = rebuilt
        s.repaired += rebuilt
        s.errors += problems
    s.unrepairable = counters.count(state, folder.folder_id, STATE_FAILED)
    return s
