"""Tests of the home-wide lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from usenetsync_cli.errors import LockedError
from usenetsync_cli.store.lock import HomeLock

HOLD = """
import sys, time
from pathlib import Path
from usenetsync_cli.store.lock import HomeLock
lock = HomeLock(Path(sys.argv[1])); lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(path: Path, seconds: float) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_second_holder_fails_fast_with_pid(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    p = _holder(path, 30)
    try:
        with pytest.raises(LockedError, match=f"pid {p.pid}"):
            HomeLock(path).acquire()
    finally:
        p.kill()
        p.wait()


def test_lock_released_by_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    p = _holder(path, 30)
    p.kill()  # SIGKILL: no cleanup code runs
    p.wait()
    with HomeLock(path):
        assert path.read_text().strip() == str(os.getpid())


def test_lock_wait_outlasts_a_short_holder(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    p = _holder(path, 0.5)
    t = time.monotonic()
    with HomeLock(path, wait=10):
        assert time.monotonic() - t < 9
    p.wait()


def test_lock_wait_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    p = _holder(path, 30)
    try:
        t = time.monotonic()
        with pytest.raises(LockedError):
            HomeLock(path, wait=0.3).acquire()
        assert time.monotonic() - t >= 0.3
    finally:
        p.kill()
        p.wait()
