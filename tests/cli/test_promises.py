"""README promises that had no test of their own, each driven through the CLI as a user would.

Owns: ``download --sync --keep-deleted``; progress drawn on a terminal and
never otherwise; exit codes 1 (internal error), 12 (server refuses) and 13
(server speaks something else) with their one-line messages; a password
never in the process list; ``--help`` with examples and ``--json`` on every
command; a public share's ID never printed by publication, only on request; the cron
example.  Faults come from the TCP proxy in front of the real INN; the
terminal is a real pty.
"""

from __future__ import annotations

from typing import Any

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.cli.helpers import Result, run
from tests.cli.test_share_download import Users, publish, snapshot, users  # noqa: F401 - fixture
from tests.support.faultproxy import FaultProxy
from tests.support.inn import InnServer


def _one_line_error(r: Result, code: int) -> str:
    assert r.code == code, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("usenetsync: ") and "Traceback" not in r.err, r.err
    return lines[0]


def _folder(root: Path, files: int = 3, size: int = 40_000) -> Path:
    root.mkdir()
    for i in range(files):
        (root / f"f{i}.bin").write_bytes(os.urandom(size))
    return root


def _wait(what: str, predicate: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


# ----------------------------------------------------------------- --keep-deleted --
def test_sync_keep_deleted_keeps_files_the_share_dropped(users: Users, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "stays.txt").write_bytes(b"version one")
    (src / "dropped.txt").write_bytes(b"the share will drop me")
    (src / "big.bin").write_bytes(os.urandom(50_000))
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))
    dest = tmp_path / "dest"
    assert users.as_("bob", "download", sid, str(dest)).code == 0
    (src / "dropped.txt").unlink()
    (src / "stays.txt").write_bytes(b"version two")
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "upload", str(src), "--redundancy", "0").code == 0
    assert users.as_("alice", "share", "update", "s").code == 0
    r = users.as_("bob", "download", sid, str(dest), "--sync", "--keep-deleted", "--json")
    assert r.code == 0, r.err
    (summary,) = [x for x in r.json_lines() if x["type"] == "download.summary"]
    assert summary["version"] == 2 and summary["files_deleted"] == 0 and summary["files_written"] == 1
    assert (dest / "dropped.txt").read_bytes() == b"the share will drop me"
    got = snapshot(dest)
    got.pop(b"dropped.txt")
    assert got == snapshot(src)  # and everything else is version 2


# ------------------------------------------------------------------------ progress --
def _on_terminal_stderr(args: list[str], timeout: float = 300) -> tuple[int, bytes, bytes]:
    """Run the CLI with stderr on a pty (stdout a pipe); returns (code, terminal bytes, stdout)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    proc = subprocess.Popen([sys.executable, "-m", "usenetsync_cli", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, "the command did not finish"
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None and not select.select([master], [], [], 0)[0]:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the slave side is closed
                break
            if not chunk:
                break
            screen += chunk
        assert proc.stdout is not None
        out = proc.stdout.read()
        return proc.wait(timeout=60), bytes(screen), out
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_progress_is_drawn_on_a_terminal_and_only_there(tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    assert run(capsys, "server", "add", "local", "--host", inn.host, "--port", str(inn.port), "--group", inn.group).code == 0
    tty_src = _folder(tmp_path / "tty", files=4, size=100_000)
    pipe_src = _folder(tmp_path / "pipe", files=4, size=100_000)
    for src in (tty_src, pipe_src):
        assert run(capsys, "index", str(src)).code == 0

    code, screen, out = _on_terminal_stderr(["upload", str(tty_src), "--segment-size", "16384", "--redundancy", "0"])
    assert code == 0, screen
    assert b"\x1b[" in screen  # cursor control: a live line, redrawn in place
    assert b"round 1" in screen and b"articles" in screen and b"conns" in screen
    assert b"\x1b[" not in out and b"posted" in out  # stdout stays plain data

    r = subprocess.run([sys.executable, "-m", "usenetsync_cli", "upload", str(pipe_src), "--segment-size", "16384",
                        "--redundancy", "0"], capture_output=True, env={**os.environ, "TERM": "xterm-256color"})
    assert r.returncode == 0, r.stderr
    assert b"\x1b" not in r.stderr and b"round 1" not in r.stderr and b"conns" not in r.stderr
    assert b"\x1b" not in r.stdout and b"posted" in r.stdout


# ---------------------------------------------------------------------- exit codes --
def test_internal_error_exit_1_one_line_and_redacted(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug (simulated: a function deep in a command raises RuntimeError) is exit 1, one line, secrets redacted."""
    from usenetsync_cli.cli import status as status_cmd

    def bug(*_a: object, **_k: object) -> None:
        raise RuntimeError("unexpected state; AUTHINFO PASS hunter2 password=hunter2")

    monkeypatch.setattr(status_cmd, "collect_status", bug)
    line = _one_line_error(run(capsys, "status"), 1)
    assert "internal error" in line and "RuntimeError" in line and "USENETSYNC_DEBUG=1" in line
    assert "hunter2" not in line
    r = run(capsys, "status", "--json")
    assert r.code == 1 and "hunter2" not in r.out + r.err and "Traceback" not in r.err
    monkeypatch.setenv("USENETSYNC_DEBUG", "1")  # the documented way to get the traceback
    with pytest.raises(RuntimeError):
        run(capsys, "status")


@pytest.fixture
def proxy(inn: InnServer) -> Iterator[FaultProxy]:
    with FaultProxy(inn.host, inn.port) as p:
        yield p


def _via(capsys: pytest.CaptureFixture[str], proxy: FaultProxy, inn: InnServer, name: str = "p") -> None:
    r = run(capsys, "server", "add", name, "--host", proxy.host, "--port", str(proxy.port), "--group", inn.group,
            "--connections", "2", "--timeout", "30")
    assert r.code == 0, r.err


def _indexed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    src = _folder(tmp_path / "src", files=2)
    assert run(capsys, "index", str(src)).code == 0
    return src


@pytest.mark.parametrize(
    ("fault", "expect"),
    [
        (("POST", b"440 posting not permitted"), "440"),
        (("", b"502 service permanently unavailable"), "502"),
        (("", b"201 server ready - no posting allowed"), "does not allow posting"),
    ],
    ids=["440", "502", "201"],
)
def test_server_refuses_exit_12(tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer,
                                proxy: FaultProxy, fault: tuple[str, bytes], expect: str) -> None:
    _via(capsys, proxy, inn)
    src = _indexed(capsys, tmp_path)
    prefix, reply = fault
    proxy.inject_reply(prefix.encode(), reply, times=None)
    line = _one_line_error(run(capsys, "upload", str(src), "--redundancy", "0"), 12)
    assert expect in line and "hint:" in line
    assert sum(1 for a in proxy.articles if a.reached_server) == 0  # nothing was posted
    proxy.clear_faults()
    r = run(capsys, "upload", str(src), "--redundancy", "0")  # state intact: a later run completes
    assert r.code == 0, r.err


@pytest.mark.parametrize("command", [("server", "test", "p"), ("upload", "SRC", "--redundancy", "0")])
def test_server_speaking_another_protocol_exit_13(tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer,
                                                  proxy: FaultProxy, command: tuple[str, ...]) -> None:
    _via(capsys, proxy, inn)
    src = _indexed(capsys, tmp_path)
    proxy.inject_reply(b"", b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", raw=True, times=None)
    args = [str(src) if a == "SRC" else a for a in command]
    line = _one_line_error(run(capsys, *args), 13)
    assert "SSH-2.0" in line and "hint:" in line and ("--port" in line or "--tls" in line)
    assert proxy.faults_fired["inject_greeting"] >= 1


def test_garbage_reply_mid_session_exit_13(tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer,
                                           proxy: FaultProxy) -> None:
    _via(capsys, proxy, inn)
    src = _indexed(capsys, tmp_path)
    # Logged in and greeted fine, then a reply that is not a status line at all.
    proxy.inject_reply(b"POST", b"<html><body>Bad Gateway</body></html>", raw=True, close=False, times=None)
    line = _one_line_error(run(capsys, "upload", str(src), "--redundancy", "0"), 13)
    assert "<html>" in line and "hint:" in line
    assert sum(1 for a in proxy.articles if a.reached_server) == 0


# ------------------------------------------------------------------- process list --
def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.NoSuchProcess:  # a child that just ended (or a zombie) has no argv left to leak
        return ""


@pytest.mark.parametrize("source", ["file", "env"])
def test_password_never_in_the_process_list(tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer,
                                            monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    secret = inn.password
    with FaultProxy(inn.host, inn.auth_port) as proxy:
        if source == "file":
            pw = tmp_path / "pw"
            pw.write_text(secret + "\n")
            pw.chmod(0o600)
            how = ["--password-file", str(pw)]
        else:
            monkeypatch.setenv("NNTP_PW_FOR_TEST", secret)
            how = ["--password-env", "NNTP_PW_FOR_TEST"]
        r = run(capsys, "server", "add", "auth", "--host", proxy.host, "--port", str(proxy.port), "--user", inn.user,
                *how, "--group", inn.group, "--connections", "2", "--timeout", "300")
        assert r.code == 0, r.err
        src = _indexed(capsys, tmp_path)
        proxy.hold_replies(b"POST", after=0)  # logged in, then waiting for its first 340: alive, password in memory
        proc = subprocess.Popen([sys.executable, "-m", "usenetsync_cli", "upload", str(src), "--redundancy", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _wait("a POST after login", lambda: proxy.faults_fired.get("hold_replies", 0) >= 1, proc)
            assert proxy.commands_seen(b"AUTHINFO") >= 2  # the password was read and sent
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            argv = [_cmdline(p) for p in tree]
            assert any("usenetsync_cli" in a for a in argv)
            assert not [a for a in argv if secret in a]
            ps = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True, check=True).stdout
            ours = {p.pid for p in tree}
            assert not [line for line in ps.splitlines()
                        if line.split(None, 1)[0].isdigit() and int(line.split(None, 1)[0]) in ours and secret in line]
            proxy.release_replies()
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        assert secret.encode() not in out + err


# ----------------------------------------------------------- --help and --json ------
def _leaf_commands() -> list[list[str]]:
    from usenetsync_cli.cli.app import cli

    out: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        if hasattr(cmd, "list_commands"):  # a group; the root loads its commands on lookup
            for name in cmd.list_commands(None):
                walk(cmd.get_command(None, name), [*path, name])
        else:
            out.append(path)

    walk(cli(), [])
    return out


def test_every_command_has_help_with_examples_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    """README: "Every command takes --help (with examples) and --json"."""
    commands = _leaf_commands()
    assert len(commands) >= 15 and ["server", "remove"] in commands
    lacking: list[str] = []
    for path in commands:
        r = run(capsys, *path, "--help")
        assert r.code == 0, (path, r.err)
        if "Example" not in r.out:
            lacking.append(f"{' '.join(path)}: no examples")
        if "--json" not in r.out:
            lacking.append(f"{' '.join(path)}: no --json")
    assert lacking == []


# --------------------------------------------------------------- the share ID -------
def test_share_id_is_printed_only_on_request(users: Users, tmp_path: Path) -> None:
    """A public share's ID is its key: never printed by publication (cron logs), only with --show-id."""
    src = _folder(tmp_path / "src", files=1)
    assert users.as_("alice", "index", str(src)).code == 0
    r = users.as_("alice", "share", "create", str(src), "--public", "--name", "s")
    assert r.code == 0, r.err
    published = users.as_("alice", "upload", str(src), "--segment-size", "16384", "--redundancy", "0")
    assert published.code == 0, published.err
    r = users.as_("alice", "share", "show", "s", "--show-id")
    sid = r.out.strip().splitlines()[-1]
    assert sid.startswith("us2")
    assert sid not in published.out + published.err and "share show s --show-id" in published.err
    for args in (("share", "list"), ("share", "list", "--json"), ("share", "show", "s"), ("share", "show", "s", "--json"),
                 ("status",), ("status", "--json"), ("verify", "--json")):
        r = users.as_("alice", *args)
        assert r.code == 0, (args, r.err)
        assert sid not in r.out + r.err, args
    r = users.as_("alice", "share", "list", "--show-id", "--json")
    assert sid in r.out


# --------------------------------------------------------------------------- cron ---
def _cron_jobs(text: str) -> tuple[dict[str, str], list[str]]:
    """(environment lines, job commands) of a crontab."""
    env: dict[str, str] = {}
    jobs: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.partition("=")
        if eq and " " not in name:
            env[name] = value
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"not a crontab line: {line!r}"
        jobs.append(fields[5])
    return env, jobs


def test_cron_example_is_a_ready_crontab_that_backs_up(tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    """README "Running from cron": examples/cron.example is a ready crontab line (its own words: index *and upload*)."""
    from tests.support.inn import REPO_ROOT

    text = (REPO_ROOT / "examples" / "cron.example").read_text()
    env, jobs = _cron_jobs(text)
    assert jobs and all(job.startswith("usenetsync ") for job in jobs)
    home, archive = Path(os.environ["USENETSYNC_HOME"]), _folder(tmp_path / "Archive", files=2)
    assert run(capsys, "server", "add", "main", "--host", inn.host, "--port", str(inn.port), "--group", inn.group).code == 0
    for job in jobs:  # run each as cron would, with the file's paths pointed at this test's folders
        cmd = job.replace(env.get("USENETSYNC_HOME", "/nonexistent"), str(home)).replace("/home/me/Archive", str(archive))
        r = subprocess.run(["bash", "-c", cmd], env={**os.environ, "USENETSYNC_HOME": str(home)}, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    assert any(" upload " in f" {job} " for job in jobs), "the cron example never uploads anything"
    r = run(capsys, "status", "--json")
    jobs_done = [x for x in r.json_lines() if x["type"] == "status.job" and x["state"] == "done"]
    assert jobs_done, "after the cron lines ran, nothing is backed up"


def _unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file as {section: [(key, value), ...]} (keys may repeat, as ExecStart= does)."""
    out: dict[str, list[tuple[str, str]]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, [])
            continue
        key, _, value = line.partition("=")
        out[section].append((key.strip(), value.strip()))
    return out


def test_systemd_example_indexes_uploads_and_verifies(capsys: pytest.CaptureFixture[str]) -> None:
    """examples/systemd: a service that runs index, upload and a bounded verify (each a valid command line),
    at idle priority, and a persistent nightly timer for it."""
    from tests.support.inn import REPO_ROOT

    unit_dir = REPO_ROOT / "examples" / "systemd"
    service = _unit(unit_dir / "usenetsync-backup.service")
    svc = dict(service["Service"])
    assert svc["Type"] == "oneshot" and svc["IOSchedulingClass"] == "idle" and int(svc["Nice"]) > 0
    steps = [v.split() for k, v in service["Service"] if k == "ExecStart"]
    assert [s[1] for s in steps] == ["index", "upload", "verify"]
    for argv in steps:
        assert argv[0] == "usenetsync" and "--lock-wait" in argv and "--json" in argv
        args = [a.replace("%h", "/home/me") for a in argv[1:]]
        r = run(capsys, *args, "--help")  # an unknown option or a bad value is refused before --help
        assert r.code == 0, (argv, r.err)
    assert any(a.startswith("--max-duration") for a in steps[2])
    timer = dict(_unit(unit_dir / "usenetsync-backup.timer")["Timer"])
    assert timer["Persistent"] == "true" and "OnCalendar" in timer
