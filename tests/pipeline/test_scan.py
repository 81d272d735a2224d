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


def _parts(root: Path, **kw: object) -> list[tuple[bytes, int, bool, list[bytes]]]:
    return [(lst.relpath, lst.part, lst.last, [e[0] for e in lst.files])
            for lst in scan_tree(os.fsencode(root), ScanCounters(), **kw)]  # type: ignore[arg-type]


def test_big_directory_comes_in_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of at most CHUNK_ENTRIES, consecutive, numbered, ``last`` only on the final one; subdirectories after."""
    from usenetsync_cli.pipeline import scan

    monkeypatch.setattr(scan, "CHUNK_ENTRIES", 7)
    (tmp_path / "big").mkdir()
    for i in range(30):
        (tmp_path / "big" / f"f{i}").write_bytes(b"x")
    for i in range(3):
        os.symlink("f0", tmp_path / "big" / f"l{i}")
    (tmp_path / "big" / "sub").mkdir()
    (tmp_path / "big" / "sub" / "s").write_bytes(b"s")
    (tmp_path / "exact").mkdir()
    for i in range(21):
        (tmp_path / "exact" / f"e{i}").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    (tmp_path / "links").mkdir()
    for i in range(15):
        os.symlink("nowhere", tmp_path / "links" / f"l{i}")
    got = _parts(tmp_path)
    by_dir: dict[bytes, list[tuple[int, bool, list[bytes]]]] = {}
    order = []
    for rel, part, last, names in got:
        if not order or order[-1] != rel:
            assert rel not in by_dir  # a directory's parts are never interleaved with another's
            order.append(rel)
        by_dir.setdefault(rel, []).append((part, last, names))
    big = by_dir[b"big"]
    assert [p for p, _, _ in big] == list(range(5)) and [len(n) for _, _, n in big] == [7, 7, 7, 7, 5]
    assert [last for _, last, _ in big] == [False] * 4 + [True]
    assert sorted(n for _, _, ns in big for n in ns) == sorted([f"f{i}".encode() for i in range(30)]
                                                               + [f"l{i}".encode() for i in range(3)])
    assert order.index(b"big/sub") > order.index(b"big")
    exact = by_dir[b"exact"]  # a multiple of the part size: no empty trailing part
    assert [(p, last, len(n)) for p, last, n in exact] == [(0, False, 7), (1, False, 7), (2, True, 7)]
    assert by_dir[b"empty"] == [(0, True, [])]
    assert [(p, last, len(n)) for p, last, n in by_dir[b"links"]] == [(0, False, 7), (1, False, 7), (2, True, 1)]
    assert by_dir[b""] == [(0, True, [])] and by_dir[b"big/sub"] == [(0, True, [b"s"])]


def test_small_directory_is_one_part_as_before(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"f{i}").write_bytes(b"")
    got = _parts(tmp_path)
    assert [(rel, part, last, len(names)) for rel, part, last, names in got] == [(b"", 0, True, 50)]


def test_listing_error_part_way_still_ends_with_a_last_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EIO in the middle of a big directory: what was listed is yielded and the directory is closed by ``last``."""
    from usenetsync_cli.pipeline import scan

    monkeypatch.setattr(scan, "CHUNK_ENTRIES", 4)
    for i in range(20):
        (tmp_path / f"f{i}").write_bytes(b"")

    class Failing:
        def __init__(self, p: bytes) -> None:
            self.it = os.scandir(p)

        def __enter__(self) -> Failing:
            return self

        def __exit__(self, *a: object) -> None:
            self.it.close()

        def __iter__(self):  # type: ignore[no-untyped-def]
            for n, e in enumerate(self.it):
                if n == 10:
                    raise OSError(5, "Input/output error")
                yield e

    c = ScanCounters()
    got = [(lst.part, lst.last, len(lst.files)) for lst in scan_tree(os.fsencode(tmp_path), c, scandir=Failing)]
    assert got == [(0, False, 4), (1, False, 4), (2, True, 2)]
    assert c.warnings == 1
