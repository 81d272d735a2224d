"""CLI tests of `keys init|show|phrase|restore|export|import`.

Most go through the sub-app with CliRunner; those about exit codes and the
one-line error go through ``main()`` (tests.cli.helpers.run), and the
process-list test runs the real CLI in a subprocess.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import stat
import subprocess
import sys
import termios
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner, Result

from tests.cli.helpers import run
from tests.core.identity_vectors import PHRASE, PHRASE_PUBKEY, V1_IDENTITY, V1_PASS, V1_PROTECTED
from usenetsync_cli.cli.keys import keys_app
from usenetsync_cli.core.identity import Argon2Params, Identity, PublicIdentity, identity_file_info
from usenetsync_cli.errors import ConfigError, NotFoundError, TamperedError, UsageError, WrongPasswordError
from usenetsync_cli.store import keystore
from usenetsync_cli.store.home import Home

PASS = "a long and secret passphrase"
FAST = Argon2Params(t=1, m_kib=8, p=1)


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keystore, "DEFAULT_KDF", FAST)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(keys_app, list(args))


def _pwfile(tmp_path: Path, text: str = PASS, name: str = "pw") -> Path:
    p = tmp_path / name
    p.write_text(text + "\n", encoding="utf-8")
    p.chmod(0o600)
    return p


def _id_path() -> Path:
    return keystore.identity_path(Home.resolve())


def _private_b64() -> str:
    return json.loads(_id_path().read_bytes())["private"]


def test_help_has_examples() -> None:
    for cmd in ("init", "show", "phrase", "restore", "export", "import"):
        r = invoke(cmd, "--help")
        assert r.exit_code == 0 and "Examples" in r.stdout, cmd
    r = invoke("--help")
    assert all(cmd in r.stdout for cmd in ("init", "show", "phrase", "restore", "export", "import"))


def test_init_without_passphrase_then_show() -> None:
    r = invoke("init", "--no-passphrase")
    assert r.exit_code == 0, r.exception
    key = r.stdout.strip()
    pub = PublicIdentity.from_text(key)
    assert "not passphrase-protected" in r.stderr
    path = _id_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _private_b64() not in r.stdout + r.stderr

    r = invoke("show")
    assert r.exit_code == 0
    assert r.stdout.splitlines() == [key, f"fingerprint: {pub.fingerprint().hex()}"]
    r = invoke("show", "--json")
    (obj,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert obj == {
        "type": "keys.public", "public_key": key, "fingerprint": pub.fingerprint().hex(),
        "protected": False, "path": str(path),
    }
    assert _private_b64() not in r.stdout + r.stderr


def test_init_refuses_to_overwrite_then_force(tmp_path: Path) -> None:
    assert invoke("init", "--no-passphrase").exit_code == 0
    first = keystore.load_public(Home.resolve())
    r = invoke("init", "--no-passphrase")
    assert isinstance(r.exception, ConfigError) and "already exists" in str(r.exception)
    assert keystore.load_public(Home.resolve()) == first
    r = invoke("init", "--passphrase-file", str(_pwfile(tmp_path)), "--force")
    assert r.exit_code == 0, r.exception
    assert keystore.load_public(Home.resolve()) != first
    assert keystore.load_identity_info(Home.resolve()).protected


def test_init_with_passphrase_file_and_json(tmp_path: Path) -> None:
    r = invoke("init", "--passphrase-file", str(_pwfile(tmp_path)), "--json")
    assert r.exit_code == 0, r.exception
    obj, phrase_line = [json.loads(line) for line in r.stdout.splitlines()]
    assert obj["type"] == "keys.created" and obj["protected"] is True
    assert set(phrase_line) == {"type", "phrase"} and phrase_line["type"] == "keys.phrase"
    assert PASS not in r.stdout + r.stderr
    ident = keystore.load_identity(Home.resolve(), keystore.PassphraseSource(file=_pwfile(tmp_path)))
    assert ident.public().to_text() == obj["public_key"]
    assert ident.phrase() == phrase_line["phrase"]
    assert phrase_line["phrase"] not in r.stderr  # shown once: in --json mode only on the JSON line
    doc = json.loads(_id_path().read_bytes())
    assert doc["argon2id"]["t"] == 1 and doc["argon2id"]["m_kib"] == 8 and doc["kind"] == "phrase"


def test_init_with_env_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USENETSYNC_PASSPHRASE_FILE", str(_pwfile(tmp_path)))
    assert invoke("init").exit_code == 0
    assert keystore.load_identity(Home.resolve()).public() == keystore.load_public(Home.resolve())


def test_init_without_a_terminal_explains() -> None:
    r = invoke("init")
    assert isinstance(r.exception, ConfigError)
    assert "--passphrase-file" in r.exception.hint and "--no-passphrase" in r.exception.hint
    assert not _id_path().exists()


def test_init_prompts_twice_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keystore, "_stdin_is_tty", lambda: True)
    answers = iter([PASS, PASS])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    r = invoke("init")
    assert r.exit_code == 0, r.exception
    assert PASS not in r.stdout + r.stderr
    mismatch = iter([PASS, PASS + "x"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(mismatch))
    r = invoke("init", "--force")
    assert isinstance(r.exception, ConfigError) and "differ" in str(r.exception)


def test_init_conflicting_options(tmp_path: Path) -> None:
    for cmd in (["init"], ["restore", "--phrase-file", str(_pwfile(tmp_path, PHRASE, "phrase"))]):
        r = invoke(*cmd, "--no-passphrase", "--passphrase-file", str(_pwfile(tmp_path)))
        assert isinstance(r.exception, UsageError) and "only one of" in str(r.exception)
        assert not _id_path().exists()


def test_show_without_identity() -> None:
    r = invoke("show")
    assert isinstance(r.exception, NotFoundError)


def test_export_writes_the_file_as_is(tmp_path: Path) -> None:
    assert invoke("init", "--passphrase-file", str(_pwfile(tmp_path))).exit_code == 0
    out = tmp_path / "backup.json"
    r = invoke("export", str(out))
    assert r.exit_code == 0, r.exception
    assert out.read_bytes() == _id_path().read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    r = invoke("export", str(out))
    assert isinstance(r.exception, ConfigError) and "exists" in str(r.exception)
    assert invoke("export", str(out), "--force").exit_code == 0


def test_import_into_another_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert invoke("init", "--passphrase-file", str(_pwfile(tmp_path))).exit_code == 0
    original = keystore.load_public(Home.resolve())
    exported = tmp_path / "id.json"
    assert invoke("export", str(exported)).exit_code == 0

    monkeypatch.setenv("USENETSYNC_HOME", str(tmp_path / "other-home"))
    r = invoke("import", str(exported), "--passphrase-file", str(_pwfile(tmp_path, "wrong", "bad")))
    assert isinstance(r.exception, WrongPasswordError)
    assert not _id_path().exists()  # nothing installed from a file we could not open

    r = invoke("import", str(exported), "--passphrase-file", str(_pwfile(tmp_path)), "--json")
    assert r.exit_code == 0, r.exception
    assert json.loads(r.stdout)["changed"] is True
    assert keystore.load_public(Home.resolve()) == original
    assert _id_path().read_bytes() == exported.read_bytes()
    assert stat.S_IMODE(_id_path().stat().st_mode) == 0o600

    r = invoke("import", str(exported), "--passphrase-file", str(_pwfile(tmp_path)))
    assert r.exit_code == 0 and "already installed" in r.stderr


def test_import_refuses_a_different_identity_without_force(tmp_path: Path) -> None:
    assert invoke("init", "--no-passphrase").exit_code == 0
    mine = keystore.load_public(Home.resolve())
    other = tmp_path / "other.json"
    other.write_bytes(Identity.generate().to_file_bytes(None))
    other.chmod(0o600)
    r = invoke("import", str(other))
    assert isinstance(r.exception, ConfigError) and "already exists" in str(r.exception)
    assert keystore.load_public(Home.resolve()) == mine
    assert invoke("import", str(other), "--force").exit_code == 0
    assert keystore.load_public(Home.resolve()) != mine


def test_import_damaged_or_missing_file(tmp_path: Path) -> None:
    good = Identity.generate().to_file_bytes(None)
    doc = json.loads(good)
    raw = bytearray(base64.b64decode(doc["private"]))
    raw[0] ^= 1
    doc["private"] = base64.b64encode(bytes(raw)).decode()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    r = invoke("import", str(bad))
    assert isinstance(r.exception, TamperedError)
    assert not _id_path().exists()
    r = invoke("import", str(tmp_path / "nope.json"))
    assert r.exception is not None and "cannot read" in str(r.exception)


# --- recovery phrase: init, phrase, restore ----------------------------------------------


def _words_on_stderr(err: str) -> list[str]:
    """The words of the numbered grid `keys init` prints, in their numbered order."""
    numbered: dict[int, str] = {}
    for line in err.splitlines():
        tokens = line.split()
        if tokens and all(t.rstrip(".").isdigit() == (i % 2 == 0) for i, t in enumerate(tokens)):
            for num, word in zip(tokens[::2], tokens[1::2], strict=True):
                numbered[int(num.rstrip("."))] = word
    return [numbered[i] for i in sorted(numbered)]


def _phrasefile(tmp_path: Path, text: str = PHRASE, name: str = "phrase") -> Path:
    return _pwfile(tmp_path, text, name)


def test_init_shows_the_phrase_once_on_stderr(tmp_path: Path) -> None:
    r = invoke("init", "--no-passphrase")
    assert r.exit_code == 0, r.exception
    words = _words_on_stderr(r.stderr)
    assert len(words) == 24
    assert "write these 24 words down" in r.stderr and "keys restore" in r.stderr
    pub = PublicIdentity.from_text(r.stdout.strip())
    assert Identity.from_phrase(" ".join(words)).public() == pub
    assert not set(words) & set(r.stdout.split())  # stdout carries only the public key
    # Shown once: `show` never shows it.
    r = invoke("show")
    assert not set(words) & set(r.stdout.split() + r.stderr.split())


def test_phrase_shows_it_again(tmp_path: Path) -> None:
    r = invoke("init", "--no-passphrase")
    words = _words_on_stderr(r.stderr)
    r = invoke("phrase")
    assert r.exit_code == 0, r.exception
    assert r.stdout.split() == words
    r = invoke("phrase", "--json")
    assert [json.loads(line) for line in r.stdout.splitlines()] == [{"type": "keys.phrase", "phrase": " ".join(words)}]


def test_phrase_asks_for_the_passphrase_when_protected(tmp_path: Path) -> None:
    assert invoke("init", "--passphrase-file", str(_pwfile(tmp_path))).exit_code == 0
    r = invoke("phrase")
    assert isinstance(r.exception, ConfigError) and "stdin is not a terminal" in str(r.exception)
    r = invoke("phrase", "--passphrase-file", str(_pwfile(tmp_path, "not the passphrase", "bad")))
    assert isinstance(r.exception, WrongPasswordError)
    r = invoke("phrase", "--passphrase-file", str(_pwfile(tmp_path)), "--json")
    assert r.exit_code == 0, r.exception
    phrase = json.loads(r.stdout)["phrase"]
    assert Identity.from_phrase(phrase).public() == keystore.load_public(Home.resolve())


def test_phrase_of_an_old_identity_says_there_is_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keystore.write_identity_bytes(Home.resolve().ensure(), V1_PROTECTED)
    monkeypatch.setattr("getpass.getpass", lambda prompt: pytest.fail("asked for a passphrase"))
    r = run(capsys, "keys", "phrase")
    assert r.code == 4 and r.out == ""
    assert r.err.count("\n") == 1 and r.err.startswith(
        "usenetsync: error: this identity was made before recovery phrases existed and has none (hint: "
    )
    assert "keys init --force" in r.err
    # Once unlocked (and re-wrapped with Argon2id) it still has none, and says so.
    keystore.load_identity(Home.resolve(), _pwfile(tmp_path, V1_PASS))
    assert identity_file_info(_id_path().read_bytes()).version == 2
    assert run(capsys, "keys", "phrase").code == 4


def test_restore_then_show_gives_the_same_public_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    r = run(capsys, "keys", "init", "--passphrase-file", str(_pwfile(tmp_path)), "--json")
    assert r.code == 0, r.err
    created, phrase_line = r.json_lines()
    before = run(capsys, "keys", "show").out
    phrase = _phrasefile(tmp_path, phrase_line["phrase"])

    monkeypatch.setenv("USENETSYNC_HOME", str(tmp_path / "new-machine"))
    assert run(capsys, "keys", "show").code == 7
    r = run(capsys, "keys", "restore", "--phrase-file", str(phrase), "--passphrase-file", str(_pwfile(tmp_path)))
    assert r.code == 0, r.err
    assert r.out.strip() == created["public_key"]
    assert run(capsys, "keys", "show").out == before
    assert keystore.load_identity_info(Home.resolve()).protected
    # The restored file opens with its passphrase to the very same keys (and phrase).
    ident = keystore.load_identity(Home.resolve(), _pwfile(tmp_path))
    assert ident.phrase() == phrase_line["phrase"]
    assert phrase_line["phrase"] not in r.out + r.err


def test_restore_of_the_fixed_vector(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    messy = "\n".join(f"{i}. {w.upper()}  " for i, w in enumerate(PHRASE.split(), 1))
    r = run(capsys, "keys", "restore", "--phrase-file", str(_phrasefile(tmp_path, messy)), "--no-passphrase", "--json")
    assert r.code == 0, r.err
    (obj,) = r.json_lines()
    assert obj["type"] == "keys.restored" and obj["public_key"] == PHRASE_PUBKEY and obj["changed"] is True
    assert run(capsys, "keys", "show").out.splitlines()[0] == PHRASE_PUBKEY


def test_restore_from_stdin_and_prompt(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(PHRASE + "\n"))
    r = run(capsys, "keys", "restore", "--phrase-file", "-", "--no-passphrase")
    assert r.code == 0, r.err
    assert r.out.strip() == PHRASE_PUBKEY

    monkeypatch.setenv("USENETSYNC_HOME", str(tmp_path / "other"))
    monkeypatch.setattr(keystore, "_stdin_is_tty", lambda: True)
    answers = iter([PHRASE, PASS, PASS])
    prompts: list[str] = []

    def getpass(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("getpass.getpass", getpass)
    r = run(capsys, "keys", "restore")
    assert r.code == 0, r.err
    assert r.out.strip() == PHRASE_PUBKEY and len(prompts) == 3 and "recovery phrase" in prompts[0]
    assert PHRASE.split()[2] not in r.out + r.err


def test_restore_errors_name_the_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    words = PHRASE.split()
    cases = {
        " ".join([*words[:6], "xyzzy", *words[7:]]): "word 7 'xyzzy' is not in the wordlist",
        " ".join([words[1], words[0], *words[2:]]): "the checksum does not match: a word is wrong or two are swapped",
        " ".join(words[:23]): "the recovery phrase has 23 words; it must have 24",
    }
    for i, (typed, message) in enumerate(cases.items()):
        r = run(capsys, "keys", "restore", "--phrase-file", str(_phrasefile(tmp_path, typed, f"p{i}")),
                "--no-passphrase")
        assert r.code == 26 and r.out == ""
        assert r.err.count("\n") == 1 and r.err.startswith(f"usenetsync: error: {message} (hint: ")
        assert not _id_path().exists()
        for w in set(words) - {"xyzzy"}:
            assert f" {w} " not in r.err and f"'{w}'" not in r.err


def test_restore_refuses_loose_phrase_files_and_words_on_argv(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    loose = _phrasefile(tmp_path)
    loose.chmod(0o644)
    r = run(capsys, "keys", "restore", "--phrase-file", str(loose), "--no-passphrase")
    assert r.code == 4 and "is readable by other users" in r.err and "chmod 600" in r.err
    # Words on the command line are a usage error (2); the phrase given as --phrase-file's name is caught by
    # the phrase reader (4); both in one line that does not repeat the words.
    for argv, code in ((PHRASE.split(), 2), (["--phrase-file", PHRASE], 4)):
        r = run(capsys, "keys", "restore", *argv, "--no-passphrase")
        assert r.code == code and r.err.count("\n") == 1, r.err
        assert not {w for w in PHRASE.split() if len(w) > 4} & set(r.err.replace("(", " ").split())
    assert not _id_path().exists()


def test_restore_short_passphrase_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "keys", "restore", "--phrase-file", str(_phrasefile(tmp_path)),
            "--passphrase-file", str(_pwfile(tmp_path, "short pass", "pw2")))
    assert r.code == 25 and r.err.count("\n") == 1
    assert r.err.startswith("usenetsync: error: the passphrase has 10 characters; at least 12 are needed (hint: ")
    assert "short pass" not in r.err and not _id_path().exists()
    r = run(capsys, "keys", "init", "--passphrase-file", str(_pwfile(tmp_path, "short pass", "pw2")))
    assert r.code == 25 and not _id_path().exists()


def test_restore_keeps_another_identity_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "keys", "init", "--no-passphrase").code == 0
    mine = keystore.load_public(Home.resolve())
    phrase = str(_phrasefile(tmp_path))
    r = run(capsys, "keys", "restore", "--phrase-file", phrase, "--no-passphrase")
    assert r.code == 4 and "already exists" in r.err and "--force" in r.err
    assert keystore.load_public(Home.resolve()) == mine
    r = run(capsys, "keys", "restore", "--phrase-file", phrase, "--no-passphrase", "--force")
    assert r.code == 0, r.err
    assert keystore.load_public(Home.resolve()).to_text() == PHRASE_PUBKEY
    # The same identity again: nothing to do, and it says so.
    r = run(capsys, "keys", "restore", "--phrase-file", phrase, "--no-passphrase", "--json")
    assert r.code == 0 and r.json_lines()[0]["changed"] is False and "already installed" in r.err


def test_old_identity_file_is_upgraded_by_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keystore.write_identity_bytes(Home.resolve().ensure(), V1_PROTECTED)
    r = run(capsys, "keys", "show", "--json")
    assert r.code == 0 and r.json_lines()[0]["public_key"] == V1_IDENTITY.public().to_text()
    # Any command that unlocks it re-wraps it; the passphrase and the keys stay.
    assert keystore.load_identity(Home.resolve(), _pwfile(tmp_path, V1_PASS)) == V1_IDENTITY
    info = identity_file_info(_id_path().read_bytes())
    assert info.version == 2 and info.params == FAST
    assert run(capsys, "keys", "show", "--json").json_lines()[0]["public_key"] == V1_IDENTITY.public().to_text()


def test_the_phrase_never_appears_in_the_process_list(tmp_path: Path) -> None:
    """A real CLI process, held while it reads the phrase from a FIFO: argv and environment carry no word of it."""
    fifo = tmp_path / "phrase.fifo"
    os.mkfifo(fifo, 0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "usenetsync_cli", "keys", "restore", "--phrase-file", str(fifo), "--no-passphrase",
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        fd = os.open(fifo, os.O_WRONLY)  # returns once the CLI has opened the FIFO: it is alive and reading
        try:
            os.write(fd, (PHRASE + "\n").encode())
            # The CLI drains the pipe, then waits for EOF: once the pipe is empty the phrase is in its memory.
            buffered = bytearray(4)
            deadline = time.monotonic() + 60
            while fcntl.ioctl(fd, termios.FIONREAD, buffered) == 0 and int.from_bytes(buffered, sys.byteorder):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.005)  # polling the pipe's fill level, the event waited for
            assert proc.poll() is None
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            seen = [" ".join(p.cmdline()) + " " + " ".join(p.environ().values()) for p in tree]
            assert any("usenetsync_cli" in a for a in seen)
            ps = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True, check=True).stdout
            for text in (*seen, ps):
                assert not [w for w in ("liar", "expire", "unaware", "rhythm") if f" {w} " in f" {text} "]
        finally:
            os.close(fd)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert json.loads(out)["public_key"] == PHRASE_PUBKEY
    assert b"liar" not in out + err
