"""Catalog schema v10 (the folder's stored `index` selection): older states migrate, older programs refuse.

A state written before v10 is rebuilt from a real one by dropping the
column and setting the version back; opening it migrates, the folder has no
rules, and rules can be stored. A program that knows only v9 refuses a v10
state with the "newer version" error, exit 5, one line.
"""

from __future__ import annotations

import os
from pathlib import Path

import apsw
import pytest

from tests.cli.helpers import run
from usenetsync_cli.store import db
from usenetsync_cli.store.schema import CATALOG_MIGRATIONS

V10 = 10


def _folder_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    r = run(capsys, "status", "--json")
    assert r.code == 0, r.err
    (folder,) = [x for x in r.json_lines() if x["type"] == "status.folder"]
    return folder


def test_a_v9_catalog_migrates_with_no_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert len(CATALOG_MIGRATIONS) == V10
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.tmp").write_bytes(b"a")
    (src / "b.txt").write_bytes(b"b")
    assert run(capsys, "index", str(src)).code == 0
    catalog = Path(os.environ["USENETSYNC_HOME"]) / "state" / "catalog.db"
    conn = apsw.Connection(str(catalog))
    conn.execute("ALTER TABLE folders DROP COLUMN selection")  # as v9 left it
    conn.execute("PRAGMA user_version=9")
    conn.close()

    r = run(capsys, "index", str(src), "--json")
    assert r.code == 0, r.err
    (summary,) = r.json_lines()
    assert (summary["new"], summary["unchanged"], summary["excluded"]) == (0, 2, 0)
    conn = apsw.Connection(str(catalog))
    assert db.user_version(conn) == V10
    assert conn.execute("SELECT selection FROM folders").fetchall() == [(None,)]
    conn.close()
    assert _folder_json(capsys)["selection"] == {"exclude": [], "exclude_caches": False, "one_file_system": False}
    r = run(capsys, "index", str(src), "--exclude", "*.tmp", "--json")
    assert r.json_lines()[0]["deleted"] == 1
    assert _folder_json(capsys)["selection"]["exclude"] == ["*.tmp"]  # type: ignore[index]


def test_an_older_program_refuses_a_v10_state(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    assert run(capsys, "index", str(src), "--exclude", "*.tmp").code == 0
    monkeypatch.setattr("usenetsync_cli.store.state.CATALOG_MIGRATIONS", CATALOG_MIGRATIONS[:9])  # the v9 program
    r = run(capsys, "status")
    assert r.code == 5, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "schema version 10, newer than this usenetsync knows (9)" in lines[0]
    assert "written by a newer version" in lines[0]
