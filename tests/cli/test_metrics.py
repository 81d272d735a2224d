"""`--metrics-file` end to end: real runs against the real INN write a file node_exporter would read.

The file is parsed with prometheus-client's parser; its figures are compared with what the same runs
printed with --json. README's alert rules are checked to name series a real run wrote.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cli.helpers import run
from tests.cli.test_share_download import Users, id_file, publish, users  # noqa: F401 - fixture
from tests.pipeline.upload_support import message_ids
from tests.support.inn import InnServer
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

ROOT = Path(__file__).resolve().parents[2]
SEG = "16384"
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def read(path: Path) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        assert family.documentation and family.type == "gauge", family.name
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def _tree(root: Path, nbytes: int, nfiles: int = 3) -> None:
    root.mkdir(parents=True)
    for i in range(nfiles):
        (root / f"f{i}.bin").write_bytes(os.urandom(nbytes // nfiles))


@pytest.fixture(autouse=True)
def _no_metrics_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USENETSYNC_METRICS_FILE", raising=False)


def test_upload_verify_then_a_failed_upload(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            inn: InnServer) -> None:
    prom = tmp_path / "textfile" / "usenetsync.prom"
    prom.parent.mkdir()
    r = run(capsys, "server", "add", "local", "--host", inn.host, "--port", str(inn.port), "--group", inn.group)
    assert r.code == 0, r.err
    src = tmp_path / "data"
    _tree(src, 120_000)
    folder = str(src.resolve())
    assert run(capsys, "index", str(src), "--metrics-file", str(prom)).code == 0

    before = time.time()
    r = run(capsys, "upload", str(src), "--segment-size", SEG, "--redundancy", "0", "--json",
            "--metrics-file", str(prom))
    after = time.time()
    assert r.code == 0, r.err
    summary = next(x for x in r.json_lines() if x["type"] == "upload.summary")
    m = read(prom)
    assert one(m, "usenetsync_upload_posted_bytes", folder=folder) == summary["bytes_posted"] > 0
    assert one(m, "usenetsync_upload_posted_articles", folder=folder) == summary["posted_now"] > 5
    assert one(m, "usenetsync_last_run_exit_code", command="upload", folder=folder) == 0
    start = one(m, "usenetsync_last_run_start_timestamp_seconds", command="upload", folder=folder)
    end = one(m, "usenetsync_last_run_end_timestamp_seconds", command="upload", folder=folder)
    assert before <= start <= end <= after
    success = one(m, "usenetsync_last_success_timestamp_seconds", command="upload", folder=folder)
    assert success == end
    assert one(m, "usenetsync_backup_last_complete_timestamp_seconds", folder=folder) == end
    assert 0 <= one(m, "usenetsync_backup_age_seconds", folder=folder) < 60
    assert one(m, "usenetsync_last_run_exit_code", command="index", folder=folder) == 0
    assert os.stat(prom).st_mode & 0o777 == 0o644
    size = one(m, "usenetsync_state_size_bytes")
    assert size > 0

    # A clean verify: its series appear, the upload's stay.
    r = run(capsys, "verify", "--json", "--metrics-file", str(prom))
    assert r.code == 0, r.err
    m = read(prom)
    for what in ("missing", "repairable", "lost"):
        assert one(m, f"usenetsync_verify_articles_{what}", folder=folder) == 0
    assert one(m, "usenetsync_last_run_exit_code", command="verify", folder=folder) == 0
    assert one(m, "usenetsync_upload_posted_bytes", folder=folder) == summary["bytes_posted"]

    # Two articles gone: verify (no --repair) says 17 and the file says 2 missing, 2 repairable, 0 lost.
    with State.open(Home.resolve()) as st:
        f = catalog.get_folder(st.catalog, os.fsencode(folder))
        assert f is not None
        victims = sorted(message_ids(st, f).values())[:2]
    for mid in victims:
        inn.cancel(mid)
    r = run(capsys, "verify", "--json", "--metrics-file", str(prom))
    assert r.code == 17, r.err
    m = read(prom)
    assert one(m, "usenetsync_verify_articles_missing", folder=folder) == 2
    assert one(m, "usenetsync_verify_articles_repairable", folder=folder) == 2
    assert one(m, "usenetsync_verify_articles_lost", folder=folder) == 0
    assert one(m, "usenetsync_last_run_exit_code", command="verify", folder=folder) == 17

    # A failing upload (the only posting server refuses connections): its exit status is there, the last
    # success and the last upload's figures are not moved by it.
    (src / "new.bin").write_bytes(os.urandom(20_000))
    assert run(capsys, "index", str(src)).code == 0
    assert run(capsys, "server", "remove", "local").code == 0
    assert run(capsys, "server", "add", "down", "--host", "127.0.0.1", "--port", "9", "--group", inn.group).code == 0
    r = run(capsys, "upload", str(src), "--metrics-file", str(prom))
    assert r.code == 10, r.err
    m = read(prom)
    assert one(m, "usenetsync_last_run_exit_code", command="upload", folder=folder) == 10
    assert one(m, "usenetsync_last_run_end_timestamp_seconds", command="upload", folder=folder) > end
    assert one(m, "usenetsync_last_success_timestamp_seconds", command="upload", folder=folder) == success
    assert one(m, "usenetsync_backup_last_complete_timestamp_seconds", folder=folder) == end
    assert one(m, "usenetsync_upload_posted_bytes", folder=folder) == summary["bytes_posted"]
    assert one(m, "usenetsync_last_run_exit_code", command="verify", folder=folder) == 17

    # README's alert rules name series this file holds, and fire on it as they should.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    exprs = re.findall(r"^\s*expr: (.+)$", readme, flags=re.MULTILINE)
    assert len(exprs) >= 2
    for expr in exprs:
        for name in re.findall(r"usenetsync_[a-z_]+", expr):
            assert name in m, (name, expr)
    assert any("usenetsync_last_success_timestamp_seconds" in e and 'command="upload"' in e and "26" in e
               for e in exprs)
    assert any("usenetsync_verify_articles_lost" in e and "> 0" in e for e in exprs)


def test_config_key_env_var_and_option(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "data"
    _tree(src, 300)
    cfg_file, env_file, opt_file = (tmp_path / f"{n}.prom" for n in ("cfg", "env", "opt"))
    home = Home.resolve().ensure()
    home.config_file.write_text(f'metrics_file = "{cfg_file}"\n', encoding="utf-8")
    assert run(capsys, "index", str(src)).code == 0
    assert cfg_file.exists() and not env_file.exists()

    monkeypatch.setenv("USENETSYNC_METRICS_FILE", str(env_file))
    assert run(capsys, "index", str(src)).code == 0
    assert env_file.exists() and not opt_file.exists()

    cfg_mtime = cfg_file.stat().st_mtime_ns
    env_text = env_file.read_text()
    assert run(capsys, "index", str(src), "--metrics-file", str(opt_file)).code == 0
    assert opt_file.exists()
    assert env_file.read_text() == env_text and cfg_file.stat().st_mtime_ns == cfg_mtime  # the option won
    # The record is the home's: the file written last holds the three index runs' latest.
    m = read(opt_file)
    assert one(m, "usenetsync_last_run_exit_code", command="index", folder=str(src.resolve())) == 0


def test_a_command_without_metrics_asked_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "data"
    _tree(src, 300)
    assert run(capsys, "index", str(src)).code == 0
    assert not (Home.resolve().state_dir / "metrics.json").exists()


def test_unwritable_metrics_file_warns_and_keeps_the_exit_code(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "data"
    _tree(src, 300)
    missing_dir = tmp_path / "no-such-dir" / "usenetsync.prom"
    r = run(capsys, "index", str(src), "--metrics-file", str(missing_dir))
    assert r.code == 0
    lines = r.err.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("usenetsync: warning: metrics file not written: ")
    assert str(missing_dir) in lines[0]
    # A failing run keeps its own code too (7: not indexed), with its error line first.
    (tmp_path / "other").mkdir()
    r = run(capsys, "upload", str(tmp_path / "other"), "--metrics-file", str(missing_dir))
    assert r.code == 7, r.err
    assert r.err.splitlines()[0].startswith("usenetsync: error: ")
    assert r.err.splitlines()[1].startswith("usenetsync: warning: metrics file not written: ")


def test_a_usage_free_failure_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """upload with no server configured: exit 4 from inside the command, recorded with its folder."""
    src = tmp_path / "data"
    _tree(src, 300)
    prom = tmp_path / "m.prom"
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "upload", str(src), "--metrics-file", str(prom))
    assert r.code == 4, r.err
    m = read(prom)
    folder = str(src.resolve())
    assert one(m, "usenetsync_last_run_exit_code", command="upload", folder=folder) == 4
    assert ("usenetsync_last_success_timestamp_seconds" not in m
            or (("command", "upload"), ("folder", folder)) not in m["usenetsync_last_success_timestamp_seconds"])


def test_folder_labels_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / 'we"ird\\na\nme'
    _tree(src, 300)
    prom = tmp_path / "m.prom"
    r = run(capsys, "index", str(src), "--metrics-file", str(prom))
    assert r.code == 0, r.err
    m = read(prom)
    assert one(m, "usenetsync_last_run_exit_code", command="index", folder=str(src.resolve())) == 0


def test_interrupted_run_is_recorded_as_130(tmp_path: Path) -> None:
    """SIGINT to a real process waiting on the home lock: exit 130, and the file says so."""
    from usenetsync_cli.store.lock import HomeLock

    src = tmp_path / "data"
    _tree(src, 300)
    prom = tmp_path / "m.prom"
    home = Home.resolve().ensure()
    env = {**os.environ}
    with HomeLock(home.lock_path):  # held here: the CLI waits on it (--lock-wait), a safe place to stop it
        proc = subprocess.Popen(
            [sys.executable, "-m", "usenetsync_cli", "index", str(src), "--lock-wait", "600",
             "--metrics-file", str(prom)], stderr=subprocess.PIPE, text=True, env=env)
        try:
            _wait_for_lock_waiter(home, proc)
            proc.send_signal(2)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err
    m = read(prom)
    assert one(m, "usenetsync_last_run_exit_code", command="index", folder=str(src.resolve())) == 130


def _wait_for_lock_waiter(home: Home, proc: subprocess.Popen[str]) -> None:
    """Until ``proc`` has the lock file open (it is waiting on it): read from /proc, no sleep-and-hope."""
    lock = os.path.realpath(home.lock_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            fds = os.listdir(f"/proc/{proc.pid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{proc.pid}/fd/{fd}") == lock:
                    return
            except OSError:
                pass
        time.sleep(0.01)  # polling an event (the open fd), not waiting on luck
    raise AssertionError("the CLI never opened the lock file")


def test_commands_without_the_option_never_import_metrics(tmp_path: Path) -> None:
    from tests.cli.test_startup import _modules_after

    for args in (["--version"], ["--help"], ["status"]):
        assert "usenetsync_cli.metrics" not in _modules_after(args, tmp_path), args


def test_shares_and_downloads_are_recorded_without_their_id(users: Users, tmp_path: Path) -> None:  # noqa: F811
    """share create / share update / download label their runs by folder; the share ID appears nowhere."""
    prom = tmp_path / "m.prom"
    src = tmp_path / "src"
    _tree(src, 30_000)
    users.mp.setenv("USENETSYNC_METRICS_FILE", str(prom))
    sid = publish(users, src, "--public")
    r = users.as_("alice", "share", "update", "s", "--force")
    assert r.code == 0, r.err
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", "--id-file", id_file(tmp_path, sid), str(dest))
    assert r.code == 0, r.err
    folder = str(src.resolve())
    bob = read(prom)  # bob's home has its own record: written from it, the file holds his run
    assert one(bob, "usenetsync_last_run_exit_code", command="download", folder=str(dest.resolve())) == 0
    users.as_("alice", "index", str(src))
    alice = read(prom)
    for command in ("share create", "share update", "upload", "index"):
        assert one(alice, "usenetsync_last_run_exit_code", command=command, folder=folder) == 0, command
    text = prom.read_text()
    assert sid not in text and sid[4:20] not in text
    for home in users.homes.values():
        assert sid not in (home / "state" / "metrics.json").read_text()


def test_articles_lost_after_a_failed_repair(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            inn: InnServer) -> None:
    """No PAR2 and a source that moved on: verify --repair exits 18 and the file says what was lost, which is
    what README's "articles lost" alert fires on."""
    prom = tmp_path / "m.prom"
    assert run(capsys, "server", "add", "local", "--host", inn.host, "--port", str(inn.port),
               "--group", inn.group).code == 0
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(100_000))
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "upload", str(src), "--segment-size", SEG, "--redundancy", "0")
    assert r.code == 0, r.err
    folder = str(src.resolve())
    with State.open(Home.resolve()) as st:
        f = catalog.get_folder(st.catalog, os.fsencode(folder))
        assert f is not None
        inn.cancel(min(message_ids(st, f).values()))
    (src / "big.bin").write_bytes(os.urandom(100_000))  # the source moved on
    r = run(capsys, "verify", "--repair", "--json", "--metrics-file", str(prom))
    assert r.code == 18, r.err
    repair = next(x for x in r.json_lines() if x["type"] == "verify.repair")
    m = read(prom)
    assert one(m, "usenetsync_verify_articles_missing", folder=folder) == 1
    assert one(m, "usenetsync_verify_articles_lost", folder=folder) == repair["unrepairable"] == 1
    assert one(m, "usenetsync_verify_articles_repairable", folder=folder) == 0
    assert one(m, "usenetsync_last_run_exit_code", command="verify", folder=folder) == 18
