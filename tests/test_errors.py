"""The exception family and its exit-code table (usenetsync_cli/errors.py).

Owns: proving that every exit code the tool can produce is in the one
generated table, that codes are stable and owned by exactly one class, and
that the names other modules import still point at the family's classes.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import usenetsync_cli
from usenetsync_cli import errors
from usenetsync_cli.errors import EXIT_CODES, UsenetSyncError, family

# The published table: scripts and cron jobs depend on it. A change here is a
# breaking change and must be deliberate.
STABLE = {
    "UsenetSyncError": 1,
    "UsageError": 2,
    "InputPathError": 3,
    "ConfigError": 4,
    "StateError": 5,
    "DiskFullError": 6,
    "NotFoundError": 7,
    "ShareIdError": 8,
    "NetworkError": 10,
    "AuthError": 11,
    "ServerRefusedError": 12,
    "ProtocolError": 13,
    "UploadIncompleteError": 14,
    "SourceChangedError": 15,
    "DownloadIncompleteError": 16,
    "VerifyRepairableError": 17,
    "DataLostError": 18,
    "LocalConflictError": 19,
    "CryptoError": 20,
    "WrongPasswordError": 21,
    "TamperedError": 22,
    "SyncConflictError": 23,
    "RollbackError": 24,
    "PasswordTooShortError": 25,
    "RecoveryPhraseError": 26,
    "ForgottenVersionError": 27,
    "CorruptStateError": 28,
    "LockedError": 75,
    "InterruptedByUser": 130,
    "TerminatedError": 143,
}


def _all_subclasses(root: type) -> set[type]:
    out: set[type] = set()
    todo = [root]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in out:
                out.add(sub)
                todo.append(sub)
    return out


@pytest.fixture(scope="module")
def every_error_class() -> set[type[UsenetSyncError]]:
    """Every UsenetSyncError subclass, after importing every module of the package."""
    for mod in pkgutil.walk_packages(usenetsync_cli.__path__, prefix="usenetsync_cli."):
        if mod.name.rsplit(".", 1)[-1] == "__main__":  # runs the CLI when imported
            continue
        importlib.import_module(mod.name)
    return _all_subclasses(UsenetSyncError) | {UsenetSyncError}


def test_the_table_is_the_family_plus_success() -> None:
    assert {cls.__name__: cls.exit_code for cls in family()} == STABLE
    assert set(EXIT_CODES) == set(STABLE.values()) | {0}
    for cls in family():
        assert EXIT_CODES[cls.exit_code] == cls.describes


def test_every_reachable_error_exits_with_a_code_of_the_table(every_error_class: set[type]) -> None:
    owners = {cls.exit_code: cls for cls in family()}
    assert len(every_error_class) > len(owners)  # the walk found classes beyond errors.py
    for cls in every_error_class:
        assert cls.exit_code in EXIT_CODES, f"{cls.__module__}.{cls.__qualname__} exits {cls.exit_code}"
        # ... and gets it by being one of the owner's kind, not by restating the number.
        assert issubclass(cls, owners[cls.exit_code]), (
            f"{cls.__module__}.{cls.__qualname__} exits {cls.exit_code} but is not a "
            f"{owners[cls.exit_code].__name__}"
        )


def test_each_owner_is_documented_and_message_free() -> None:
    for cls in family():
        assert cls.describes and "\n" not in cls.describes, cls
        assert 0 < cls.exit_code < 256, cls
        if cls is not UsenetSyncError:
            assert cls.hint and "\n" not in cls.hint, cls
        err = cls("what happened")
        assert str(err) == err.message == "what happened" and err.exit_code == cls.exit_code
        assert cls("x", hint="do this").hint == "do this"


def test_kinds() -> None:
    for sub in (errors.ShareIdError, errors.PasswordTooShortError, errors.RecoveryPhraseError):
        assert issubclass(sub, errors.ConfigError)
    assert issubclass(errors.RollbackError, errors.TamperedError)
    assert issubclass(errors.TerminatedError, errors.InterruptedByUser)


def test_old_names_still_import() -> None:
    from usenetsync_cli.cli.verify import DataLostError, DegradedError
    from usenetsync_cli.core.shareid import ShareIdError
    from usenetsync_cli.pipeline.download import DownloadIncompleteError
    from usenetsync_cli.pipeline.publish import NotUploadedError
    from usenetsync_cli.pipeline.recovery import NotRecoverableError, RecoveryError

    assert DegradedError is errors.DegradedError is errors.VerifyRepairableError
    assert DataLostError is errors.DataLostError
    assert ShareIdError is errors.ShareIdError
    assert DownloadIncompleteError is errors.DownloadIncompleteError
    assert NotUploadedError.exit_code == RecoveryError.exit_code == 14
    assert NotRecoverableError.exit_code == 18 and issubclass(NotRecoverableError, RecoveryError)


@pytest.mark.parametrize("text", ["hello", "us1", "us1x" + "a" * 45, "us2pabc"])
def test_a_bad_share_id_is_exit_8(text: str) -> None:
    from usenetsync_cli.core.shareid import ShareId

    with pytest.raises(errors.ShareIdError) as info:
        ShareId.parse(text)
    assert info.value.exit_code == 8 and info.value.hint
