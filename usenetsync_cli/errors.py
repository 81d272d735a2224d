"""The one exception family of usenetsync, and its exit-code table.

Owns: every expected failure the tool can report, each with its one-line
message, a hint, a distinct process exit code and a one-line description of
that code (``describes``); and ``EXIT_CODES``, the table generated from them.

Invariants:
- Only ``cli.app.main()`` turns a ``UsenetSyncError`` into text and an exit
  code; every other layer raises and lets it travel.
- Messages and hints never contain secrets (passwords, keys, share keys).
  Anything formatted into a message goes through ``redact`` first when it may
  hold one.
- Each exit code has exactly one owner: the class of this module whose own
  body sets ``exit_code`` (and then also ``describes`` and ``hint``). Every
  other class, here or in another module, inherits its code from an owner,
  so every code the tool can exit with is in ``EXIT_CODES``
  (tests/test_errors.py walks the whole package to prove it).
- Exit codes are stable: scripts and cron jobs depend on them. README.md's
  table and the man page's EXIT STATUS are generated from ``EXIT_CODES`` by
  scripts/gen_docs.py; nothing lists them by hand.
"""

from __future__ import annotations

import re

# Codes below 64 are ours; 2 is reserved for usage errors (Click's own), 130 for
# Ctrl-C and 143 for SIGTERM (shell convention: 128 + signal number), 75
# (EX_TEMPFAIL) for "already running, try later".
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

# Codes with no exception class: success, and Click's usage errors (printed by
# the option parser before any command runs).
_PSEUDO_CODES: dict[int, str] = {
    EXIT_OK: "success",
}


class UsenetSyncError(Exception):
    """Base of every expected failure. Owners set ``exit_code``, ``hint`` and ``describes``."""

    exit_code: int = EXIT_INTERNAL
    # Empty: main() gives the internal errors it names its own hint, and an
    # OS error it cannot name says all there is to say.
    hint: str = ""
    describes: str = "internal or unexpected system error (rerun with USENETSYNC_DEBUG=1 and report it)"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(UsenetSyncError):
    """The command line itself is wrong: an unknown command or option, a missing or unreadable argument,
    options that do not go together. Click's own usage errors are reported as this class too."""

    exit_code = EXIT_USAGE
    hint = "see `usenetsync COMMAND --help`"
    describes = "command-line usage error: unknown command or option, missing or invalid argument"


class InputPathError(UsenetSyncError):
    """A path given on the command line is missing, not a folder, or unreadable."""

    exit_code = 3
    hint = "check the path and try again"
    describes = "input path missing, not a folder, or unreadable"


class ConfigError(UsenetSyncError):
    """Configuration or command-line values that cannot work together."""

    exit_code = 4
    hint = "see `usenetsync COMMAND --help`"
    describes = "configuration error, or options that cannot work together"


class StateError(UsenetSyncError):
    """The home (state) directory is unusable: not writable, corrupt, too new."""

    exit_code = 5
    hint = "set USENETSYNC_HOME to a writable folder, or check its permissions"
    describes = "state (home) directory unusable"


class DiskFullError(StateError):
    """No space left where we must write (state or download target)."""

    exit_code = 6
    hint = "free some space and run the same command again; nothing was lost"
    describes = "disk full"


class NotFoundError(UsenetSyncError):
    """A named folder, share, server or job does not exist in the state."""

    exit_code = 7
    hint = "list what exists with `usenetsync status`"
    describes = "named folder, share, server or job not found"


class ShareIdError(ConfigError):
    """A share ID that cannot be parsed: not a share ID, cut off, or a typo the checksum caught."""

    exit_code = 8
    hint = "check the share ID; copy it again, exactly as the publisher gave it"
    describes = "malformed or mistyped share ID"


class NetworkError(UsenetSyncError):
    """A server could not be reached or dropped the connection past all retries."""

    exit_code = 10
    hint = ("check the server address and that it is up, then run the command again"
            " (an upload continues where it stopped)")
    describes = "server unreachable or connection lost"


class AuthError(NetworkError):
    """The server refused our credentials (481/482) or requires them (480)."""

    exit_code = 11
    hint = "check the user name and password with `usenetsync server test NAME`"
    describes = "authentication failed"


class ServerRefusedError(NetworkError):
    """The server refuses what we need: posting not allowed (440), 502, policy."""

    exit_code = 12
    hint = "this server does not accept the request; try another server"
    describes = "server refused (posting not allowed, 502, policy)"


class ProtocolError(NetworkError):
    """The server answered something that is not NNTP as we know it."""

    exit_code = 13
    hint = "the server may not speak NNTP on that port; check --port and --tls"
    describes = "server answered outside the NNTP protocol"


class UploadIncompleteError(UsenetSyncError):
    """Some articles could not be posted or confirmed; the job is resumable."""

    exit_code = 14
    hint = "run `usenetsync upload --resume` to retry what is missing"
    describes = "upload incomplete; resumable"


class SourceChangedError(UsenetSyncError):
    """A file kept changing while it was read for the upload; the share keeps its last consistent content."""

    exit_code = 15
    hint = "run the upload again when the file is no longer being written"
    describes = "a file kept changing during the upload; the share keeps its last consistent content"


class DownloadIncompleteError(UsenetSyncError):
    """Some files of a download could not be completed (articles missing or damaged)."""

    exit_code = 16
    hint = "some articles are missing or damaged; run again later or repair from PAR2 (verify --repair)"
    describes = "download incomplete: some files could not be completed"


class VerifyRepairableError(UsenetSyncError):
    """verify found articles missing or damaged that ``verify --repair`` can bring back."""

    exit_code = 17
    hint = "run `usenetsync verify --repair` to re-post them from the source"
    describes = "articles missing or damaged, repairable (verify: verify --repair; download --check: PAR2 covers them)"


class DataLostError(UsenetSyncError):
    """Articles are gone and neither the source nor recovery data can rebuild them."""

    exit_code = 18
    hint = "the source of these articles changed or is gone and no recovery data could rebuild them"
    describes = "data lost: articles missing and not repairable"


class LocalConflictError(UsenetSyncError):
    """A download would overwrite files in the destination that usenetsync did not write."""

    exit_code = 19
    hint = (
        "use --sync to update a copy made by usenetsync, or --overwrite to replace local files;"
        " they are kept in the home's replaced/ folder"
    )
    describes = "download refused: files in the destination would be overwritten; nothing was written"


class CryptoError(UsenetSyncError):
    """Decryption or authentication failed: wrong key/password or tampered data."""

    exit_code = 20
    hint = "check the password or key; the data may have been altered"
    describes = "decryption or integrity failure"


class WrongPasswordError(CryptoError):
    """The password (or passphrase) does not open what it should."""

    exit_code = 21
    hint = "check the password (or --password-file) and try again"
    describes = "wrong password"


class TamperedError(CryptoError):
    """Data failed its signature or integrity check."""

    exit_code = 22
    hint = "the data failed its signature or integrity check; nothing was written"
    describes = "tampered or corrupt data (signature or integrity check failed)"


class SyncConflictError(UsenetSyncError):
    """A sync finished, but some local changes were kept and the share's version written beside them."""

    exit_code = 23
    hint = "compare the NAME.usenetsync-conflict-vN files and keep what you want"
    describes = "sync finished, but some local changes were kept and the share's version written beside them"


class RollbackError(TamperedError):
    """The server offers an older share version than this destination already has."""

    exit_code = 24
    hint = "a server may be hiding newer versions; try another server, or --allow-rollback"
    describes = "the server offers an older share version than this destination already has"


class PasswordTooShortError(ConfigError):
    """A new password or passphrase is shorter than the minimum."""

    exit_code = 25
    hint = "choose a longer password"
    describes = "password too short"


class RecoveryPhraseError(ConfigError):
    """A recovery-phrase word is not in the wordlist, or the phrase's checksum fails."""

    exit_code = 26
    hint = "check each word against the phrase you wrote down (spelling, order, 24 words)"
    describes = "a recovery-phrase word is not in the wordlist, or its checksum fails"


class CorruptStateError(StateError):
    """A state database does not open or read as SQLite (a damaged disk, a truncated file)."""

    exit_code = 28
    hint = "`usenetsync state repair` rebuilds a damaged shard from the folder's newest backup on the server"
    describes = "a state database is damaged (usenetsync state repair)"


class ForgottenVersionError(NotFoundError):
    """A backup version was dropped from the catalog by `forget`."""

    exit_code = 27
    hint = "list the versions that are kept with `usenetsync backups NAME`"
    describes = "the backup version asked for was forgotten (usenetsync forget)"


class LockedError(UsenetSyncError):
    """Another usenetsync process holds the home-wide lock."""

    exit_code = 75
    hint = "wait for the other run to finish, or pass --lock-wait SECONDS"
    describes = "another usenetsync run holds the lock"


class InterruptedByUser(UsenetSyncError):
    """Ctrl-C (SIGINT): stopped at a safe point."""

    exit_code = EXIT_INTERRUPTED
    hint = "run the same command again to continue where it stopped"
    describes = "interrupted (Ctrl-C) at a safe point; resumable"


class TerminatedError(InterruptedByUser):
    """SIGTERM (cron's kill, systemd stop, `timeout`): stopped at a safe point, like Ctrl-C."""

    exit_code = EXIT_TERMINATED
    hint = "run the same command again to continue where it stopped"
    describes = "stopped by SIGTERM at a safe point; resumable"


# Old name, kept importable.
DegradedError = VerifyRepairableError


def family() -> list[type[UsenetSyncError]]:
    """The owners of exit codes: classes of this module whose own body sets ``exit_code``, by code."""
    owners = [
        obj for obj in globals().values()
        if isinstance(obj, type) and issubclass(obj, UsenetSyncError) and obj.__module__ == __name__
        and "exit_code" in vars(obj)
    ]
    return sorted(set(owners), key=lambda c: c.exit_code)


def exit_code_rows() -> list[tuple[int, str, str]]:
    """(code, owning class name or "" for a code without one, description), by code: the documented table."""
    rows = [(code, "", text) for code, text in _PSEUDO_CODES.items()]
    rows += [(cls.exit_code, cls.__name__, cls.describes) for cls in family()]
    return sorted(rows)


def _exit_codes() -> dict[int, str]:
    table = dict(_PSEUDO_CODES)
    for cls in family():
        if cls.exit_code in table:
            raise RuntimeError(f"exit code {cls.exit_code} has two owners: {cls.__name__} and another")
        if "describes" not in vars(cls) or "hint" not in vars(cls):
            raise RuntimeError(f"{cls.__name__} owns exit code {cls.exit_code} but lacks its describes or hint")
        table[cls.exit_code] = cls.describes
    return dict(sorted(table.items()))


EXIT_CODES: dict[int, str] = _exit_codes()

_SECRET_RE = re.compile(r"(?i)(AUTHINFO\s+PASS\s+|pass(word)?\s*[=:]\s*)\S+")
# A share ID of any format version (us1p…, us2w…): for a public share it is the decryption key.
# Kind letter and 30+ base32 characters, so words like "us1" or a short "us2pabc" are left alone.
SHARE_ID_RE = re.compile(r"(?i)us[0-9][pwr][a-z2-7]{30,}")
SHARE_ID_REDACTED = "us…[share ID redacted]"


def redact(text: str) -> str:
    """Replace anything that looks like a password, a share ID or a recovery phrase in free text."""
    text = _SECRET_RE.sub(lambda m: m.group(1) + "********", text)
    text = SHARE_ID_RE.sub(SHARE_ID_REDACTED, text)
    # Imported here: core.phrase imports this module (and loads the wordlist on first use).
    from usenetsync_cli.core.phrase import redact_phrases

    return redact_phrases(text)
