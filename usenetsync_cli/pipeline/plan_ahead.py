"""Planning ahead of posting: the planner runs in its own thread while the feeder posts what it committed.

Owns: the planner thread of an upload round (``PlanAhead``) and the signal
the feeder follows (``PlanFollow``): which shards are fully planned, and a
tick for every committed planning transaction.

Why: planning every segment first kept a 20 TB folder (26M segments) from
posting its first article for six minutes. Now the first article goes out as
soon as the first planning transaction of shard 0 commits (plan.py bounds
every transaction), and posting and planning overlap.

Invariants:
- The planner has its own connections (``State.reopen``) and writes only in
  plan.py's transactions (the same commit point as before: a file is planned
  wholly or not at all). The feeder reads only committed rows; the
  collector's writes guard on ``state=0``, so a segment the planner
  superseded meanwhile (its file changed under a post) stays superseded.
- The feeder leaves shard ``n`` only after it found no planned row there
  *after* the planner had reported shard ``n`` done, so no committed row is
  ever skipped; a round ends when every shard is planned and fed.
- Exactly-once is unchanged: the feeder's durable marks (upload.MARK_RESERVE)
  are written before any segment below them is handed out, wherever the
  planner is; kill -9 during planning leaves unplanned files, which the next
  run plans, and planned segments, which it posts (tests/pipeline/
  test_plan_ahead.py kills in both phases).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from usenetsync_cli.pipeline.plan import PlanSummary, plan_folder
from usenetsync_cli.store import catalog
from usenetsync_cli.store.state import NSHARDS, State

# Test hook, as USENETSYNC_TESTONLY_WEAKEN_KDF: "N:PATH" makes the planner, after its Nth committed
# transaction that planned segments, create PATH and hold until the upload stops or PATH is removed,
# so a test can land a kill -9 mid-planning, or post while planning, without relying on timing.
HOLD_ENV = "USENETSYNC_TESTONLY_PLAN_HOLD"


class PlanFollow:
    """How far a planner has got; every field changes under ``cond``."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.shards_done = 0  # shards 0 .. shards_done-1 are fully planned
        self.commits = 0  # planning transactions committed so far
        self.segments_committed = 0  # segments those transactions planned (summary counts ahead of a commit)
        self.finished = False
        self.error: BaseException | None = None
        self.summary = PlanSummary()

    @classmethod
    def done(cls) -> PlanFollow:
        """A follow for rows that are all planned already (repair, or no planner)."""
        f = cls()
        f.shards_done, f.finished = NSHARDS, True
        return f

    def committed(self, shard: int, chunk_done: bool) -> None:
        with self.cond:
            self.commits += 1
            self.segments_committed = self.summary.segments
            if chunk_done:
                self.shards_done = max(self.shards_done, shard + 1)
            self.cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self.cond:
            self.shards_done = NSHARDS
            self.finished = True
            self.error = error
            self.cond.notify_all()

    def wait_change(self, seen_commits: int, timeout: float) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.commits != seen_commits or self.finished, timeout)


class PlanAhead:
    """One round's planner thread."""

    def __init__(self, state: State, folder: catalog.Folder, segment_size: int, stop: threading.Event) -> None:
        self.follow = PlanFollow()
        self._state = state
        self._folder = folder
        self._segment_size = segment_size
        self._stop = stop  # the upload's: Ctrl-C, SIGTERM
        self._halt = threading.Event()  # this planner's own: the round failed
        self._thread = threading.Thread(target=self._run, name="planner", daemon=True)

    def start(self) -> PlanAhead:
        self._thread.start()
        return self

    def halted(self) -> bool:
        return self._stop.is_set() or self._halt.is_set()

    def wait_for_work(self) -> None:
        """Until the planner committed segments, or finished (then there may be nothing new)."""
        f = self.follow
        with f.cond:
            while not f.cond.wait_for(lambda: f.finished or f.segments_committed > 0 or self.halted(), timeout=0.2):
                pass

    def cancel(self) -> None:
        """Stop the planner between transactions and wait for it; its own error, if any, is dropped
        (the caller is already raising one)."""
        self._halt.set()
        self._thread.join()

    def join(self) -> PlanSummary:
        """Wait for the planner; re-raise what it raised."""
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)
        if self.follow.error is not None:
            raise self.follow.error
        return self.follow.summary

    def _run(self) -> None:
        hold = _hold()
        try:
            own = self._state.reopen()
        except BaseException as e:  # noqa: BLE001 - carried to the caller's thread by join()
            self.follow.finish(e)
            return
        planned_commits = [0]
        try:
            def on_commit(shard: int, shard_done: bool) -> None:
                self.follow.committed(shard, shard_done)
                if hold is None or shard_done or not self.follow.segments_committed:
                    return
                planned_commits[0] += 1
                if planned_commits[0] == hold[0]:  # once
                    hold[1].touch()
                    while not self.halted() and hold[1].exists():
                        self._halt.wait(0.05)
            plan_folder(own, self._folder, self._segment_size, summary=self.follow.summary, on_commit=on_commit,
                        halted=self.halted)
        except BaseException as e:  # noqa: BLE001 - carried to the caller's thread by join()
            self.follow.finish(e)
        else:
            self.follow.finish()
        finally:
            own.close()


def _hold() -> tuple[int, Path] | None:
    raw = os.environ.get(HOLD_ENV)
    if not raw:
        return None
    n, _, path = raw.partition(":")
    return int(n), Path(path)
