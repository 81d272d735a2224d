"""Reading backups: the owner's catalog, a version's index, its listing, and the difference of two versions.

Owns the reader's side of core/backup.py. Everything here needs only the
identity (from the recovery phrase) and a server: no state of the folder,
so it works on a machine that never saw the home. Nothing is trusted that
the share machinery has not verified first (pipeline/share_index.py: the
owner's signature, GCM, chunk hashes); the catalog's fields are then
checked by ``core.backup.parse_records``.

``diff`` holds one version's entries in a temporary SQLite file, not in
memory, so two versions of a folder of millions of files compare in bounded
memory.
"""

from __future__ import annotations

import fnmatch
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from usenetsync_cli.core.backup import Catalog, FolderEntry, Version, backup_share_id, catalog_keys, parse_records
from usenetsync_cli.core.identity import Identity
from usenetsync_cli.core.msgid import is_valid_message_id
from usenetsync_cli.core.shareid import signer_of
from usenetsync_cli.errors import TamperedError
from usenetsync_cli.nntp import Connection, ServerSpec
from usenetsync_cli.pipeline.poster import open_connection
from usenetsync_cli.pipeline.share_index import RootFinder, iter_records, open_index
from usenetsync_cli.pipeline.shares import OpenedShare, open_share


def read_catalog(conn: Connection, identity: Identity, spool_dir: Path) -> tuple[int, Catalog]:
    """The newest catalog version on the server (0 and an empty catalog when there is none)."""
    lk, ck = catalog_keys(identity.backup_key())
    root = RootFinder(conn, lk, signer_of(identity.public().sign_pub), "private").newest()
    if root is None:
        return 0, Catalog()
    opened = open_index(conn, lk, ck, root, spool_dir)
    return root.version, parse_records(iter_records(opened))


def fetch_catalog(spec: ServerSpec, identity: Identity, tmp_root: Path) -> tuple[int, Catalog]:
    """``read_catalog`` over a connection of its own, spooling into a private temporary folder."""
    tmp_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    conn = open_connection(spec)
    try:
        with tempfile.TemporaryDirectory(dir=tmp_root) as spool:
            found = read_catalog(conn, identity, Path(spool))
        conn.quit()
        return found
    finally:
        conn.close()



def backup_share_text(identity: Identity, entry: FolderEntry) -> str:
    """The share ID (text) of a folder's backup share: a secret, never shown."""
    return backup_share_id(identity.backup_key(), entry.uid, signer_of(identity.public().sign_pub)).to_text()


def pick_version(entry: FolderEntry, version: int | None, at: int | None) -> Version:
    """The version asked for (``version``, the newest at or before ``at`` Unix seconds, or the newest kept)."""
    from usenetsync_cli.errors import ForgottenVersionError, NotFoundError

    if version is not None:
        if version in entry.forgotten:
            raise ForgottenVersionError(f"version {version} of backup {entry.label!r} was forgotten")
        found = entry.versions.get(version)
        if found is None:
            raise NotFoundError(f"backup {entry.label!r} has no version {version}",
                                hint=f"list its versions with `usenetsync backups {entry.label}`")
        return found
    kept = entry.kept()
    if at is not None:
        kept = [v for v in kept if v.created <= at]
        if not kept:
            raise NotFoundError(f"backup {entry.label!r} has no version from before that time",
                                hint=f"list its versions with `usenetsync backups {entry.label}`")
    if not kept:
        raise NotFoundError(f"backup {entry.label!r} has no version left to restore")
    return kept[-1]


def open_version(conn: Connection, identity: Identity, entry: FolderEntry, version: int, spool_dir: Path) -> OpenedShare:
    """The verified index of one backup version (nothing is written but the spool)."""
    return open_share(conn, backup_share_text(identity, entry), spool_dir, password=no_password,
                      identity=lambda: identity, version=version)


def no_password() -> str:  # pragma: no cover - a backup share is private, never password-protected
    raise TamperedError("a backup share asked for a password")


# ---------------------------------------------------------------- listing


@dataclass(frozen=True)
class Entry:
    path: str
    kind: str  # dir | file | symlink | hardlink
    size: int
    mtime_ns: int
    mode: int
    content: str  # hex content hash (files), the target (symlinks, hard links), '' for folders

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def entries(records: Iterator[list[Any]]) -> Iterator[Entry]:
    """The paths a version holds, in index order (the header and layout records are skipped)."""
    from usenetsync_cli.core.hashing import file_content_hash

    first = True
    for rec in records:
        kind = rec[0]
        if first:
            first = False
            continue  # the header
        if kind == "D":
            yield Entry(rec[1], "dir", 0, int(rec[3]), int(rec[2]), "")
        elif kind == "F":
            yield Entry(rec[1], "file", int(rec[2]), int(rec[3]), int(rec[4]), str(rec[5]))
        elif kind == "P":
            size = int(rec[2])
            yield Entry(rec[1], "file", size, int(rec[3]), int(rec[4]),
                        file_content_hash(size, [bytes.fromhex(rec[6])]).hex())
        elif kind == "E":
            yield Entry(rec[1], "file", 0, int(rec[2]), int(rec[3]), file_content_hash(0, []).hex())
        elif kind == "L":
            yield Entry(rec[1], "symlink", 0, int(rec[3]), 0o777, str(rec[2]))
        elif kind == "H":
            yield Entry(rec[1], "hardlink", int(rec[3]), int(rec[5]), int(rec[6]), str(rec[4]))
        elif kind == "T":
            return


def under(path: str, prefix: str | None) -> bool:
    """``path`` is ``prefix`` or inside it (no prefix: everything)."""
    if not prefix:
        return True
    prefix = prefix.strip("/")
    return path == prefix or path.startswith(prefix + "/")


def included(path: str, patterns: list[str]) -> bool:
    """A path an ``--include`` keeps: it matches a pattern, or lies inside a folder that does."""
    parts = path.split("/")
    for pat in patterns:
        pat = pat.strip("/")
        for i in range(len(parts), 0, -1):
            if fnmatch.fnmatchcase("/".join(parts[:i]), pat):
                return True
    return False


def filter_records(records: Callable[[], Iterator[list[Any]]], patterns: list[str]) -> Callable[[], Iterator[list[Any]]]:
    """``records`` with only the paths ``patterns`` include (and the layout they need), renumbered.

    The original trailer is checked first (a truncated index stays an
    error), then a new one counts what is passed on. A pack is passed on
    with its included members only; a hard link whose first name is not
    included is left out (its data lives with that name).
    """

    def run() -> Iterator[list[Any]]:
        out = 0
        seen = 0
        pending_pack: list[Any] | None = None
        names: set[str] = set()
        for rec in records():
            seen += 1
            kind = rec[0]
            if seen == 1:
                out += 1
                yield rec
                continue
            if kind == "T":
                if rec[1] != seen:
                    raise TamperedError("the share index is truncated (record count mismatch)")
                yield ["T", out + 1]
                return
            if kind == "K":
                pending_pack = rec
                continue
            if kind == "P":
                if included(rec[1], patterns):
                    if pending_pack is not None:
                        out += 1
                        yield pending_pack
                        pending_pack = None
                    names.add(rec[1])
                    out += 1
                    yield rec
                continue
            pending_pack = None
            if kind == "R":
                out += 1
                yield rec
            elif kind == "H":
                if included(rec[1], patterns) and rec[2] in names:
                    out += 1
                    yield rec
            elif kind in ("D", "F", "E", "L", "X"):
                if included(rec[1], patterns):
                    if kind == "F":
                        names.add(rec[1])
                    out += 1
                    yield rec
            else:
                out += 1
                yield rec  # unknown: the download refuses it
        raise TamperedError("the share index is truncated (no trailer)")

    return run


# ---------------------------------------------------------------- comparing


@dataclass
class Change:
    what: str  # added | removed | modified
    path: str
    old: Entry | None
    new: Entry | None

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.what, "path": self.path, "old": self.old.to_dict() if self.old else None,
                "new": self.new.to_dict() if self.new else None}


def diff(old: Iterator[Entry], new: Iterator[Entry], tmp_dir: Path) -> Iterator[Change]:
    """What changed from ``old`` to ``new`` (content, kind, size or mode; a new mtime alone is no change)."""
    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        db = apsw.Connection(str(Path(d) / "diff.db"))
        try:
            db.execute("PRAGMA journal_mode=OFF").fetchall()
            db.execute("PRAGMA synchronous=OFF").fetchall()
            db.execute("CREATE TABLE old(path TEXT PRIMARY KEY, kind, size, mtime, mode, content, seen INTEGER DEFAULT 0)")
            with db:
                db.executemany("INSERT OR REPLACE INTO old(path, kind, size, mtime, mode, content) VALUES(?,?,?,?,?,?)",
                               ((e.path, e.kind, e.size, e.mtime_ns, e.mode, e.content) for e in old))
            for e in new:
                rows = db.execute("SELECT kind, size, mtime, mode, content FROM old WHERE path=?", (e.path,)).fetchall()
                if not rows:
                    yield Change("added", e.path, None, e)
                    continue
                db.execute("UPDATE old SET seen=1 WHERE path=?", (e.path,))
                o = Entry(e.path, *rows[0])
                if (o.kind, o.size, o.mode, o.content) != (e.kind, e.size, e.mode, e.content):
                    yield Change("modified", e.path, o, e)
            for row in db.execute("SELECT path, kind, size, mtime, mode, content FROM old WHERE seen=0 ORDER BY path"):
                yield Change("removed", row[0], Entry(*row), None)
        finally:
            db.close()


# ---------------------------------------------------------------- checking kept versions


@dataclass
class VersionHealth:
    version: int
    articles: int = 0  # data and recovery articles the version references
    missing: int = 0
    unrecoverable: int = 0  # missing data articles no recovery group of the version can rebuild

    @property
    def restorable(self) -> bool:
        return self.unrecoverable == 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "restorable": self.restorable}


def _server_id(v: Any) -> str | None:
    """A Message-ID the index names (the server chose it), checked; None when the ID is derived."""
    if v is None:
        return None
    if not isinstance(v, str) or not is_valid_message_id(v):
        raise TamperedError("the share index is damaged (a Message-ID is malformed)")
    return v


@dataclass
class _Group:
    recovery: list[str]  # Message-IDs of its recovery articles
    members: list[tuple[int, int]]  # (shard, seg_id) of the data articles it covers


def _version_articles(records: Iterator[list[Any]]) -> Iterator[tuple[tuple[int, int], str] | _Group]:
    """Data articles ((shard, seg_id), Message-ID) and recovery groups of a version, streamed."""
    from usenetsync_cli.pipeline.download_repair import layout_from_record
    from usenetsync_cli.pipeline.download_write import folder_secrets

    head = next(records, None)
    if not head or head[0] != "H":
        raise TamperedError("the share index does not start with its header")
    ctx = folder_secrets(head[1]).ctx
    for rec in records:
        kind = rec[0]
        if kind == "F":
            for s in rec[6]:
                sh, seg, att, ep = int(s[0]), int(s[1]), int(s[2]), int(s[6])
                yield (sh, seg), _server_id(s[5]) or ctx.message_id(sh, seg, att, ep)
        elif kind == "K":
            sh, seg, att, ep = int(rec[1]), int(rec[2]), int(rec[3]), int(rec[7])
            yield (sh, seg), _server_id(rec[6]) or ctx.message_id(sh, seg, att, ep)
        elif kind == "R":
            lay = layout_from_record(rec)
            yield _Group([m for _i, m in lay.recovery_ids(ctx)], [(lay.shard, m.seg_id) for m in lay.members])
        elif kind == "T":
            return


def check_version(conn: Connection, identity: Identity, entry: FolderEntry, version: int, spool_dir: Path) -> VersionHealth:
    """STAT every article one kept version references; count what is missing and what PAR2 cannot rebuild.

    A group rebuilds up to as many missing articles (members and recovery
    articles together) as it has recovery articles. Memory: one entry per
    data article of the version (its place and Message-ID).
    """
    opened = open_version(conn, identity, entry, version, spool_dir)
    data: dict[tuple[int, int], str] = {}
    groups: list[_Group] = []
    batch: list[str] = []
    missing: set[str] = set()

    def flush() -> None:
        missing.update(mid for mid, ok in conn.stat_many(batch) if not ok)
        batch.clear()

    for item in _version_articles(opened.records()):
        if isinstance(item, _Group):
            groups.append(item)
            batch.extend(item.recovery)
        else:
            data[item[0]] = item[1]
            batch.append(item[1])
        if len(batch) >= 2048:
            flush()
    flush()
    from usenetsync_cli.pipeline.recovery import can_rebuild  # the rebuild's own rule, as download --check uses

    health = VersionHealth(version, articles=len(data) + sum(len(g.recovery) for g in groups), missing=len(missing))
    covered: set[tuple[int, int]] = set()
    for g in groups:
        lost = [k for k in g.members if data.get(k) in missing]
        if can_rebuild(len(lost), sum(1 for r in g.recovery if r not in missing)):
            covered.update(lost)
    health.unrecoverable = sum(1 for k, mid in data.items() if mid in missing and k not in covered)
    return health


def check_versions(spec: ServerSpec, identity: Identity, entry: FolderEntry, tmp_root: Path) -> list[VersionHealth]:
    """``check_version`` for every kept version, oldest first, over one connection."""
    tmp_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    conn = open_connection(spec)
    try:
        out = []
        for v in entry.kept():
            with tempfile.TemporaryDirectory(dir=tmp_root) as spool:
                out.append(check_version(conn, identity, entry, v.version, Path(spool)))
        conn.quit()
        return out
    finally:
        conn.close()
