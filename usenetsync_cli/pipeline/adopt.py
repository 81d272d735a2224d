"""Adopting a backup: rebuild a folder's local state from what is posted, so nothing is posted twice.

Owns: turning the records of a verified backup version (core/manifest.py)
back into the rows the upload and publish steps read (store/schema.py):
files with their plan and done generation, content hash, segment rows
(seg_id, attempt, length, piece hash, epoch, state verified), packs and
their members; the folder's uid and keys come from the owner's catalog
(core/backup.py). Used by `adopt` (a new machine: every shard) and by
`state repair` (one damaged shard of an existing folder).

Trust: a file's rows are adopted only when the file on disk has the size
and mtime_ns the backup recorded (``verify_content``: and the same piece
hashes, re-read); its new ctime and inode are recorded as its plan, so the
next `index` sees it unchanged and `upload` posts nothing for it. Any other
file is left unplanned and uploaded as new. Nothing here trusts the index
beyond what share_index verified (signature, hashes) plus the bounds
checked as each record is read.

Numbering: segment rows keep their seg_ids (the Message-IDs and AAD of the
posted articles derive from them); content posted next is sealed in a new
key epoch (``catalog.new_epoch(..., "adopted")``), so a seg_id the old
machine issued after this version (and this one issues again) never names
the same article. A recovery group (PAR2, pipeline/recovery.py) is adopted
with its group_id when every member segment was adopted and the id is free
in this home's recovery.db; otherwise its articles stay on the server
unknown to this state and the next upload makes new groups for those
segments.

Commit points: rows are written in batches (one transaction per shard per
batch); the folder row carries ``adopting=1`` from its creation until the
last batch, the new epoch and the backup share's version are committed, so
a run killed anywhere is finished by running it again (every write is an
idempotent replace).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usenetsync_cli.core.backup import Catalog, FolderEntry
from usenetsync_cli.core.identity import Identity
from usenetsync_cli.core.hashing import file_content_hash, piece_hash
from usenetsync_cli.core.manifest import path_bytes
from usenetsync_cli.errors import ConfigError, TamperedError
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.poster import open_connection
from usenetsync_cli.pipeline.shares import OpenedShare
from usenetsync_cli.store import catalog
from usenetsync_cli.store.state import State, shard_of

_BATCH = 5_000
_GEN = 1  # the generation adopted rows are written in (any value: segment rows carry the same)


@dataclass
class AdoptSummary:
    folder: str
    label: str
    version: int
    files_adopted: int = 0  # files whose posted layout is reused
    files_changed: int = 0  # files on disk that differ from the backup: uploaded as new
    files_missing: int = 0  # in the backup, not on disk
    segments: int = 0
    packs: int = 0
    groups: int = 0  # recovery groups adopted
    shares: int = 0
    epoch: int = 0
    elapsed_s: float = 0.0
    changed_samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def create_adopted_folder(state: State, root: bytes, entry: FolderEntry, segment_size: int) -> catalog.Folder:
    """The folder row with the backup's uid and keys, marked ``adopting``; an existing adoption is resumed."""
    found = catalog.get_folder(state.catalog, root)
    if found is not None:
        adopting = state.catalog.execute("SELECT adopting FROM folders WHERE folder_id=?", (found.folder_id,)).fetchall()
        if not adopting[0][0]:
            raise ConfigError(
                f"{os.fsdecode(root)} is already a folder of this home",
                hint="adopt is for a machine that does not know the folder; a damaged shard is rebuilt with"
                " `usenetsync state repair`",
            )
        if found.uid != entry.uid:
            raise ConfigError(f"{os.fsdecode(root)} is being adopted from another backup",
                              hint="finish that with the same --from NAME")
        return found
    with state.catalog:
        state.catalog.execute(
            "INSERT INTO folders(path, uid, folder_key, created_ns, segment_size, label, adopting, epoch)"
            " VALUES(?,?,?,?,?,?,1,?)",
            (root, entry.uid, entry.folder_key, time.time_ns(), segment_size or None, entry.label,
             max(entry.epochs, default=0)),
        )
        fid = state.catalog.execute("SELECT folder_id FROM folders WHERE path=?", (root,)).fetchall()[0][0]
        state.catalog.executemany(
            "INSERT OR REPLACE INTO epochs(folder_id, epoch, key, created_ns, reason) VALUES(?,?,?,?,?)",
            [(fid, e, k, time.time_ns(), "adopted") for e, k in entry.epochs.items() if e >= 1],
        )
    folder = catalog.get_folder(state.catalog, root)
    assert folder is not None
    return folder


def header_segment_size(records: Iterator[list[Any]]) -> int:
    head = next(records, None)
    if head is None or head[0] != "H" or not isinstance(head[1], dict):
        raise TamperedError("the backup's index has no header")
    size = head[1].get("segment_size", 0)
    if not isinstance(size, int) or not 0 <= size <= 1 << 30:
        raise TamperedError("the backup's index header is malformed")
    return size


class Adopter:
    """Applies one version's records to the folder's rows (``only_shard``: just that shard's)."""

    def __init__(self, state: State, folder: catalog.Folder, summary: AdoptSummary, *, verify_content: bool,
                 only_shard: int | None = None) -> None:
        self.state, self.folder, self.s = state, folder, summary
        self.verify, self.only = verify_content, only_shard
        self.root = folder.path
        self.dirs = {rel: d for d, rel in state.catalog.execute(
            "SELECT dir_id, relpath FROM dirs WHERE folder_id=? AND present=1", (folder.folder_id,))}
        self.pending = 0
        self.pack: tuple[int, int] | None = None  # (shard, seg_id) of the pack whose members follow
        self.now = time.time_ns()
        from usenetsync_cli.pipeline.recovery import open_recovery_db

        self.rdb = open_recovery_db(state)
        self.conns = [*state.shards, self.rdb]
        for conn in self.conns:
            conn.execute("BEGIN")

    # -------------------------------------------------------------- plumbing

    def _tick(self) -> None:
        self.pending += 1
        if self.pending >= _BATCH:
            self.commit()

    def commit(self) -> None:
        for conn in self.conns:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
        self.pending = 0

    def close(self) -> None:
        for conn in self.conns:
            conn.execute("COMMIT")
        self.rdb.close()

    def abort(self) -> None:
        for conn in self.conns:
            if not conn.getautocommit():
                conn.execute("ROLLBACK")
        self.rdb.close()

    def _row(self, rel: bytes) -> tuple[int, tuple[Any, ...] | None]:
        """(shard, files row or None) of a path of the backup."""
        sh = shard_of(self.folder.uid, rel)
        dirname, _, name = rel.rpartition(b"/")
        dir_id = self.dirs.get(dirname)
        if dir_id is None:
            return sh, None
        rows = self.state.shards[sh].execute(
            "SELECT file_id, size, mtime_ns, ctime_ns, inode, kind FROM files"
            " WHERE folder_id=? AND dir_id=? AND name=? AND present=1",
            (self.folder.folder_id, dir_id, name),
        ).fetchall()
        return sh, rows[0] if rows else None

    def _matches(self, rel: bytes, row: tuple[Any, ...] | None, size: int, mtime: int) -> bool:
        if row is None:
            self.s.files_missing += 1
            return False
        if row[5] != 0 or row[1] != size or row[2] != mtime:
            self.s.files_changed += 1
            if len(self.s.changed_samples) < 20:
                self.s.changed_samples.append(os.fsdecode(rel))
            return False
        return True

    def _mark_done(self, sh: int, row: tuple[Any, ...], content: bytes) -> None:
        file_id, size, mtime, ctime, inode, _kind = row
        self.state.shards[sh].execute(
            "UPDATE files SET plan_size=?, plan_mtime_ns=?, plan_ctime_ns=?, plan_inode=?, gen=?, done_gen=?,"
            " done_size=?, done_mtime_ns=?, content_hash=?, unstable=0 WHERE file_id=?",
            (size, mtime, ctime, inode, _GEN, _GEN, size, mtime, content, file_id),
        )
        self.s.files_adopted += 1

    def _pieces(self, rel: bytes, lengths: list[int]) -> list[bytes] | None:
        """Piece hashes of the file on disk cut at ``lengths`` (``verify_content``); None if unreadable."""
        out = []
        try:
            with open(os.path.join(self.root, rel), "rb") as f:
                for n in lengths:
                    out.append(piece_hash(f.read(n)))
        except OSError:
            return None
        return out

    # -------------------------------------------------------------- records

    def apply(self, rec: list[Any]) -> None:
        kind = rec[0]
        if kind != "P":
            self.pack = None
        try:
            if kind == "F":
                self._file(rec)
            elif kind == "K":
                self._pack(rec)
            elif kind == "P":
                self._member(rec)
            elif kind == "H" and len(rec) == 7:
                self._link(rec)
            elif kind == "E":
                self._empty(rec)
            elif kind == "R":
                self._group(rec)
        except (TypeError, ValueError, IndexError, KeyError, AttributeError):
            raise TamperedError(f"the backup's index has a malformed {str(kind)[:4]!r} record") from None
        self._tick()

    def _file(self, rec: list[Any]) -> None:
        rel, size, mtime, content = path_bytes(rec[1]), int(rec[2]), int(rec[3]), bytes.fromhex(rec[5])
        segs = rec[6]
        sh, row = self._row(rel)
        if self.only is not None and sh != self.only:
            return
        if any(int(s[0]) != sh for s in segs):
            raise TamperedError("the backup's index puts a file's segments in another shard than its path")
        if not self._matches(rel, row, size, mtime):
            return
        assert row is not None
        if self.verify:
            pieces = self._pieces(rel, [int(s[3]) for s in segs])
            if pieces != [bytes.fromhex(s[4]) for s in segs] or file_content_hash(size, pieces) != content:
                self.s.files_changed += 1
                return
        conn = self.state.shards[sh]
        conn.execute("DELETE FROM segments WHERE file_id=?", (row[0],))
        offset = 0
        for idx, (_sh, seg_id, attempt, length, h, server_id, epoch) in enumerate(segs):
            conn.execute(
                "INSERT OR REPLACE INTO segments(seg_id, folder_id, file_id, idx, offset, length, state, attempt, hash,"
                " posted_ns, checked_ns, server_msgid, gen, epoch, check_result) VALUES(?,?,?,?,?,?,2,?,?,?,?,?,?,?,1)",
                (int(seg_id), self.folder.folder_id, row[0], idx, offset, int(length), int(attempt), bytes.fromhex(h),
                 self.now, self.now, server_id, _GEN, int(epoch)),
            )
            offset += int(length)
        if offset != size:
            raise TamperedError("the backup's index gives a file segments that do not add up to its size")
        self.s.segments += len(segs)
        self._mark_done(sh, row, content)

    def _pack(self, rec: list[Any]) -> None:
        sh, seg_id, attempt, length, h, server_id, epoch = (int(rec[1]), int(rec[2]), int(rec[3]), int(rec[4]),
                                                            bytes.fromhex(rec[5]), rec[6], int(rec[7]))
        if not 0 <= sh < len(self.state.shards):
            raise TamperedError("the backup's index names a shard that does not exist")
        if self.only is not None and sh != self.only:
            return
        self.state.shards[sh].execute(
            "INSERT OR REPLACE INTO segments(seg_id, folder_id, file_id, idx, offset, length, state, attempt, hash,"
            " posted_ns, checked_ns, server_msgid, gen, epoch, check_result) VALUES(?,?,NULL,0,0,?,2,?,?,?,?,?,?,?,1)",
            (seg_id, self.folder.folder_id, length, attempt, h, self.now, self.now, server_id, _GEN, epoch),
        )
        self.pack = (sh, seg_id)
        self.s.packs += 1

    def _member(self, rec: list[Any]) -> None:
        if self.pack is None:
            return  # its pack is in another shard (state repair) or malformed: nothing to adopt
        rel, size, mtime, off, mh = path_bytes(rec[1]), int(rec[2]), int(rec[3]), int(rec[5]), bytes.fromhex(rec[6])
        sh, row = self._row(rel)
        if sh != self.pack[0]:
            raise TamperedError("the backup's index puts a small file in a pack of another shard")
        if not self._matches(rel, row, size, mtime):
            return
        assert row is not None
        if self.verify and self._pieces(rel, [size]) != [mh]:
            self.s.files_changed += 1
            return
        self.state.shards[sh].execute(
            "INSERT OR REPLACE INTO pack_members(seg_id, file_id, pack_offset, length, hash, gen) VALUES(?,?,?,?,?,?)",
            (self.pack[1], row[0], off, size, mh, _GEN),
        )
        self._mark_done(sh, row, file_content_hash(size, [mh]))

    def _empty(self, rec: list[Any]) -> None:
        rel, mtime = path_bytes(rec[1]), int(rec[2])
        sh, row = self._row(rel)
        if self.only is not None and sh != self.only:
            return
        if self._matches(rel, row, 0, mtime):
            assert row is not None
            self._mark_done(sh, row, file_content_hash(0, []))

    def _link(self, rec: list[Any]) -> None:
        rel, size, content, mtime = path_bytes(rec[1]), int(rec[3]), bytes.fromhex(rec[4]), int(rec[5])
        sh, row = self._row(rel)
        if self.only is not None and sh != self.only:
            return
        if self._matches(rel, row, size, mtime):
            assert row is not None
            self._mark_done(sh, row, content)


    def _group(self, rec: list[Any]) -> None:
        from usenetsync_cli.pipeline.download_repair import layout_from_record

        lay = layout_from_record(rec)
        if (self.only is not None and lay.shard != self.only) or not 0 <= lay.shard < len(self.state.shards):
            return
        if any(m.sealed_hash is None for m in lay.members):
            return
        if self.rdb.execute("SELECT 1 FROM groups WHERE group_id=?", (lay.group_id,)).fetchall():
            return  # the id is taken in this home: the next upload makes a new group
        conn = self.state.shards[lay.shard]
        for m in lay.members:
            rows = conn.execute("SELECT epoch FROM segments WHERE seg_id=? AND folder_id=?",
                                (m.seg_id, self.folder.folder_id)).fetchall()
            if not rows or rows[0][0] != lay.epoch:
                return  # a member was not adopted (its file changed): the group cannot rebuild it
        seg_ids = [m.seg_id for m in lay.members]
        self.rdb.execute(
            "INSERT INTO groups(group_id, folder_id, shard, gnonce, first_seg, last_seg, n_articles, block_size,"
            " recovery_blocks, redundancy, state, created_ns, epoch) VALUES(?,?,?,?,?,?,?,?,?,0,1,?,?)",
            (lay.group_id, self.folder.folder_id, lay.shard, lay.gnonce, min(seg_ids), max(seg_ids), len(seg_ids),
             lay.block_size, len(lay.recovery), self.now, lay.epoch),
        )
        self.rdb.executemany(
            "INSERT OR REPLACE INTO group_members(folder_id, shard, seg_id, group_id, pos, sealed_len, sealed_hash)"
            " VALUES(?,?,?,?,?,?,?)",
            [(self.folder.folder_id, lay.shard, m.seg_id, lay.group_id, m.pos, m.sealed_len, m.sealed_hash)
             for m in lay.members],
        )
        self.rdb.executemany(
            "INSERT OR REPLACE INTO recovery_articles(group_id, idx, attempt, bytes, state, server_msgid)"
            " VALUES(?,?,?,?,2,?)",
            [(lay.group_id, idx, att, lay.block_size, server) for idx, att, server in lay.recovery],
        )
        self.s.groups += 1


def record_digest(opened: OpenedShare) -> bytes:
    """SHA-256 of a verified version's record stream: what its publisher's ``Published.digest`` was."""
    h = hashlib.sha256()
    for e in opened.index.entries:
        h.update((opened.index.cache / e.chunk_id.hex()).read_bytes())
    return h.digest()


def adopt_records(state: State, folder: catalog.Folder, records: Iterator[list[Any]], summary: AdoptSummary, *,
                  verify_content: bool = False, only_shard: int | None = None) -> None:
    """Apply every record after the header; the caller has indexed the folder first."""
    adopter = Adopter(state, folder, summary, verify_content=verify_content, only_shard=only_shard)
    try:
        for rec in records:
            if rec[0] == "T":
                break
            adopter.apply(rec)
        adopter.close()
    except BaseException:
        adopter.abort()
        raise


def import_shares(state: State, folder: catalog.Folder, cat: Catalog) -> int:
    """The folder's shares from the catalog, so publishing goes on from this machine; how many were new here."""
    added = 0
    for entry in cat.shares.values():
        if entry.folder_uid != folder.uid:
            continue
        if state.catalog.execute("SELECT 1 FROM shares WHERE share_id=?", (entry.share_id,)).fetchall():
            continue
        name = entry.name
        while state.catalog.execute("SELECT 1 FROM shares WHERE name=?", (name,)).fetchall():
            name += "-adopted"
        with state.catalog:
            state.catalog.execute(
                "INSERT INTO shares(folder_id, name, kind, share_id, share_key, key_wrap, recipients, version,"
                " created_ns, published_ns) VALUES(?,?,?,?,?,?,?,?,?,?)",
                (folder.folder_id, name, entry.kind, entry.share_id, entry.share_key, entry.key_wrap,
                 json.dumps(entry.recipients), entry.version, entry.created_ns, time.time_ns()),
            )
        added += 1
    return added


def adopt_folder(
    state: State, path: Path, identity: Identity, spec: ServerSpec, name: str, *, verify_content: bool = False,
    version: int | None = None,
) -> AdoptSummary:
    """Rebuild the state of the folder at ``path`` from backup ``name`` (its newest kept version by default)."""
    from usenetsync_cli.pipeline.backup import ensure_backup_share
    from usenetsync_cli.pipeline.backup_read import open_version, pick_version, read_catalog
    from usenetsync_cli.pipeline.index import index_folder, resolve_folder

    t0 = time.monotonic()
    root = os.fsencode(resolve_folder(path))
    tmp = state.home.state_dir / "tmp"
    tmp.mkdir(mode=0o700, exist_ok=True)
    conn = open_connection(spec)
    try:
        with tempfile.TemporaryDirectory(dir=tmp) as spool:
            _cv, cat = read_catalog(conn, identity, Path(spool) / "catalog")
            entry = cat.find(name)
            chosen = pick_version(entry, version, None)
            opened = open_version(conn, identity, entry, chosen.version, Path(spool) / "index")
            conn.quit()
            summary = AdoptSummary(folder=os.fsdecode(root), label=entry.label, version=chosen.version)
            folder = create_adopted_folder(state, root, entry, header_segment_size(opened.records()))
            index_folder(state, os.fsdecode(root))
            folder = catalog.get_folder_by_id(state.catalog, folder.folder_id) or folder
            records = opened.records()
            next(records)  # the header
            adopt_records(state, folder, records, summary, verify_content=verify_content)
            digest = record_digest(opened)
    finally:
        conn.close()
    summary.shares = import_shares(state, folder, cat)
    share = ensure_backup_share(state, folder, identity)
    with state.catalog:
        state.catalog.execute("UPDATE shares SET version=?, digest=?, published_ns=? WHERE share_pk=?",
                              (chosen.version, digest, time.time_ns(), share.share_pk))
        state.catalog.execute("INSERT OR REPLACE INTO backup_versions VALUES(?,?,?,?,?)",
                              (folder.folder_id, chosen.version, chosen.created * 1_000_000_000, chosen.files,
                               chosen.bytes))
    summary.epoch = catalog.new_epoch(state.catalog, folder.folder_id, "adopted")
    with state.catalog:  # commit point: the folder is an ordinary one from here on
        state.catalog.execute("UPDATE folders SET adopting=0, backup_covered_ns=? WHERE folder_id=?",
                              (time.time_ns(), folder.folder_id))
    summary.elapsed_s = time.monotonic() - t0
    return summary
