"""Publishing a share version: stream the manifest, post its parts, then its root.

Owns: turning the state of a fully uploaded folder into a signed, encrypted
share index on the server (records: core/manifest.py; wire: core/share_root.py).

Order and commit point:
1. the manifest is streamed from the shards (memory: one record) into a
   private spool, then cut into content-defined chunks; chunks the share's
   earlier versions already posted are reused, the others packed, sealed and
   posted, then the chunk table (pipeline/publish_index.py); index article
   Message-IDs hang off random nonces, so a crashed publication never
   collides with a later one;
2. every article posted is STAT-confirmed;
3. the root (sealed, signed, naming the parts) is posted at the first free
   slot of the version and STAT-confirmed; a slot taken by junk moves it to
   the next slot, one taken by our own root (a crash between 3 and 4) to the
   next version; the parts are not posted again;
4. commit point: the share's ``version`` and its chunk rows in catalog.db
   are updated in one transaction (pipeline/shares.py).
A crash before 4 leaves orphan articles and the old version current; readers
(who look for the newest verified root) always find a complete index.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


from usenetsync_cli.core.article import build_article, format_date
from usenetsync_cli.core.epochs import FolderContext
from usenetsync_cli.core.manifest import FORMAT, LayoutCheck, dumps_record, path_str, xattr_pairs
from usenetsync_cli.core.msgid import message_domain
from usenetsync_cli.core.names import WireNames
from usenetsync_cli.core.share_root import ROOT_SLOTS, Root, root_message_id, seal_root
from usenetsync_cli.core.shareid import signer_of
from usenetsync_cli.errors import UploadIncompleteError, UsenetSyncError
from usenetsync_cli.nntp import Connection, DuplicateArticle, ServerSpec
from usenetsync_cli.pipeline.poster import open_connection
from usenetsync_cli.pipeline.publish_index import IndexPosting, index_chunk_ids, known_layout, post_index
from usenetsync_cli.pipeline.share_index import root_at
from usenetsync_cli.store import catalog
from usenetsync_cli.store.db import keyset_pages
from usenetsync_cli.store.state import State


class NotUploadedError(UploadIncompleteError):
    """The folder is not fully posted and verified, so its index cannot be published yet."""

    hint = "run `usenetsync upload PATH` first; the share is published when every segment is up"


# ---------------------------------------------------------------- manifest records


def iter_records(
    state: State, folder: catalog.Folder, skipped: list[str] | None = None, held: list[str] | None = None
) -> Iterator[list[Any]]:
    """Every manifest record of the folder's published layout (see pipeline/settle.py).

    Per regular file: its current generation once done; for a file that kept
    changing (``unstable``), its last done one (named in ``held``); an
    unstable file that never had a consistent content is left out and named
    in ``skipped``. Any other
    file whose layout is not done (not uploaded yet, changed since, not
    verified) raises ``NotUploadedError``: nothing half-posted is published.
    """
    seg_size = catalog.folder_segment_size(state.catalog, folder.folder_id) or 0
    ctx = FolderContext.from_keys(folder.uid, folder.keys_by_epoch(), folder.epoch, ())
    used = sorted({e for conn in state.shards for (e,) in conn.execute(_USED_EPOCHS, (folder.folder_id,))})
    yield ["H", {
        "format": FORMAT, "segment_size": seg_size,
        "folder_uid": folder.uid.hex(), "epochs": {str(e): ctx.at(e).reader_doc() for e in used},
        "files": folder.files, "bytes": folder.bytes,
    }]
    count = 1
    dirs: dict[int, bytes] = {}
    for dir_id, rel, mode, mtime in state.catalog.execute(
        "SELECT dir_id, relpath, mode, mtime_ns FROM dirs WHERE folder_id=? AND present=1 ORDER BY relpath",
        (folder.folder_id,),
    ):
        dirs[dir_id] = rel
        if rel:
            yield ["D", path_str(rel), mode, mtime]
            count += 1
    fid = folder.folder_id

    def rel_of(dir_id: int, name: bytes) -> str:
        base = dirs[dir_id]
        return path_str(base + b"/" + name if base else name)

    links = _hard_links(state, fid, rel_of)
    for shard, conn in enumerate(state.shards):
        # Keyset pages, not one fetchall: memory is a page of rows whatever the shard holds.
        for (file_id, dir_id, name, kind, size, mtime, mode, target, gen, chash, planned, unstable, xattrs, dsize,
             dmtime) in (r for page in keyset_pages(conn, _PRESENT_FILES, (fid,), _PAGE) for r in page):
            path = rel_of(dir_id, name)
            if xattrs is not None and kind == 0 and (gen is not None or size == 0):
                yield ["X", path, xattr_pairs(xattrs)]
                count += 1
            if kind == 1:
                yield ["L", path, path_str(target or b""), mtime]
            elif gen is not None:
                if unstable and held is not None:
                    held.append(path)
                primary = links.get((shard, file_id))
                if primary is not None:
                    yield ["H", path, primary, dsize, chash.hex(), dmtime, mode]
                elif dsize == 0:
                    yield ["E", path, dmtime, mode]
                else:
                    segs = conn.execute(_LAYOUT_SEGMENTS, (file_id, gen)).fetchall()
                    if not segs:
                        continue  # packed: emitted with its pack below
                    if any(s[5] != 2 for s in segs):
                        raise NotUploadedError(f"{path!r} is not fully posted and verified (a repair is under way?)")
                    yield ["F", path, dsize, dmtime, mode, chash.hex(),
                           [[shard, s[0], s[1], s[2], s[3].hex(), s[4], s[6]] for s in segs]]
            elif unstable:
                if skipped is not None:  # kept changing and never read consistently: nothing to publish
                    skipped.append(path)
                continue
            elif size == 0:
                yield ["E", path, mtime, mode]  # an empty file needs no article
            else:
                why = "changed since the last upload" if planned else "has not been uploaded yet"
                raise NotUploadedError(f"{path!r} {why}")
            count += 1
        for seg_id, attempt, length, h, server_id, st, epoch in (
            r for page in keyset_pages(conn, _LIVE_PACKS, (fid,), _PAGE) for r in page
        ):
            members = conn.execute(_PACK_MEMBERS, (seg_id,)).fetchall()
            if not members:
                continue
            if st != 2:
                raise NotUploadedError("some small files are not fully posted and verified (a repair is under way?)")
            yield ["K", shard, seg_id, attempt, length, h.hex(), server_id, epoch]
            count += 1
            for member_id, dir_id, name, size, mtime, mode, off, mh in members:
                if (shard, member_id) in links:
                    continue  # a second name of a file: its H record stands for it
                yield ["P", rel_of(dir_id, name), size, mtime, mode, off, mh.hex()]
                count += 1
    # Recovery groups, so a reader can rebuild missing articles from PAR2 on the fly.
    from usenetsync_cli.pipeline.recovery import iter_layouts

    for lay in iter_layouts(state, folder):
        if not state.shards[lay.shard].execute(
            f"SELECT 1 FROM segments WHERE state<>4 AND seg_id IN ({','.join('?' * len(lay.members))}) LIMIT 1",
            [m.seg_id for m in lay.members],
        ).fetchall():
            continue  # it covers nothing live: no reader of this version needs it
        yield ["R", lay.shard, lay.group_id, lay.gnonce.hex(), lay.block_size,
               [[m.seg_id, m.pos, m.sealed_len, m.sealed_hash.hex() if m.sealed_hash else None, m.msgid,
                 # A reader cannot recompute a pack's hash (it does not see every member): GCM and
                 # the members' piece hashes check a rebuilt pack on its side.
                 m.plain_hash.hex() if m.plain_hash and m.layout is None else None] for m in lay.members],
               [list(r) for r in lay.recovery], lay.epoch]
        count += 1
    yield ["T", count + 1]


# The generation a file is published at: its current one once done, else (it kept changing)
# its last done one; NULL when it has none to publish. A file not planned from its indexed stat,
# or whose layout is not done and that is not marked unstable, is not publishable.
def _published_gen(f: str) -> str:
    return (
        f"CASE WHEN {f}done_gen IS {f}gen AND {f}plan_size={f}size AND {f}plan_mtime_ns={f}mtime_ns"
        f" AND {f}plan_ctime_ns IS {f}ctime_ns AND {f}plan_inode={f}inode THEN {f}gen"
        f" WHEN {f}unstable=1 THEN {f}done_gen END"
    )



_PRESENT_FILES = (
    f"SELECT file_id, dir_id, name, kind, size, mtime_ns, mode, target, {_published_gen('')}, content_hash,"
    " plan_size IS NOT NULL, unstable, xattrs, done_size, done_mtime_ns FROM files WHERE folder_id=? AND present=1"
    " AND file_id>? ORDER BY file_id LIMIT ?"
)
_PAGE = 5_000
_LINKED = (
    f"SELECT file_id, dir_id, name, inode, {_published_gen('')}, content_hash FROM files"
    " WHERE folder_id=? AND nlink>1 AND present=1 AND kind=0"
)


def _hard_links(state: State, folder_id: int, rel_of: Callable[[int, bytes], str]) -> dict[tuple[int, int], str]:
    """(shard, file_id) of every second (third, ...) name of a file -> the path of its first name.

    Names of one inode with one published content hash are one file: the
    first path (in byte order) is published with its data, the others as
    ``H`` records. Only files with a link count over one are looked at, so
    memory holds the folder's hard links, not its files.
    """
    groups: dict[int, list[tuple[str, int, int, bytes]]] = {}
    for shard, conn in enumerate(state.shards):
        for file_id, dir_id, name, inode, gen, chash in conn.execute(_LINKED, (folder_id,)):
            if gen is not None and chash is not None:
                groups.setdefault(inode, []).append((rel_of(dir_id, name), shard, file_id, chash))
    out: dict[tuple[int, int], str] = {}
    for names in groups.values():
        if len(names) < 2 or len({n[3] for n in names}) != 1:
            continue  # one name, or the names hold different contents (changed between index runs)
        names.sort()
        for path, shard, file_id, _h in names[1:]:
            out[(shard, file_id)] = names[0][0]
    return out
_USED_EPOCHS = "SELECT DISTINCT epoch FROM segments WHERE folder_id=? AND state IN (1,2)"
_LAYOUT_SEGMENTS = (
    "SELECT seg_id, attempt, length, hash, server_msgid, state, epoch FROM segments WHERE file_id=? AND gen=? AND state<>4"
    " ORDER BY idx"
)
_LIVE_PACKS = (
    "SELECT seg_id, attempt, length, hash, server_msgid, state, epoch FROM segments"
    " WHERE folder_id=? AND file_id IS NULL AND state<>4 AND seg_id>? ORDER BY seg_id LIMIT ?"
)
# Members a share version holds: files (regular, present) whose published generation is in this pack.
_PACK_MEMBERS = (
    "SELECT f.file_id, f.dir_id, f.name, f.done_size, f.done_mtime_ns, f.mode, m.pack_offset, m.hash FROM pack_members m"
    f" JOIN files f ON f.file_id=m.file_id WHERE m.seg_id=? AND f.present=1 AND f.kind=0 AND m.gen IS ({_published_gen('f.')})"
    " ORDER BY m.pack_offset"
)


# ---------------------------------------------------------------- posting


@dataclass
class Published:
    version: int
    parts: int
    index_bytes: int
    records: int
    files: int = 0
    bytes: int = 0
    dirs: int = 0  # folders (D records) and symlinks (L records), as the download's summary counts them
    symlinks: int = 0
    # Files left out because they kept changing and were never read consistently (relative paths).
    skipped: list[str] = field(default_factory=list)
    # Files published at their last consistent content although they changed since.
    unstable: list[str] = field(default_factory=list)
    posting: IndexPosting | None = None  # its chunk layout (saved with the version: publish_index.save_layout)
    new_id: bool = False  # the share had an ID of an older format and got a new one (show it: share show --show-id)
    digest: bytes = b""  # SHA-256 of the version's record stream
    unchanged: bool = False  # the records equal the last version's (``unchanged`` digest): nothing was posted


@dataclass(frozen=True)
class ShareSecrets:
    kind: str
    locator_key: bytes
    share_key: bytes
    key_wrap: bytes
    share_pk: int = 0  # whose chunk rows a version may reuse (0: none)


def post_article(conn: Connection, mid: str, payload: bytes, groups: tuple[str, ...], names: WireNames) -> None:
    bufs = build_article(
        message_id=mid, subject=names.subject(), poster=names.poster(message_domain(mid)), newsgroups=groups,
        date=format_date(time.time()), payload=payload, yenc_name=names.yenc_name(),
    )
    conn.post(bufs, mid)


def publish_version(
    state: State,
    folder: catalog.Folder,
    secrets: ShareSecrets,
    *,
    version: int,
    spec: ServerSpec,
    sign: Callable[[bytes], bytes],
    sign_pub: bytes,
    box_pub: bytes,
    key_wrap_for_version: Callable[[], bytes],
    unchanged: bytes | None = None,
) -> Published:
    """Post one complete version (parts once, then the root at the first free slot). Returns what was published.

    The folder's layouts are settled first (pipeline/settle.py), so a version
    never names a half-posted or inconsistently read file. A root slot taken
    by junk moves the root to the next slot; one taken by our own verified
    root (a crashed publication) to the next version; the index is never
    posted twice. After ``_ROOT_VERSIONS`` versions of taken slots: a clear
    error, not a loop. ``unchanged``: the digest of the last version's
    records; when this version's are the same, nothing is posted
    (``Published.unchanged``, version ``version - 1``).
    """
    from usenetsync_cli.pipeline.settle import settle_folder
    from usenetsync_cli.pipeline.upload import folder_context

    settle_folder(state, folder, folder_context(folder, spec.groups), spec)
    tmpdir = state.home.state_dir / "tmp"
    tmpdir.mkdir(mode=0o700, exist_ok=True)
    signer = signer_of(sign_pub)
    with tempfile.TemporaryFile(dir=tmpdir) as spool:
        skipped: list[str] = []
        held: list[str] = []
        check, digest = _spool_checked(iter_records(state, folder, skipped, held), spool)
        if unchanged is not None and digest == unchanged:
            return Published(version=version - 1, parts=0, index_bytes=0, records=check.records, skipped=skipped,
                             unstable=held, files=check.files, bytes=check.bytes, digest=digest, unchanged=True)
        chunk_ids = index_chunk_ids(spool)  # minutes at millions of files: not on an idle connection
        conn = open_connection(spec)
        try:
            known, packs = known_layout(state.catalog, secrets.share_pk) if secrets.share_pk else ({}, {})
            posting = post_index(
                conn, lambda mid, payload: post_article(conn, mid, payload, spec.groups, WireNames.fresh()), spool,
                share_key=secrets.share_key, locator_key=secrets.locator_key, known=known,
                packs=packs, chunk_ids=chunk_ids,
            )
            missing = [m for m, ok in conn.stat_many(posting.posted_ids) if not ok]
            if missing:
                raise NotUploadedError(f"{len(missing)} share index articles did not arrive", hint="run the command again")
            ref = posting.ref
            key_wrap = key_wrap_for_version()
            for v in range(version, version + _ROOT_VERSIONS):
                root = Root(kind=secrets.kind, version=v, created=int(time.time()), sign_pub=sign_pub,
                            box_pub=box_pub, key_wrap=key_wrap, index=ref)
                mid = post_root(conn, secrets.locator_key, root, sign, signer, spec.groups)
                if mid is None:
                    continue
                if not conn.stat(mid):
                    raise NotUploadedError("the share's root article did not arrive", hint="run the command again")
                conn.quit()
                return Published(version=v, parts=len(posting.posted_ids), index_bytes=posting.bytes_posted,
                                 records=check.records, skipped=skipped, unstable=held, files=check.files,
                                 bytes=check.bytes, posting=posting, digest=digest, dirs=check.dirs,
                                 symlinks=check.symlinks)
        finally:
            conn.close()
    raise NotUploadedError(
        f"the root slots of {_ROOT_VERSIONS} share versions in a row are taken",
        hint="someone who holds this share's ID may be posting junk at its root slots, or the server misbehaves;"
        " try another server, or make a new share",
    )


def post_root(
    conn: Connection, locator_key: bytes, root: Root, sign: Callable[[bytes], bytes], signer: bytes,
    groups: tuple[str, ...],
) -> str | None:
    """Post ``root`` at the first free slot of its version; its Message-ID, or None if the version is taken."""
    for slot in range(ROOT_SLOTS):
        mid = root_message_id(locator_key, root.version, slot)
        try:
            post_article(conn, mid, seal_root(locator_key, root, sign), groups, WireNames.fresh())
            return mid
        except DuplicateArticle:
            if root_at(conn, mid, locator_key, root.version, signer, root.kind) is not None:
                return None  # a crashed publication of ours got this far: the version is taken
    return None  # every slot holds junk: readers skip this version, and so do we


def _spool_checked(records: Iterator[list[Any]], spool: Any) -> tuple[LayoutCheck, bytes]:
    """Write the version's record lines into ``spool``, proving that its layout resolves; nothing is posted yet.
    Returns the check and SHA-256 of the lines.

    A version whose layout does not resolve is a bug of this program: it is
    refused (exit 1) before a single article leaves.
    """
    check = LayoutCheck()
    digest = hashlib.sha256()
    for rec in records:
        check.add(rec)
        line = dumps_record(rec)
        digest.update(line)
        spool.write(line)
    check.finish()
    if check.problem is not None:
        raise UsenetSyncError(
            f"refusing to publish a share version whose layout does not resolve: {check.problem}",
            hint="nothing was posted; this is a bug of usenetsync: rerun with USENETSYNC_DEBUG=1 and report it",
        )
    return check, digest.digest()


_ROOT_VERSIONS = 16
