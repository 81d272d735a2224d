"""Pure parts of pipeline/backup_read.py: which paths --include keeps, and how the record stream is cut."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usenetsync_cli.errors import TamperedError
from usenetsync_cli.pipeline.backup_read import filter_records, included, under

H = ["H", {"format": 4}]


def stream(*recs: list[Any]) -> list[list[Any]]:
    return [H, *recs, ["T", len(recs) + 2]]


def test_included_matches_paths_and_folders() -> None:
    assert included("a/b/c.txt", ["a"])  # a folder includes what is inside
    assert included("a/b/c.txt", ["a/*/c.txt"])
    assert included("x.jpg", ["*.jpg"])
    assert not included("a/x.jpg", ["b"])
    assert not included("ab/c", ["a"])  # a prefix of a name is not its folder
    assert under("a/b", "a/") and under("a", "a") and not under("ab", "a") and under("z", None)


def test_filter_keeps_included_members_with_their_pack_and_renumbers() -> None:
    recs = stream(
        ["D", "keep", 0o755, 1],
        ["D", "drop", 0o755, 1],
        ["F", "keep/big", 10, 1, 0o644, "00", []],
        ["F", "drop/big", 10, 1, 0o644, "00", []],
        ["K", 0, 7, 0, 100, "00", None, 1],
        ["P", "drop/a", 1, 1, 0o644, 0, "00"],
        ["P", "keep/b", 1, 1, 0o644, 1, "00"],
        ["K", 0, 8, 0, 100, "00", None, 1],
        ["P", "drop/c", 1, 1, 0o644, 0, "00"],
        ["H", "keep/link", "drop/big", 10, "00", 1, 0o644],
        ["H", "keep/link2", "keep/big", 10, "00", 1, 0o644],
        ["R", 0, 1, "00", 1, [], [], 1],
    )
    out = list(filter_records(lambda: iter(recs), ["keep"])())
    kinds = [(r[0], r[1]) for r in out[1:-1]]
    assert kinds == [("D", "keep"), ("F", "keep/big"), ("K", 0), ("P", "keep/b"), ("H", "keep/link2"), ("R", 0)]
    assert out[-1] == ["T", len(out)]  # the new trailer counts what is passed on
    assert out[3][2] == 7  # the pack of keep/b, not the empty one after it


def test_filter_still_catches_a_truncated_stream() -> None:
    recs = stream(["F", "a", 1, 1, 0o644, "00", []])
    recs[-1] = ["T", 99]
    with pytest.raises(TamperedError, match="truncated"):
        list(filter_records(lambda: iter(recs), ["a"])())
    with pytest.raises(TamperedError, match="no trailer"):
        list(filter_records(lambda: iter(recs[:-1]), ["a"])())


@given(st.lists(st.sampled_from(["a", "a/b", "a/b/c", "b", "b/c", "c"]), max_size=12),
       st.lists(st.sampled_from(["a", "b/*", "*", "c", "zz"]), min_size=1, max_size=3))
def test_filter_passes_exactly_the_included_files(paths: list[str], patterns: list[str]) -> None:
    recs = stream(*[["F", p, 1, 1, 0o644, "00", []] for p in paths])
    out = list(filter_records(lambda: iter(recs), patterns)())
    assert [r[1] for r in out if r[0] == "F"] == [p for p in paths if included(p, patterns)]
    assert out[-1] == ["T", len(out)]
