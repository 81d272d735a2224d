"""No default newsgroup: `server add` needs and checks `--group`, `upload` stops at the first 441 for it.

Owns: evidence for issue 14's server items — a posting server without
``--group`` is a usage error; ``server add`` asks the real INN (through a
counting proxy) whether each group exists and allows posting when it can log
in now, and otherwise saves the entry and says to run ``server test``; an old
config without groups fails before anything is posted; a 441 "no valid
newsgroups" stops the upload at once (counted POSTs) and a later run with a
group the server carries finishes the job; ``server list`` off a terminal
prints whole lines; ``server remove`` deletes the password ``--ask-password``
stored, never a user's own file.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import run
from tests.support.faultproxy import FaultProxy
from tests.support.inn import InnServer
from usenetsync_cli.config import store_prompted_password
from usenetsync_cli.store.home import Home

BAD_GROUP = "alt.binaries.nowhere.usenetsync"


def _config() -> str:
    path = Path(os.environ["USENETSYNC_HOME"]) / "config.toml"
    return path.read_text() if path.exists() else ""


@pytest.fixture
def proxy(inn: InnServer) -> Iterator[FaultProxy]:
    with FaultProxy(inn.host, inn.port) as p:
        yield p


def test_a_posting_server_needs_a_group(capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "server", "add", "local", "--host", "127.0.0.1")
    (line,) = r.err.strip().splitlines()
    assert r.code == 2 and "--group" in line and "hint:" in line
    assert "--group alt.binaries.backup" in line.split("hint:")[1] and "--no-post" in line
    assert "[servers.local]" not in _config()
    # A server only read from needs none.
    r = run(capsys, "server", "add", "reader", "--host", "127.0.0.1", "--no-post", "--no-check")
    assert r.code == 0, r.err
    assert 'role = "read"' in _config() and "post = false" in _config()


def test_add_checks_the_groups_when_it_can_log_in(capsys: pytest.CaptureFixture[str], proxy: FaultProxy) -> None:
    args = ("--host", proxy.host, "--port", str(proxy.port))
    r = run(capsys, "server", "add", "nope", *args, "--group", BAD_GROUP)
    (line,) = r.err.strip().splitlines()
    assert r.code == 4 and f"group {BAD_GROUP} is not carried" in line and "--group" in line
    assert proxy.commands_seen(b"LIST") >= 1  # it asked the server
    assert "[servers.nope]" not in _config()  # nothing saved
    r = run(capsys, "server", "add", "ok", *args, "--group", "alt.binaries.test", "--json")
    assert r.code == 0, r.err
    (added,) = [x for x in r.json_lines() if x["type"] == "server.added"]
    assert added["groups_checked"] is True and "posting allowed" in r.err
    # --no-check: offline setup, nothing asked, saved.
    seen = proxy.connections_total
    r = run(capsys, "server", "add", "later", *args, "--group", BAD_GROUP, "--no-check")
    assert r.code == 0 and proxy.connections_total == seen and "[servers.later]" in _config()


def test_add_saves_and_says_so_when_it_cannot_log_in_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, inn: InnServer,
    proxy: FaultProxy,
) -> None:
    # Down: saved, with a note to run `server test` (and no wait past the entry's timeout).
    proxy.down()
    r = run(capsys, "server", "add", "down", "--host", proxy.host, "--port", str(proxy.port), "--group", BAD_GROUP,
            "--timeout", "5")
    assert r.code == 0, r.err
    assert "usenetsync server test down" in r.err and "[servers.down]" in _config()
    # Up but silent (accepts, never greets): the entry's timeout bounds the wait, then the same note.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        t0 = time.monotonic()
        r = run(capsys, "server", "add", "mute", "--host", "127.0.0.1", "--port", str(silent.getsockname()[1]),
                "--group", BAD_GROUP, "--timeout", "2")
        assert r.code == 0 and "server test mute" in r.err and time.monotonic() - t0 < 30
    # A password variable that is unset now (cron sets it): nothing is asked.
    monkeypatch.delenv("USENETSYNC_TEST_PW_UNSET", raising=False)
    r = run(capsys, "server", "add", "env", "--host", inn.host, "--port", str(inn.auth_port), "--user", inn.user,
            "--password-env", "USENETSYNC_TEST_PW_UNSET", "--group", BAD_GROUP)
    assert r.code == 0 and "USENETSYNC_TEST_PW_UNSET" in r.err and "server test env" in r.err
    # Set now: it logs in, asks, and refuses the group.
    monkeypatch.setenv("USENETSYNC_TEST_PW_SET", inn.password)
    r = run(capsys, "server", "add", "env2", "--host", inn.host, "--port", str(inn.auth_port), "--user", inn.user,
            "--password-env", "USENETSYNC_TEST_PW_SET", "--group", BAD_GROUP)
    assert r.code == 4 and BAD_GROUP in r.err and "[servers.env2]" not in _config()
    assert inn.password not in r.out + r.err


def _src(tmp_path: Path, segments: int) -> Path:
    src = tmp_path / "data"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(16_384 * segments - 1000))
    return src


def test_upload_without_groups_fails_before_posting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], proxy: FaultProxy
) -> None:
    home = Home.resolve().ensure()
    home.config_file.write_text(f'[servers.old]\nhost = "{proxy.host}"\nport = {proxy.port}\n')  # an old config
    src = _src(tmp_path, 3)
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "upload", str(src), "--segment-size", "16384")
    (line,) = r.err.strip().splitlines()
    assert r.code == 4 and "'old' names no newsgroup" in line and "--group" in line.split("hint:")[1]
    assert proxy.connections_total == 0


def test_upload_stops_at_the_first_refused_group_and_resumes_with_a_good_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], proxy: FaultProxy
) -> None:
    conns = 3
    args = ("--host", proxy.host, "--port", str(proxy.port), "--connections", str(conns))
    assert run(capsys, "server", "add", "p", *args, "--group", BAD_GROUP, "--no-check").code == 0
    src = _src(tmp_path, 200)
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "upload", str(src), "--segment-size", "16384", "--redundancy", "0")
    (line,) = r.err.strip().splitlines()
    assert r.code == 4, r.err
    assert BAD_GROUP in line and "--resume" not in line and "--group" in line.split("hint:")[1]
    refused = proxy.articles
    # Every connection meets the 441 at most once (in flight when the first came back): nowhere near 200.
    assert 1 <= len(refused) <= conns, len(refused)
    assert all((a.reply or "").startswith("441") for a in refused), [a.reply for a in refused]
    # Fixed: the same job finishes, every segment posted once and verified.
    assert run(capsys, "server", "add", "p", *args, "--group", "alt.binaries.test", "--replace").code == 0
    r = run(capsys, "upload", str(src), "--segment-size", "16384", "--redundancy", "0", "--json")
    assert r.code == 0, r.err
    (s,) = [x for x in r.json_lines() if x["type"] == "upload.summary"]
    assert s["complete"] and s["segments"] == s["verified"] == 200


def test_server_list_off_a_terminal_prints_whole_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = "news." + "very-long-provider-name." * 4 + "example.com"
    pw = tmp_path / ("a-long-folder-name-" * 4) / "nntp-password"
    pw.parent.mkdir()
    pw.write_text("x\n")
    pw.chmod(0o600)
    r = run(capsys, "server", "add", "far", "--host", host, "--port", "4119", "--user", "me", "--password-file",
            str(pw), "--group", "alt.binaries.test", "--no-check")
    assert r.code == 0, r.err
    r = run(capsys, "server", "list")
    assert r.code == 0
    header, row = r.out.splitlines()
    assert header.split() == ["name", "role", "address", "tls", "user", "password", "from", "conns", "groups"]
    assert f"{host}:4119" in row and str(pw) in row and "alt.binaries.test" in row and "…" not in r.out
    assert row.split()[:2] == ["far", "post"]


def test_server_remove_deletes_the_stored_password_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer
) -> None:
    home = Home.resolve().ensure()
    own = tmp_path / "my-password"
    own.write_text("mine\n")
    own.chmod(0o600)
    assert run(capsys, "server", "add", "own", "--host", inn.host, "--port", str(inn.auth_port), "--user", inn.user,
               "--password-file", str(own), "--group", inn.group, "--no-check").code == 0
    # What `--ask-password` does (typed at a terminal: test_server_cli.py) minus the terminal.
    stored = store_prompted_password(home, "typed", inn.password)
    cfg = _config() + (f'[servers.typed]\nhost = "{inn.host}"\nport = {inn.auth_port}\nuser = "{inn.user}"\n'
                       f'password_file = "{stored}"\ngroups = ["{inn.group}"]\n')
    home.config_file.write_text(cfg)
    assert run(capsys, "server", "remove", "typed").code == 0
    assert not stored.exists()
    assert run(capsys, "server", "remove", "own").code == 0
    assert own.read_text() == "mine\n"
