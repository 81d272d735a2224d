"""Post-check: STAT every posted-but-unverified article of a folder.

Owns: the proof that an article arrived. 240 alone never marks a segment
verified; a pipelined STAT answering 223 does. An article that is missing
after its 240 (at a first look right after posting, and again after a short
delay) goes back to ``planned`` under ``attempt + 1`` (a new
Message-ID: the old one may be remembered by the server), up to
``max_attempts``; past that it is ``failed``.

Commit point: one transaction per shard per page of results (``PAGE``
rows). A crash re-checks at most one page.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from usenetsync_cli.nntp import Connection
from usenetsync_cli.pipeline.encode import FolderContext
from usenetsync_cli.store.segments import PAGE
from usenetsync_cli.store.state import State

_POSTED_PAGE = (
    "SELECT seg_id, attempt, server_msgid, epoch FROM segments"
    " WHERE folder_id=? AND state=1 AND seg_id>? ORDER BY seg_id LIMIT ?"
)


@dataclass
class CheckSummary:
    checked: int = 0
    verified: int = 0
    missing: int = 0
    requeued: int = 0
    failed: int = 0


def check_posted(
    state: State,
    folder_id: int,
    ctx: FolderContext,
    conn: Connection,
    *,
    max_attempts: int,
    recheck_delay: float = 2.0,
    window: int = 256,
    sleep: Callable[[float], None] = time.sleep,
    on_page: Callable[[CheckSummary], None] | None = None,
) -> CheckSummary:
    """STAT every posted article; one found missing is STATed again after ``recheck_delay``.

    The second look is what lets the first come right after posting: a server
    that needs a moment to make an article visible is not mistaken for one that
    lost it (which would cost a needless re-post under a new Message-ID).
    """
    s = CheckSummary()
    suspects: list[tuple[int, int, int, str]] = []  # (shard, seg_id, attempt, msgid): rare, kept in memory
    for shard, sconn in enumerate(state.shards):
        after = 0
        while True:
            rows = sconn.execute(_POSTED_PAGE, (folder_id, after, PAGE)).fetchall()
            if not rows:
                break
            after = rows[-1][0]
            ids = {}
            for seg_id, attempt, server_id, epoch in rows:
                mid = server_id or ctx.message_id(shard, seg_id, attempt, epoch)
                ids[mid] = (seg_id, attempt)
            now = time.time_ns()
            verified: list[tuple[int, int]] = []
            for mid, present in conn.stat_many(list(ids), window=window):
                seg_id, attempt = ids[mid]
                s.checked += 1
                if present:
                    verified.append((now, seg_id))
                    s.verified += 1
                else:
                    suspects.append((shard, seg_id, attempt, mid))
            with sconn:
                sconn.executemany(_VERIFIED, verified)
            if on_page:
                on_page(s)
    if suspects:
        sleep(recheck_delay)
        present = dict(conn.stat_many([m for *_, m in suspects], window=window))
        now = time.time_ns()
        for shard, group in _by_shard(suspects).items():
            verified, requeue, failed = [], [], []
            for seg_id, attempt, mid in group:
                if present.get(mid):
                    verified.append((now, seg_id))
                    s.verified += 1
                    continue
                s.missing += 1
                if attempt + 1 < max_attempts:
                    requeue.append((seg_id,))
                    s.requeued += 1
                else:
                    failed.append((seg_id,))
                    s.failed += 1
            sconn = state.shards[shard]
            with sconn:
                sconn.executemany(_VERIFIED, verified)
                sconn.executemany(
                    "UPDATE segments SET state=0, attempt=attempt+1, server_msgid=NULL,"
                    " error='missing after posting' WHERE seg_id=?",
                    requeue,
                )
                sconn.executemany(
                    "UPDATE segments SET state=3, error='missing after posting, attempts used up'"
                    " WHERE seg_id=?",
                    failed,
                )
    return s


_VERIFIED = "UPDATE segments SET state=2, checked_ns=?, check_result=1 WHERE seg_id=?"


def _by_shard(items: list[tuple[int, int, int, str]]) -> dict[int, list[tuple[int, int, str]]]:
    out: dict[int, list[tuple[int, int, str]]] = {}
    for shard, seg_id, attempt, mid in items:
        out.setdefault(shard, []).append((seg_id, attempt, mid))
    return out

