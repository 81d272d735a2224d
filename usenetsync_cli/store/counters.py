"""Counts of a folder's segments and files, read from counters instead of rows.

Owns: every figure a command shows or decides on that would otherwise count
rows (planned, posted, verified, failed, bytes, present, at risk, files per
shard), and the list of the per-command hot queries with the index each uses.

Invariant: ``segment_counts`` and ``file_counts`` (shard schema v9) are kept
by triggers on ``segments`` and ``files``, so they change in the same
transaction as the rows they count, by whatever statement, and a crash
(kill -9 included) can never leave them disagreeing with the rows. Reading
one is a handful of rows per shard, whatever the size of the folder.
``last_checked_ns`` is the newest ``checked_ns`` ever counted in a group; it
is never lowered when rows leave the group (it answers "when was this folder
last checked", not "which rows").

Hot queries (what runs per command at any state size, and why it is cheap):

====================================  =============================================  ==========================
query                                 where                                          index / cost
====================================  =============================================  ==========================
planned/posted/failed/live counts     upload, repair, verify, status (this module)   segment_counts, 16 rows
files per shard, present files        status                                         file_counts
files needing a plan                  plan._NEEDS_PLAN (keyset, 2,000 a page)        files_unplanned (partial)
planned segments to post              segments.iter_segments (keyset, 1,000 a page)  segments_work
in-doubt segments after a crash       upload.probe_in_doubt (≤ 256 a shard)          segments_work
never-checked / oldest-checked page   verify._UNCHECKED, verify._PAGE                segments_due (partial)
checked since the sweep began         verify (unchecked_left = live - this)          segments_due range
segments found missing or damaged     verify.damaged_files                           segments_bad (partial)
unsettled files                       settle (keyset)                                files_unsettled (partial)
verified segments without a BLAKE3    settle.backfill (keyset, end of every upload)  segments_nohash (partial)
one file's segments                   feed, publish, settle                          segments_file
files and packs of a share            publish (keyset pages of 5,000)                primary keys
====================================  =============================================  ==========================

Anything else that walks a table whose size grows with the folder runs only
on request (``state check``, adopt, migrations).
"""

from __future__ import annotations

from dataclasses import dataclass

import apsw

from usenetsync_cli.store.state import State

_PRESENT, _MISSING, _DAMAGED = 1, 0, 2


def by_state(conn: apsw.Connection, folder_id: int) -> dict[int, tuple[int, int]]:
    """state -> (segments, payload bytes) of one folder in one shard (states with none are left out)."""
    out: dict[int, tuple[int, int]] = {}
    for st, n, b in conn.execute(
        "SELECT state, sum(n), sum(bytes) FROM segment_counts WHERE folder_id=? GROUP BY state", (folder_id,)
    ):
        if n:
            out[st] = (n, b)
    return out


def folder_by_state(state: State, folder_id: int) -> dict[int, tuple[int, int]]:
    """state -> (segments, payload bytes) of one folder over every shard."""
    totals: dict[int, tuple[int, int]] = {}
    for conn in state.shards:
        for st, (n, b) in by_state(conn, folder_id).items():
            t = totals.get(st, (0, 0))
            totals[st] = (t[0] + n, t[1] + b)
    return totals


def count(state: State, folder_id: int, *states: int) -> int:
    """Segments of a folder in any of ``states``."""
    totals = folder_by_state(state, folder_id)
    return sum(totals.get(st, (0, 0))[0] for st in states)


def count_bytes(state: State, folder_id: int, *states: int) -> tuple[int, int]:
    """(segments, payload bytes) of a folder in any of ``states``."""
    totals = folder_by_state(state, folder_id)
    return (sum(totals.get(st, (0, 0))[0] for st in states), sum(totals.get(st, (0, 0))[1] for st in states))


@dataclass(frozen=True)
class Health:
    articles: int  # live posted segments (posted or verified)
    present: int  # ... last found present
    at_risk: int  # ... last found missing or damaged
    last_checked_ns: int  # newest check of any of them, 0 if never


def health(state: State, folder_id: int) -> Health:
    total = present = at_risk = last = 0
    for conn in state.shards:
        for chk, n, last_ns in conn.execute(
            "SELECT chk, sum(n), max(last_checked_ns) FROM segment_counts WHERE folder_id=? AND state IN (1,2)"
            " GROUP BY chk", (folder_id,)
        ):
            total += n
            present += n if chk == _PRESENT else 0
            at_risk += n if chk in (_MISSING, _DAMAGED) else 0
            if n:
                last = max(last, last_ns)
    return Health(total, present, at_risk, last)


def shard_overview(conn: apsw.Connection) -> tuple[int, int, dict[int, int]]:
    """(file rows, present files, state -> segments) of one shard, every folder."""
    rows = present = 0
    for p, n in conn.execute("SELECT present, sum(n) FROM file_counts GROUP BY present"):
        rows += n
        present += n if p else 0
    segs = {st: n for st, n in conn.execute("SELECT state, sum(n) FROM segment_counts GROUP BY state")}
    return rows, present, segs


def recount(conn: apsw.Connection) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """(segment groups, file groups) counted from the rows themselves, in the counters' shape.

    A full scan: for ``state check`` and tests that prove the counters right,
    never for a per-command figure. Groups that count nothing are left out.
    """
    segs = conn.execute(
        "SELECT folder_id, state, coalesce(check_result, -1), count(*), sum(length) FROM segments"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3").fetchall()
    files = conn.execute(
        "SELECT folder_id, present, kind, count(*), sum(size) FROM files GROUP BY 1, 2, 3 ORDER BY 1, 2, 3").fetchall()
    return segs, files


def stored(conn: apsw.Connection) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """The counters as stored, in ``recount``'s shape."""
    segs = conn.execute(
        "SELECT folder_id, state, chk, n, bytes FROM segment_counts WHERE n<>0 ORDER BY 1, 2, 3").fetchall()
    files = conn.execute(
        "SELECT folder_id, present, kind, n, bytes FROM file_counts WHERE n<>0 ORDER BY 1, 2, 3").fetchall()
    return segs, files
