"""Tests of incremental indexing against the real file system."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usenetsync_cli.errors import InputPathError
from usenetsync_cli.pipeline.index import index_folder
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State, shard_of


@pytest.fixture
def state(tmp_path: Path):  # type: ignore[no-untyped-def]
    with State.open(Home.resolve(tmp_path / "home")) as s:
        yield s


def _present(state: State, folder_id: int) -> dict[bytes, int]:
    """relpath -> size of every present file row, checking each row sits in its hash shard."""
    dirs = dict(state.catalog.execute("SELECT dir_id, relpath FROM dirs WHERE folder_id=?", (folder_id,)))
    uid = catalog.get_folder_by_id(state.catalog, folder_id).uid  # type: ignore[union-attr]
    out: dict[bytes, int] = {}
    for n, conn in enumerate(state.shards):
        for dir_id, name, size in conn.execute(
            "SELECT dir_id, name, size FROM files WHERE folder_id=? AND present=1", (folder_id,)
        ):
            rel = dirs[dir_id] + b"/" + name if dirs[dir_id] else name
            assert shard_of(uid, rel) == n
            out[rel] = size
    return out


def _truth(root: Path) -> dict[bytes, int]:
    out = {}
    for dirpath, _dirs, files in os.walk(os.fsencode(root)):
        for f in files:
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, os.fsencode(root))
            out[rel] = 0 if os.path.islink(full) else os.lstat(full).st_size
    return out


def _mk(root: Path, rel: str, data: bytes = b"x") -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def test_first_index_then_unchanged(state: State, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(30):
        _mk(src, f"d{i % 4}/sub/f{i}", b"a" * i)
    s1 = index_folder(state, src)
    assert (s1.new, s1.changed, s1.deleted, s1.unchanged) == (30, 0, 0, 0)
    assert s1.bytes == sum(range(30)) and s1.files == 30 and s1.dirs == 9
    s2 = index_folder(state, src)
    assert (s2.new, s2.changed, s2.deleted, s2.unchanged) == (0, 0, 0, 30)
    assert _present(state, s1.folder_id) == _truth(src)


def test_add_modify_touch_chmod_delete_rename(state: State, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in ("a", "b", "c", "d", "e", "sub/f", "sub/g"):
        _mk(src, name, b"0123")
    index_folder(state, src)
    _mk(src, "new1")                                   # add
    (src / "a").write_bytes(b"0123456")               # modify (size)
    os.utime(src / "b", ns=(1, 10**18))               # touch (mtime)
    os.chmod(src / "c", 0o600)                        # mode
    (src / "d").unlink()                              # delete
    os.rename(src / "e", src / "sub" / "e2")          # rename: delete + new
    shutil.rmtree(src / "sub" / "g", ignore_errors=True)
    (src / "sub" / "g").unlink()
    s = index_folder(state, src)
    assert (s.new, s.changed, s.deleted, s.unchanged) == (2, 3, 3, 1)
    assert _present(state, s.folder_id) == _truth(src)


def test_deleted_directory_tree_and_return(state: State, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(5):
        _mk(src, f"keep/k{i}")
        _mk(src, f"gone/deep/g{i}")
    index_folder(state, src)
    shutil.rmtree(src / "gone")
    s = index_folder(state, src)
    assert (s.deleted, s.unchanged) == (5, 5)
    _mk(src, "gone/deep/g0", b"back")
    s = index_folder(state, src)
    assert (s.new, s.deleted, s.unchanged) == (1, 0, 5)
    assert _present(state, s.folder_id) == _truth(src)


def test_symlink_target_change_is_a_change(state: State, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _mk(src, "x")
    os.symlink("x", src / "l")
    index_folder(state, src)
    os.unlink(src / "l")
    os.symlink("y", src / "l")
    s = index_folder(state, src)
    assert s.changed + s.new >= 1 and s.symlinks == 1


def test_missing_and_file_paths_are_input_errors(state: State, tmp_path: Path) -> None:
    with pytest.raises(InputPathError, match="does not exist"):
        index_folder(state, tmp_path / "nope")
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(InputPathError, match="not a folder"):
        index_folder(state, tmp_path / "f")


def test_two_folders_are_independent(state: State, tmp_path: Path) -> None:
    for name in ("one", "two"):
        for i in range(3):
            _mk(tmp_path / name, f"f{i}")
    a = index_folder(state, tmp_path / "one")
    b = index_folder(state, tmp_path / "two")
    assert a.folder_id != b.folder_id and b.new == 3
    (tmp_path / "one" / "f0").unlink()
    assert index_folder(state, tmp_path / "two").deleted == 0
    assert index_folder(state, tmp_path / "one").deleted == 1


def test_kill_9_mid_index_then_reindex_is_exact(tmp_path: Path) -> None:
    """Crash between batches: the next run reports the lost work as new and ends exact."""
    src = tmp_path / "src"
    for i in range(3000):
        _mk(src, f"d{i // 20}/f{i}", b"q")
    home = tmp_path / "home"
    script = textwrap.dedent(
        f"""
        import os, signal
        from usenetsync_cli.pipeline import index as ix
        from usenetsync_cli.store.home import Home
        from usenetsync_cli.store.state import State
        st = State.open(Home.resolve({str(home)!r}))
        def progress(p):
            if p.files >= 2000:
                os.kill(os.getpid(), signal.SIGKILL)
        ix.index_folder(st, {str(src)!r}, progress=progress, batch_rows=500)
        """
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9
    with State.open(Home.resolve(home)) as st:
        committed = sum(c.execute("SELECT count(*) FROM files").fetchall()[0][0] for c in st.shards)
        assert 0 < committed < 3000
        runs = catalog.last_runs(st.catalog)
        assert runs[0].effective_status == "crashed"
        s = index_folder(st, src)
        assert s.new == 3000 - committed and s.unchanged == committed and s.deleted == 0
        assert _present(st, s.folder_id) == _truth(src)


OPS = st.lists(
    st.tuples(st.sampled_from(["add", "modify", "delete", "rename", "mkdir", "rmdir"]), st.integers(0, 40)),
    max_size=30,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, ops2=OPS)
def test_hypothesis_incremental_matches_file_system(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]], ops2: list[tuple[str, int]]
) -> None:
    base = tmp_path_factory.mktemp("inc")
    src = base / "src"
    src.mkdir()
    with State.open(Home.resolve(base / "home")) as state:
        for batch in (ops, ops2):
            before = _truth(src)
            for op, n in batch:
                _apply(src, op, n)
            after = _truth(src)
            s = index_folder(state, src)
            assert _present(state, s.folder_id) == after
            assert s.new + s.changed + s.unchanged == len(after)
            assert s.deleted == len(set(before) - set(after))
            assert s.new == len(set(after) - set(before))


def _apply(src: Path, op: str, n: int) -> None:
    d = src / f"d{n % 3}"
    f = d / f"f{n}"
    if op == "add":
        _mk(src, f"d{n % 3}/f{n}", b"a" * n)
    elif op == "modify" and f.exists():
        f.write_bytes(b"b" * (n + 1 + f.stat().st_size))
    elif op == "delete" and f.exists():
        f.unlink()
    elif op == "rename" and f.exists():
        f.rename(d / f"r{n}x")
    elif op == "mkdir":
        (src / f"e{n % 4}" / "deep").mkdir(parents=True, exist_ok=True)
        _mk(src, f"e{n % 4}/deep/z{n}")
    elif op == "rmdir":
        shutil.rmtree(src / f"e{n % 4}", ignore_errors=True)
