"""Tests of the directory scanner."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usenetsync_cli.pipeline.scan import KIND_FILE, KIND_SYMLINK, ScanCounters, scan_tree


def _flatten(root: Path, **kw: object) -> tuple[dict[bytes, tuple[int, int]], ScanCounters]:
    c = ScanCounters()
    out: dict[bytes, tuple[int, int]] = {}
    for listing in scan_tree(os.fsencode(root), c, **kw):  # type: ignore[arg-type]
        for e in listing.files:
            rel = listing.relpath + b"/" + e[0] if listing.relpath else e[0]
            out[rel] = (e[1], e[2])
    return out, c


def test_files_symlinks_special_and_bytes_names(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "f.txt").write_bytes(b"12345")
    bad = os.fsencode(tmp_path / "a" / "b") + b"/caf\xe9\xff.bin"  # not UTF-8
    with open(bad, "wb") as f:
        f.write(b"x" * 10)
    os.symlink("f.txt", tmp_path / "a" / "link")
    os.mkfifo(tmp_path / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp_path / "sock"))
    files, c = _flatten(tmp_path)
    s.close()
    assert files == {
        b"a/f.txt": (KIND_FILE, 5),
        b"a/b/caf\xe9\xff.bin": (KIND_FILE, 10),
        b"a/link": (KIND_SYMLINK, 0),
    }
    assert c.special == 2 and c.dirs == 3 and c.warnings == 0


def test_symlink_target_recorded_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x").write_bytes(b"x")
    os.symlink("real", tmp_path / "dirlink")
    c = ScanCounters()
    listings = list(scan_tree(os.fsencode(tmp_path), c))
    root = next(lst for lst in listings if lst.relpath == b"")
    link = next(e for e in root.files if e[0] == b"dirlink")
    assert link[1] == KIND_SYMLINK and link[7] == b"real"
    assert sorted(lst.relpath for lst in listings) == [b"", b"real"]


def test_follow_symlinks_detects_loops(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "x").write_bytes(b"xy")
    os.symlink("..", tmp_path / "d" / "e" / "up")  # loop back to d
    os.symlink("d/e/x", tmp_path / "xl")
    files, c = _flatten(tmp_path, follow_symlinks=True)
    assert files[b"xl"] == (KIND_FILE, 2)
    assert files[b"d/e/x"] == (KIND_FILE, 2)
    assert c.loops >= 1
    assert not any(b"up/e/up" in k for k in files)


def test_unreadable_directory_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "f").write_bytes(b"1")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "g").write_bytes(b"2")
    locked = os.fsencode(tmp_path / "locked")

    def scandir(p: bytes) -> object:
        # Root ignores permissions, so the refusal is injected at the edge.
        if p == locked:
            raise PermissionError(13, "Permission denied")
        return os.scandir(p)

    c = ScanCounters()
    out = [e[0] for lst in scan_tree(os.fsencode(tmp_path), c, scandir=scandir) for e in lst.files]
    assert out == [b"f"]
    assert c.warnings == 1 and "locked" in c.warning_samples[0]


def test_vanishing_directory_is_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "gone").mkdir()
    gone = os.fsencode(tmp_path / "gone")

    def scandir(p: bytes) -> object:
        if p == gone:
            raise FileNotFoundError(2, "No such file")
        return os.scandir(p)

    c = ScanCounters()
    list(scan_tree(os.fsencode(tmp_path), c, scandir=scandir))
    assert c.warnings == 0 and c.vanished == 1


def test_scan_is_a_generator(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"d{i}").mkdir()
    gen = scan_tree(os.fsencode(tmp_path), ScanCounters())
    first = next(gen)
    assert first.relpath == b""
    (tmp_path / "d4").rmdir()  # removed after the generator started: counted, not raised
    rest = list(gen)
    assert len(rest) == 4


_name = st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(st.lists(_name, min_size=1, max_size=3).map(tuple), st.integers(0, 300), max_size=25))
def test_hypothesis_tree_round_trip(tmp_path_factory: pytest.TempPathFactory, tree: dict[tuple[bytes, ...], int]) -> None:
    root = os.fsencode(tmp_path_factory.mktemp("t"))
    expected: dict[bytes, int] = {}
    dirs: set[bytes] = set()
    for parts, size in tree.items():
        rel = b"/".join(parts)
        # skip paths that clash with a file already used as a directory, or vice versa
        prefixes = {b"/".join(parts[:i]) for i in range(1, len(parts))}
        if rel in dirs or prefixes & set(expected):
            continue
        os.makedirs(os.path.join(root, *parts[:-1]) if len(parts) > 1 else root, exist_ok=True)
        with open(os.path.join(root, rel), "wb") as f:
            f.write(b"z" * size)
        expected[rel] = size
        dirs |= prefixes
    got, c = _flatten(Path(os.fsdecode(root)))
    assert {k: v[1] for k, v in got.items()} == expected
    assert c.warnings == 0
