"""`usenetsync server add|list|test|remove` end to end against the real INN (plain, AUTHINFO and TLS ports).

Owns: evidence for README's server promises — ``--tls`` (certificates
verified), the three password sources (``--password-file`` is covered in
test_upload_cli.py; here ``--password-env`` and ``--ask-password`` typed at a
real terminal), passwords never in ``config.toml``, and ``server remove``.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import stat
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.cli.helpers import run
from tests.support.inn import InnServer


def _config() -> str:
    path = Path(os.environ["USENETSYNC_HOME"]) / "config.toml"
    return path.read_text() if path.exists() else ""


def _test_json(capsys: pytest.CaptureFixture[str], name: str) -> dict[str, object]:
    r = run(capsys, "server", "test", name, "--json")
    assert r.code == 0, r.err
    (res,) = [x for x in r.json_lines() if x["type"] == "server.test"]
    return res


def test_tls_server_is_verified_and_used(tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    pw = tmp_path / "pw"
    pw.write_text(inn.password + "\n")
    pw.chmod(0o600)
    # No --port: --tls means 563.
    r = run(capsys, "server", "add", "secure", "--host", inn.host, "--tls", "--ca-file", str(inn.cert),
            "--user", inn.user, "--password-file", str(pw), "--group", inn.group, "--json")
    assert r.code == 0, r.err
    (added,) = [x for x in r.json_lines() if x["type"] == "server.added"]
    assert added["tls"] is True and added["port"] == inn.tls_port == 563
    res = _test_json(capsys, "secure")
    assert res["tls"] is True and res["authenticated"] is True and res["posting_allowed"] is True
    assert "READER" in res["capabilities"] and res["rtt_ms"] > 0 and res["connect_ms"] > 0  # README: server test
    r = run(capsys, "server", "test", "secure")
    assert "TLS" in r.out and "login: ok" in r.out
    # Posting goes over it too (563 speaks nothing but TLS, so success proves it).
    src = tmp_path / "data"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(40_000))
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "upload", str(src), "--segment-size", "16384", "--redundancy", "0", "--json")
    assert r.code == 0, r.err
    (summary,) = [x for x in r.json_lines() if x["type"] == "upload.summary"]
    assert summary["complete"] and summary["verified"] == summary["segments"] >= 3


def test_tls_certificate_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    pw = tmp_path / "pw"
    pw.write_text(inn.password + "\n")
    pw.chmod(0o600)
    login = ("--user", inn.user, "--password-file", str(pw))
    # INN's certificate is self-signed: without --ca-file it must not be trusted.
    assert run(capsys, "server", "add", "untrusted", "--host", inn.host, "--group", inn.group, "--tls", *login).code == 0
    r = run(capsys, "server", "test", "untrusted")
    assert r.code == 10, r.err
    line = r.err.strip()
    assert len(line.splitlines()) == 1 and "certificate verification failed" in line and "hint:" in line
    assert "Traceback" not in r.err
    # --insecure is the explicit, documented way out.
    assert run(capsys, "server", "add", "lax", "--host", inn.host, "--group", inn.group, "--tls", "--insecure", *login).code == 0
    assert _test_json(capsys, "lax")["tls"] is True


def test_password_env(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, inn: InnServer) -> None:
    var = "NNTP_TEST_PASSWORD_VAR"
    # Read at each run, so it may be unset when the server is added (a cron job's environment sets it).
    monkeypatch.delenv(var, raising=False)
    r = run(capsys, "server", "add", "early", "--host", inn.host, "--group", inn.group, "--port", str(inn.auth_port),
            "--user", inn.user, "--password-env", var)
    assert r.code == 0, r.err
    monkeypatch.setenv(var, inn.password)
    r = run(capsys, "server", "add", "envy", "--host", inn.host, "--group", inn.group, "--port", str(inn.auth_port), "--user", inn.user,
            "--password-env", var)
    assert r.code == 0, r.err
    config = _config()
    assert f'password_env = "{var}"' in config and inn.password not in config
    monkeypatch.delenv(var)
    r = run(capsys, "server", "test", "envy")  # read at each run: unset now, a clear error naming the variable
    assert r.code == 4 and var in r.err and "hint:" in r.err and len(r.err.strip().splitlines()) == 1
    monkeypatch.setenv(var, "wrong-secret-4711")
    r = run(capsys, "server", "test", "envy")
    assert r.code == 11 and "wrong-secret-4711" not in r.out + r.err
    monkeypatch.setenv(var, inn.password)
    res = _test_json(capsys, "envy")
    assert res["authenticated"] is True
    assert inn.password not in _config()
    r = run(capsys, "server", "list", "--json")
    assert inn.password not in r.out and var in r.out


def _on_terminal(args: list[str], typed: bytes, wait_for: bytes, timeout: float = 120) -> tuple[int, bytes]:
    """Run the CLI with a pty as its controlling terminal; type ``typed`` once ``wait_for`` shows."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "usenetsync_cli", *args], stdin=slave, stdout=slave, stderr=slave,
        start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    screen = bytearray()
    typed_yet = False
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, f"terminal session stuck; screen: {bytes(screen)!r}"
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every slave end is closed, the program is done
                    break
                if not chunk:
                    break
                screen += chunk
            if not typed_yet and wait_for in screen:
                os.write(master, typed)
                typed_yet = True
        assert typed_yet, f"no prompt seen: {bytes(screen)!r}"
        return proc.wait(timeout=60), bytes(screen)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ask_password_prompts_on_the_terminal_without_echo(capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    secret = inn.password
    code, screen = _on_terminal(
        ["server", "add", "typed", "--host", inn.host, "--group", inn.group, "--port", str(inn.auth_port), "--user", inn.user,
         "--ask-password"],
        typed=secret.encode() + b"\r", wait_for=b"password for",
    )
    assert code == 0, screen
    assert f"password for {inn.user}@{inn.host}".encode() in screen
    assert secret.encode() not in screen  # not echoed
    config = _config()
    assert secret not in config and "password_file" in config
    home = Path(os.environ["USENETSYNC_HOME"])
    kept = [p for p in home.rglob("*") if p.is_file() and secret in p.read_text(errors="replace")]
    assert len(kept) == 1 and stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    assert str(kept[0]) in config
    assert _test_json(capsys, "typed")["authenticated"] is True


def test_server_remove(capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    for name in ("one", "two"):
        assert run(capsys, "server", "add", name, "--host", inn.host, "--group", inn.group, "--port", str(inn.port)).code == 0
    r = run(capsys, "server", "remove", "one")
    assert r.code == 0 and "removed server one" in r.err
    names = [x["name"] for x in run(capsys, "server", "list", "--json").json_lines()]
    assert names == ["two"]
    assert "[servers.one]" not in _config() and "[servers.two]" in _config()
    r = run(capsys, "server", "remove", "one")
    assert r.code == 7 and "no server named 'one'" in r.err and len(r.err.strip().splitlines()) == 1
    r = run(capsys, "server", "test", "one")
    assert r.code == 7


@pytest.mark.parametrize(
    ("extra", "text"),
    [
        (["--user", "u", "--password-env", "X", "--ask-password"], "only one of"),
        (["--password-env", "X"], "needs a --user"),
    ],
)
def test_conflicting_password_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], extra: list[str], text: str
) -> None:
    r = run(capsys, "server", "add", "bad", "--host", "127.0.0.1", *extra)
    assert r.code == 2 and text in r.err and len(r.err.strip().splitlines()) == 1
    assert "[servers.bad]" not in _config()


def test_server_test_checks_each_group_exists_and_allows_posting(
    capsys: pytest.CaptureFixture[str], inn: InnServer
) -> None:
    """`server test` used to say "posting: allowed" for a group the server does not carry (then every
    upload failed with 441): it asks LIST ACTIVE for each configured group."""
    assert run(capsys, "server", "add", "ok", "--host", inn.host, "--port", str(inn.port), "--group",
               inn.group).code == 0
    res = _test_json(capsys, "ok")
    assert res["groups"] == {inn.group: "posting allowed"}
    r = run(capsys, "server", "test", "ok")
    assert r.code == 0 and f"group {inn.group}: posting allowed" in r.out
    assert run(capsys, "server", "add", "nope", "--host", inn.host, "--port", str(inn.port), "--group",
               "alt.binaries.nowhere.usenetsync", "--no-check").code == 0  # `server add` would refuse it
    r = run(capsys, "server", "test", "nope")
    assert r.code == 4 and "group alt.binaries.nowhere.usenetsync: MISSING" in r.out
    (line,) = r.err.strip().splitlines()
    assert "alt.binaries.nowhere.usenetsync is not carried" in line and "--group" in line


def test_server_test_hints_fit_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    """A refused connection does not suggest --resume, and a wrong password does not suggest `server test`."""
    assert run(capsys, "server", "add", "down", "--host", "127.0.0.1", "--port", "9", "--group", inn.group).code == 0
    r = run(capsys, "server", "test", "down")
    (line,) = r.err.strip().splitlines()
    assert r.code == 10 and "--resume" not in line and "--tls" in line and "port" in line
    pw = tmp_path / "pw"
    pw.write_text("not-it\n")
    pw.chmod(0o600)
    assert run(capsys, "server", "add", "w", "--host", inn.host, "--port", str(inn.auth_port), "--group", inn.group,
               "--user", inn.user, "--password-file", str(pw)).code == 0
    r = run(capsys, "server", "test", "w")
    (line,) = r.err.strip().splitlines()
    assert r.code == 11 and "server test" not in line.split("(hint:")[1] and "--password-file" in line
