"""Repair: bring back articles a verify sweep found missing or damaged.

Owns: re-posting such segments from the local source when it still holds
the same bytes (stat unchanged and the plaintext hash equal to what was
posted), under ``attempt + 1`` (the old Message-ID may be remembered by the
server), confirming each with STAT, then publishing a new version of every
published share of the folder, since Message-IDs changed.

Commit point: resetting the segments to ``planned`` with ``attempt + 1`` is
one transaction per shard; from there the upload pipeline's own commit
points apply, so an interrupted repair resumes with ``verify --repair`` or
``upload --resume``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.upload import UploadOptions, UploadSummary, upload_folder
from usenetsync_cli.store import catalog
from usenetsync_cli.store.state import State


@dataclass
class RepairSummary:
    folder: str
    to_repair: int = 0
    repaired: int = 0
    unrepairable: int = 0
    errors: list[str] = field(default_factory=list)
    upload: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
    pending = sum(
        c.execute("SELECT count(*) FROM segments WHERE folder_id=? AND state=0", (folder.folder_id,)).fetchall()[0][0]
        for c in state.shards
    )
    if not pending:
        return s
    result: UploadSummary = upload_folder(state, folder, UploadOptions(servers=specs, repair=True, **opts))
    s.upload = result.to_dict()
    s.repaired = result.posted_now
    s.unrepairable = result.failed
    s.errors = result.errors
    return s
