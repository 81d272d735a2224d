"""Posting a share version's index: its new chunks in packs, then its chunk table.

Owns the publisher's side of core/index_chunks.py: which chunks a version
can reuse from the share's earlier versions, packing and posting the others,
posting the table, and the share's chunk rows in catalog.db
(``share_chunks``/``share_packs``).

Reuse rules: a chunk is reused only from a pack that is still on the server
(STAT, pipelined, once per pack) and at least half live in this version;
a pack below half live has its live chunks posted again, so a reader never
fetches mostly dead bytes and the publisher's table does not grow with old
versions. The rows are the current version's layout only.

Commit point: ``save_layout`` replaces the share's rows in the caller's
transaction that also records the published version, after the root is
confirmed; a crash before it leaves orphan articles, never a row naming an
article that a published version does not reference.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import apsw
import zstandard

from usenetsync_cli.core.index_chunks import (
    PACK_BYTES,
    Chunk,
    TableEntry,
    chunk_stream,
    seal_chunk,
    seal_table_piece,
    table_line,
)
from usenetsync_cli.core.share_root import PART_CHUNK, IndexRef, TablePiece, padded, part_message_id
from usenetsync_cli.nntp import Connection

PostFn = Callable[[str, bytes], None]


@dataclass
class IndexPosting:
    ref: IndexRef
    entries: list[TableEntry]
    packs: dict[bytes, int]  # pack nonce -> sealed bytes in it, of every pack the version references
    posted_ids: list[str] = field(default_factory=list)
    chunks_new: int = 0
    chunks_reused: int = 0
    bytes_posted: int = 0  # index bytes posted for this version (new chunks and the table)

    def send(self, post: PostFn, locator_key: bytes, nonce: bytes, sealed: bytes) -> None:
        """Post one index article (``sealed``, padded) under the Message-ID of ``nonce``."""
        payload = padded(sealed)
        mid = part_message_id(locator_key, nonce, 0)
        post(mid, payload)
        self.posted_ids.append(mid)
        self.bytes_posted += len(payload)


def known_layout(catalog: apsw.Connection, share_pk: int) -> tuple[dict[bytes, TableEntry], dict[bytes, int]]:
    """The share's current chunk rows: chunk id -> where it is, and pack nonce -> its size."""
    chunks = {
        cid: TableEntry(cid, plain, nonce, off, sealed)
        for cid, nonce, off, sealed, plain in catalog.execute(
            "SELECT chunk_id, pack_nonce, offset, sealed_len, plain_len FROM share_chunks WHERE share_pk=?",
            (share_pk,))
    }
    packs = dict(catalog.execute("SELECT pack_nonce, size FROM share_packs WHERE share_pk=?", (share_pk,)).fetchall())
    return chunks, packs


def forget_layout(catalog: apsw.Connection, share_pk: int) -> None:
    """The share key changed: nothing sealed under the old one may be referenced again."""
    catalog.execute("DELETE FROM share_chunks WHERE share_pk=?", (share_pk,))
    catalog.execute("DELETE FROM share_packs WHERE share_pk=?", (share_pk,))


def save_layout(catalog: apsw.Connection, share_pk: int, posting: IndexPosting) -> None:
    """Commit point (inside the caller's transaction): the rows become this version's layout."""
    forget_layout(catalog, share_pk)
    seen: set[bytes] = set()
    for e in posting.entries:
        if e.chunk_id not in seen:
            seen.add(e.chunk_id)
            catalog.execute("INSERT INTO share_chunks VALUES(?,?,?,?,?,?)",
                            (share_pk, e.chunk_id, e.pack_nonce, e.offset, e.sealed_len, e.plain_len))
    catalog.executemany("INSERT INTO share_packs VALUES(?,?,?)", [(share_pk, n, s) for n, s in posting.packs.items()])


def _lines(spool: BinaryIO) -> Iterator[bytes]:
    spool.seek(0)
    yield from spool


def _kept_packs(
    conn: Connection, chunk_ids: list[bytes], known: dict[bytes, TableEntry], packs: dict[bytes, int],
    locator_key: bytes,
) -> set[bytes]:
    live: dict[bytes, int] = {}
    for cid in set(chunk_ids):
        e = known.get(cid)
        if e is not None:
            live[e.pack_nonce] = live.get(e.pack_nonce, 0) + e.sealed_len
    half_live = [n for n, b in live.items() if n in packs and 2 * b >= packs[n]]
    ids = {part_message_id(locator_key, n, 0): n for n in half_live}
    return {ids[mid] for mid, ok in conn.stat_many(list(ids)) if ok}


class _Packer:
    """Fills pack articles with sealed chunks and posts each when full."""

    def __init__(self, post: PostFn, locator_key: bytes, posting: IndexPosting) -> None:
        self.post, self.locator_key, self.posting = post, locator_key, posting
        self.buf = bytearray()
        self.nonce = os.urandom(16)

    def add(self, chunk: Chunk, sealed: bytes) -> TableEntry:
        if len(self.buf) + len(sealed) > PACK_BYTES:
            self.flush()
        entry = TableEntry(chunk.chunk_id, len(chunk.plain), self.nonce, len(self.buf), len(sealed))
        self.buf += sealed
        return entry

    def flush(self) -> None:
        if not self.buf:
            return
        self.posting.send(self.post, self.locator_key, self.nonce, bytes(self.buf))
        self.posting.packs[self.nonce] = len(self.buf)
        self.buf = bytearray()
        self.nonce = os.urandom(16)


def index_chunk_ids(spool: BinaryIO) -> list[bytes]:
    """The chunk ids of the index in ``spool`` (the first of post_index's two passes).

    Run it before connecting: at millions of files it takes minutes, and a server drops a connection
    that sends nothing that long (INN's ``initialtimeout`` is 10 s after the greeting)."""
    return [c.chunk_id for c in chunk_stream(_lines(spool))]


def post_index(
    conn: Connection, post: PostFn, spool: BinaryIO, *, share_key: bytes, locator_key: bytes,
    known: dict[bytes, TableEntry], packs: dict[bytes, int], chunk_ids: list[bytes] | None = None,
) -> IndexPosting:
    """Post what this version's index needs (``spool``: its record lines, in order) and its table.

    ``chunk_ids``: ``index_chunk_ids(spool)``, computed before ``conn`` was opened (else here)."""
    # Two passes over the spool (chunking is deterministic): memory holds chunk ids, not the index.
    ids = index_chunk_ids(spool) if chunk_ids is None else chunk_ids
    kept = _kept_packs(conn, ids, known, packs, locator_key)
    posting = IndexPosting(ref=IndexRef((), 0, 0, 0), entries=[], packs={n: packs[n] for n in kept})
    packer = _Packer(post, locator_key, posting)
    placed: dict[bytes, TableEntry] = {}
    plain_bytes = 0
    for c in chunk_stream(_lines(spool)):
        plain_bytes += len(c.plain)
        e = placed.get(c.chunk_id)
        if e is None:
            old = known.get(c.chunk_id)
            if old is not None and old.pack_nonce in kept:
                e = old
                posting.chunks_reused += 1
            else:
                e = packer.add(c, seal_chunk(share_key, locator_key, c))
                posting.chunks_new += 1
            placed[c.chunk_id] = e
        posting.entries.append(e)
    packer.flush()
    table = b"".join(table_line(e) for e in posting.entries)
    compressed = zstandard.ZstdCompressor(level=3).compress(table)
    pieces = []
    for i, start in enumerate(range(0, max(len(compressed), 1), PART_CHUNK)):
        nonce = os.urandom(16)
        sealed = seal_table_piece(share_key, locator_key, nonce, i, compressed[start:start + PART_CHUNK])
        posting.send(post, locator_key, nonce, sealed)
        pieces.append(TablePiece(nonce, len(sealed), hashlib.sha256(sealed).digest()))
    posting.ref = IndexRef(table=tuple(pieces), table_bytes=len(table), chunks=len(posting.entries),
                           plain_bytes=plain_bytes)
    return posting
