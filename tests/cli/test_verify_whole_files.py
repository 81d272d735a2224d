"""verify --read-data checks whole-file content hashes for the files it reads completely (real INN)."""

from __future__ import annotations

import os
from pathlib import Path

import apsw
import pytest

from tests.cli.helpers import run
from tests.support.inn import InnServer

SEG = 16_384


def _summary(r):  # type: ignore[no-untyped-def]
    return [x for x in r.json_lines() if x["type"] == "verify.summary"][0]


def test_read_data_checks_whole_files(inn: InnServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 * SEG + 5))
    (src / "small.txt").write_bytes(b"a small file")
    (src / "empty").write_bytes(b"")
    home = tmp_path / "home"
    monkeypatch.setenv("USENETSYNC_HOME", str(home))
    assert run(capsys, "server", "add", "local", "--host", inn.host, "--port", str(inn.port), "--group", inn.group).code == 0
    assert run(capsys, "index", str(src)).code == 0
    assert run(capsys, "upload", str(src), "--segment-size", str(SEG), "--redundancy", "0").code == 0
    r = run(capsys, "verify", "--read-data", "100", "--json")
    assert r.code == 0, r.err
    s = _summary(r)
    assert s["whole_files_checked"] == 2 and s["whole_files_failed"] == []
    # An inconsistent state: the recorded content hash of big.bin is not what its pieces make.
    for n in range(16):
        conn = apsw.Connection(str(home / "state" / "shards" / f"{n:02d}.db"))
        with conn:
            conn.execute("UPDATE files SET content_hash=? WHERE name=?", (os.urandom(32), b"big.bin"))
        conn.close()
    r = run(capsys, "verify", "--read-data", "100", "--json")
    assert r.code == 18, r.err
    assert _summary(r)["whole_files_failed"] == ["big.bin"]
    assert "failed their whole-file hash check" in r.err.strip().splitlines()[-1]
