"""Password-based key derivation: Argon2id for everything written now, scrypt for reading old data.

Owns: the cost parameters of both KDFs and their bounds, turning a password
or passphrase into a 32-byte key, and the minimum length of a new password.

Argon2id (RFC 9106, version 0x13, via ``argon2-cffi``'s ``hash_secret_raw``)::

    key = Argon2id(password = NFC-UTF-8(password), salt (16 bytes),
                   time_cost = t, memory_cost = m_kib KiB, parallelism = p, length 32)

Default t=4, m=128 MiB, p=1: about 0.5 s on the development machine (2 cores),
for share passwords and identity passphrases alike. The parameters are always
stored next to the salt (in the authenticated header of whatever they
protect), so raising them later breaks nothing already written.

scrypt (``n``, ``r``, ``p``) is what version 1 identity files and password
blobs used (n = 2^15); it is kept only to read them.

Invariants:
- Parameters read from a file or a blob are bounded *before* any work: a
  hostile header can ask for at most 512 MiB and about 2 s of Argon2id
  (``t * m`` <= 2 GiB-passes), or 256 MiB and about 3 s of scrypt
  (``n * r * p`` <= 2^23); anything more is refused with ``ValueError``
  (callers turn it into their own "damaged" error).
- A new password (share password or identity passphrase) has at least
  ``MIN_PASSWORD_CHARS`` characters of its NFC form; checking an existing
  one never applies the rule (a short one is simply a wrong one).
- No password, passphrase or derived key appears in any message.
- No I/O, except that ``for_new_data`` reads one environment variable.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from usenetsync_cli.errors import PasswordTooShortError

__all__ = [
    "DEFAULT_ARGON2",
    "DEFAULT_SCRYPT",
    "KDF_SALT_SIZE",
    "MIN_PASSWORD_CHARS",
    "Argon2Params",
    "ScryptParams",
    "check_new_password",
    "derive_argon2id",
    "derive_scrypt",
    "for_new_data",
    "normalize_passphrase",
]

KDF_SALT_SIZE = 16
KEY_LENGTH = 32
MIN_PASSWORD_CHARS = 12


def normalize_passphrase(passphrase: str | bytes) -> bytes:
    """UTF-8 of the NFC form, so the same passphrase typed on two systems matches."""
    if isinstance(passphrase, bytes):
        return passphrase
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _chars(password: str | bytes) -> int:
    if isinstance(password, bytes):
        try:
            password = password.decode("utf-8")
        except UnicodeDecodeError:
            return len(password)
    return len(unicodedata.normalize("NFC", password))


def check_new_password(password: str | bytes, what: str = "password") -> None:
    """PasswordTooShortError unless ``password`` has at least MIN_PASSWORD_CHARS characters (NFC)."""
    n = _chars(password)
    if n < MIN_PASSWORD_CHARS:
        raise PasswordTooShortError(
            f"the {what} has {n} characters; at least {MIN_PASSWORD_CHARS} are needed",
            hint=f"choose a {what} of {MIN_PASSWORD_CHARS} or more characters, e.g. four random words",
        )


def _ints(*values: object) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


# --- Argon2id ----------------------------------------------------------------------

# What a reader accepts from a file or blob. 4x the default's memory and
# work, so defaults can grow a little without a format change.
_ARGON2_MAX_T = 16
_ARGON2_MAX_M_KIB = 512 * 1024
_ARGON2_MAX_P = 8
_ARGON2_MAX_WORK = 2 * 1024 * 1024  # t * m_kib, in KiB-passes: ~2 s here


class _Bounded:
    """Parameters that refuse to exist outside their bounds (``problem`` says why)."""

    __slots__ = ()

    def problem(self) -> str:
        raise NotImplementedError

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)


@dataclass(frozen=True, slots=True)
class Argon2Params(_Bounded):
    """Argon2id cost: ``t`` passes over ``m_kib`` KiB with ``p`` lanes."""

    t: int = 4
    m_kib: int = 128 * 1024
    p: int = 1

    def problem(self) -> str:
        """Why these parameters are unacceptable, or "" when they are fine."""
        t, m, p = self.t, self.m_kib, self.p
        if not _ints(t, m, p):
            return "Argon2id parameters must be integers"
        if not 1 <= t <= _ARGON2_MAX_T:
            return f"Argon2id time cost must be in 1..{_ARGON2_MAX_T}"
        if not 1 <= p <= _ARGON2_MAX_P:
            return f"Argon2id parallelism must be in 1..{_ARGON2_MAX_P}"
        if not 8 * p <= m <= _ARGON2_MAX_M_KIB:
            return f"Argon2id memory must be between {8 * p} KiB and {_ARGON2_MAX_M_KIB // 1024} MiB"
        if t * m > _ARGON2_MAX_WORK:
            return "Argon2id parameters ask for more work than a reader accepts"
        return ""


DEFAULT_ARGON2 = Argon2Params()
TEST_WEAKEN_ENV = "USENETSYNC_TESTONLY_WEAKEN_KDF"
_TEST_ARGON2 = Argon2Params(t=1, m_kib=8, p=1)


def for_new_data(params: Argon2Params, env: Mapping[str, str] = os.environ) -> Argon2Params:
    """``params``, or the cheapest Argon2id when ``USENETSYNC_TESTONLY_WEAKEN_KDF=1``.

    As borg's BORG_TESTONLY_WEAKEN_KDF: test suites set it so that hundreds of
    identities and password shares do not cost a second each. The parameters
    are written next to the salt, so data made this way stays readable; it is
    only as strong as its password. Never set it for real data.
    """
    return _TEST_ARGON2 if env.get(TEST_WEAKEN_ENV) == "1" else params


def derive_argon2id(passphrase: str | bytes, salt: bytes, params: Argon2Params) -> bytes:
    """32 bytes from Argon2id; an empty passphrase is a programming error here."""
    secret = normalize_passphrase(passphrase)
    if not secret:
        raise ValueError("empty passphrase")
    if len(salt) != KDF_SALT_SIZE:
        raise ValueError(f"salt must be {KDF_SALT_SIZE} bytes")
    return hash_secret_raw(
        secret=secret, salt=bytes(salt), time_cost=params.t, memory_cost=params.m_kib,
        parallelism=params.p, hash_len=KEY_LENGTH, type=Type.ID, version=19,
    )


# --- scrypt (reading version 1 data) -----------------------------------------------------

_SCRYPT_MIN_LOG2_N = 10
_SCRYPT_MAX_LOG2_N = 22
_SCRYPT_MAX_R = 32
_SCRYPT_MAX_P = 16
_SCRYPT_MAX_MEM = 256 << 20  # 128 * n * r bytes
_SCRYPT_MAX_WORK = 1 << 23  # n * r * p: 2^18 * 8 * 4, ~3 s here


@dataclass(frozen=True, slots=True)
class ScryptParams(_Bounded):
    """scrypt cost parameters; ``n`` a power of two in [2**10, 2**22]."""

    n: int = 2**15
    r: int = 8
    p: int = 1

    def problem(self) -> str:
        """Why these parameters are unacceptable, or "" when they are fine."""
        n, r, p = self.n, self.r, self.p
        if not _ints(n, r, p):
            return "scrypt parameters must be integers"
        if n < 2 or n & (n - 1):
            return "scrypt n must be a power of two"
        if not _SCRYPT_MIN_LOG2_N <= n.bit_length() - 1 <= _SCRYPT_MAX_LOG2_N:
            return f"scrypt n must be between 2**{_SCRYPT_MIN_LOG2_N} and 2**{_SCRYPT_MAX_LOG2_N}"
        if not 1 <= r <= _SCRYPT_MAX_R or not 1 <= p <= _SCRYPT_MAX_P:
            return f"scrypt r must be in 1..{_SCRYPT_MAX_R} and p in 1..{_SCRYPT_MAX_P}"
        if 128 * n * r > _SCRYPT_MAX_MEM:
            return f"scrypt parameters need more than {_SCRYPT_MAX_MEM >> 20} MiB of memory"
        if n * r * p > _SCRYPT_MAX_WORK:
            return "scrypt parameters ask for more work than a reader accepts"
        return ""

    @property
    def log2_n(self) -> int:
        return self.n.bit_length() - 1


DEFAULT_SCRYPT = ScryptParams()


def derive_scrypt(passphrase: str | bytes, salt: bytes, params: ScryptParams) -> bytes:
    """32 bytes from scrypt; an empty passphrase is a programming error here."""
    secret = normalize_passphrase(passphrase)
    if not secret:
        raise ValueError("empty passphrase")
    return Scrypt(salt=salt, length=KEY_LENGTH, n=params.n, r=params.r, p=params.p).derive(secret)
