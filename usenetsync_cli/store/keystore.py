"""Where the user's identity file lives, and how its passphrase and recovery phrase are obtained.

Owns: ``Home.config_dir / "identity.json"`` (reading, atomic no-clobber
writing, permission checks, re-wrapping old files with the current KDF), the
passphrase sources, in this order: ``--passphrase-file``, then the file named
by ``USENETSYNC_PASSPHRASE_FILE``, then an interactive prompt (only when
stdin is a terminal); and the recovery phrase sources: ``--phrase-file FILE``,
``--phrase-file -`` (stdin), or a no-echo prompt on a terminal.

Invariants:
- The identity file is created 0600 (never briefly wider: the temporary file
  is opened with that mode) in a folder created 0700, and replaced
  atomically; without ``force`` an existing identity is never overwritten,
  even by a concurrent writer (``os.link`` refuses an existing name).
- An unprotected identity file is used only if no other user can read it.
- A passphrase or recovery phrase is never printed, logged, or put into an
  exception message; passphrase and phrase files must not be readable by
  other users. A new passphrase has at least ``MIN_PASSWORD_CHARS``
  characters; an existing one is accepted as it is.
- An identity file protected with the old KDF (scrypt, version 1) is
  replaced, the first time its passphrase opens it, by the same keys wrapped
  with Argon2id (version 2) under the same passphrase. The new file is
  opened once before it replaces the old one, and it replaces it only if the
  file still holds the bytes that were opened (a concurrent ``keys init
  --force`` wins); if it cannot be written the old file stays and still works.
"""

from __future__ import annotations

import errno
import getpass
import os
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from usenetsync_cli.core.identity import (
    Identity,
    IdentityFileInfo,
    PublicIdentity,
    identity_file_info,
)
from usenetsync_cli.core.kdf import DEFAULT_ARGON2, Argon2Params, check_new_password, for_new_data
from usenetsync_cli.core.phrase import find_phrases
from usenetsync_cli.errors import ConfigError, DiskFullError, NotFoundError, StateError
from usenetsync_cli.store.home import Home

__all__ = [
    "DEFAULT_KDF",
    "IDENTITY_FILE",
    "PASSPHRASE_ENV",
    "PassphraseSource",
    "PhraseSource",
    "identity_path",
    "load_identity",
    "load_identity_info",
    "load_public",
    "read_phrase_file",
    "read_private_text",
    "read_identity_bytes",
    "save_identity",
    "write_identity_bytes",
    "write_private_file",
]

IDENTITY_FILE = "identity.json"
PASSPHRASE_ENV = "USENETSYNC_PASSPHRASE_FILE"
# Module-level so tests can lower the cost; the parameters travel in the file.
DEFAULT_KDF: Argon2Params = DEFAULT_ARGON2
# A phrase is 24 words of at most 8 letters; room for numbering and blank lines.
_MAX_PHRASE_BYTES = 4096
# Passphrase and share ID files: a few hundred characters at most; more is a wrong path.
_MAX_SECRET_CHARS = 4096

_HOW_TO_PASS = (
    "pass --passphrase-file FILE (mode 0600) or set USENETSYNC_PASSPHRASE_FILE=FILE; "
    "for unattended use create the key with `usenetsync keys init --no-passphrase`"
)


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced stdin
        return False


@dataclass(frozen=True)
class PassphraseSource:
    """Where to get a passphrase; ``env``/``prompt``/``is_tty`` are injectable for tests.

    ``None`` means the real thing, looked up at call time (so monkeypatching
    ``getpass.getpass`` works).
    """

    file: Path | None = None
    env: Mapping[str, str] | None = None
    prompt: Callable[[str], str] | None = None
    is_tty: Callable[[], bool] | None = None

    def _from_files(self) -> str | None:
        if self.file is not None:
            return _read_passphrase_file(Path(self.file).expanduser(), "passphrase file")
        env = os.environ if self.env is None else self.env
        named = env.get(PASSPHRASE_ENV)
        if named:
            return _read_passphrase_file(Path(named).expanduser(), f"passphrase file (${PASSPHRASE_ENV})")
        return None

    def get(self, purpose: str) -> str:
        """An existing passphrase, e.g. to unlock the identity."""
        found = self._from_files()
        if found is not None:
            return found
        self._require_tty()
        pw = self._prompt()(f"passphrase for {purpose}: ")
        if not pw:
            raise ConfigError("no passphrase entered")
        return pw

    def new(self, purpose: str) -> str:
        """A new passphrase (at least MIN_PASSWORD_CHARS characters); prompted twice: a typo here locks the key away."""
        found = self._from_files()
        if found is not None:
            check_new_password(found, "passphrase")
            return found
        self._require_tty()
        ask = self._prompt()
        pw = ask(f"new passphrase for {purpose}: ")
        if not pw:
            raise ConfigError("the passphrase is empty", hint="use --no-passphrase for an unprotected key")
        check_new_password(pw, "passphrase")  # before the second prompt: no need to type it twice to hear this
        if ask("same passphrase again: ") != pw:
            raise ConfigError("the two passphrases differ", hint="run the command again")
        return pw

    def _require_tty(self) -> None:
        is_tty = self.is_tty or _stdin_is_tty
        if not is_tty():
            raise ConfigError("a passphrase is needed and stdin is not a terminal to ask for it", hint=_HOW_TO_PASS)

    def _prompt(self) -> Callable[[str], str]:
        return self.prompt or getpass.getpass


def _read_passphrase_file(path: Path, what: str) -> str:
    pw = read_private_text(path, what).rstrip("\r\n")
    if not pw:
        raise ConfigError(f"{what} {path} is empty")
    return pw


_PHRASE_HOW = "pass --phrase-file FILE (mode 0600), or --phrase-file - to read it from stdin"


@dataclass(frozen=True)
class PhraseSource:
    """Where to read a recovery phrase: ``file`` (a path, or "-" for stdin), else a no-echo prompt on a terminal.

    ``prompt``/``is_tty``/``stdin`` are injectable for tests; ``None`` means
    the real thing, looked up at call time.
    """

    file: Path | str | None = None
    prompt: Callable[[str], str] | None = None
    is_tty: Callable[[], bool] | None = None
    stdin: TextIO | None = None

    def get(self) -> str:
        """The phrase as typed (parse it with ``core.phrase``); ConfigError when there is no way to get it."""
        if self.file is not None:
            if str(self.file) == "-":
                return _read_bounded(self.stdin or sys.stdin, "standard input")
            return read_phrase_file(Path(self.file).expanduser())
        if not (self.is_tty or _stdin_is_tty)():
            raise ConfigError("the recovery phrase is needed and stdin is not a terminal to ask for it", hint=_PHRASE_HOW)
        text = (self.prompt or getpass.getpass)("recovery phrase (24 words, not shown as you type): ")
        if not text.strip():
            raise ConfigError("no recovery phrase entered")
        return text


def _read_bounded(stream: TextIO, what: str) -> str:
    text = stream.read(_MAX_PHRASE_BYTES + 1)
    if len(text) > _MAX_PHRASE_BYTES:
        raise ConfigError(f"{what} holds more than {_MAX_PHRASE_BYTES} characters; a recovery phrase is 24 words")
    return text


def read_phrase_file(path: Path) -> str:
    """A recovery phrase from ``path``, which must not be readable by other users."""
    if find_phrases(str(path)):
        # The option got the phrase itself; never echo it back in an error.
        raise ConfigError(
            "--phrase-file takes the name of a file holding the phrase, not the phrase itself",
            hint="the phrase is now in your shell history: delete it from there; then " + _PHRASE_HOW,
        )
    return read_private_text(path, "phrase file", limit=_MAX_PHRASE_BYTES, too_long="; a recovery phrase is 24 words")


def read_private_text(path: Path, what: str, *, limit: int = _MAX_SECRET_CHARS, too_long: str = "") -> str:
    """At most ``limit`` characters of a secret file no other user may read: the one rule for all of them.

    Passphrase, recovery phrase and share ID files are read through here. The
    mode is checked on the open file, so a file swapped after the check cannot
    slip through; the read is bounded, so a wrong path (a device, a log) costs
    nothing. Errors name the file (``what`` and ``path``), never its content.
    """
    try:
        with open(path, encoding="utf-8") as f:
            if os.fstat(f.fileno()).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(f"{what} {path} is readable by other users", hint=f"run `chmod 600 {path}`")
            text = f.read(limit + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    if len(text) > limit:
        raise ConfigError(f"{what} {path} holds more than {limit} characters{too_long}")
    return text


def identity_path(home: Home) -> Path:
    return home.config_dir / IDENTITY_FILE


def read_identity_bytes(home: Home) -> bytes:
    """The identity file's bytes; NotFoundError when there is none yet."""
    path = identity_path(home)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError("no identity yet", hint="create one with `usenetsync keys init`") from None
    except OSError as e:
        raise StateError(f"cannot read {path}: {e.strerror}") from None


def load_identity_info(home: Home) -> IdentityFileInfo:
    """Public keys and protection of the stored identity; needs no passphrase."""
    return identity_file_info(read_identity_bytes(home))


def load_public(home: Home) -> PublicIdentity:
    return load_identity_info(home).public


def load_identity(home: Home, passphrase_source: PassphraseSource | Path | str | None = None) -> Identity:
    """The private identity, asking ``passphrase_source`` only when the file is protected.

    A path (the value of a ``--passphrase-file`` option) is taken as
    ``PassphraseSource(file=path)``; ``None`` means env var, then prompt.
    """
    path = identity_path(home)
    data = read_identity_bytes(home)
    info = identity_file_info(data)
    if not info.protected:
        # Like ssh: a key in clear that others can read is not used at all.
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"unprotected identity file {path} is readable by other users", hint=f"run `chmod 600 {path}`"
            )
        return Identity.from_file_bytes(data, None)
    if isinstance(passphrase_source, PassphraseSource):
        source = passphrase_source
    else:
        source = PassphraseSource(file=None if passphrase_source is None else Path(passphrase_source))
    passphrase = source.get(f"identity {info.public.fingerprint().hex()}")
    identity = Identity.from_file_bytes(data, passphrase)
    if info.outdated_kdf:
        upgrade_identity_file(home, data, identity, passphrase)
    return identity


def upgrade_identity_file(home: Home, opened: bytes, identity: Identity, passphrase: str) -> bool:
    """Re-wrap an identity file that ``passphrase`` just opened with the current KDF; True if replaced.

    Best effort: the identity is already loaded, so a home that cannot be
    written only keeps the old (still working) file.
    """
    new = identity.to_file_bytes(passphrase, params=for_new_data(DEFAULT_KDF))
    # The one copy of the keys: prove the new file opens to the same identity before it replaces the old.
    if Identity.from_file_bytes(new, passphrase) != identity:
        return False
    path = identity_path(home)
    try:
        if path.read_bytes() != opened:
            return False  # replaced meanwhile (keys init --force, keys import): theirs wins
        write_private_file(path, new, force=True)
    except (OSError, StateError):
        return False
    return True


def save_identity(
    home: Home,
    identity: Identity,
    passphrase: str | None,
    *,
    force: bool = False,
    params: Argon2Params | None = None,
) -> Path:
    """Serialize and store ``identity``; ``passphrase=None`` stores it unprotected."""
    data = identity.to_file_bytes(passphrase, params=params or for_new_data(DEFAULT_KDF))
    return write_identity_bytes(home, data, force=force)


def write_identity_bytes(home: Home, data: bytes, *, force: bool = False) -> Path:
    """Store an already serialized identity file (validated first)."""
    identity_file_info(data)
    home.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = identity_path(home)
    try:
        write_private_file(path, data, force=force)
    except FileExistsError:
        raise ConfigError(
            f"an identity already exists at {path}",
            hint="pass --force to replace it; save the old one first with `usenetsync keys export FILE`",
        ) from None
    return path


def write_private_file(path: Path, data: bytes, *, force: bool) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600.

    Without ``force`` raises FileExistsError if ``path`` exists (checked
    atomically by ``os.link``); with it, replaces ``path`` by ``os.replace``.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)  # left by a crashed run with our pid; O_EXCL would misreport it
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # A umask cannot widen the mode, but an inherited ACL could; be explicit.
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                fd = -1
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        finally:
            if fd != -1:
                os.close(fd)
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
        _fsync_dir(path.parent)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFullError(f"no space left on device while writing {path}") from None
        raise StateError(f"cannot write {path}: {e.strerror}") from None
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; the data is already synced
    finally:
        os.close(fd)
