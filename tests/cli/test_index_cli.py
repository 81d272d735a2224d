"""CLI tests of `index` and `status`, through main() with an isolated home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.helpers import run


def _tree(root: Path, n: int = 5) -> Path:
    for i in range(n):
        (root / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 2}" / f"f{i}").write_bytes(b"x" * (i + 1))
    return root


def test_help_lists_commands_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "--help")
    assert r.code == 0
    for cmd in ("index", "status"):
        assert cmd in r.out
    r = run(capsys, "index", "--help")
    assert r.code == 0 and "--follow-symlinks" in r.out and "--lock-wait" in r.out and "Examples" in r.out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "--version")
    assert r.code == 0 and r.out.startswith("usenetsync ")


def test_index_text_then_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _tree(tmp_path / "src")
    r = run(capsys, "index", str(src))
    assert r.code == 0, r.err
    assert "5 new, 0 changed, 0 deleted, 0 unchanged" in r.out
    (src / "d0" / "f0").write_bytes(b"changed!")
    r = run(capsys, "index", str(src), "--json")
    assert r.code == 0
    (summary,) = r.json_lines()
    assert summary["type"] == "index.summary"
    assert (summary["new"], summary["changed"], summary["unchanged"]) == (0, 1, 4)
    assert summary["files"] == 5 and summary["elapsed_s"] >= 0


def test_status_json_shards_and_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _tree(tmp_path / "src", 40)
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "status", "--json")
    assert r.code == 0
    lines = r.json_lines()
    shards = [x for x in lines if x["type"] == "status.shard"]
    assert len(shards) == 16 and sum(s["present_files"] for s in shards) == 40
    (folder,) = [x for x in lines if x["type"] == "status.folder"]
    assert folder["files"] == 40 and folder["path"] == str(src.resolve())
    runs = [x for x in lines if x["type"] == "status.run"]
    assert runs[0]["command"] == "index" and runs[0]["status"] == "ok"
    home = [x for x in lines if x["type"] == "status.home"][0]
    assert home["config_dir"] == os.environ["USENETSYNC_HOME"]
    r = run(capsys, "status")
    assert "shards" in r.out and str(src.resolve()) in r.out


@pytest.mark.parametrize(
    ("make", "code", "text"),
    [
        (lambda p: p / "missing", 3, "does not exist"),
        (lambda p: (p / "afile").write_bytes(b"") and p / "afile" or p / "afile", 3, "not a folder"),
    ],
)
def test_bad_paths_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], make, code, text) -> None:  # type: ignore[no-untyped-def]
    r = run(capsys, "index", str(make(tmp_path)))
    assert r.code == code
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "hint:" in lines[0] and "Traceback" not in r.err


def test_json_error_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "index", str(tmp_path / "missing"), "--json")
    (obj,) = r.json_lines()
    assert obj["type"] == "error" and obj["exit_code"] == 3 and obj["error"] == "InputPathError"


def test_home_not_writable(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    monkeypatch.setenv("USENETSYNC_HOME", str(blocker / "home"))
    r = run(capsys, "status")
    assert r.code == 5 and "cannot create home folder" in r.err and len(r.err.strip().splitlines()) == 1


def test_usage_error_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "index").code == 2
    assert run(capsys, "no-such-command").code == 2


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usenetsync_cli", *args], capture_output=True, text=True, env=env or os.environ.copy()
    )


# Holds the home lock until a line arrives on stdin (or stdin closes): released on the test's word, never on a timer.
_HOLD_UNTIL_TOLD = (
    "import sys; from pathlib import Path; from usenetsync_cli.store.lock import HomeLock;"
    "l=HomeLock(Path(sys.argv[1])); l.acquire(); print('held', flush=True); sys.stdin.readline()"
)


def _has_open(pid: int, path: Path) -> bool:
    """True if process ``pid`` has ``path`` open (it got as far as trying the lock)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue  # closed meanwhile
    return False


def test_locked_exit_75_and_lock_wait(tmp_path: Path) -> None:
    """A second writer fails at once with exit 75, or waits with --lock-wait and then runs."""
    src = _tree(tmp_path / "src")
    from usenetsync_cli.store.home import Home
    from usenetsync_cli.store.lock import HomeLock

    home = Home.resolve().ensure()
    lock_path = home.lock_path.resolve()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_UNTIL_TOLD, str(lock_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    waiter: subprocess.Popen[str] | None = None
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # The holder keeps the lock until told, so "at once" cannot be confused with "the lock was free by then".
        r = _cli("index", str(src))
        assert r.returncode == 75 and "another usenetsync run" in r.stderr and "--lock-wait" in r.stderr
        assert f"pid {holder.pid}" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        r = _cli("status")  # read-only: no lock needed
        assert r.returncode == 0
        waiter = subprocess.Popen(
            [sys.executable, "-m", "usenetsync_cli", "index", str(src), "--lock-wait", "600", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 120
        while not _has_open(waiter.pid, lock_path):  # it is trying the lock the holder has
            assert waiter.poll() is None, waiter.communicate()
            assert time.monotonic() < deadline, "the waiting run never opened the lock file"
            time.sleep(0.01)
        assert waiter.poll() is None  # still waiting: the lock is still held
        assert holder.stdin is not None
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
        out, err = waiter.communicate(timeout=300)
        assert waiter.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["type"] == "index.summary"
    finally:
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    with HomeLock(home.lock_path):
        pass


def test_no_progress_when_not_a_terminal(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    r = _cli("index", str(src))
    assert r.returncode == 0 and r.stderr == ""
    assert "\x1b[" not in r.stdout


def test_status_off_a_terminal_never_cuts_a_long_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """COLUMNS=120 here; off a terminal a table must not end a 200-character folder path in an ellipsis."""
    src = _tree(tmp_path / ("a-rather-long-folder-name-" * 8) / "src", 3)
    assert len(str(src.resolve())) > 200
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "status")
    assert r.code == 0 and str(src.resolve()) in r.out and "…" not in r.out


# --- choosing what to back up: --exclude, --exclude-file, --exclude-caches, --one-file-system -----------------


def _indexed(capsys: pytest.CaptureFixture[str], src: Path) -> set[str]:
    """The present files of the folder in the state (read from the databases themselves)."""
    import apsw

    state = Path(os.environ["USENETSYNC_HOME"]) / "state"
    cat = apsw.Connection(str(state / "catalog.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        (fid,) = cat.execute("SELECT folder_id FROM folders WHERE path=?", (os.fsencode(src.resolve()),)).fetchall()[0]
        dirs = dict(cat.execute("SELECT dir_id, relpath FROM dirs WHERE folder_id=?", (fid,)).fetchall())
    finally:
        cat.close()
    out: set[str] = set()
    for shard in sorted((state / "shards").glob("*.db")):
        conn = apsw.Connection(str(shard), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            for dir_id, name in conn.execute("SELECT dir_id, name FROM files WHERE folder_id=? AND present=1", (fid,)):
                out.add(os.fsdecode(dirs[dir_id] + b"/" + name if dirs[dir_id] else name))
        finally:
            conn.close()
    return out


def _selection_tree(root: Path) -> Path:
    for d in ("a", "build", "sub/build", "web/node_modules/pkg", "cache", "fakecache"):
        (root / d).mkdir(parents=True, exist_ok=True)
    files = {"a/x.tmp": b"t", "a/keep.tmp": b"k", "a/real.txt": b"r", "build/out.o": b"o", "sub/build/out.o": b"o2",
             "web/node_modules/pkg/i.js": b"j", "web/app.js": b"a", "cache/blob": b"c", "fakecache/blob": b"f",
             "top.txt": b"t"}
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    (root / "cache" / "CACHEDIR.TAG").write_bytes(b"Signature: 8a477f597d28d172789f06886806bc55\n# cache\n")
    (root / "fakecache" / "CACHEDIR.TAG").write_bytes(b"Signature: 8a477f597d28d172789f06886806bc5X\n")
    return root


def test_exclude_options_are_stored_repeated_and_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _selection_tree(tmp_path / "src")
    listfile = tmp_path / "excludes.txt"
    listfile.write_text("# build output, anchored at the folder root\n\n/build\n**/node_modules\n")
    r = run(capsys, "index", str(src), "--exclude", "*.tmp", "--exclude", "!keep.tmp", "--exclude-file", str(listfile),
            "--exclude-caches", "--json")
    assert r.code == 0, r.err
    (summary,) = r.json_lines()
    assert summary["excluded"] == 3 and summary["caches_skipped"] == 1  # x.tmp, /build, node_modules; cache/
    want = {"a/keep.tmp", "a/real.txt", "sub/build/out.o", "web/app.js", "fakecache/blob", "fakecache/CACHEDIR.TAG",
            "top.txt"}
    assert _indexed(capsys, src) == want
    # A bare later run (cron) applies the stored rules: nothing new appears.
    r = run(capsys, "index", str(src))
    assert r.code == 0 and "0 new, 0 changed, 0 deleted, 7 unchanged" in r.out, r.out
    assert "3 excluded, 1 cache directory left out" in r.out
    assert _indexed(capsys, src) == want
    # status shows them per folder, plain and JSON.
    r = run(capsys, "status", "--json")
    (folder,) = [x for x in r.json_lines() if x["type"] == "status.folder"]
    assert folder["selection"] == {"exclude": ["*.tmp", "!keep.tmp", "/build", "**/node_modules"],
                                   "exclude_caches": True, "one_file_system": False}
    r = run(capsys, "status")
    assert "left out by index" in r.out and "--exclude '/build'" in r.out and "--exclude-caches" in r.out


def test_giving_options_again_replaces_the_set_and_clear_forgets_it(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src = _selection_tree(tmp_path / "src")
    assert run(capsys, "index", str(src), "--exclude", "*.tmp", "--exclude-caches").code == 0
    assert "a/x.tmp" not in _indexed(capsys, src) and "cache/blob" not in _indexed(capsys, src)
    # Only --exclude /build now: *.tmp and --exclude-caches are dropped, so those files come back as new.
    r = run(capsys, "index", str(src), "--exclude", "/build", "--json")
    (summary,) = r.json_lines()
    assert summary["selection"] == {"exclude": ["/build"], "exclude_caches": False, "one_file_system": False}
    assert (summary["new"], summary["deleted"]) == (4, 1)  # x.tmp, keep.tmp, cache/blob, cache/CACHEDIR.TAG; out.o
    assert {"a/x.tmp", "cache/blob"} <= _indexed(capsys, src) and "build/out.o" not in _indexed(capsys, src)
    r = run(capsys, "index", str(src), "--clear-excludes")
    assert r.code == 0 and "1 new" in r.out
    assert "build/out.o" in _indexed(capsys, src)
    r = run(capsys, "status", "--json")
    (folder,) = [x for x in r.json_lines() if x["type"] == "status.folder"]
    assert folder["selection"] == {"exclude": [], "exclude_caches": False, "one_file_system": False}
    assert "left out by index" not in run(capsys, "status").out
    assert "0 new" in run(capsys, "index", str(src)).out  # cleared for good


def test_excluded_after_indexing_counts_as_deleted_and_the_file_stays(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    src = _selection_tree(tmp_path / "src")
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "index", str(src), "--exclude", "web/", "--exclude", "top.txt", "--json")
    (summary,) = r.json_lines()
    assert summary["deleted"] == 3 and summary["new"] == 0  # a whole directory (2 files) and one file
    assert not {p for p in _indexed(capsys, src) if p.startswith("web/") or p == "top.txt"}
    assert (src / "top.txt").read_bytes() == b"t" and (src / "web" / "node_modules" / "pkg" / "i.js").exists()


def test_one_file_system_does_not_cross_a_mount(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    mnt = src / "mnt"
    mnt.mkdir(parents=True)
    (src / "here").write_bytes(b"h")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "there").write_bytes(b"t")
        r = run(capsys, "index", str(src), "--one-file-system")
        assert r.code == 0 and "1 mount point not crossed" in r.out, r.out
        assert _indexed(capsys, src) == {"here"}
        assert run(capsys, "index", str(src)).code == 0  # stored: still not crossed
        assert _indexed(capsys, src) == {"here"}
        r = run(capsys, "status", "--json")
        (folder,) = [x for x in r.json_lines() if x["type"] == "status.folder"]
        assert folder["selection"]["one_file_system"] is True
        assert run(capsys, "index", str(src), "--clear-excludes").code == 0
        assert _indexed(capsys, src) == {"here", "mnt/there"}
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("args", [("--exclude", "[z-a]"), ("--exclude", ""), ("--exclude", "!"),
                                  ("--clear-excludes", "--exclude", "*.tmp"), ("--clear-excludes", "--exclude-caches")])
def test_bad_selection_is_a_usage_error_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            args: tuple[str, ...]) -> None:
    src = _selection_tree(tmp_path / "src")
    assert run(capsys, "index", str(src), "--exclude", "*.tmp").code == 0
    r = run(capsys, "index", str(src), *args)
    assert r.code == 2, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("usenetsync: error: ") and "hint:" in lines[0]
    r = run(capsys, "status", "--json")
    (folder,) = [x for x in r.json_lines() if x["type"] == "status.folder"]
    assert folder["selection"]["exclude"] == ["*.tmp"]
    assert next(x for x in r.json_lines() if x["type"] == "status.run")["run_id"] == 1  # no run started


def test_unreadable_exclude_file_is_an_input_error_and_changes_nothing(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    src = _selection_tree(tmp_path / "src")
    assert run(capsys, "index", str(src), "--exclude", "*.tmp").code == 0
    for bad in (tmp_path / "missing.txt", tmp_path):  # missing, and a directory
        r = run(capsys, "index", str(src), "--exclude-file", str(bad))
        assert r.code == 3, r.err
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and f"cannot read exclude file {bad}" in lines[0] and "hint:" in lines[0]
    r = run(capsys, "status", "--json")
    (folder,) = [x for x in r.json_lines() if x["type"] == "status.folder"]
    assert folder["selection"]["exclude"] == ["*.tmp"]
    assert len([x for x in r.json_lines() if x["type"] == "status.run"]) == 1


def test_an_unreadable_excluded_directory_is_never_entered(tmp_path: Path) -> None:
    """Run without the capabilities that let root read anything: a mode-000 directory is then unreadable. Excluded,
    it is never listed (no warning); not excluded, the same run warns about it: the exclusion is what spares it."""
    src = tmp_path / "src"
    (src / "secret" / "below").mkdir(parents=True)
    (src / "ok").mkdir()
    (src / "ok" / "f").write_bytes(b"x")
    (src / "secret" / "below" / "s").write_bytes(b"y")
    (src / "secret").chmod(0)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", sys.executable, "-m", "usenetsync_cli"]
    try:
        env = {**os.environ, "USENETSYNC_HOME": str(tmp_path / "home1")}
        r = subprocess.run([*drop, "index", str(src), "--exclude", "secret/"], capture_output=True, text=True, env=env)
        assert r.returncode == 0 and r.stderr == "" and "1 excluded" in r.stdout, (r.stdout, r.stderr)
        env["USENETSYNC_HOME"] = str(tmp_path / "home2")
        r = subprocess.run([*drop, "index", str(src)], capture_output=True, text=True, env=env)
        assert r.returncode == 0 and "cannot read directory" in r.stderr and "1 warning)" in r.stdout, r.stderr
    finally:
        (src / "secret").chmod(0o755)
