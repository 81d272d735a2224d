"""Memory of a download against a server that has lost most of a share: flat, whatever the count.

The publisher's layout is fabricated (tests/pipeline/upload_support.py
``fabricate_posted``: the rows a real upload writes, for sparse all-zero
files) and its share index published to the real INN, but no segment was
ever posted: every article is missing. Failed segments are spilled to the
reader's database, never kept in a growing list, so the peak RSS of a
download with 100,000 missing segments stays within a few MB of one with
10,000 (measured in the child process by the kernel: ``wait4`` rusage).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import run
from tests.pipeline.upload_support import fabricate_posted
from tests.support.inn import InnServer
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

SEG = 16_384
PER_FILE = 100  # segments per file


def _share_of_missing(tmp: Path, inn: InnServer, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch,
                      segments: int, tag: str) -> str:
    src = tmp / f"src-{tag}"
    src.mkdir()
    for i in range(segments // PER_FILE):
        with open(src / f"f{i:05d}.bin", "wb") as f:
            f.truncate(PER_FILE * SEG)  # sparse: no data written
    home = tmp / f"alice-{tag}"
    mp.setenv("USENETSYNC_HOME", str(home))
    assert run(capsys, "server", "add", "local", "--host", inn.host, "--port", str(inn.port), "--group", inn.group).code == 0
    assert run(capsys, "keys", "init", "--no-passphrase").code == 0
    assert run(capsys, "index", str(src)).code == 0
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        assert fabricate_posted(st, folder, SEG) == segments
    r = run(capsys, "share", "create", str(src), "--public", "--name", "s")
    assert r.code == 0 and "published share 's' version 1" in r.err, r.err
    r = run(capsys, "share", "show", "s", "--show-id")
    return r.out.strip().splitlines()[-1]


def _peak_rss_download(tmp: Path, sid: str, tag: str) -> tuple[int, str]:
    home = tmp / f"bob-{tag}"
    env = {**os.environ, "USENETSYNC_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "usenetsync_cli", "server", "add", "local", "--host", "127.0.0.1",
                    "--port", "119", "--group", "alt.binaries.test"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "usenetsync_cli", "download", sid, str(tmp / f"dest-{tag}"),
                             "--connections", "4"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 16, err  # every file damaged, the run ends cleanly
    return usage.ru_maxrss * 1024, err


def test_missing_segments_do_not_grow_memory(inn: InnServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    small = _share_of_missing(tmp_path, inn, capsys, monkeypatch, 10_000, "10k")
    large = _share_of_missing(tmp_path, inn, capsys, monkeypatch, 100_000, "100k")
    rss_small, err_small = _peak_rss_download(tmp_path, small, "10k")
    rss_large, err_large = _peak_rss_download(tmp_path, large, "100k")
    assert "100 file(s) could not be completed" in err_small
    assert "1,000 file(s) could not be completed" in err_large
    assert rss_large - rss_small <= 10 * 1024 * 1024, (rss_small, rss_large)
