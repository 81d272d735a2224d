"""Root conftest: per-test environment isolation and the shared plugins.

Owns: the process environment every test starts from.

Invariants (hold at the start of every test, restored afterwards by monkeypatch):
- ``USENETSYNC_HOME`` is a fresh empty directory unique to the test, and no
  other ``USENETSYNC_*`` variable from the developer's shell leaks in.
- ``HOME`` is another fresh directory with ``XDG_CONFIG_HOME``,
  ``XDG_DATA_HOME``, ``XDG_STATE_HOME`` and ``XDG_CACHE_HOME`` under it, so
  nothing (platformdirs, the CLI, libraries) can read or write the real
  user's files.
- Output is deterministic: ``COLUMNS=120`` and ``NO_COLOR=1``.
- ``PATH`` starts with the folder of ``sys.executable``, so ``usenetsync`` by name is
  the console script of the interpreter under test.
- ``USENETSYNC_TESTONLY_WEAKEN_KDF=1``: new identity files and password
  shares use the cheapest Argon2id (core/kdf.py ``for_new_data``).

``tests.support.inn`` is loaded as a plugin so its ``inn``/``inn_server``
fixtures are available in every test package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.inn"]


def isolate_environment(monkeypatch: pytest.MonkeyPatch, usenetsync_home: Path, home: Path) -> None:
    """Apply the isolation invariants above using ``monkeypatch`` (so they are undone)."""
    for name in list(os.environ):
        if name.startswith("USENETSYNC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("USENETSYNC_HOME", str(usenetsync_home))
    # Argon2id at its real cost is ~1 s a wrap here; tests that check the real cost unset this.
    monkeypatch.setenv("USENETSYNC_TESTONLY_WEAKEN_KDF", "1")
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_CACHE_HOME", ".cache"),
    ):
        path = home / sub
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(path))
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("NO_COLOR", "1")
    # A subprocess that calls `usenetsync` by name (the cron example, shell lines) must run the console
    # script of the interpreter running the tests (the project's .venv), not another install on PATH.
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every config/data location at fresh temp dirs; returns USENETSYNC_HOME."""
    # tmp_path_factory rather than tmp_path: tests keep tmp_path to themselves.
    usenetsync_home = tmp_path_factory.mktemp("usenetsync_home")
    isolate_environment(monkeypatch, usenetsync_home, tmp_path_factory.mktemp("home"))
    return usenetsync_home
