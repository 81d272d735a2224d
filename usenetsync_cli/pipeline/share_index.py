"""Reading a share index: find the newest verified root, spool its parts, stream its records.

Owns the reader's side of core/share_root.py (wire) and core/manifest.py
(records). Nothing is trusted before:
1. a root opens under the share ID's root key, is signed by the key the ID
   pins (its 16-byte signer), and names the version and kind asked for;
   anything else at a root slot is junk and is skipped (``RootFinder``);
2. each table piece's SHA-256 equals the one the root signs, it opens under
   the share key at its place, and the table decompresses to exactly the
   signed size (``decompress_table`` reads at most that much: a compression
   bomb ends in a TamperedError, not in memory);
3. each chunk opens under the share key at its id, decompresses to at most
   its table length and hashes to its id (core/index_chunks.py); verified
   chunks are kept in the reader's cache, so the next version fetches only
   the chunks that changed.
Then the records stream from the cached chunks in table order, each chunk
re-hashed as it is read, no record longer than ``MAX_RECORD_BYTES``.

Discovery (``RootFinder.newest``): a version is *present* when its slots hold
a verified root or are all taken by junk (the publisher then skipped it), and
*absent* otherwise (one pipelined STAT of its slots, then BODY of the taken
ones until one verifies). Presence is
monotone up to the newest version, so a gallop (pinned+1, +2, +4, …) and a
binary search find it; the walk down past junk-only versions and every root
fetch count against ``MAX_ROOT_FETCHES``, so a server full of forged roots
ends in a clear error, never a long search. A reader that has seen version
``p`` of this share in this destination (pinned by the caller) never
silently accepts an older one: ``RollbackError``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usenetsync_cli.core.article import decode_yenc_article
from usenetsync_cli.core.index_chunks import TableEntry, decompress_table, open_chunk, open_table_piece, parse_table
from usenetsync_cli.core.manifest import loads_record
from usenetsync_cli.core.share_root import ROOT_MAX_BYTES, ROOT_SLOTS, Root, open_root, part_message_id, root_message_id
from usenetsync_cli.errors import NotFoundError, RollbackError, TamperedError
from usenetsync_cli.nntp import Connection

# Versions count from 1; nothing honest comes near this.
MAX_VERSION = 1 << 40
# Root BODYs one discovery may fetch: ~2·log2(newest) when nobody interferes (absent versions cost one
# pipelined STAT of their slots and no BODY).
MAX_ROOT_FETCHES = 96
# One manifest record (a file's segment list); ~2 million segments, a 1.5 TB file.
MAX_RECORD_BYTES = 256 << 20
_PART_MAX_BYTES = 1_100_000  # yEnc body of the largest honest part, with room


class ShareNotFoundError(NotFoundError):
    hint = "check the share ID, and that this server carries the group it was posted to"


class ForgedRootsError(TamperedError):
    """The server holds more junk at this share's root slots than a reader checks."""

    hint = (
        "someone who holds this share's ID is posting junk at its root slots; try another server,"
        " or ask the publisher for a new share ID"
    )


_JUNK = "junk"


@dataclass
class OpenedIndex:
    root: Root
    version: int
    spool: Path  # the verified chunk table of this version
    entries: list[TableEntry]
    cache: Path  # verified chunks, one file each
    articles_fetched: int = 0
    chunks_fetched: int = 0  # the others were in the cache (an earlier version had them)


class RootFinder:
    """Probes root slots of one share over one connection, caching what it saw."""

    def __init__(self, conn: Connection, locator_key: bytes, signer: bytes, kind: str) -> None:
        self.conn, self.locator_key, self.signer, self.kind = conn, locator_key, signer, kind
        self.fetches = 0
        self.root_ids: dict[int, str] = {}  # version -> Message-ID of its verified root
        self._seen: dict[int, Root | str | None] = {}

    def probe(self, version: int) -> Root | str | None:
        """The verified root of ``version``, ``_JUNK`` (every slot holds junk), or None (absent).

        All slots are looked at (one pipelined STAT), not only up to the first
        free one: a slot can be free on the reader's side and taken on the
        publisher's (a cancelled article's ID stays in the server's history),
        and the publisher then moved on to the next slot.
        """
        if version in self._seen:
            return self._seen[version]
        ids = [root_message_id(self.locator_key, version, slot) for slot in range(ROOT_SLOTS)]
        present = [mid for mid, ok in self.conn.stat_many(ids) if ok]
        result: Root | str | None = _JUNK if len(present) == ROOT_SLOTS else None
        for mid in present:
            if self.fetches >= MAX_ROOT_FETCHES:
                raise ForgedRootsError(
                    f"gave up looking for this share's newest version after {MAX_ROOT_FETCHES} root articles"
                )
            self.fetches += 1
            root = root_at(self.conn, mid, self.locator_key, version, self.signer, self.kind)
            if root is not None:
                self.root_ids[version] = mid
                result = root
                break
        self._seen[version] = result
        return result

    def present(self, version: int) -> bool:
        return self.probe(version) is not None

    def newest(self, pinned: int = 0) -> Root | None:
        """The newest verified root, starting from the pinned version when it is still there."""
        lo = 0
        if pinned and isinstance(self.probe(pinned), Root):
            lo = pinned
        step = 1
        while True:
            cand = lo + step
            if cand > MAX_VERSION:
                raise ForgedRootsError(f"the server claims more than {MAX_VERSION:,} versions of this share")
            if not self.present(cand):
                hi = cand
                break
            lo, step = cand, step * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.present(mid):
                lo = mid
            else:
                hi = mid
        while lo > 0:
            found = self.probe(lo)
            if isinstance(found, Root):
                return found
            lo -= 1  # junk only: the publisher skipped this version
        return None

    def exact(self, version: int) -> Root:
        found = self.probe(version)
        if not isinstance(found, Root):
            raise ShareNotFoundError(f"version {version} of this share is not on the server")
        return found


def root_at(conn: Connection, mid: str, locator_key: bytes, version: int, signer: bytes, kind: str) -> Root | None:
    """The verified root of ``version`` at ``mid``, or None: missing, damaged, junk or a forgery there."""
    body = conn.body(mid, max_bytes=ROOT_MAX_BYTES * 2)
    if body is None:
        return None
    payload, _name, crc_ok = decode_yenc_article(body)
    if not crc_ok:
        return None
    try:
        return open_root(locator_key, version, payload, signer, kind)
    except TamperedError:
        return None


def find_root(
    conn: Connection, locator_key: bytes, signer: bytes, kind: str, *, pinned: int = 0, allow_rollback: bool = False,
    version: int | None = None,
) -> Root:
    """The root to read: ``version`` exactly, or the newest, never older than ``pinned`` unless allowed."""
    finder = RootFinder(conn, locator_key, signer, kind)
    if version is not None:
        return finder.exact(version)
    root = finder.newest(pinned)
    if root is None:
        if pinned:
            raise RollbackError(
                f"this destination has version {pinned} of the share, but the server shows none of it",
                hint="the server may be hiding or have expired the share; try another server",
            )
        raise ShareNotFoundError("no share with this ID was found on the server")
    if root.version < pinned and not allow_rollback:
        raise RollbackError(
            f"the server offers version {root.version} of this share, but this destination already has version"
            f" {pinned}",
        )
    return root


def open_index(conn: Connection, locator_key: bytes, share_key: bytes, root: Root, spool_dir: Path) -> OpenedIndex:
    """Fetch and verify the chunk table, then every chunk not already in the reader's cache.

    The cache (``spool_dir/chunks``, one file per chunk, named by its id) is
    pruned to this version's chunks afterwards: a reader of the next version
    fetches only what changed.
    """
    ref = root.index
    table = _fetch_table(conn, locator_key, share_key, root)
    entries = parse_table(table, ref.chunks, ref.plain_bytes)
    cache = spool_dir / "chunks"
    cache.mkdir(parents=True, exist_ok=True)
    wanted: dict[bytes, list[TableEntry]] = {}
    for e in entries:
        if not (cache / e.chunk_id.hex()).exists():
            wanted.setdefault(e.pack_nonce, []).append(e)
    fetched = 0
    new_chunks = 0
    ids = {part_message_id(locator_key, n, 0): n for n in wanted}
    for mid, body in conn.body_many(list(ids), window=4, max_bytes=_PART_MAX_BYTES):
        if body is None:
            raise ShareNotFoundError("an article of the share index is missing from the server")
        payload, _name, crc_ok = decode_yenc_article(body)
        if not crc_ok:
            raise TamperedError("an article of the share index is damaged (CRC mismatch)")
        for e in wanted[ids[mid]]:
            plain = open_chunk(share_key, locator_key, e, payload[e.offset:e.offset + e.sealed_len])
            tmp = cache / (e.chunk_id.hex() + ".tmp")
            tmp.write_bytes(plain)
            os.replace(tmp, cache / e.chunk_id.hex())
            new_chunks += 1
        fetched += 1
    live = {e.chunk_id.hex() for e in entries}
    for old in cache.iterdir():
        if old.name not in live:
            old.unlink(missing_ok=True)
    spool = spool_dir / f"index-v{root.version}.bin"
    tmp = spool.with_suffix(".tmp")
    tmp.write_bytes(table)
    os.replace(tmp, spool)
    return OpenedIndex(root=root, version=root.version, spool=spool, entries=entries, cache=cache,
                       articles_fetched=fetched + len(ref.table), chunks_fetched=new_chunks)


def _fetch_table(conn: Connection, locator_key: bytes, share_key: bytes, root: Root) -> bytes:
    ref = root.index
    ids = [part_message_id(locator_key, p.pack_nonce, 0) for p in ref.table]
    compressed = bytearray()
    for i, (piece, (_mid, body)) in enumerate(zip(ref.table, conn.body_many(ids, window=4, max_bytes=_PART_MAX_BYTES))):
        if body is None:
            raise ShareNotFoundError(f"share index table article {i + 1} of {len(ids)} is missing from the server")
        payload, _name, crc_ok = decode_yenc_article(body)
        sealed = payload[:piece.sealed_len]
        if not crc_ok or len(sealed) != piece.sealed_len or hashlib.sha256(sealed).digest() != piece.sealed_sha256:
            raise TamperedError("the share index does not match its signature (an article was altered)")
        compressed += open_table_piece(share_key, locator_key, piece.pack_nonce, i, sealed)
    return decompress_table(bytes(compressed), ref.table_bytes)


def iter_records(index: OpenedIndex) -> Iterator[list[Any]]:
    """Records of a verified index: chunks from the cache in table order, each re-checked, split on newlines."""
    pending = bytearray()
    total = 0
    for e in index.entries:
        try:
            data = (index.cache / e.chunk_id.hex()).read_bytes()
        except FileNotFoundError:
            raise TamperedError("a chunk of the share index went missing from the reader's cache") from None
        if len(data) != e.plain_len or hashlib.sha256(data).digest() != e.chunk_id:
            raise TamperedError("a chunk in the reader's cache is not the one the share index names")
        total += len(data)
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            pending += data[start:nl]
            if pending:
                yield loads_record(bytes(pending))
            pending.clear()
            start = nl + 1
        pending += data[start:]
        if len(pending) > MAX_RECORD_BYTES:
            raise TamperedError(f"the share index holds a record longer than {MAX_RECORD_BYTES >> 20} MiB")
    if pending.strip():
        yield loads_record(bytes(pending))
