"""Recovery data: PAR2 over the bytes actually posted, and rebuilds from it.

Owns: a folder's recovery groups, the PAR2 recovery articles posted for each
group, the rebuild of a group's missing segment articles from its surviving
articles plus its recovery articles, and the re-post of what was rebuilt.
Its state is its own database, ``<state_dir>/recovery.db`` (WAL, migrations
in ``_MIGRATIONS``); the shard databases are only read, except by
``repost_rebuilt``, which updates the re-posted segment rows.

Groups. Per shard, live segments (state 1 posted or 2 verified) not yet in a
group, in seg_id order, are cut into groups of at most ``GROUP_ARTICLES``
(fewer when the segment size would make a recovery article too big). Every
member is one PAR2 source file holding its *sealed payload* (what
yEnc-decoding its article gives, ``length + 29`` bytes); the PAR2 block size
is the largest member rounded up to a multiple of 4 (a PAR2 rule), so each
member is exactly one source block and one lost article costs one recovery
block. ``redundancy`` percent gives ``ceil(n * pct / 100)`` recovery blocks
(at least 1 when pct > 0).

Names, IDs, wire:
- PAR2 source names: ``base32(HMAC(msgid_key, "usenetsync/v1/par2/name" ‖
  shard ‖ seg_id)[:10])``, 16 characters of [a-z2-7], nothing real. Keyed by
  ``msgid_key`` rather than ``names_key`` on purpose: a share's readers get
  ``msgid_key`` (and ``enc_key``) in the index, so a downloader can compute
  the names and repair on the fly; the names are inside AES-GCM anyway.
- Each group has ``gnonce``, 8 random bytes. Recovery article ``idx`` at
  ``attempt`` has the Message-ID
  ``index_message_id(msgid_key, b"par2" + gnonce, group_id, idx << 8 | attempt, domain)``
  (the HMAC input prefix of index IDs never meets a segment ID's), domain
  drawn from the folder's domains by HMAC. The gnonce means a group
  re-created after a crash (or a lost recovery.db) never reuses an ID.
- A recovery article's plaintext is itself a valid .par2 file: the group's
  critical packets (Main, FileDesc, IFSC; par2's Creator packet is dropped,
  it names the tool) followed by one RecvSlic packet. It is sealed like a
  segment (``seal_segment``, random nonce) under ``keys.aesgcm`` with the
  AAD ``b"usenetsync/v1/par2" ‖ uid ‖ gnonce ‖ group_id ‖ idx`` (fixed
  width), and posted as an ordinary article with random Subject, From and
  yEnc name. The AAD has no attempt: a re-post carries the same kind of bytes.

Invariants:
- PAR2 covers exactly the bytes on the server. A member is materialised by
  re-sealing its source with the stored nonce when the source still gives
  the stored plaintext hash (``encode()`` checks it), else by fetching its
  article (BODY, yEnc CRC, GCM tag and plaintext hash all checked). A member
  neither way yields is left out of grouping (counted ``unavailable``).
- A group is usable (state 1) only when every one of its recovery articles
  was answered 240 (or 441 435 and then STAT 223) and STAT-confirmed.
- Rebuilt bytes are returned only after they authenticate (GCM under their
  place AAD) and their plaintext hash equals the stored one.
- Temporary files live in one directory under ``workdir`` that is removed
  whatever happens.

Commit points:
- ``create_recovery``, per group: (A) a ``groups`` row in state 0 is
  committed first, reserving ``group_id`` (IDs and AAD derive from it);
  (B) after every recovery article is STAT-confirmed, one transaction inserts
  the members and the articles and sets the group to state 1. A crash between
  A and B leaves a state-0 group without members; the next run deletes it and
  groups those segments anew under a fresh gnonce (the orphan articles are
  never referenced and their IDs can never come back).
- ``repost_rebuilt``: one shard transaction after every re-post is
  STAT-confirmed (attempt, state 2, check_result 1, nonce of the posted
  bytes). A crash before it changes nothing; running rebuild + repost again
  re-derives the same IDs, meets 441 435, and STAT confirms.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import apsw
import xxhash

from usenetsync_cli.core.article import (
    MAX_ARTICLE_BYTES,
    build_article,
    decode_yenc_article,
    estimate_article_size,
    format_date,
)
from usenetsync_cli.core.crypto import (
    FOLDER_UID_SIZE,
    NONCE_SIZE,
    SEAL_OVERHEAD,
    new_nonce,
    open_segment,
    seal_segment,
)
from usenetsync_cli.core.hashing import payload_matches
from usenetsync_cli.core.epochs import PAD_SPREAD, EpochKeys, versioned_seal
from usenetsync_cli.core.msgid import index_message_id, keyed_message_id, message_domain
from usenetsync_cli.core.names import WireNames
from usenetsync_cli.errors import (
    ConfigError, CryptoError, DataLostError, NotFoundError, ProtocolError,
)
from usenetsync_cli.nntp import Connection, DuplicateArticle, ServerSpec, TransientError
from usenetsync_cli.pipeline.encode import FolderContext, encode
from usenetsync_cli.pipeline.feed import DirPaths, work_for_row
from usenetsync_cli.pipeline.fetch import OUR_ARTICLE_LIMIT, Article, FetchJob, fetch_results
from usenetsync_cli.pipeline.par2 import RecoveryError, read_at, run_par2, split_par2
from usenetsync_cli.pipeline.poster import open_connection
from usenetsync_cli.store import catalog, db
from usenetsync_cli.store.segments import PAGE, pack_layout
from usenetsync_cli.store.state import State

__all__ = [
    "GROUP_ARTICLES",
    "GroupLayout",
    "GroupMember",
    "NotRecoverableError",
    "Rebuilt",
    "RecoveryError",
    "RecoverySummary",
    "create_recovery",
    "groups_for_segments",
    "iter_layouts",
    "load_layout",
    "open_recovery_db",
    "par2_name",
    "rebuild_group",
    "rebuild_sealed",
    "recovery_aad",
    "recovery_message_id",
    "repost_rebuilt",
]

GROUP_ARTICLES = 100
_T = TypeVar("_T")
DEFAULT_REDUNDANCY = 10
MAX_ATTEMPTS = 3  # posts of one recovery article / re-posts of one rebuilt segment before giving up
GROUP_STATE_POSTING, GROUP_STATE_DONE = 0, 1
ART_STATE_VERIFIED = 2

_NAME_PREFIX = b"usenetsync/v1/par2/name\x00"
_PICK_PREFIX = b"usenetsync/v1/par2/pick\x00"
_V2_PAR2_PREFIX = b"usenetsync/v2/msgid/par2\x00"
_AAD_PREFIX = b"usenetsync/v1/par2"
_AAD_TAIL = struct.Struct(">QI")  # group_id, idx
_NAME_STRUCT = struct.Struct(">IQ")  # shard, seg_id
GNONCE_SIZE = 8

# Critical packets per member: FileDesc 136 (16-character name) + IFSC 100
# (one block) + 16 in Main; plus Main's fixed part and the slice header.
_PER_MEMBER = 136 + 100 + 16
_FIXED = 64 + 12 + 64 + 4
# Recovery articles are ciphertext, so yEnc adds ~3.2 %; build_article still
# checks the exact size. Keep a margin for headers longer than usual.
_ARTICLE_BUDGET = MAX_ARTICLE_BYTES - 16_384

_MIGRATIONS: list[db.Migration] = [
    """
    CREATE TABLE groups(
        group_id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: IDs and AAD derive from it
        folder_id INTEGER NOT NULL,
        shard INTEGER NOT NULL,
        gnonce BLOB NOT NULL,             -- 8 random bytes, in the recovery Message-IDs and AAD
        first_seg INTEGER NOT NULL,
        last_seg INTEGER NOT NULL,
        n_articles INTEGER NOT NULL,
        block_size INTEGER NOT NULL,
        recovery_blocks INTEGER NOT NULL,
        redundancy INTEGER NOT NULL,
        state INTEGER NOT NULL DEFAULT 0, -- 0 posting (unusable), 1 done
        created_ns INTEGER NOT NULL
    );
    CREATE INDEX groups_folder ON groups(folder_id, shard, state);
    -- One group per segment; only groups in state 1 have members.
    CREATE TABLE group_members(
        folder_id INTEGER NOT NULL,
        shard INTEGER NOT NULL,
        seg_id INTEGER NOT NULL,
        group_id INTEGER NOT NULL,
        pos INTEGER NOT NULL,
        sealed_len INTEGER NOT NULL,
        sealed_hash BLOB NOT NULL,        -- xxh3_128 of the sealed payload the PAR2 data covers
        PRIMARY KEY(folder_id, shard, seg_id)
    ) WITHOUT ROWID;
    CREATE INDEX group_members_group ON group_members(group_id, pos);
    CREATE TABLE recovery_articles(
        group_id INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        bytes INTEGER NOT NULL,           -- sealed payload bytes
        state INTEGER NOT NULL,           -- 2 verified (STAT 223 after posting)
        server_msgid TEXT,                -- only when 240 named another ID than ours
        PRIMARY KEY(group_id, idx)
    ) WITHOUT ROWID;
    """,
    # v2: the key epoch of a group (core/epochs.py): all its members are of that epoch, and its
    # recovery articles are sealed and named with that epoch's keys. Groups made before are epoch 0.
    """
    ALTER TABLE groups ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
    """,
]


# ---------------------------------------------------------------- errors


class NotRecoverableError(DataLostError, RecoveryError):
    """More articles of a group are gone than it has recovery blocks (DataLostError's exit code)."""

    hint = "the data of this group is lost unless its source files are still unchanged on disk"

    def __init__(self, group_id: int, shard: int, missing: int, available: int, total: int) -> None:
        super().__init__(
            f"recovery group {group_id} (shard {shard}): {missing} of {total} articles are missing or damaged,"
            f" but only {available} recovery blocks are available; cannot rebuild"
        )
        self.group_id = group_id
        self.shard = shard
        self.missing = missing
        self.available = available


# ---------------------------------------------------------------- derivations (pure)

_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def _b32(data: bytes) -> str:
    bits = len(data) * 8
    value = int.from_bytes(data, "big")
    return "".join(_B32[(value >> (bits - 5 * (i + 1))) & 31] for i in range(bits // 5))


def par2_name(msgid_key: bytes, shard: int, seg_id: int) -> str:
    """The PAR2 source-file name of a segment: 16 random-looking characters, reproducible."""
    return _b32(hmac.digest(msgid_key, _NAME_PREFIX + _NAME_STRUCT.pack(shard, seg_id), hashlib.sha256)[:10])


def recovery_message_id(e: EpochKeys, gnonce: bytes, group_id: int, idx: int, attempt: int) -> str:
    """The Message-ID of recovery article ``idx`` of a group at ``attempt`` (format v2 from epoch 1 on)."""
    if not 0 <= attempt < 256 or not 0 <= idx < 1 << 24:
        raise ValueError("recovery article index or attempt out of range")
    msgid_key, domains = e.keys.msgid_key, e.domains
    if e.epoch:
        return keyed_message_id(msgid_key, _V2_PAR2_PREFIX + gnonce + struct.pack(">QI", group_id, idx << 8 | attempt))
    pick = hmac.digest(msgid_key, _PICK_PREFIX + gnonce + struct.pack(">I", idx), hashlib.sha256)
    domain = domains[int.from_bytes(pick[:8], "big") % len(domains)]
    return index_message_id(msgid_key, b"par2" + gnonce, group_id, idx << 8 | attempt, domain)


def recovery_aad(folder_uid: bytes, gnonce: bytes, group_id: int, idx: int) -> bytes:
    """Associated data binding a sealed recovery file to (folder, group, index)."""
    if len(folder_uid) != FOLDER_UID_SIZE or len(gnonce) != GNONCE_SIZE:
        raise ValueError("folder uid must be 16 bytes and gnonce 8")
    return _AAD_PREFIX + bytes(folder_uid) + bytes(gnonce) + _AAD_TAIL.pack(group_id, idx)


def _block_size(max_sealed: int) -> int:
    return (max_sealed + 3) // 4 * 4  # PAR2 slice sizes are multiples of 4


def can_rebuild(missing: int, recovery_available: int) -> bool:
    """A group's repair rule: each member is one PAR2 source block, so each lost member costs one recovery block.

    The rebuild (``_rebuild``), the reader's availability check
    (pipeline/availability.py) and ``backups --check`` (backup_read.check_version) all decide by it.
    """
    return missing <= recovery_available


def _recovery_count(n: int, pct: int) -> int:
    return max(1, math.ceil(n * pct / 100)) if pct > 0 else 0


def _max_members(block: int) -> int:
    """How many members keep a recovery article (critical packets + one slice) under the size limit."""
    lo, hi = 0, GROUP_ARTICLES
    while lo < hi:  # estimate_article_size is monotonic
        mid = (lo + hi + 1) // 2
        if estimate_article_size(_FIXED + block + mid * _PER_MEMBER + SEAL_OVERHEAD) <= _ARTICLE_BUDGET:
            lo = mid
        else:
            hi = mid - 1
    return lo


# ---------------------------------------------------------------- state


def _context(folder: catalog.Folder, groups: tuple[str, ...]) -> FolderContext:
    # Imported here: upload.py is where --redundancy gets wired, and it will import this module.
    from usenetsync_cli.pipeline.upload import folder_context

    return folder_context(folder, groups)


def open_recovery_db(state: State) -> apsw.Connection:
    """Open (creating and migrating) ``recovery.db`` of this home; the caller closes it."""
    conn = db.connect(state.home.state_dir / "recovery.db", cache_kib=1024)
    try:
        db.migrate(conn, _MIGRATIONS, name="recovery.db")
    except BaseException:
        conn.close()
        raise
    return conn


@dataclass(frozen=True)
class GroupMember:
    seg_id: int
    pos: int
    sealed_len: int
    sealed_hash: bytes | None  # None when unknown (a reader without recovery.db): PAR2 checks alone
    msgid: str  # the current article of the segment
    plain_hash: bytes | None  # segments.hash: the rebuilt plaintext must match it
    # A pack's included members (offset, length), needed to recompute its pack hash; None for a
    # file segment, and for a reader's layout (a share index does not list a pack's other members).
    layout: tuple[tuple[int, int], ...] | None = None


@dataclass(frozen=True)
class GroupLayout:
    """Everything needed to rebuild a group, with or without the local state (e.g. from a share index)."""

    group_id: int
    shard: int
    gnonce: bytes
    block_size: int
    members: tuple[GroupMember, ...]
    recovery: tuple[tuple[int, int, str | None], ...]  # (idx, attempt, server_msgid)
    epoch: int = 0  # the key epoch of every member and recovery article

    def recovery_ids(self, ctx: FolderContext) -> list[tuple[int, str]]:
        e = ctx.at(self.epoch)
        return [
            (idx, server or recovery_message_id(e, self.gnonce, self.group_id, idx, att))
            for idx, att, server in self.recovery
        ]


class Rebuilt(dict[int, bytes]):
    """seg_id -> rebuilt sealed payload, for one group (so one shard)."""

    def __init__(self, shard: int, group_id: int, items: dict[int, bytes] | None = None) -> None:
        super().__init__(items or {})
        self.shard = shard
        self.group_id = group_id
        self.extra_missing: list[int] = []  # found missing/damaged though not named by the caller (rebuilt too)
        self.stale: list[int] = []  # article present and valid but not the bytes PAR2 covers (re-sealed since)


@dataclass
class RecoverySummary:
    folder: str
    redundancy: int
    groups_created: int = 0
    groups_total: int = 0
    segments_covered: int = 0
    segments_unavailable: int = 0
    resealed: int = 0
    fetched: int = 0
    recovery_articles: int = 0
    recovery_reposts: int = 0
    source_bytes: int = 0  # sealed bytes covered by the new groups
    recovery_bytes: int = 0  # sealed bytes of the recovery articles posted
    par2_seconds: float = 0.0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def par2_mb_per_s(self) -> float:
        return self.source_bytes / 1e6 / self.par2_seconds if self.par2_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["par2_mb_per_s"] = round(self.par2_mb_per_s, 1)
        d["par2_seconds"] = round(self.par2_seconds, 3)
        d["elapsed_s"] = round(self.elapsed_s, 3)
        return d


_LIVE_PAGE = (
    "SELECT seg_id, file_id, offset, length, attempt, hash, nonce, server_msgid, epoch FROM segments"
    " WHERE folder_id=? AND state IN (1,2) AND seg_id>? ORDER BY seg_id LIMIT ?"
)
_SEG_ROW = (
    "SELECT seg_id, attempt, server_msgid, hash, length, state, file_id, epoch FROM segments WHERE seg_id=? AND folder_id=?"
)


def _ungrouped(sconn: apsw.Connection, rdb: apsw.Connection, folder_id: int, shard: int) -> Iterator[tuple[Any, ...]]:
    """Live segment rows of one shard not yet in a group, by seg_id (a page of rows in memory)."""
    after = 0
    while True:
        rows = sconn.execute(_LIVE_PAGE, (folder_id, after, PAGE)).fetchall()
        if not rows:
            return
        grouped = {
            s for (s,) in rdb.execute(
                "SELECT seg_id FROM group_members WHERE folder_id=? AND shard=? AND seg_id BETWEEN ? AND ?",
                (folder_id, shard, rows[0][0], rows[-1][0]),
            )
        }
        for row in rows:
            if row[0] not in grouped:
                yield row
        after = rows[-1][0]


def groups_for_segments(state: State, folder: catalog.Folder, shard: int, seg_ids: Iterable[int]) -> dict[int, list[int]]:
    """group_id -> the given seg_ids that belong to it (segments in no usable group are left out)."""
    out: dict[int, list[int]] = {}
    rdb = open_recovery_db(state)
    try:
        for seg_id in seg_ids:
            rows = rdb.execute(
                "SELECT m.group_id FROM group_members m JOIN groups g USING(group_id)"
                " WHERE m.folder_id=? AND m.shard=? AND m.seg_id=? AND g.state=1",
                (folder.folder_id, shard, seg_id),
            ).fetchall()
            if rows:
                out.setdefault(rows[0][0], []).append(seg_id)
    finally:
        rdb.close()
    return out


def _layout(rdb: apsw.Connection, state: State, folder: catalog.Folder, ctx: FolderContext, group_id: int) -> GroupLayout:
    rows = rdb.execute(
        "SELECT shard, gnonce, block_size, state, epoch FROM groups WHERE group_id=? AND folder_id=?",
        (group_id, folder.folder_id),
    ).fetchall()
    if not rows or rows[0][3] != GROUP_STATE_DONE:
        raise NotFoundError(f"recovery group {group_id} does not exist for {folder.display_path} (or is incomplete)")
    shard, gnonce, block, _, epoch = rows[0]
    sconn = state.shards[shard]
    members = []
    for seg_id, pos, slen, shash in rdb.execute(
        "SELECT seg_id, pos, sealed_len, sealed_hash FROM group_members WHERE group_id=? ORDER BY pos", (group_id,)
    ).fetchall():
        seg = sconn.execute(_SEG_ROW, (seg_id, folder.folder_id)).fetchall()
        if not seg:
            raise RecoveryError(f"recovery group {group_id}: segment {shard}:{seg_id} is gone from the state")
        _, attempt, server_id, phash, _length, _st, file_id, seg_epoch = seg[0]
        if seg_epoch != epoch:
            raise RecoveryError(f"recovery group {group_id}: segment {shard}:{seg_id} is of another key epoch")
        mid = server_id or ctx.message_id(shard, seg_id, attempt, epoch)
        layout = None if file_id is not None else tuple(pack_layout(sconn, seg_id))
        members.append(GroupMember(seg_id, pos, slen, shash, mid, phash, layout))
    recovery = tuple(
        (idx, att, server)
        for idx, att, server in rdb.execute(
            "SELECT idx, attempt, server_msgid FROM recovery_articles WHERE group_id=? ORDER BY idx", (group_id,)
        )
    )
    return GroupLayout(group_id, shard, gnonce, block, tuple(members), recovery, epoch)


def load_layout(state: State, folder: catalog.Folder, group_id: int, ctx: FolderContext | None = None) -> GroupLayout:
    """The layout of one usable group (NotFoundError if there is none)."""
    ctx = ctx or _context(folder, ())  # IDs do not depend on groups
    rdb = open_recovery_db(state)
    try:
        return _layout(rdb, state, folder, ctx, group_id)
    finally:
        rdb.close()


def iter_layouts(state: State, folder: catalog.Folder, ctx: FolderContext | None = None) -> Iterator[GroupLayout]:
    """Every usable group of the folder, by group_id (for a share index: one group at a time)."""
    ctx = ctx or _context(folder, ())  # IDs do not depend on groups
    rdb = open_recovery_db(state)
    try:
        after = 0
        while True:  # keyset pages: memory is one page of ids, whatever the folder's size
            ids = [g for (g,) in rdb.execute(
                "SELECT group_id FROM groups WHERE folder_id=? AND state=1 AND group_id>? ORDER BY group_id LIMIT ?",
                (folder.folder_id, after, PAGE),
            )]
            if not ids:
                return
            for gid in ids:
                yield _layout(rdb, state, folder, ctx, gid)
            after = ids[-1]
    finally:
        rdb.close()


# ---------------------------------------------------------------- NNTP edge


class _Link:
    """One NNTP connection with reconnect-and-retry for transient failures."""

    def __init__(self, spec: ServerSpec, conn: Connection | None = None) -> None:
        self.spec = spec
        self._conn = conn
        self._owned = conn is None  # a borrowed connection is the lender's to close

    @property
    def conn(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = open_connection(self.spec)
            self._owned = True  # a replacement for a borrowed connection is ours to close
        return self._conn

    def retry(self, fn: Callable[[Connection], _T]) -> _T:
        for attempt in range(3):
            try:
                return fn(self.conn)
            except TransientError:
                if self._conn is not None:
                    self._conn.close()
                if attempt == 2:
                    raise
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def bodies(self, ids: list[str]) -> Iterator[tuple[str, Article | str | None]]:
        """(mid, decoded article | None if missing | why it is unusable), from the fetch engine over this
        link's connection: bounded replies, a few articles in memory, reconnects and retries its own."""
        jobs = (FetchJob(mid, OUR_ARTICLE_LIMIT) for mid in ids)
        for job, result in fetch_results(self.conn, jobs):
            yield job.message_id, result

    def post(self, mid: str, payload: bytes) -> tuple[str, str | None, int]:
        """(outcome, server-named ID if it differs from ours, wire bytes); outcome 'posted'|'duplicate'|'burnt'."""
        names = WireNames.fresh()  # one generator per article: nothing links two articles
        bufs = build_article(
            message_id=mid, subject=names.subject(), poster=names.poster(message_domain(mid)), newsgroups=self.spec.groups,
            date=format_date(time.time()), payload=payload, yenc_name=names.yenc_name(),
        )
        wire = sum(len(b) for b in bufs)
        try:
            got = self.retry(lambda c: c.post(bufs, mid))
        except DuplicateArticle:
            # 441 435 is success only if the article is really there (our own earlier send).
            return ("duplicate" if self.retry(lambda c: c.stat(mid)) else "burnt"), None, wire
        return "posted", (got if got and got != mid else None), wire

    def stat_many(self, ids: list[str]) -> dict[str, bool]:
        return dict(self.retry(lambda c: list(c.stat_many(ids))))

    def close(self) -> None:
        if self._owned and self._conn is not None:
            self._conn.quit()
        self._conn = None


def _fetch_sealed(body: Article | str | None) -> bytes | None:
    """The sealed payload of a fetched article, or None if absent, unusable or its CRC fails."""
    if body is None or isinstance(body, str) or not body.crc_ok:
        return None
    return bytes(body.data)


def _authentic(
    ctx: FolderContext, shard: int, seg_id: int, epoch: int, sealed: bytes, plain_hash: bytes | None,
    layout: Sequence[tuple[int, int]] | None = None,
) -> bool:
    """GCM opens under the segment's place and epoch and the plaintext has its stored segment hash."""
    try:
        plain = ctx.open(shard, seg_id, epoch, sealed)
    except (CryptoError, ProtocolError):
        return False
    return payload_matches(plain_hash, plain, layout)


# ---------------------------------------------------------------- create


def _reseal(sconn: apsw.Connection, shard: int, row: tuple[Any, ...], ctx: FolderContext, paths: DirPaths) -> bytes | None:
    """The posted sealed bytes, re-made from the source; None unless that reproduces them exactly.

    Only with the stored nonce and the stored plaintext hash (encode() refuses
    other bytes): then AES-GCM gives the identical ciphertext.
    """
    _seg_id, _f, _o, _l, _a, expect, nonce, _server, epoch = row
    if nonce is None or expect is None or len(nonce) != NONCE_SIZE:
        return None
    work = work_for_row(sconn, shard, row, paths, epoch)
    if work is None or (work.is_pack and not work.sources):
        return None
    done = encode(work, ctx, WireNames.fresh())
    if done.changed or done.dropped:
        return None
    # encode() frames the article; its yEnc body decodes to exactly the sealed payload.
    return decode_yenc_article(b"".join(done.buffers[1:]))[0]


def create_recovery(
    state: State,
    folder: catalog.Folder,
    spec: ServerSpec,
    *,
    redundancy: int = DEFAULT_REDUNDANCY,
    workdir: str | os.PathLike[str],
    group_articles: int = GROUP_ARTICLES,
    full_only: bool = False,
) -> RecoverySummary:
    """Create and post recovery data for every live segment of ``folder`` not yet in a group.

    ``full_only`` makes only complete groups (while an upload is still posting,
    so a shard's tail is not cut into small groups that cost a block each).
    """
    if not 0 <= redundancy <= 100:
        raise ConfigError(f"redundancy must be 0..100 percent, not {redundancy}")
    if not 1 <= group_articles <= GROUP_ARTICLES:
        raise ConfigError(f"a recovery group holds 1..{GROUP_ARTICLES} articles")
    t0 = time.monotonic()
    s = RecoverySummary(folder=folder.display_path, redundancy=redundancy)
    if redundancy == 0:
        return s
    ctx = _context(folder, spec.groups)
    seg_size = catalog.folder_segment_size(state.catalog, folder.folder_id)
    if seg_size:
        fit = _max_members(_block_size(seg_size + SEAL_OVERHEAD + PAD_SPREAD))
        if fit < 2:
            raise ConfigError(
                f"{seg_size:,}-byte segments leave no room for recovery articles",
                hint="recovery needs segments of at most ~950,000 bytes (768,000 is the default)",
            )
        group_articles = min(group_articles, fit)
    rdb = open_recovery_db(state)
    link = _Link(spec)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="par2-", dir=workdir))
    try:
        with rdb:  # groups a crashed run left half-posted: their articles are orphans, regroup
            rdb.execute("DELETE FROM groups WHERE folder_id=? AND state=0", (folder.folder_id,))
        paths = DirPaths(state.catalog, folder.path)
        for shard, sconn in enumerate(state.shards):
            batch: list[tuple[Any, ...]] = []
            for row in _ungrouped(sconn, rdb, folder.folder_id, shard):
                if batch and batch[0][8] != row[8]:  # a group never spans key epochs
                    _make_group(state, folder, ctx, rdb, link, sconn, shard, batch, redundancy, paths, tmp, s)
                    batch = []
                batch.append(row)
                if len(batch) == group_articles:
                    _make_group(state, folder, ctx, rdb, link, sconn, shard, batch, redundancy, paths, tmp, s)
                    batch = []
            if batch and not full_only:
                _make_group(state, folder, ctx, rdb, link, sconn, shard, batch, redundancy, paths, tmp, s)
        s.groups_total = rdb.execute(
            "SELECT count(*) FROM groups WHERE folder_id=? AND state=1", (folder.folder_id,)
        ).fetchall()[0][0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        link.close()
        rdb.close()
    s.elapsed_s = time.monotonic() - t0
    return s


def _make_group(
    state: State, folder: catalog.Folder, ctx: FolderContext, rdb: apsw.Connection, link: _Link,
    sconn: apsw.Connection, shard: int, rows: list[tuple[Any, ...]], pct: int, paths: DirPaths, tmp: Path,
    s: RecoverySummary,
) -> None:
    gdir = tmp / "g"
    shutil.rmtree(gdir, ignore_errors=True)
    gdir.mkdir()
    try:
        members = _materialise(ctx, link, sconn, shard, rows, paths, gdir, s)
        if not members:
            return
        block = _block_size(max(m[2] for m in members))
        count = _recovery_count(len(members), pct)
        gnonce = os.urandom(GNONCE_SIZE)
        epoch = rows[0][8]
        with rdb:  # (A) reserve the group_id its IDs and AAD derive from
            rdb.execute(
                "INSERT INTO groups(folder_id, shard, gnonce, first_seg, last_seg, n_articles, block_size,"
                " recovery_blocks, redundancy, state, created_ns, epoch) VALUES(?,?,?,?,?,?,?,?,?,0,?,?)",
                (folder.folder_id, shard, gnonce, members[0][0], members[-1][0], len(members), block, count, pct,
                 time.time_ns(), epoch),
            )
            group_id = rdb.last_insert_rowid()
        t = time.monotonic()
        run_par2(["c", "-q", "-q", f"-s{block}", f"-c{count}", "-n1", "rec.par2", *(m[1] for m in members)], gdir)
        s.par2_seconds += time.monotonic() - t
        critical, slices = split_par2(gdir, count)
        articles = _post_recovery(ctx, epoch, link, gdir, critical, slices, gnonce, group_id, s)
        with rdb:  # (B) commit point: the group is usable
            rdb.executemany(
                "INSERT INTO group_members(folder_id, shard, seg_id, group_id, pos, sealed_len, sealed_hash)"
                " VALUES(?,?,?,?,?,?,?)",
                [(folder.folder_id, shard, seg_id, group_id, pos, slen, shash)
                 for pos, (seg_id, _name, slen, shash) in enumerate(members)],
            )
            rdb.executemany(
                "INSERT INTO recovery_articles(group_id, idx, attempt, bytes, state, server_msgid) VALUES(?,?,?,?,2,?)",
                [(group_id, idx, att, nbytes, server) for idx, att, nbytes, server in articles],
            )
            rdb.execute("UPDATE groups SET state=1 WHERE group_id=?", (group_id,))
        s.groups_created += 1
        s.segments_covered += len(members)
        s.source_bytes += sum(m[2] for m in members)
    finally:
        shutil.rmtree(gdir, ignore_errors=True)


def _materialise(
    ctx: FolderContext, link: _Link, sconn: apsw.Connection, shard: int, rows: list[tuple[Any, ...]],
    paths: DirPaths, gdir: Path, s: RecoverySummary,
) -> list[tuple[int, str, int, bytes]]:
    """Write each member's sealed payload to ``gdir/<par2 name>``; (seg_id, name, len, xxh3) of those written."""
    got: dict[int, tuple[int, str, int, bytes]] = {}
    to_fetch: dict[str, tuple[Any, ...]] = {}
    for row in rows:
        seg_id = row[0]
        sealed = _reseal(sconn, shard, row, ctx, paths)
        if sealed is None:
            mid = row[7] or ctx.message_id(shard, seg_id, row[4], row[8])
            to_fetch[mid] = row
            continue
        s.resealed += 1
        got[seg_id] = _write_member(ctx, row[8], gdir, shard, seg_id, sealed)
    if to_fetch:
        for mid, body in link.bodies(list(to_fetch)):
            row = to_fetch[mid]
            sealed = _fetch_sealed(body)
            layout = pack_layout(sconn, row[0]) if row[1] is None else None
            if sealed is None or not _authentic(ctx, shard, row[0], row[8], sealed, row[5], layout):
                s.segments_unavailable += 1
                if len(s.errors) < 20:
                    s.errors.append(f"segment {shard}:{row[0]}: source changed and article missing or damaged;"
                                    " not covered by recovery data (repair it first)")
                continue
            s.fetched += 1
            got[row[0]] = _write_member(ctx, row[8], gdir, shard, row[0], sealed)
    return [got[r[0]] for r in rows if r[0] in got]


def _write_member(
    ctx: FolderContext, epoch: int, gdir: Path, shard: int, seg_id: int, sealed: bytes
) -> tuple[int, str, int, bytes]:
    name = par2_name(ctx.at(epoch).keys.msgid_key, shard, seg_id)
    (gdir / name).write_bytes(sealed)
    return seg_id, name, len(sealed), xxhash.xxh3_128_digest(sealed)


def _post_recovery(
    ctx: FolderContext, epoch: int, link: _Link, gdir: Path, critical: bytes, slices: dict[int, tuple[Path, int, int]],
    gnonce: bytes, group_id: int, s: RecoverySummary,
) -> list[tuple[int, int, int, str | None]]:
    """Post every recovery article and STAT-confirm it; (idx, attempt, sealed bytes, server ID) of each."""
    e = ctx.at(epoch)
    keys = e.keys
    attempts = {idx: 0 for idx in slices}
    done: dict[int, tuple[int, int, int, str | None]] = {}
    pending = sorted(slices)
    while pending:
        posted: dict[str, int] = {}
        sizes: dict[int, tuple[int, str | None]] = {}
        for idx in pending:
            path, off, length = slices[idx]
            with open(path, "rb") as f:
                plain = critical + read_at(f, off, length)
            # A fresh nonce per seal: a re-post of the same slice is a new encryption.
            sealed = seal_segment(keys.aesgcm, recovery_aad(ctx.uid, gnonce, group_id, idx), plain, new_nonce(),
                                  versioned=versioned_seal(epoch))
            while True:
                mid = recovery_message_id(e, gnonce, group_id, idx, attempts[idx])
                outcome, server, _wire = link.post(mid, sealed)
                if outcome != "burnt":
                    break
                attempts[idx] += 1
                if attempts[idx] >= MAX_ATTEMPTS:
                    raise RecoveryError(f"recovery group {group_id}: article {idx} could not be posted")
            posted[server or mid] = idx
            sizes[idx] = (len(sealed), server)
        present = link.stat_many(list(posted))
        pending = []
        for mid, idx in posted.items():
            if present.get(mid):
                done[idx] = (idx, attempts[idx], *sizes[idx])
                s.recovery_articles += 1
                s.recovery_bytes += sizes[idx][0]
                continue
            attempts[idx] += 1  # proven missing after 240: a new Message-ID
            if attempts[idx] >= MAX_ATTEMPTS:
                raise RecoveryError(f"recovery group {group_id}: article {idx} did not arrive after {MAX_ATTEMPTS} posts")
            s.recovery_reposts += 1
            pending.append(idx)
    return [done[i] for i in sorted(done)]


# ---------------------------------------------------------------- rebuild


def rebuild_group(
    state: State,
    folder: catalog.Folder,
    spec: ServerSpec,
    group_id: int,
    missing_seg_ids: Iterable[int],
    *,
    workdir: str | os.PathLike[str],
) -> Rebuilt:
    """Rebuild the sealed payloads of the missing segments of one group from survivors + recovery.

    Survivors that turn out missing or damaged are rebuilt too (listed in
    ``extra_missing`` and included in the result). Raises
    ``NotRecoverableError`` when more are gone than recovery blocks remain.
    """
    ctx = _context(folder, spec.groups)
    layout = load_layout(state, folder, group_id, ctx)
    return rebuild_sealed(spec, ctx, layout, missing_seg_ids, workdir=workdir)


def rebuild_sealed(
    server: ServerSpec | Connection,
    ctx: FolderContext,
    layout: GroupLayout,
    missing_seg_ids: Iterable[int],
    *,
    workdir: str | os.PathLike[str],
) -> Rebuilt:
    """``rebuild_group`` without the local state, for a reader that has the layout (e.g. from a share index).

    ``server`` is a spec (a connection is opened and closed here) or an open
    connection (borrowed: left open).
    """
    link = _Link(server.spec, server) if isinstance(server, Connection) else _Link(server)
    try:
        return _rebuild(link, ctx, layout, set(missing_seg_ids), Path(workdir))
    finally:
        link.close()


def _rebuild(link: _Link, ctx: FolderContext, layout: GroupLayout, missing: set[int], workdir: Path) -> Rebuilt:
    by_seg = {m.seg_id: m for m in layout.members}
    unknown = missing - set(by_seg)
    if unknown:
        raise RecoveryError(f"segments {sorted(unknown)} are not in recovery group {layout.group_id}")
    shard, total, epoch = layout.shard, len(layout.members), layout.epoch
    name_key = ctx.at(epoch).keys.msgid_key
    out = Rebuilt(shard, layout.group_id)
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="par2r-", dir=workdir))
    try:
        # 1. Survivors, written under their PAR2 names; anything unusable joins the missing.
        gone = set(missing)
        ids = {m.msgid: m for m in layout.members if m.seg_id not in missing}
        for mid, body in link.bodies(list(ids)):
            m = ids[mid]
            sealed = _fetch_sealed(body)
            if sealed is None or not _authentic(ctx, shard, m.seg_id, epoch, sealed, m.plain_hash, m.layout):
                gone.add(m.seg_id)
                out.extra_missing.append(m.seg_id)
            elif m.sealed_hash is not None and xxhash.xxh3_128_digest(sealed) != m.sealed_hash:
                # Valid, but sealed anew since the group was made: to PAR2 it is a lost block.
                gone.add(m.seg_id)
                out.stale.append(m.seg_id)
            else:
                (tmp / par2_name(name_key, shard, m.seg_id)).write_bytes(sealed)
        if not gone:
            return out
        need = len(gone)
        if not can_rebuild(need, len(layout.recovery)):
            raise NotRecoverableError(layout.group_id, shard, need, len(layout.recovery), total)
        # 2. Recovery articles, in order, until ``need`` authentic ones are in hand: GCM
        #    proves each intact, so par2 can use every one. All go into one .par2 file
        #    (par2 accepts the repeated critical packets).
        rids = layout.recovery_ids(ctx)
        fetched = {"good": 0, "pos": 0}

        def fetch(target: int) -> None:
            with open(tmp / "rec.par2", "ab") as rec:
                while fetched["good"] < target and fetched["pos"] < len(rids):
                    chunk = rids[fetched["pos"] : fetched["pos"] + target - fetched["good"]]
                    fetched["pos"] += len(chunk)
                    by_mid = {mid: idx for idx, mid in chunk}
                    for mid, body in link.bodies(list(by_mid)):
                        sealed = _fetch_sealed(body)
                        if sealed is None:
                            continue
                        aad = recovery_aad(ctx.uid, layout.gnonce, layout.group_id, by_mid[mid])
                        try:
                            rec.write(open_segment(ctx.aesgcm(epoch), aad, sealed, versioned=versioned_seal(epoch)))
                        except (CryptoError, ProtocolError):
                            continue
                        fetched["good"] += 1

        fetch(need)
        if not can_rebuild(need, fetched["good"]):
            raise NotRecoverableError(layout.group_id, shard, need, fetched["good"], total)
        # 3. par2 writes the absent files. Without sealed hashes (a reader's layout) a
        #    re-sealed survivor shows up only here, as one more damaged file: then use
        #    every recovery article there is, once.
        rc = run_par2(["r", "-q", "-q", "rec.par2"], tmp)
        if rc != 0 and fetched["pos"] < len(rids):
            fetch(len(rids))
            rc = run_par2(["r", "-q", "-q", "rec.par2"], tmp)
        if rc != 0:
            raise NotRecoverableError(layout.group_id, shard, need, fetched["good"], total)
        for seg_id in sorted(gone):
            if seg_id in out.stale:
                continue  # the article on the server is fine; par2 only restored its older sealing
            m = by_seg[seg_id]
            sealed = (tmp / par2_name(name_key, shard, seg_id)).read_bytes()
            if len(sealed) != m.sealed_len or not _authentic(ctx, shard, seg_id, epoch, sealed, m.plain_hash, m.layout):
                raise RecoveryError(
                    f"recovery group {layout.group_id}: segment {shard}:{seg_id} rebuilt by par2 does not authenticate"
                )
            out[seg_id] = sealed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------- re-post


def _nonce_of(sealed: bytes, epoch: int) -> bytes:
    start = 1 if versioned_seal(epoch) else 0  # epoch 0 has the version byte first
    return sealed[start : start + NONCE_SIZE]


def repost_rebuilt(
    state: State,
    folder: catalog.Folder,
    spec: ServerSpec,
    rebuilt: dict[int, bytes],
    *,
    shard: int | None = None,
) -> int:
    """Post each rebuilt sealed payload under attempt+1, STAT-confirm, record it; returns how many.

    ``shard`` defaults to ``rebuilt.shard`` (a ``Rebuilt`` knows it). The
    sealed bytes are posted as they are: the AAD does not include the attempt.
    A Message-ID the server remembers but no longer has (441 435, then STAT
    430) is skipped for the next attempt.
    """
    if shard is None:
        shard = getattr(rebuilt, "shard", None)
        if shard is None:
            raise ValueError("repost_rebuilt needs the shard of the segments")
    if not rebuilt:
        return 0
    ctx = _context(folder, spec.groups)
    sconn = state.shards[shard]
    attempts: dict[int, int] = {}
    epochs: dict[int, int] = {}
    for seg_id, sealed in rebuilt.items():
        seg = sconn.execute(_SEG_ROW, (seg_id, folder.folder_id)).fetchall()
        if not seg:
            raise RecoveryError(f"segment {shard}:{seg_id} is not in the state of {folder.display_path}")
        _, attempt, _server, phash, _length, _st, file_id, epoch = seg[0]
        layout = pack_layout(sconn, seg_id) if file_id is None else None
        if not _authentic(ctx, shard, seg_id, epoch, sealed, phash, layout):
            raise RecoveryError(f"segment {shard}:{seg_id}: the rebuilt payload does not authenticate; not posting it")
        attempts[seg_id] = attempt + 1
        epochs[seg_id] = epoch
    link = _Link(spec)
    done: dict[int, tuple[int, str | None, int]] = {}  # seg_id -> (attempt, server-named ID, wire bytes)
    try:
        pending = sorted(rebuilt)
        for _round in range(MAX_ATTEMPTS):
            posted: dict[str, tuple[int, str | None, int]] = {}
            for seg_id in pending:
                for _try in range(MAX_ATTEMPTS):
                    mid = ctx.message_id(shard, seg_id, attempts[seg_id], epochs[seg_id])
                    outcome, server, wire = link.post(mid, rebuilt[seg_id])
                    if outcome != "burnt":
                        posted[server or mid] = (seg_id, server, wire)
                        break
                    attempts[seg_id] += 1
            present = link.stat_many(list(posted)) if posted else {}
            pending = []
            for mid, (seg_id, server, wire) in posted.items():
                if present.get(mid):
                    done[seg_id] = (attempts[seg_id], server, wire)
                else:
                    attempts[seg_id] += 1  # proven missing after 240: a new Message-ID
                    pending.append(seg_id)
            if not pending:
                break
    finally:
        link.close()
    now = time.time_ns()
    with sconn:  # commit point: every confirmed re-post in one transaction
        sconn.executemany(
            "UPDATE segments SET attempt=?, state=2, check_result=1, checked_ns=?, posted_ns=?, server_msgid=?,"
            " wire_bytes=?, nonce=?, error=NULL WHERE seg_id=? AND folder_id=?",
            [
                (att, now, now, server, wire, _nonce_of(rebuilt[seg_id], epochs[seg_id]), seg_id, folder.folder_id)
                for seg_id, (att, server, wire) in done.items()
            ],
        )
    failed = sorted(set(rebuilt) - set(done))
    if failed:
        raise RecoveryError(
            f"{len(failed)} rebuilt segments of shard {shard} could not be re-posted: {failed[:10]}",
            hint="run the repair again; confirmed re-posts are saved",
        )
    return len(done)
