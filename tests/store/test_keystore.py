"""Storing the identity and finding its passphrase (usenetsync_cli.store.keystore)."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from tests.core.identity_vectors import PHRASE, V1_IDENTITY, V1_PASS, V1_PLAIN, V1_PROTECTED
from usenetsync_cli.core.identity import Argon2Params, Identity, identity_file_info
from usenetsync_cli.errors import (
    ConfigError,
    NotFoundError,
    PasswordTooShortError,
    TamperedError,
    WrongPasswordError,
)
from usenetsync_cli.store import keystore
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.keystore import PassphraseSource, PhraseSource

FAST = Argon2Params(t=1, m_kib=8, p=1)
PASS = "hunter2 is not a passphrase"
ALICE = Identity.from_private_bytes(b"\x01" * 32, b"\x02" * 32)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    # A config dir that does not exist yet, to see what the keystore creates.
    return Home(config_dir=tmp_path / "cfg", state_dir=tmp_path / "state")


def _secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def _no_prompt(prompt: str) -> str:
    raise AssertionError("must not prompt")


def test_protected_round_trip_with_private_modes(home: Home, tmp_path: Path) -> None:
    path = keystore.save_identity(home, ALICE, PASS, params=FAST)
    assert path == home.config_dir / "identity.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.config_dir.stat().st_mode) == 0o700
    assert [p.name for p in home.config_dir.iterdir()] == ["identity.json"]  # no temp file left
    src = PassphraseSource(file=_secret_file(tmp_path / "pw", PASS), prompt=_no_prompt)
    assert keystore.load_identity(home, src) == ALICE
    info = keystore.load_identity_info(home)
    assert info.protected and keystore.load_public(home) == ALICE.public()


def test_refuses_to_overwrite_without_force(home: Home) -> None:
    keystore.save_identity(home, ALICE, None)
    other = Identity.generate()
    with pytest.raises(ConfigError, match="already exists") as exc:
        keystore.save_identity(home, other, None)
    assert "--force" in exc.value.hint
    assert keystore.load_public(home) == ALICE.public()
    keystore.save_identity(home, other, None, force=True)
    assert keystore.load_public(home) == other.public()
    assert stat.S_IMODE(keystore.identity_path(home).stat().st_mode) == 0o600


def test_missing_identity(home: Home) -> None:
    with pytest.raises(NotFoundError, match="no identity yet") as exc:
        keystore.load_identity(home)
    assert "keys init" in exc.value.hint


def test_a_plain_path_is_a_passphrase_file(home: Home, tmp_path: Path) -> None:
    # What a command passes straight from its --passphrase-file option.
    keystore.save_identity(home, ALICE, PASS, params=FAST)
    pw = _secret_file(tmp_path / "pw", PASS)
    assert keystore.load_identity(home, pw) == ALICE
    assert keystore.load_identity(home, str(pw)) == ALICE


def test_passphrase_from_env_file(home: Home, tmp_path: Path) -> None:
    keystore.save_identity(home, ALICE, PASS, params=FAST)
    env = {"USENETSYNC_PASSPHRASE_FILE": str(_secret_file(tmp_path / "pw", PASS))}
    assert keystore.load_identity(home, PassphraseSource(env=env, prompt=_no_prompt)) == ALICE


def test_real_environment_variable_is_read(home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keystore.save_identity(home, ALICE, PASS, params=FAST)
    monkeypatch.setenv("USENETSYNC_PASSPHRASE_FILE", str(_secret_file(tmp_path / "pw", PASS)))
    assert keystore.load_identity(home) == ALICE


def test_flag_wins_over_env(home: Home, tmp_path: Path) -> None:
    keystore.save_identity(home, ALICE, PASS, params=FAST)
    env = {"USENETSYNC_PASSPHRASE_FILE": str(_secret_file(tmp_path / "wrong", "nope"))}
    src = PassphraseSource(file=_secret_file(tmp_path / "pw", PASS), env=env, prompt=_no_prompt)
    assert keystore.load_identity(home, src) == ALICE


def test_no_tty_gives_instructions(home: Home) -> None:
    keystore.save_identity(home, ALICE, PASS, params=FAST)
    src = PassphraseSource(env={}, prompt=_no_prompt, is_tty=lambda: False)
    with pytest.raises(ConfigError, match="stdin is not a terminal") as exc:
        keystore.load_identity(home, src)
    for how in ("--passphrase-file", "USENETSYNC_PASSPHRASE_FILE", "--no-passphrase"):
        assert how in exc.value.hint


def test_prompt_on_a_tty(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    keystore.save_identity(home, ALICE, PASS, params=FAST)
    asked: list[str] = []

    def fake_getpass(prompt: str) -> str:
        asked.append(prompt)
        return PASS

    monkeypatch.setattr("getpass.getpass", fake_getpass)  # looked up at call time
    assert keystore.load_identity(home, PassphraseSource(env={}, is_tty=lambda: True)) == ALICE
    assert asked == [f"passphrase for identity {ALICE.fingerprint().hex()}: "]


def test_new_passphrase_is_confirmed() -> None:
    answers = iter([PASS, PASS + "!"])
    src = PassphraseSource(env={}, prompt=lambda _: next(answers), is_tty=lambda: True)
    with pytest.raises(ConfigError, match="differ"):
        src.new("test")
    same = iter([PASS, PASS])
    assert PassphraseSource(env={}, prompt=lambda _: next(same), is_tty=lambda: True).new("test") == PASS
    with pytest.raises(ConfigError, match="empty"):
        PassphraseSource(env={}, prompt=lambda _: "", is_tty=lambda: True).new("test")


def test_new_passphrase_has_a_minimum_length(tmp_path: Path) -> None:
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "eleven char"

    with pytest.raises(PasswordTooShortError, match="at least 12") as exc:
        PassphraseSource(env={}, prompt=prompt, is_tty=lambda: True).new("test")
    assert len(asked) == 1 and exc.value.exit_code == 25  # said before asking a second time
    short = _secret_file(tmp_path / "pw", "eleven char")
    with pytest.raises(PasswordTooShortError):
        PassphraseSource(file=short, prompt=_no_prompt).new("test")


def test_wrong_passphrase_names_no_secret(home: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keystore.save_identity(home, ALICE, PASS, params=FAST)
    src = PassphraseSource(file=_secret_file(tmp_path / "pw", "a wrong passphrase"))
    with pytest.raises(WrongPasswordError) as exc:
        keystore.load_identity(home, src)
    assert "a wrong passphrase" not in str(exc.value) + exc.value.hint
    assert PASS not in str(exc.value) + exc.value.hint
    out, err = capsys.readouterr()
    assert out == err == ""


def test_passphrase_file_checks(home: Home, tmp_path: Path) -> None:
    keystore.save_identity(home, ALICE, PASS, params=FAST)
    loose = _secret_file(tmp_path / "loose", PASS, mode=0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        keystore.load_identity(home, PassphraseSource(file=loose))
    empty = _secret_file(tmp_path / "empty", "")
    with pytest.raises(ConfigError, match="is empty"):
        keystore.load_identity(home, PassphraseSource(file=empty))
    with pytest.raises(ConfigError, match="cannot read"):
        keystore.load_identity(home, PassphraseSource(file=tmp_path / "missing"))


def test_unprotected_needs_no_passphrase_but_must_be_private(home: Home) -> None:
    keystore.save_identity(home, ALICE, None)
    src = PassphraseSource(prompt=_no_prompt, is_tty=lambda: False)
    assert keystore.load_identity(home, src) == ALICE
    path = keystore.identity_path(home)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users") as exc:
        keystore.load_identity(home, src)
    assert "chmod 600" in exc.value.hint


def test_damaged_store_file(home: Home) -> None:
    keystore.save_identity(home, ALICE, None)
    path = keystore.identity_path(home)
    path.write_bytes(path.read_bytes().replace(b'"none"', b'"nope"'))
    with pytest.raises(TamperedError):
        keystore.load_identity(home)


def test_write_identity_bytes_validates_first(home: Home) -> None:
    with pytest.raises(TamperedError):
        keystore.write_identity_bytes(home, b"{}")
    assert not keystore.identity_path(home).exists()


def test_write_private_file_respects_umask_and_force(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    old = os.umask(0)
    try:
        keystore.write_private_file(target, b"x", force=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        keystore.write_private_file(target, b"y", force=False)
    keystore.write_private_file(target, b"y", force=True)
    assert target.read_bytes() == b"y" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


# --- identity files of version 1 ------------------------------------------------------------


def _install_v1(home: Home) -> Path:
    return keystore.write_identity_bytes(home, V1_PROTECTED)


def test_old_file_is_rewrapped_with_argon2id_when_unlocked(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keystore, "DEFAULT_KDF", FAST)
    path = _install_v1(home)
    # V1_PASS ("old passphrase") is 14 characters; any old passphrase works, short or not.
    src = PassphraseSource(file=_secret_file(tmp_path / "pw", V1_PASS), prompt=_no_prompt)
    assert keystore.load_identity(home, src) == V1_IDENTITY
    info = identity_file_info(path.read_bytes())
    assert info.version == 2 and info.params == FAST and not info.outdated_kdf and not info.has_phrase
    assert json.loads(path.read_bytes())["kind"] == "keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in home.config_dir.iterdir()) == ["identity.json"]
    loaded = keystore.load_identity(home, src)  # the same passphrase opens the new file
    assert loaded == V1_IDENTITY and loaded._private_bytes() == V1_IDENTITY._private_bytes()


def test_old_file_is_left_alone_on_a_wrong_passphrase(home: Home, tmp_path: Path) -> None:
    path = _install_v1(home)
    with pytest.raises(WrongPasswordError):
        keystore.load_identity(home, PassphraseSource(file=_secret_file(tmp_path / "pw", PASS)))
    assert path.read_bytes() == V1_PROTECTED


def test_old_unprotected_file_loads_as_it_is(home: Home) -> None:
    path = keystore.write_identity_bytes(home, V1_PLAIN)
    assert keystore.load_identity(home, PassphraseSource(prompt=_no_prompt, is_tty=lambda: False)) == V1_IDENTITY
    assert path.read_bytes() == V1_PLAIN  # no KDF to upgrade


def test_rewrap_never_clobbers_a_file_replaced_meanwhile(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keystore, "DEFAULT_KDF", FAST)
    path = _install_v1(home)
    newer = Identity.from_phrase(PHRASE).to_file_bytes(None)
    real = Identity.to_file_bytes

    def init_force_meanwhile(self: Identity, *args: object, **kw: object) -> bytes:
        path.write_bytes(newer)  # `keys init --force` finished while we derived the new key
        return real(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Identity, "to_file_bytes", init_force_meanwhile)
    src = PassphraseSource(file=_secret_file(tmp_path / "pw", V1_PASS))
    assert keystore.load_identity(home, src) == V1_IDENTITY
    assert path.read_bytes() == newer


def test_rewrap_is_checked_before_it_replaces_the_old_file(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The identity file may be the only copy of these keys: a re-wrapped file
    # that does not open to the same identity must never replace it.
    monkeypatch.setattr(keystore, "DEFAULT_KDF", FAST)
    path = _install_v1(home)
    other = Identity.from_phrase(PHRASE)
    real = Identity.to_file_bytes
    monkeypatch.setattr(Identity, "to_file_bytes", lambda self, *a, **kw: real(other, *a, **kw))
    src = PassphraseSource(file=_secret_file(tmp_path / "pw", V1_PASS))
    assert keystore.load_identity(home, src) == V1_IDENTITY
    assert path.read_bytes() == V1_PROTECTED


def test_rewrap_failure_keeps_the_old_file_working(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keystore, "DEFAULT_KDF", FAST)
    path = _install_v1(home)

    def full(*args: object, **kw: object) -> None:
        raise keystore.DiskFullError("no space left on device")

    monkeypatch.setattr(keystore, "write_private_file", full)
    src = PassphraseSource(file=_secret_file(tmp_path / "pw", V1_PASS))
    assert keystore.load_identity(home, src) == V1_IDENTITY
    assert path.read_bytes() == V1_PROTECTED


# --- recovery phrase sources ----------------------------------------------------------------


def test_phrase_from_a_private_file(tmp_path: Path) -> None:
    f = _secret_file(tmp_path / "phrase", PHRASE)
    assert PhraseSource(file=f, prompt=_no_prompt).get().split() == PHRASE.split()
    loose = _secret_file(tmp_path / "loose", PHRASE, mode=0o640)
    with pytest.raises(ConfigError, match="readable by other users") as exc:
        PhraseSource(file=loose).get()
    assert "chmod 600" in exc.value.hint
    with pytest.raises(ConfigError, match="cannot read phrase file"):
        PhraseSource(file=tmp_path / "missing").get()
    huge = _secret_file(tmp_path / "huge", "abandon " * 1000)
    with pytest.raises(ConfigError, match="more than 4096"):
        PhraseSource(file=huge).get()
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" * 10)
    binary.chmod(0o600)
    with pytest.raises(ConfigError, match="not UTF-8"):
        PhraseSource(file=binary).get()


def test_the_phrase_given_as_the_file_name_is_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        PhraseSource(file=PHRASE).get()
    text = str(exc.value) + exc.value.hint
    assert "not the phrase itself" in text and "shell history" in text
    assert not {w for w in PHRASE.split() if len(w) > 4} & set(text.replace(",", " ").split())


def test_phrase_from_stdin_and_prompt() -> None:
    assert PhraseSource(file="-", stdin=io.StringIO(PHRASE + "\n"), prompt=_no_prompt).get().strip() == PHRASE
    with pytest.raises(ConfigError, match="more than 4096"):
        PhraseSource(file="-", stdin=io.StringIO("x" * 5000)).get()
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return PHRASE

    assert PhraseSource(prompt=prompt, is_tty=lambda: True).get() == PHRASE
    assert asked == ["recovery phrase (24 words, not shown as you type): "]
    with pytest.raises(ConfigError, match="no recovery phrase entered"):
        PhraseSource(prompt=lambda _: "  ", is_tty=lambda: True).get()
    with pytest.raises(ConfigError, match="stdin is not a terminal") as exc:
        PhraseSource(prompt=_no_prompt, is_tty=lambda: False).get()
    assert "--phrase-file" in exc.value.hint
