"""The scanner's selection (pipeline/scan.py with core/excludes.py): what it lists, and what it never enters.

The file set is compared with git's own (``git ls-files --others
--exclude-from``) on generated trees and patterns; cache directories,
mount points (a real tmpfs, mounted as root) and excluded directories are
checked by what the scanner lists and stats.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usenetsync_cli.core.excludes import CACHEDIR_SIGNATURE, Selection
from usenetsync_cli.pipeline.scan import ScanCounters, scan_tree


def _scan(root: Path, sel: Selection | None, **kw: object) -> tuple[set[bytes], set[bytes], ScanCounters]:
    """(file paths, directory paths) the scanner yields, relative to ``root``."""
    c = ScanCounters()
    files: set[bytes] = set()
    dirs: set[bytes] = set()
    for lst in scan_tree(os.fsencode(root), c, selection=sel, **kw):  # type: ignore[arg-type]
        dirs.add(lst.relpath)
        files |= {lst.relpath + b"/" + e[0] if lst.relpath else e[0] for e in lst.files}
    return files, dirs, c


# --- against git --------------------------------------------------------------------------------------------

_NAMES = st.sampled_from(["a", "b", "ab", "a.b", "b.a"])
_COMPONENTS = st.sampled_from(["a", "b", "*", "?", "*.b", "a*", "[ab]", "[!a]", "**", "?b"])


@st.composite
def _pattern(draw: st.DrawFn) -> str:
    body = "/".join(draw(st.lists(_COMPONENTS, min_size=1, max_size=3)))
    if draw(st.integers(0, 3)) == 0:
        body = "/" + body
    if draw(st.integers(0, 3)) == 0:
        body += "/"
    if draw(st.integers(0, 3)) == 0:
        body = "!" + body
    return body


def _make_tree(root: Path, paths: list[list[str]]) -> set[str]:
    """Create the files (a path that would be both a file and a directory is skipped); returns them."""
    made: set[str] = set()
    dirs: set[str] = set()
    for parts in paths:
        rel = "/".join(parts)
        prefixes = {"/".join(parts[:i]) for i in range(1, len(parts))}
        if rel in dirs or rel in made or prefixes & made:
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
        made.add(rel)
        dirs |= prefixes
    return made


@pytest.fixture(scope="module")
def git_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    g = tmp_path_factory.mktemp("git") / "repo.git"
    subprocess.run(["git", "init", "-q", "--bare", str(g)], check=True)
    return g


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_NAMES, min_size=1, max_size=3), min_size=1, max_size=12),
       st.lists(_pattern(), min_size=1, max_size=4))
def test_the_files_indexed_are_those_git_would_not_ignore(git_dir: Path, paths: list[list[str]],
                                                          patterns: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "w"
        root.mkdir()
        _make_tree(root, paths)
        excl = Path(tmp) / "exclude"
        excl.write_text("\n".join(patterns) + "\n")
        r = subprocess.run(["git", f"--git-dir={git_dir}", f"--work-tree={root}", "ls-files", "-z", "--others",
                            f"--exclude-from={excl}"], cwd=root, capture_output=True, check=True)
        want = {p for p in r.stdout.split(b"\0") if p}
        got, _, _ = _scan(root, Selection.make(patterns))
        assert got == want, patterns


# --- never entering what is left out ---------------------------------------------------------------------


def test_an_excluded_directory_is_never_listed(tmp_path: Path) -> None:
    """An excluded node_modules (here: one whose listing fails, as an unreadable one would) is not entered:
    no listing of it or below it, so no warning, and nothing under it stat'ed."""
    for d in ("src/node_modules/pkg/deep", "src/lib", "node_modules"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "f.js").write_bytes(b"x")
    listed: list[bytes] = []

    def scandir(path: bytes) -> Iterator[os.DirEntry[bytes]]:
        listed.append(path)
        if b"node_modules" in path:
            raise PermissionError(13, "Permission denied")
        return os.scandir(path)  # type: ignore[return-value]

    files, dirs, c = _scan(tmp_path, Selection.make(["**/node_modules"]), scandir=scandir)
    assert not [p for p in listed if b"node_modules" in p]
    assert c.warnings == 0 and c.excluded == 2
    assert files == {b"src/lib/f.js"}
    assert dirs == {b"", b"src", b"src/lib"}
    # The same tree without the rule does list it, and then the failure shows: the hook is real.
    _, _, c = _scan(tmp_path, None, scandir=scandir)
    assert c.warnings == 2


def test_cache_directories_need_the_signature(tmp_path: Path) -> None:
    for d in ("good/sub", "bad", "plain"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "data").write_bytes(b"x")
    (tmp_path / "good" / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n# a cache\n")
    (tmp_path / "bad" / "CACHEDIR.TAG").write_bytes(b"Signature: 0000000000000000000000000000000\n")
    (tmp_path / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE)  # the folder itself is always indexed
    files, dirs, c = _scan(tmp_path, Selection.make(exclude_caches=True))
    assert files == {b"CACHEDIR.TAG", b"bad/CACHEDIR.TAG", b"bad/data", b"plain/data"}
    assert dirs == {b"", b"bad", b"plain"} and c.caches == 1
    files, _, c = _scan(tmp_path, None)
    assert b"good/sub/data" in files and c.caches == 0


def test_follow_symlinks_matches_a_linked_directory_as_a_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_bytes(b"x")
    os.symlink("real", tmp_path / "cache")
    files, _, _ = _scan(tmp_path, Selection.make(["cache/"]), follow_symlinks=True)
    assert files == {b"real/f"}
    files, _, _ = _scan(tmp_path, Selection.make(["cache/"]))  # not followed: a link is not a directory
    assert files == {b"real/f", b"cache"}


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted at ``tmp_path/src/mnt`` (needs root, which the test environment is)."""
    mnt = tmp_path / "src" / "mnt"
    mnt.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_one_file_system_keeps_the_mount_point_empty(mounted: Path) -> None:
    src = mounted.parent
    (mounted / "inside").mkdir()
    (mounted / "inside" / "f").write_bytes(b"on tmpfs")
    (src / "here").write_bytes(b"on the root's file system")
    assert os.stat(mounted).st_dev != os.stat(src).st_dev
    files, dirs, c = _scan(src, Selection.make(one_file_system=True))
    assert files == {b"here"} and dirs == {b"", b"mnt"} and c.mounts == 1
    files, dirs, c = _scan(src, None)
    assert files == {b"here", b"mnt/inside/f"} and c.mounts == 0
