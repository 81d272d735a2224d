"""PAR2 repair of a download: the segments that failed every try, rebuilt after the fetch pass.

Owns: reading the spilled segments back from the reader's database
(``deferred``, written by pipeline/download.py as they failed, so memory does
not grow with the number of missing segments), rebuilding them group by
group from the recovery layouts the share index lists (pipeline/recovery.py
``rebuild_sealed``: survivors plus recovery articles), writing each rebuilt
piece after its GCM tag and BLAKE3 hash check, and settling the files that
waited on them: each is re-hashed whole from its temporary file and named
only if its content hash is the index's; the rest are reported damaged.

Commit point: a rebuilt segment's ``deferred`` row is deleted after its
bytes are written; a file's ``waiting`` row after it got its name.
"""

from __future__ import annotations

import json
from typing import Any

from usenetsync_cli.core.hashing import piece_hash
from usenetsync_cli.core.msgid import is_valid_message_id
from usenetsync_cli.errors import TamperedError, UsenetSyncError
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.destination import Action, local_content_hash
from usenetsync_cli.pipeline.download_write import FileJob, FolderSecrets, Writer, pwrite_all, tmp_of


def repair_spilled(w: Writer, fs: FolderSecrets, spec: ServerSpec) -> None:
    """Rebuild spilled segments from their PAR2 groups, then settle the files that waited on them."""
    from usenetsync_cli.pipeline.recovery import RecoveryError, rebuild_sealed

    conn = w.reader.conn
    ctx = fs.ctx
    groups = conn.execute(
        "SELECT DISTINCT r.shard, r.group_id FROM deferred d JOIN rmember r ON r.shard=d.shard AND r.seg_id=d.seg_id"
    ).fetchall()
    for shard, group_id in groups:
        items = conn.execute(
            "SELECT d.seg_id, d.task FROM deferred d JOIN rmember r ON r.shard=d.shard AND r.seg_id=d.seg_id"
            " WHERE r.shard=? AND r.group_id=?", (shard, group_id),
        ).fetchall()
        layout = layout_from_record(json.loads(conn.execute(
            "SELECT layout FROM rgroup WHERE shard=? AND group_id=?", (shard, group_id)
        ).fetchall()[0][0]))
        try:
            rebuilt = rebuild_sealed(spec, ctx, layout, [s for s, _t in items], workdir=w.reader.par2_dir)
        except RecoveryError as e:
            with conn:
                conn.executemany(
                    "UPDATE deferred SET reason=reason || '; ' || ? WHERE shard=? AND seg_id=?",
                    [(e.message, shard, s) for s, _t in items],
                )
            continue
        for seg_id, task_json in items:
            sealed = rebuilt.get(seg_id)
            if sealed is None or _write_spilled(w, fs, shard, seg_id, json.loads(task_json), sealed) is not None:
                continue
            w.s.segments_repaired += 1
            with conn:
                conn.execute("DELETE FROM deferred WHERE shard=? AND seg_id=?", (shard, seg_id))

def _write_spilled(w: Writer, fs: FolderSecrets, shard: int, seg_id: int, task: dict[str, Any], sealed: bytes) -> str | None:
    try:
        payload = fs.ctx.open(shard, seg_id, int(task.get("e", 0)), sealed)
    except UsenetSyncError:
        return "failed authentication"
    if task["h"] is not None and piece_hash(payload) != bytes.fromhex(task["h"]):
        return "hash mismatch"
    view = memoryview(payload)
    for rel_hex, file_off, pay_off, length, mh, _i in task["w"]:
        piece = view[pay_off : pay_off + length]
        if mh is not None and piece_hash(piece) != bytes.fromhex(mh):
            return "hash mismatch"
    for rel_hex, file_off, pay_off, length, _mh, _i in task["w"]:
        pwrite_all(tmp_of(w.dest.full(bytes.fromhex(rel_hex))), view[pay_off : pay_off + length], file_off)
    return None

def settle_waiting(w: Writer) -> None:
    """Files that waited on PAR2: re-hashed whole when nothing of theirs is still missing, else damaged."""
    conn = w.reader.conn
    lost: dict[bytes, str] = {}
    for _shard, _seg, reason, task_json in conn.execute("SELECT shard, seg_id, reason, task FROM deferred"):
        for write in json.loads(task_json)["w"]:
            lost.setdefault(bytes.fromhex(write[0]), reason)
    for rel, record_json in conn.execute("SELECT path, record FROM waiting").fetchall():
        if rel in lost:
            w.s.damage(rel, lost[rel])
            continue
        r = json.loads(record_json)
        job = FileJob(rel=rel, path=w.dest.full(rel), size=r["size"], mtime_ns=r["mtime"], mode=r["mode"],
                      content=bytes.fromhex(r["content"]), action=Action(r["action"]), layout=r["layout"])
        local = local_content_hash(job.tmp, job.size, w.segment_size)
        if local != job.content:
            w.s.damage(rel, "its content hash does not match the share index")
            continue
        w.place(job)
        with conn:
            conn.execute("DELETE FROM waiting WHERE path=?", (rel,))


def layout_from_record(rec: list[Any]) -> Any:
    """The GroupLayout of an index's R record (TamperedError when it is malformed or oversized)."""
    from usenetsync_cli.pipeline.recovery import GROUP_ARTICLES, GroupLayout, GroupMember

    try:
        _r, shard, group_id, gnonce, block, members, recovery, epoch = rec
        if not isinstance(members, list) or not isinstance(recovery, list) or len(bytes.fromhex(gnonce)) != 8 \
                or not 0 < len(members) <= GROUP_ARTICLES or len(recovery) > GROUP_ARTICLES:
            raise ValueError("recovery group bounds")
        if any(not isinstance(m[4], str) or not is_valid_message_id(m[4]) for m in members):
            raise ValueError("message-id")
        return GroupLayout(
            group_id=int(group_id), shard=int(shard), gnonce=bytes.fromhex(gnonce), block_size=int(block),
            members=tuple(
                GroupMember(int(seg), int(pos), int(slen), bytes.fromhex(sh) if sh else None, mid,
                            bytes.fromhex(ph) if ph else None)
                for seg, pos, slen, sh, mid, ph in members
            ),
            recovery=tuple((int(i), int(a), srv) for i, a, srv in recovery),
            epoch=int(epoch),
        )
    except (ValueError, TypeError, AttributeError, IndexError):
        raise TamperedError("the share index is damaged (a recovery group record is malformed)") from None
