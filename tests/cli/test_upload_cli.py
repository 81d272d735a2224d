"""The upload and server commands end to end: real CLI processes, the real INN, kill -9 and Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.helpers import run
from tests.pipeline.upload_support import message_ids, read_back
from tests.support.inn import InnServer
from usenetsync_cli.pipeline.upload import folder_context
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

SEG = "16384"


def _cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "usenetsync_cli", *args], capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def _tree(root: Path, nbytes: int, nfiles: int = 4) -> dict[bytes, bytes]:
    root.mkdir(parents=True)
    out = {}
    for i in range(nfiles):
        data = os.urandom(nbytes // nfiles)
        (root / f"f{i}.bin").write_bytes(data)
        out[b"f%d.bin" % i] = data
    return out


def _add_server(capsys: pytest.CaptureFixture[str], inn: InnServer, *extra: str) -> None:
    r = run(capsys, "server", "add", "local", "--host", inn.host, "--port", str(inn.port),
            "--group", inn.group, "--connections", "3", *extra)
    assert r.code == 0, r.err


def _folder(src: Path) -> tuple[State, catalog.Folder]:
    st = State.open(Home.resolve())
    f = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
    assert f is not None
    return st, f


def test_upload_cli_json_then_nothing_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    _add_server(capsys, inn)
    src = tmp_path / "data"
    files = _tree(src, 200_000)
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "upload", str(src), "--segment-size", SEG, "--json")
    assert r.code == 0, r.err
    summary = [x for x in r.json_lines() if x["type"] == "upload.summary"][0]
    assert summary["complete"] and summary["verified"] == summary["segments"] == summary["posted_now"] > 10
    r = run(capsys, "upload", str(src))
    assert r.code == 0 and "nothing to upload" in r.out
    st, folder = _folder(src)
    with st:
        assert read_back(st, folder) == files


def test_upload_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    src = tmp_path / "data"
    _tree(src, 1000, 1)
    r = run(capsys, "upload", str(src))
    assert r.code == 7 and "has not been indexed" in r.err and len(r.err.strip().splitlines()) == 1
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "upload", str(src))
    assert r.code == 4 and "no posting server" in r.err
    r = run(capsys, "upload", "--resume")
    assert r.code == 7 and "no interrupted upload" in r.err
    run(capsys, "server", "add", "down", "--host", "127.0.0.1", "--port", "9", "--group", inn.group)
    r = run(capsys, "upload", str(src))
    assert r.code == 10 and "cannot connect" in r.err and "Traceback" not in r.err


def test_password_never_in_config_logs_or_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    pw = tmp_path / "pw"
    pw.write_text("not-the-password-9876\n")
    pw.chmod(0o644)
    r = run(capsys, "server", "add", "a", "--host", inn.host, "--port", str(inn.auth_port), "--user", inn.user,
            "--password-file", str(pw), "--group", inn.group)
    assert r.code == 4 and "readable by other users" in r.err
    pw.chmod(0o600)
    assert run(capsys, "server", "add", "a", "--host", inn.host, "--port", str(inn.auth_port), "--group", inn.group,
               "--user", inn.user, "--password-file", str(pw)).code == 0
    config = (Path(os.environ["USENETSYNC_HOME"]) / "config.toml").read_text()
    assert "not-the-password" not in config and str(pw) in config
    src = tmp_path / "data"
    _tree(src, 1000, 1)
    run(capsys, "index", str(src))
    r = run(capsys, "upload", str(src))
    assert r.code == 11 and "not-the-password" not in r.out + r.err
    r = run(capsys, "server", "test", "a", "--json")
    assert r.code == 11 and "not-the-password" not in r.out + r.err
    pw.write_text(inn.password + "\n")
    r = run(capsys, "server", "test", "a")
    assert r.code == 0 and "login: ok" in r.out and inn.password not in r.out + r.err
    r = run(capsys, "server", "list", "--json")
    assert inn.password not in r.out


def _wait_posted(src: Path, at_least: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the upload ended before it could be interrupted"
        with State.open(Home.resolve()) as st:
            n = sum(c.execute("SELECT count(*) FROM segments WHERE state>=1").fetchall()[0][0] for c in st.shards)
        if n >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError("upload made no progress")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_upload_resumes_exactly_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer, sig: signal.Signals
) -> None:
    _add_server(capsys, inn)
    src = tmp_path / "data"
    files = _tree(src, 40_000_000, 8)
    assert run(capsys, "index", str(src)).code == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "usenetsync_cli", "upload", str(src), "--segment-size", SEG],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _wait_posted(src, 50, proc)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    if sig == signal.SIGKILL:
        assert proc.returncode == -9
    else:
        assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err
    r = _cli("upload", "--resume", "--json")
    assert r.returncode == 0, r.stderr
    st, folder = _folder(src)
    with st:
        ids = message_ids(st, folder, states=(2,))
        total = sum(c.execute("SELECT count(*) FROM segments WHERE state<>4").fetchall()[0][0] for c in st.shards)
        assert len(ids) == total  # every segment verified
        ctx = folder_context(folder, (inn.group,))
        attempts = [a for c in st.shards for (a,) in c.execute("SELECT attempt FROM segments")]
        assert set(attempts) == {0}  # nothing was re-posted under a second Message-ID
        for shard, seg_id in list(ids)[::25]:
            (epoch,), = st.shards[shard].execute("SELECT epoch FROM segments WHERE seg_id=?", (seg_id,))
            assert inn.stat(ctx.message_id(shard, seg_id, 1, epoch)) == 430
        assert read_back(st, folder) == files


def test_a_group_the_server_lacks_is_a_config_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer
) -> None:
    """INN answers 441 "No valid newsgroups" to every article: exit 4 naming the group, not a --resume hint."""
    src = tmp_path / "data"
    _tree(src, 50_000, 2)
    assert run(capsys, "index", str(src)).code == 0
    assert run(capsys, "server", "add", "local", "--host", inn.host, "--port", str(inn.port),
               "--group", "alt.binaries.nowhere.usenetsync", "--no-check").code == 0  # `server add` would refuse it
    r = run(capsys, "upload", str(src), "--redundancy", "0")
    line = r.err.strip().splitlines()[-1]
    assert r.code == 4, r.err
    assert "alt.binaries.nowhere.usenetsync" in line and "--group" in line and "--resume" not in line
    assert run(capsys, "server", "add", "local", "--host", inn.host, "--port", str(inn.port), "--group", inn.group,
               "--replace").code == 0
    r = run(capsys, "upload", str(src), "--redundancy", "0")
    assert r.code == 0, r.err
