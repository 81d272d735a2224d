"""Backups: publishing a folder's state as a backup version, and the owner's catalog on the server.

Owns the writer's side of core/backup.py: the local backup share of each
folder (a ``shares`` row with ``backup=1``, never listed as a share), the
versions this machine published (``backup_versions``), and merging the
local part of the catalog into the server's.

Order and commit points (a crash between any two leaves a state the next
run finishes; tested with kill -9):
1. ``publish_backup``: the folder's records are spooled; equal to the last
   version's (digest) -> nothing is posted; else a version is published
   like any share version (pipeline/publish.py) and committed with its
   ``backup_versions`` row;
2. ``sync_catalog``: when the local part of the catalog differs from the one
   last merged (``backup_sync.local_digest``), the newest catalog version is
   read from the server, merged, posted as the next version; a version taken
   meanwhile by another machine (its verified root in the slot) means read,
   merge and try the next one (at most ``_CATALOG_TRIES``); commit point:
   ``backup_sync`` after the root is STAT-confirmed;
3. the folder is marked covered (``folders.backup_covered_ns``).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from usenetsync_cli.core.backup import (
    BACKUP_SHARE_PREFIX,
    Catalog,
    FolderEntry,
    ShareEntry,
    Version,
    backup_share_id,
    backup_share_key,
    catalog_keys,
    merge,
    unique_label,
)
from usenetsync_cli.core.identity import Identity
from usenetsync_cli.core.share_root import Root
from usenetsync_cli.core.shareid import signer_of
from usenetsync_cli.errors import UploadIncompleteError
from usenetsync_cli.nntp import Connection, ServerSpec
from usenetsync_cli.pipeline import shares as shares_mod
from usenetsync_cli.pipeline.poster import open_connection
from usenetsync_cli.pipeline.publish import NotUploadedError, post_article, post_root
from usenetsync_cli.pipeline.publish_index import post_index
from usenetsync_cli.pipeline.backup_read import read_catalog
from usenetsync_cli.core.names import WireNames
from usenetsync_cli.store import catalog
from usenetsync_cli.store.state import State

_CATALOG_TRIES = 8


@dataclass
class BackupResult:
    folder: str
    label: str
    version: int
    published: bool  # a new version was posted (False: the folder had not changed)
    catalog_version: int  # 0: the catalog was already up to date
    index_bytes: int = 0
    articles: int = 0
    records: int = 0
    elapsed_s: float = 0.0
    checked_by: str = "records"  # how "unchanged" was decided: the record stream, or the runs since ("runs")

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def backup_share_name(uid: bytes) -> str:
    return BACKUP_SHARE_PREFIX + uid.hex()


def ensure_backup_share(state: State, folder: catalog.Folder, identity: Identity) -> shares_mod.Share:
    """The folder's backup share row, created on first use (its ID and key derive from the phrase)."""
    name = backup_share_name(folder.uid)
    rows = state.catalog.execute("SELECT 1 FROM shares WHERE name=?", (name,)).fetchall()
    if not rows:
        bk = identity.backup_key()
        pub = identity.public()
        sid = backup_share_id(bk, folder.uid, signer_of(pub.sign_pub))
        with state.catalog:
            state.catalog.execute(
                "INSERT INTO shares(folder_id, name, kind, share_id, share_key, key_wrap, recipients, created_ns, backup)"
                " VALUES(?,?,?,?,?,?,?,?,1)",
                (folder.folder_id, name, "private", sid.to_text(), backup_share_key(bk, folder.uid), b"",
                 json.dumps([pub.to_text()]), time.time_ns()),
            )
    return shares_mod.get_share(state, name)


def folder_label(state: State, folder: catalog.Folder) -> str | None:
    rows = state.catalog.execute("SELECT label FROM folders WHERE folder_id=?", (folder.folder_id,)).fetchall()
    return rows[0][0] if rows else None


# Counts of a run's summary that must all be 0 for the run to have changed nothing a backup holds.
_QUIET = {
    "index": ("new", "changed", "deleted", "vanished", "dirs_changed"),
    "upload": ("posted_now", "reposted", "duplicates_confirmed", "files_planned", "files_rehashed_same",
               "hashes_backfilled", "changed_sources", "unstable_count"),
}


def unchanged_since_backup(state: State, folder: catalog.Folder) -> bool:
    """True when the folder's newest backup version is known to cover the state: nothing to stream or hash.

    Known: the folder was covered (``backup_covered_ns``: set by a backup run, cleared by a repair that
    re-posts) and every index and upload run of it since then finished ``ok`` and changed nothing (all of
    their ``_QUIET`` counts recorded and 0). Anything else, e.g. a run of an older usenetsync without a
    count, means "maybe": the record stream decides.
    """
    rows = state.catalog.execute(
        "SELECT f.backup_covered_ns, s.version FROM folders f JOIN shares s ON s.folder_id=f.folder_id AND s.backup=1"
        " WHERE f.folder_id=?", (folder.folder_id,)).fetchall()
    if not rows or not rows[0][0] or not rows[0][1]:
        return False
    for command, status, summary in state.catalog.execute(
        "SELECT command, status, summary FROM runs WHERE folder_id=? AND started_ns>=?", (folder.folder_id, rows[0][0])
    ):
        counts = json.loads(summary) if summary else None
        keys = _QUIET.get(command)
        if keys is None or status != "ok" or not isinstance(counts, dict):
            return False
        if any(counts.get(k) != 0 for k in keys):
            return False
    return True


def publish_backup(state: State, folder: catalog.Folder, identity: Identity, spec: ServerSpec, *,
                   trust_runs: bool = False) -> BackupResult:
    """Publish the folder's state as its next backup version (if it changed), then bring the catalog up to date.

    ``trust_runs``: skip building the record stream when the runs since the last backup show that
    nothing changed (``unchanged_since_backup``; `upload` passes it unless it just made PAR2 groups,
    which runs do not record; `verify --repair` never does).
    """
    t0 = time.monotonic()
    identity.backup_key()  # NoRecoveryPhraseError before anything is done
    share = ensure_backup_share(state, folder, identity)
    if trust_runs and unchanged_since_backup(state, folder):
        cat_version, _merged, _posted = sync_catalog(state, identity, spec)
        with state.catalog:
            state.catalog.execute("UPDATE folders SET backup_covered_ns=? WHERE folder_id=?",
                                  (time.time_ns(), folder.folder_id))
        return BackupResult(folder=folder.display_path, label=folder_label(state, folder) or "", version=share.version,
                            published=False, catalog_version=cat_version, elapsed_s=time.monotonic() - t0,
                            checked_by="runs")
    result = shares_mod.publish(state, share, identity, spec, if_changed=True)
    if not result.unchanged:
        with state.catalog:
            state.catalog.execute("INSERT OR REPLACE INTO backup_versions VALUES(?,?,?,?,?)",
                                  (folder.folder_id, result.version, time.time_ns(), result.files, result.bytes))
    cat_version, _merged, _posted = sync_catalog(state, identity, spec)
    with state.catalog:
        state.catalog.execute("UPDATE folders SET backup_covered_ns=? WHERE folder_id=?", (time.time_ns(), folder.folder_id))
    return BackupResult(
        folder=folder.display_path, label=folder_label(state, folder) or "", version=result.version,
        published=not result.unchanged, catalog_version=cat_version, index_bytes=result.index_bytes,
        articles=result.parts + (0 if result.unchanged else 1), records=result.records,
        elapsed_s=time.monotonic() - t0,
    )


# ---------------------------------------------------------------- the catalog


def local_catalog(state: State) -> Catalog:
    """What this machine contributes: its backed-up folders (with the versions it published) and its shares."""
    cat = Catalog()
    host = socket.gethostname()
    for share in shares_mod.list_shares(state, backups=True):
        folder = catalog.get_folder_by_id(state.catalog, share.folder_id)
        if folder is None:
            continue
        rows = state.catalog.execute(
            "SELECT version, created_ns, files, bytes FROM backup_versions WHERE folder_id=?", (folder.folder_id,)
        ).fetchall()
        if not rows:
            continue
        versions = {v: Version(v, c // 1_000_000_000, f, b) for v, c, f, b in rows}
        label = folder_label(state, folder) or os.path.basename(folder.display_path.rstrip("/")) or "/"
        cat.folders[folder.uid] = FolderEntry(
            uid=folder.uid, label=label, path=folder.display_path, host=host, segment_size=catalog.folder_segment_size(state.catalog, folder.folder_id) or 0,
            folder_key=folder.folder_key, epochs=dict(folder.epoch_keys), versions=versions, forgotten=set(),
            updated_ns=max(c for _v, c, _f, _b in rows),
        )
    for share in shares_mod.list_shares(state):
        folder = catalog.get_folder_by_id(state.catalog, share.folder_id)
        if folder is None or not share.version:
            continue
        cat.shares[share.share_id] = ShareEntry(
            share_id=share.share_id, folder_uid=folder.uid, name=share.name, kind=share.kind,
            share_key=share.share_key, key_wrap=share.key_wrap, recipients=list(share.recipients),
            version=share.version, created_ns=share.created_ns,
        )
    return cat


def _digest(cat: Catalog) -> bytes:
    h = hashlib.sha256()
    for line in cat.lines():
        h.update(line)
    return h.digest()


def sync_catalog(
    state: State, identity: Identity, spec: ServerSpec, *, change: Callable[[Catalog], None] | None = None,
) -> tuple[int, Catalog, bool]:
    """Merge the local catalog into the server's; (catalog version, merged catalog, whether one was posted).

    ``change`` edits the merged catalog before it is posted (``forget``);
    without it, nothing is read or posted when the local part is as last merged.
    """
    local = local_catalog(state)
    digest = _digest(local)
    rows = state.catalog.execute("SELECT local_digest, version FROM backup_sync WHERE id=1").fetchall()
    if change is None and rows and rows[0][0] == digest:
        return 0, local, False
    lk, ck = catalog_keys(identity.backup_key())
    pub = identity.public()
    signer = signer_of(pub.sign_pub)
    tmp = state.home.state_dir / "tmp"
    tmp.mkdir(mode=0o700, exist_ok=True)
    conn = open_connection(spec)
    try:
        target = 0
        for _ in range(_CATALOG_TRIES):
            with tempfile.TemporaryDirectory(dir=tmp) as spool_dir:
                newest, remote = read_catalog(conn, identity, Path(spool_dir))
            merged = merge(remote, local)
            _label_new_folders(state, local, remote, merged)
            if change is not None:
                change(merged)
            if newest and merged.same_as(remote):
                _synced(state, merged, local, newest)
                conn.quit()
                return newest, merged, False
            target = max(newest + 1, target + 1)
            if _post_catalog(conn, identity, merged, target, lk, ck, signer, spec.groups):
                _synced(state, merged, local, target)
                conn.quit()
                return target, merged, True
            # Another machine with this phrase published this version meanwhile: read it, merge again.
    finally:
        conn.close()
    raise UploadIncompleteError(
        f"the backup catalog changed on the server {_CATALOG_TRIES} times while this machine was merging into it",
        hint="another machine with this recovery phrase is publishing right now; run the command again",
    )


def _label_new_folders(state: State, local: Catalog, remote: Catalog, merged: Catalog) -> None:
    """A folder's label is fixed the first time it is listed: unique among the catalog's folders."""
    taken = Catalog(folders=dict(remote.folders))
    for uid, entry in sorted(local.folders.items()):
        if uid in remote.folders:
            continue
        label = unique_label(entry.label, uid, taken)
        taken.folders[uid] = entry
        merged.folders[uid].label = label
        entry.label = label
        with state.catalog:
            state.catalog.execute("UPDATE folders SET label=? WHERE uid=? AND label IS NULL", (label, uid))


def _synced(state: State, merged: Catalog, local: Catalog, version: int) -> None:
    """Commit point of a catalog publication; versions the catalog forgot are dropped here too."""
    with state.catalog:
        for uid, entry in merged.folders.items():
            if entry.forgotten:
                marks = ",".join("?" * len(entry.forgotten))
                state.catalog.execute(
                    f"DELETE FROM backup_versions WHERE folder_id IN (SELECT folder_id FROM folders WHERE uid=?)"
                    f" AND version IN ({marks})", (uid, *sorted(entry.forgotten)))
        state.catalog.execute(
            "INSERT OR REPLACE INTO backup_sync(id, local_digest, version, synced_ns) VALUES(1,?,?,?)",
            (_digest(local_catalog(state)), version, time.time_ns()))


def _post_catalog(
    conn: Connection, identity: Identity, cat: Catalog, version: int, lk: bytes, ck: bytes, signer: bytes,
    groups: tuple[str, ...],
) -> bool:
    """Post ``cat`` as catalog ``version``; False when the version is taken (by another machine, or junk)."""
    pub = identity.public()
    with tempfile.TemporaryFile() as spool:
        for line in cat.lines():
            spool.write(line)
        posting = post_index(conn, lambda mid, payload: post_article(conn, mid, payload, groups, WireNames.fresh()),
                             spool, share_key=ck, locator_key=lk, known={}, packs={})
    missing = [m for m, ok in conn.stat_many(posting.posted_ids) if not ok]
    if missing:
        raise NotUploadedError(f"{len(missing)} backup catalog articles did not arrive", hint="run the command again")
    root = Root(kind="private", version=version, created=int(time.time()), sign_pub=pub.sign_pub,
                box_pub=pub.box_pub, key_wrap=b"", index=posting.ref)
    mid = post_root(conn, lk, root, identity.sign, signer, groups)
    if mid is None:
        return False
    if not conn.stat(mid):
        raise NotUploadedError("the backup catalog's root article did not arrive", hint="run the command again")
    return True
