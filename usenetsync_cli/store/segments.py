"""Streaming queries over the segment layout of a folder.

Owns: reading segments of one state shard by shard with keyset pagination
(pages of ``PAGE`` rows, no cursor held open across a page); the feeder
(pipeline/feed.py) resolves their file paths.

Invariant: memory is bounded by one page whatever the size of the folder.
"""

from __future__ import annotations

from collections.abc import Iterator

import apsw

from usenetsync_cli.store.db import keyset_pages

PAGE = 1000
STATE_PLANNED, STATE_POSTED, STATE_VERIFIED, STATE_FAILED, STATE_SUPERSEDED = 0, 1, 2, 3, 4

_PENDING = (
    "SELECT seg_id, file_id, offset, length, attempt, hash, nonce, epoch FROM segments"
    " WHERE folder_id=? AND state=? AND seg_id>? ORDER BY seg_id LIMIT ?"
)


def iter_segments(conn: apsw.Connection, folder_id: int, state: int, after: int = 0) -> Iterator[tuple[int, ...]]:
    """(seg_id, file_id, offset, length, attempt, hash, nonce, epoch) of every segment in ``state``, by seg_id
    (those above ``after``)."""
    for rows in keyset_pages(conn, _PENDING, (folder_id, state), PAGE, after):
        yield from rows


def pack_layout(conn: apsw.Connection, seg_id: int) -> list[tuple[int, int]]:
    """(offset, length) of every member sealed into pack ``seg_id``, in pack order.

    Member rows of a live (posted) pack are kept until the pack itself is
    superseded, even for files that moved on, precisely so that its segment
    hash (core.hashing.pack_hash) can be recomputed from its payload.
    """
    return [
        (off, n)
        for off, n in conn.execute(
            "SELECT pack_offset, length FROM pack_members WHERE seg_id=? ORDER BY pack_offset", (seg_id,)
        )
    ]
