"""Indexing with a selection (pipeline/index.py): the state holds exactly the files the rules keep.

Whether a directory arrives whole or in parts (``scan.CHUNK_ENTRIES``), a
path excluded after it was indexed is marked deleted, a stored selection is
applied again when none is given, and clearing it brings the paths back.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.pipeline.test_index import _mk, _present, _truth, state  # noqa: F401 - fixture
from usenetsync_cli.core.excludes import Selection
from usenetsync_cli.pipeline import scan
from usenetsync_cli.pipeline.index import index_folder
from usenetsync_cli.store.state import State


@pytest.mark.parametrize("chunk", [3, 10**9])
def test_the_state_follows_the_selection(state: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                         chunk: int) -> None:
    monkeypatch.setattr(scan, "CHUNK_ENTRIES", chunk)
    src = tmp_path / "src"
    for i in range(20):
        _mk(src, f"big/f{i}.{'tmp' if i % 3 == 0 else 'txt'}", b"x" * i)
        _mk(src, f"big/node_modules/m{i}", b"m")
    _mk(src, "keep.tmp")
    _mk(src, "sub/deep/node_modules/x/y.js")
    truth = _truth(src)
    first = index_folder(state, src)
    assert _present(state, first.folder_id) == truth

    sel = Selection.make(["*.tmp", "!keep.tmp", "node_modules/"])
    want = {k: v for k, v in truth.items() if not sel.matcher.excluded(k, False)}
    assert 0 < len(want) < len(truth)
    s = index_folder(state, src, selection=sel)
    assert _present(state, s.folder_id) == want
    assert (s.new, s.changed, s.deleted) == (0, 0, len(truth) - len(want))
    s = index_folder(state, src)  # the stored rules again
    assert _present(state, s.folder_id) == want and s.deleted == 0 and s.new == 0
    s = index_folder(state, src, selection=Selection())
    assert _present(state, s.folder_id) == truth and s.new == len(truth) - len(want)
    assert _truth(src) == truth and os.path.exists(src / "big" / "f0.tmp")  # nothing on disk touched
