"""The one exception family of usenetsync.

Owns: every expected failure the tool can report, each with its one-line
message, a hint, and a distinct process exit code.

Invariants:
- Only ``cli.app.main()`` turns a ``UsenetSyncError`` into text and an exit
  code; every other layer raises and lets it travel.
- Messages and hints never contain secrets (passwords, keys, share keys).
  Anything formatted into a message goes through ``redact`` first when it may
  hold one.
- Exit codes are stable: scripts and cron jobs depend on them. They are listed
  in README.md and man/usenetsync.1 (generated from ``EXIT_CODES``).
"""

from __future__ import annotations

import re

# Codes below 64 are ours; 2 is reserved for usage errors (Click's own), 130 for
# Ctrl-C (shell convention), 75 (EX_TEMPFAIL) for "already running, try later".
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsenetSyncError(Exception):
    """Base of every expected failure. Subclasses set ``exit_code`` and ``hint``."""

    exit_code: int = EXIT_INTERNAL
    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputPathError(UsenetSyncError):
    """A path given on the command line is missing, not a folder, or unreadable."""

    exit_code = 3
    hint = "check the path and try again"


class ConfigError(UsenetSyncError):
    """Configuration or command-line values that cannot work together."""

    exit_code = 4
    hint = "see `usenetsync COMMAND --help`"


class StateError(UsenetSyncError):
    """The home (state) directory is unusable: not writable, corrupt, too new."""

    exit_code = 5
    hint = "set USENETSYNC_HOME to a writable folder, or check its permissions"


class DiskFullError(StateError):
    """No space left where we must write (state or download target)."""

    exit_code = 6
    hint = "free some space and run the same command again; nothing was lost"


class LockedError(UsenetSyncError):
    """Another usenetsync process holds the home-wide lock."""

    exit_code = 75
    hint = "wait for the other run to finish, or pass --lock-wait SECONDS"


class NotFoundError(UsenetSyncError):
    """A named folder, share, server or job does not exist in the state."""

    exit_code = 7
    hint = "list what exists with `usenetsync status`"


class NetworkError(UsenetSyncError):
    """A server could not be reached or dropped the connection past all retries."""

    exit_code = 10
    hint = "check the server address and that it is up; then run with --resume"


class AuthError(NetworkError):
    """The server refused our credentials (481/482) or requires them (480)."""

    exit_code = 11
    hint = "check the user name and password with `usenetsync server test NAME`"


class ServerRefusedError(NetworkError):
    """The server refuses what we need: posting not allowed (440), 502, policy."""

    exit_code = 12
    hint = "this server does not accept the request; try another server"


class ProtocolError(NetworkError):
    """The server answered something that is not NNTP as we know it."""

    exit_code = 13
    hint = "the server may not speak NNTP on that port; check --port and --tls"


class UploadIncompleteError(UsenetSyncError):
    """Some articles could not be posted or confirmed; the job is resumable."""

    exit_code = 14
    hint = "run `usenetsync upload --resume` to retry what is missing"


class SourceChangedError(UsenetSyncError):
    """A file changed on disk after it was indexed; it must be re-indexed."""

    exit_code = 15
    hint = "run `usenetsync index PATH` again, then upload"


class CryptoError(UsenetSyncError):
    """Decryption or authentication failed: wrong key/password or tampered data."""

    exit_code = 20
    hint = "check the password or key; the data may have been altered"


class WrongPasswordError(CryptoError):
    exit_code = 21
    hint = "check the password (or --password-file) and try again"


class TamperedError(CryptoError):
    exit_code = 22
    hint = "the data failed its signature or integrity check; nothing was written"


class InterruptedByUser(UsenetSyncError):
    """Ctrl-C or SIGTERM: stopped at a safe point."""

    exit_code = EXIT_INTERRUPTED
    hint = "run the same command with --resume to continue"


EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error (a bug: please report it)",
    EXIT_USAGE: "command-line usage error",
    InputPathError.exit_code: "input path missing, not a folder, or unreadable",
    ConfigError.exit_code: "configuration error",
    StateError.exit_code: "state (home) directory unusable",
    DiskFullError.exit_code: "disk full",
    NotFoundError.exit_code: "named folder, share, server or job not found",
    NetworkError.exit_code: "server unreachable or connection lost",
    AuthError.exit_code: "authentication failed",
    ServerRefusedError.exit_code: "server refused (posting not allowed, 502, policy)",
    ProtocolError.exit_code: "server answered outside the NNTP protocol",
    UploadIncompleteError.exit_code: "upload incomplete; resumable",
    SourceChangedError.exit_code: "source changed since it was indexed",
    CryptoError.exit_code: "decryption or integrity failure",
    WrongPasswordError.exit_code: "wrong password",
    TamperedError.exit_code: "tampered or corrupt data",
    16: "download incomplete: some files could not be completed",
    17: "verify: articles missing or damaged, repairable (verify --repair)",
    18: "verify: data lost (not repairable)",
    LockedError.exit_code: "another usenetsync run holds the lock",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); resumable",
}

_SECRET_RE = re.compile(r"(?i)(AUTHINFO\s+PASS\s+|pass(word)?\s*[=:]\s*)\S+")


def redact(text: str) -> str:
    """Replace anything that looks like a password in free text."""
    return _SECRET_RE.sub(lambda m: m.group(1) + "********", text)
