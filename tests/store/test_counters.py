"""The counters (shard schema v9) always equal a full count of the rows they count.

A hypothesis state machine drives a shard through random inserts, updates
and deletes of segments and files, with the statements' shapes the program
uses (plain inserts, upserts, updates of state / check results / checked_ns /
lengths, deletes by folder), some inside transactions that roll back, and
checks after every step that ``segment_counts`` and ``file_counts`` equal
``counters.recount``. The migration test builds a v8 shard with rows and
checks that v9 starts from the right counts.
"""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from usenetsync_cli.store import counters, db
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.schema import SHARD_MIGRATIONS
from usenetsync_cli.store.state import State

FOLDERS = st.integers(1, 2)
NAMES = st.integers(0, 3)  # few names and times, so rules meet the same rows and values
STATES = st.integers(0, 4)
CHECKS = st.sampled_from([None, 0, 1, 2])
LENGTHS = st.integers(0, 800_000)


def _shard() -> apsw.Connection:
    conn = apsw.Connection(":memory:")
    db.migrate(conn, SHARD_MIGRATIONS, name="mem")
    return conn


class CounterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.conn = _shard()
        self.file_names = 0

    @rule(folder=FOLDERS, state=STATES, chk=CHECKS, length=LENGTHS, checked=st.none() | st.integers(1, 10**6))
    def insert_segment(self, folder: int, state: int, chk: int | None, length: int, checked: int | None) -> None:
        self.conn.execute(
            "INSERT INTO segments(folder_id, file_id, idx, offset, length, state, check_result, checked_ns)"
            " VALUES(?,NULL,0,0,?,?,?,?)", (folder, length, state, chk, checked))

    @rule(n=st.integers(1, 50), folder=FOLDERS, length=LENGTHS)
    def plan_many(self, n: int, folder: int, length: int) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT INTO segments(folder_id, file_id, idx, offset, length, gen, epoch) VALUES(?,?,?,?,?,?,?)",
                [(folder, 7, i, i * length, length, 1, 0) for i in range(n)])

    @rule(pick=st.integers(0, 10**6), state=STATES)
    def set_state(self, pick: int, state: int) -> None:
        self.conn.execute("UPDATE segments SET state=? WHERE seg_id=(SELECT seg_id FROM segments ORDER BY seg_id"
                          " LIMIT 1 OFFSET ?)", (state, pick % max(1, self._nseg())))

    @rule(pick=st.integers(0, 10**6), chk=CHECKS, when=st.sampled_from([5, 7]))
    def check_result(self, pick: int, chk: int | None, when: int) -> None:
        # verify's statement: result, time, and posted -> verified when present
        self.conn.execute(
            "UPDATE segments SET checked_ns=?, check_result=?, state=CASE WHEN state=1 AND ?=1 THEN 2 ELSE state END"
            " WHERE seg_id=(SELECT seg_id FROM segments ORDER BY seg_id LIMIT 1 OFFSET ?)",
            (when, chk, chk, pick % max(1, self._nseg())))

    @rule(pick=st.integers(0, 10**6), length=LENGTHS)
    def set_length(self, pick: int, length: int) -> None:
        self.conn.execute("UPDATE segments SET length=? WHERE seg_id=(SELECT seg_id FROM segments ORDER BY seg_id"
                          " LIMIT 1 OFFSET ?)", (length, pick % max(1, self._nseg())))

    @rule(frm=STATES, to=STATES, folder=FOLDERS)
    def bulk_state(self, frm: int, to: int, folder: int) -> None:
        self.conn.execute("UPDATE segments SET state=? WHERE folder_id=? AND state=?", (to, folder, frm))

    @rule(folder=FOLDERS)
    def forget_folder(self, folder: int) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM segments WHERE folder_id=?", (folder,))
            self.conn.execute("DELETE FROM files WHERE folder_id=?", (folder,))

    @rule(folder=FOLDERS, size=st.integers(0, 10**9), kind=st.integers(0, 1), name=NAMES)
    def index_file(self, folder: int, size: int, kind: int, name: int) -> None:
        # the indexer's upsert: a deleted file that comes back is updated, not inserted
        self.conn.execute(
            "INSERT INTO files(folder_id, dir_id, name, kind, size, mtime_ns, ctime_ns, inode, mode, present)"
            " VALUES(?,1,?,?,?,0,0,0,0,1) ON CONFLICT(folder_id, dir_id, name) DO UPDATE SET kind=excluded.kind,"
            " size=excluded.size, present=1", (folder, b"f%d" % name, kind, size))

    @rule(folder=FOLDERS, name=NAMES, present=st.integers(0, 1))
    def file_present(self, folder: int, name: int, present: int) -> None:
        self.conn.execute("UPDATE files SET present=? WHERE folder_id=? AND name=?", (present, folder, b"f%d" % name))

    @rule(folder=FOLDERS, name=NAMES)
    def plan_file(self, folder: int, name: int) -> None:
        # planning writes plan_* and gen: columns the counters do not count
        self.conn.execute("UPDATE files SET plan_size=size, gen=gen+1 WHERE folder_id=? AND name=?",
                          (folder, b"f%d" % name))

    @rule(folder=FOLDERS, state=STATES)
    def rolled_back(self, folder: int, state: int) -> None:
        with pytest.raises(ZeroDivisionError):
            with self.conn:
                self.conn.execute("UPDATE segments SET state=? WHERE folder_id=?", (state, folder))
                self.conn.execute("DELETE FROM files WHERE folder_id=?", (folder,))
                raise ZeroDivisionError

    def _nseg(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM segments").fetchall()[0][0])

    @invariant()
    def counters_equal_a_recount(self) -> None:
        assert counters.stored(self.conn) == counters.recount(self.conn)


TestCounters = CounterMachine.TestCase
TestCounters.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_health_and_by_state_read_the_counters(tmp_path: Path) -> None:
    with State.open(Home.resolve(tmp_path / "home")) as state:
        conn = state.shards[3]
        rows = [(1, 100, 1, 1, 5), (1, 200, 2, 1, 9), (1, 300, 2, 0, 7), (1, 50, 1, None, None), (1, 70, 0, None, None),
                (1, 80, 4, 1, 99), (2, 10, 2, 2, 3)]
        conn.executemany("INSERT INTO segments(folder_id, file_id, idx, offset, length, state, check_result, checked_ns)"
                         " VALUES(?,NULL,0,0,?,?,?,?)", rows)
        h = counters.health(state, 1)
        # live posted: states 1 and 2 only; superseded (4) and planned (0) are not articles
        assert (h.articles, h.present, h.at_risk, h.last_checked_ns) == (4, 2, 1, 9)
        assert counters.folder_by_state(state, 1) == {0: (1, 70), 1: (2, 150), 2: (2, 500), 4: (1, 80)}
        assert counters.count_bytes(state, 1, 1, 2) == (4, 650)
        assert counters.count(state, 2, 2) == 1


def test_migration_to_v9_counts_existing_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = db.connect(path)
    db.migrate(old, SHARD_MIGRATIONS[:8], name="old.db")
    old.executemany("INSERT INTO segments(folder_id, file_id, idx, offset, length, state, check_result, checked_ns)"
                    " VALUES(?,NULL,0,0,?,?,?,?)", [(1, 10, 2, 1, 5), (1, 20, 2, 1, 6), (1, 5, 0, None, None)])
    old.executemany("INSERT INTO files(folder_id, dir_id, name, kind, size, mtime_ns, ctime_ns, inode, mode, present)"
                    " VALUES(1,1,?,0,?,0,0,0,0,?)", [(b"a", 3, 1), (b"b", 4, 0)])
    old.close()
    conn = db.connect(path)
    assert db.migrate(conn, SHARD_MIGRATIONS, name="old.db") == 8
    assert counters.stored(conn) == counters.recount(conn)
    assert counters.stored(conn)[0] == [(1, 0, -1, 1, 5), (1, 2, 1, 2, 30)]
