"""CLI tests of `keys init|show|export|import`, through the sub-app with CliRunner."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from usenetsync_cli.cli.keys import keys_app
from usenetsync_cli.core.identity import Identity, PublicIdentity, ScryptParams
from usenetsync_cli.errors import ConfigError, NotFoundError, TamperedError, WrongPasswordError
from usenetsync_cli.store import keystore
from usenetsync_cli.store.home import Home

PASS = "a long and secret passphrase"


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keystore, "DEFAULT_KDF", ScryptParams(n=2**10))


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
    for cmd in ("init", "show", "export", "import"):
        r = invoke(cmd, "--help")
        assert r.exit_code == 0 and "Examples" in r.stdout, cmd
    r = invoke("--help")
    assert all(cmd in r.stdout for cmd in ("init", "show", "export", "import"))


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
    (obj,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert obj["type"] == "keys.created" and obj["protected"] is True
    assert PASS not in r.stdout + r.stderr
    ident = keystore.load_identity(Home.resolve(), keystore.PassphraseSource(file=_pwfile(tmp_path)))
    assert ident.public().to_text() == obj["public_key"]
    assert json.loads(_id_path().read_bytes())["scrypt"]["n"] == 2**10


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
    r = invoke("init", "--no-passphrase", "--passphrase-file", str(_pwfile(tmp_path)))
    assert isinstance(r.exception, ConfigError)


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
