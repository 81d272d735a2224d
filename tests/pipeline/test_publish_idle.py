"""Publishing never leaves a connection idle while it prepares the index.

Owns: the promise that the long first pass over a share's index (chunking the
spooled records: minutes at millions of files) runs before the connection is
opened. A news server drops a client that sends nothing after the greeting:
INN's ``initialtimeout`` (10 s here) closed the 3,000,000-file benchmark's
connection mid-way through `share create` (exit 10). The test makes the first
chunking pass outlast that timeout on the real INN and expects the share to be
published and downloadable.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_share_download import Users, make_folder, snapshot, users  # noqa: F401 - fixture
from usenetsync_cli.pipeline import publish_index


def _initial_timeout() -> float:
    text = Path("/etc/news/inn.conf").read_text()
    m = re.search(r"^initialtimeout:\s*(\d+)", text, re.M)
    assert m, "scripts/inn-up.sh configures initialtimeout"
    return float(m.group(1))


def test_share_create_outlasting_the_servers_initial_timeout_publishes(
    users: Users, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idle = _initial_timeout() + 1.5
    assert idle < 20, "keep the suite short: INN's initialtimeout is expected to be ~10 s"
    real = publish_index.chunk_stream
    calls: list[float] = []

    def slow_first_pass(lines: Iterator[bytes]) -> Any:
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(idle)  # the fault: a first pass as long as a multi-million-file index's
        return real(lines)

    src = tmp_path / "src"
    make_folder(src)
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "upload", str(src), "--redundancy", "0", "--no-backup").code == 0
    monkeypatch.setattr(publish_index, "chunk_stream", slow_first_pass)
    r = users.as_("alice", "share", "create", str(src), "--public", "--name", "idle")
    assert r.code == 0, r.err
    assert len(calls) >= 2 and calls[1] - calls[0] >= idle, calls  # the slow pass ran in this publication
    monkeypatch.setattr(publish_index, "chunk_stream", real)
    sid = users.as_("alice", "share", "show", "idle", "--show-id").out.strip()
    (tmp_path / "id").write_text(sid + "\n")
    (tmp_path / "id").chmod(0o600)
    r = users.as_("bob", "download", "--id-file", str(tmp_path / "id"), str(tmp_path / "dest"))
    assert r.code == 0, r.err
    assert snapshot(tmp_path / "dest") == snapshot(src)
