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
