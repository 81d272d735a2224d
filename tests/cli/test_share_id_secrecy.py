"""A share ID is a secret (for a public share it is the key): never on argv, in output, logs or tracebacks.

Owns: the ways ``download`` takes an ID (``--id-file``, ``$USENETSYNC_SHARE_ID``,
``-`` for stdin, the argument with a warning) and that exactly one is given;
the id file's mode and size checks; that publishing (``share create``,
``upload``, ``share update``, ``share revoke``, ``verify --repair``) never
prints or emits an ID, in text or ``--json``, while ``share show --show-id``
does; ``errors.redact`` on IDs of any format version, and that Click's usage
errors and a debug traceback go through it; and that an ID read from a file
is not in the process's command line (read from /proc while it runs).

IDs come from ``share show NAME --show-id`` and are never built by hand, so
the tests hold for any ID format; the redact unit test builds ID-shaped
strings for several prefixes on purpose. Publication and downloads use the
real INN; the /proc test points the download at a listener that never
greets, so the run is provably still going while its command line is read.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import Result, run
from tests.cli.test_share_download import Users, _index_ids, make_folder, snapshot, users  # noqa: F401 - fixture
from tests.support.inn import InnServer
from usenetsync_cli.cli.download import ARGV_WARNING
from usenetsync_cli.errors import ConfigError, UsageError, redact

CONFIG = ConfigError.exit_code
USAGE = UsageError.exit_code


def _secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def _leaks(sid: str, r: Result) -> bool:
    text = r.out + r.err
    return sid in text or sid.upper() in text or sid.lower() in text


def _one_line_error(r: Result, code: int) -> str:
    assert r.code == code, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("usenetsync: error: ") and "Traceback" not in r.err, r.err
    return lines[0]


def _show_id(users: Users, name: str) -> str:
    r = users.as_("alice", "share", "show", name, "--show-id")
    assert r.code == 0, r.err
    return r.out.strip()


def _pending_share(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> str:
    """A real share ID without any network: a share of an indexed, not yet uploaded folder (its index is pending)."""
    src = tmp_path / "pending-src"
    src.mkdir()
    (src / "a").write_bytes(b"x")
    assert run(capsys, "keys", "init", "--no-passphrase").code == 0
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "share", "create", str(src), "--public", "--name", "p")
    assert r.code == 0 and "not published yet" in r.err, r.err
    r = run(capsys, "share", "show", "p", "--show-id")
    assert r.code == 0, r.err
    return r.out.strip()


# ------------------------------------------------------------- publishing -------
def test_publishing_never_prints_the_id_only_show_id_does(users: Users, tmp_path: Path, inn: InnServer) -> None:
    """upload, update, revoke and verify --repair, in text and --json: name and version, never the ID; create
    shows it once (its creator is at the keyboard), on stdout or in its share.created event."""
    src = tmp_path / "src"
    make_folder(src)
    bob, carol = users.pubkey("bob"), users.pubkey("carol")
    said: dict[str, Result] = {}
    assert users.as_("alice", "index", str(src)).code == 0
    said["create (pending)"] = users.as_("alice", "share", "create", str(src), "--public", "--name", "s")
    said["upload"] = users.as_("alice", "upload", str(src), "--segment-size", "16384")
    assert said["upload"].code == 0, said["upload"].err
    said["create (published now)"] = users.as_("alice", "share", "create", str(src), "--to", bob, "--to", carol,
                                               "--name", "priv", "--json")
    (src / "added.txt").write_bytes(b"new")
    assert users.as_("alice", "index", str(src)).code == 0
    said["upload --json (nothing to publish)"] = users.as_("alice", "upload", str(src), "--segment-size", "16384",
                                                           "--json")
    said["share update"] = users.as_("alice", "share", "update", "s")
    said["share update --json"] = users.as_("alice", "share", "update", "s", "--json", "--force")
    said["share update (nothing changed)"] = users.as_("alice", "share", "update", "s")
    said["share revoke --json"] = users.as_("alice", "share", "revoke", "priv", "--to", carol, "--json")
    _root, *parts = _index_ids(users, "s")
    inn.cancel(parts[0])
    said["verify --repair --json"] = users.as_("alice", "verify", "--repair", "--json")
    _root, *parts = _index_ids(users, "s")
    inn.cancel(parts[0])
    said["verify --repair"] = users.as_("alice", "verify", "--repair")
    said["share list --json"] = users.as_("alice", "share", "list", "--json")
    said["share show"] = users.as_("alice", "share", "show", "s")
    for what, r in said.items():
        assert r.code == 0, (what, r.err)

    sid, priv = _show_id(users, "s"), _show_id(users, "priv")
    assert len(sid) > 30 and len(priv) > 30
    assert [what for what, r in said.items() if _leaks(sid, r) or _leaks(priv, r)] == [
        "create (pending)", "create (published now)"]
    assert said["create (pending)"].out.strip() == sid and sid not in said["create (pending)"].err
    created = [e for e in said["create (published now)"].json_lines() if e["type"] == "share.created"]
    assert [e["share_id"] for e in created] == [priv]
    assert said["create (published now)"].out.count(priv) == 1 and priv not in said["create (published now)"].err
    # Publications were made and said so, by name and version.
    assert "published share 's' version 1" in said["upload"].err
    assert "show its ID with `usenetsync share show s --show-id`" in said["upload"].err
    assert "published share 'priv' version 1" in said["create (published now)"].err
    assert "published share 's' version 3" in said["share update --json"].err
    # Nothing changed since version 3: nothing is published without --force (issue 14).
    assert "nothing changed since version 3; nothing published" in said["share update (nothing changed)"].err
    assert "published share" not in said["share update (nothing changed)"].err
    assert "published share 'priv' version 2" in said["share revoke --json"].err
    assert "published share 's' version 5" in said["verify --repair"].err
    events = [e for what in ("create (published now)", "share update --json", "verify --repair --json")
              for e in said[what].json_lines() if e["type"] == "share.published"]
    assert len(events) == 3 and all("share_id" not in e for e in events), events
    # The one way to see it: stdout is the ID alone, with a reminder on stderr.
    r = users.as_("alice", "share", "show", "s", "--show-id")
    assert r.out.strip() == sid and "is a secret" in r.err and len(r.err.strip().splitlines()) == 2
    r = users.as_("alice", "share", "show", "s", "--show-id", "--json")
    assert r.json_lines()[0]["share_id"] == sid and "is a secret" in r.err


# --------------------------------------------------------------- download -------
def test_download_takes_the_id_from_a_file_the_environment_stdin_or_argv(
    users: Users, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "src"
    make_folder(src)
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "share", "create", str(src), "--public", "--name", "s").code == 0
    assert users.as_("alice", "upload", str(src), "--segment-size", "16384").code == 0
    sid = _show_id(users, "s")

    id_file = _secret_file(tmp_path / "share.id", f"\n  {sid}  \nanything after the first line\n")
    r = users.as_("bob", "download", "--id-file", str(id_file), str(tmp_path / "d-file"))
    assert r.code == 0, r.err
    assert snapshot(tmp_path / "d-file") == snapshot(src) and not _leaks(sid, r) and ARGV_WARNING not in r.err

    monkeypatch.setenv("USENETSYNC_SHARE_ID", sid)
    r = users.as_("bob", "download", str(tmp_path / "d-env"), "--json")
    assert r.code == 0, r.err
    assert snapshot(tmp_path / "d-env") == snapshot(src) and not _leaks(sid, r) and ARGV_WARNING not in r.err
    monkeypatch.delenv("USENETSYNC_SHARE_ID")

    monkeypatch.setattr(sys, "stdin", io.StringIO(sid + "\nnot read\n"))
    r = users.as_("bob", "download", "-", str(tmp_path / "d-stdin"))
    assert r.code == 0, r.err
    assert snapshot(tmp_path / "d-stdin") == snapshot(src) and not _leaks(sid, r) and ARGV_WARNING not in r.err

    r = users.as_("bob", "download", sid, str(tmp_path / "d-argv"))
    assert r.code == 0, r.err
    assert snapshot(tmp_path / "d-argv") == snapshot(src)
    assert r.err.count(ARGV_WARNING) == 1 and ARGV_WARNING + "\n" in r.err and not _leaks(sid, r)


def test_two_sources_of_the_id_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    sid = _pending_share(capsys, tmp_path)
    id_file = _secret_file(tmp_path / "share.id", sid + "\n")
    dest = tmp_path / "dest"
    cases = {
        "file and argument": ("--id-file", str(id_file), sid, str(dest)),
        "file and stdin": ("--id-file", str(id_file), "-", str(dest)),
        "file and lone -": ("--id-file", str(id_file), "-"),
    }
    for what, args in cases.items():
        line = _one_line_error(run(capsys, "download", *args), USAGE)
        assert "given twice" in line and "hint: give the ID one way only" in line, (what, line)
        assert sid not in line
    monkeypatch.setenv("USENETSYNC_SHARE_ID", sid)
    for what, args in {"variable and file": ("--id-file", str(id_file), str(dest)),
                       "variable and argument": (sid, str(dest)),
                       "variable and stdin": ("-", str(dest))}.items():
        line = _one_line_error(run(capsys, "download", *args), USAGE)
        assert "given twice" in line and "USENETSYNC_SHARE_ID" in line, (what, line)
        assert sid not in line
    assert not dest.exists()
    monkeypatch.setenv("USENETSYNC_SHARE_ID", "")  # empty is unset: the argument is the one source
    line = _one_line_error(run(capsys, "download", "--id-file", str(id_file)), USAGE)
    assert "give a destination folder" in line
    # --nzb keeps its first argument as DEST and takes no share ID source
    line = _one_line_error(run(capsys, "download", "--nzb", str(id_file), "--id-file", str(id_file), str(dest)), USAGE)
    assert "--nzb" in line


def test_id_file_must_be_private_small_and_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    sid = _pending_share(capsys, tmp_path)
    dest = str(tmp_path / "dest")
    for mode in (0o640, 0o604):
        loose = _secret_file(tmp_path / f"loose-{mode:o}", sid + "\n", mode)
        line = _one_line_error(run(capsys, "download", "--id-file", str(loose), dest), CONFIG)
        assert "is readable by other users" in line and "chmod 600" in line and sid not in line, line
    huge = _secret_file(tmp_path / "huge", sid + "\n" + "x" * 5000)
    line = _one_line_error(run(capsys, "download", "--id-file", str(huge), dest), CONFIG)
    assert "more than 4096 characters" in line and sid not in line
    empty = _secret_file(tmp_path / "empty", "\n \n")
    assert "is empty" in _one_line_error(run(capsys, "download", "--id-file", str(empty), dest), CONFIG)
    # The ID itself given as the file name: refused without echoing it.
    r = run(capsys, "download", "--id-file", sid, dest)
    line = _one_line_error(r, USAGE)
    assert "not the ID itself" in line and not _leaks(sid, r)
    # A mistyped ID from a file: exit 8 like any bad ID, and the file's content is not quoted.
    typo = _secret_file(tmp_path / "typo", sid[:-1] + ("a" if sid[-1] != "a" else "b"))
    r = run(capsys, "download", "--id-file", str(typo), dest)
    assert r.code == 8 and not _leaks(sid[:-1], r)
    assert not (tmp_path / "dest").exists()


# ----------------------------------------------------------------- redact -------
def _id_shaped(prefix: str, chars: int) -> str:
    return prefix + base64.b32encode(os.urandom(chars)).decode().lower().rstrip("=")[:chars]


@pytest.mark.parametrize("prefix,chars", [("us1p", 71), ("us1w", 45), ("us1r", 45), ("us2p", 71), ("us2w", 30),
                                          ("us9r", 52)])
def test_redact_hides_share_ids_of_any_version(prefix: str, chars: int) -> None:
    sid = _id_shaped(prefix, chars)
    sentence = f"cannot open share {sid}: no share with that ID on the server"
    assert redact(sentence) == "cannot open share us…[share ID redacted]: no share with that ID on the server"
    assert sid.upper() not in redact(f"ID={sid.upper()}.")
    traceback_text = (
        "Traceback (most recent call last):\n"
        '  File "/x/pipeline/shares.py", line 140, in open_share\n'
        "    raise ValueError(text)\n"
        f"ValueError: bad root for '{sid}'\n"
        f"During handling of the above exception, another exception occurred:\n"
        f"RuntimeError: ({sid!r},)\n"
    )
    red = redact(traceback_text)
    assert sid not in red and red.count("us…[share ID redacted]") == 2 and "line 140, in open_share" in red


def test_redact_leaves_what_is_not_an_id_alone() -> None:
    for text in ("us1", "us1p", "focus on us2pabc", "us1x" + "a" * 45, "the US1P2 plan", "us1p" + "a" * 29):
        assert redact(text) == text


def test_click_usage_errors_and_debug_tracebacks_are_redacted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    sid = _pending_share(capsys, tmp_path)
    r = run(capsys, "share", "show", "p", sid)  # Click quotes an extra argument
    assert r.code == 2 and "us…[share ID redacted]" in r.err and not _leaks(sid, r)
    # A bug under USENETSYNC_DEBUG=1 prints its traceback (a real process: entry.main() is the printer).
    code = (
        "import usenetsync_cli.cli.app as app\n"
        "def bug(): raise RuntimeError('while opening ' + " + repr(sid) + ")\n"
        "app.main = bug\n"
        "from usenetsync_cli.entry import main\n"
        "main()\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                       env={**os.environ, "USENETSYNC_DEBUG": "1"})
    assert p.returncode == 1 and "Traceback" in p.stderr and "RuntimeError: while opening us…[share ID redacted]" in p.stderr
    assert sid not in p.stderr + p.stdout


# ------------------------------------------------------------- process list -----
def _cmdline_while_connecting(args: list[str], listener: socket.socket, home: Path) -> tuple[list[str], str]:
    """Start ``usenetsync download ARGS``, wait until it connects to ``listener`` (it has parsed its ID), read /proc."""
    proc = subprocess.Popen([sys.executable, "-m", "usenetsync_cli", "download", *args],
                            env={**os.environ, "USENETSYNC_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        conn, _ = listener.accept()  # the event: the run is past reading its ID and still going
        try:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                argv = [a.decode() for a in f.read().split(b"\0") if a]
            assert proc.poll() is None
        finally:
            conn.close()
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=60)
    return argv, err.decode()


def test_an_id_from_a_file_is_not_in_the_process_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    sid = _pending_share(capsys, tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(120)
    home = Path(os.environ["USENETSYNC_HOME"])
    assert run(capsys, "server", "add", "silent", "--host", "127.0.0.1", "--port", str(listener.getsockname()[1]),
               "--timeout", "120", "--no-post").code == 0
    with listener:
        id_file = _secret_file(tmp_path / "share.id", sid + "\n")
        argv, err = _cmdline_while_connecting(["--id-file", str(id_file), str(tmp_path / "d1")], listener, home)
        assert "--id-file" in argv and str(id_file) in argv  # the command line was read
        assert not any(sid in a or sid.upper() in a for a in argv) and ARGV_WARNING not in err
        # The check can fail: an ID given as the argument is right there, and warned about.
        argv, err = _cmdline_while_connecting([sid, str(tmp_path / "d2")], listener, home)
        assert sid in argv and ARGV_WARNING in err
