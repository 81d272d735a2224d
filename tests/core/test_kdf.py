"""Password KDFs and the new-password rule (usenetsync_cli.core.kdf)."""

from __future__ import annotations

import time
import unicodedata

import pytest

from usenetsync_cli.core.kdf import (
    DEFAULT_ARGON2,
    MIN_PASSWORD_CHARS,
    Argon2Params,
    ScryptParams,
    check_new_password,
    derive_argon2id,
    derive_scrypt,
)
from usenetsync_cli.errors import PasswordTooShortError

FAST = Argon2Params(t=1, m_kib=8, p=1)
SALT = bytes(range(16))


def test_defaults_are_strong() -> None:
    # The cost every new file and blob gets: RFC 9106-class memory hardness.
    assert (DEFAULT_ARGON2.t, DEFAULT_ARGON2.m_kib, DEFAULT_ARGON2.p) == (4, 128 * 1024, 1)
    assert Argon2Params() == DEFAULT_ARGON2
    assert MIN_PASSWORD_CHARS == 12


def test_argon2id_is_deterministic_normalized_and_salted() -> None:
    composed = unicodedata.normalize("NFC", "pässwörd länger")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    a = derive_argon2id(composed, SALT, FAST)
    assert len(a) == 32 and a == derive_argon2id(decomposed, SALT, FAST) == derive_argon2id(composed.encode(), SALT, FAST)
    assert a != derive_argon2id(composed, bytes(16), FAST)
    assert a != derive_argon2id(composed, SALT, Argon2Params(t=2, m_kib=8, p=1))
    assert a != derive_argon2id(composed, SALT, Argon2Params(t=1, m_kib=16, p=1))
    assert a != derive_scrypt(composed, SALT, ScryptParams(n=2**10))
    with pytest.raises(ValueError):
        derive_argon2id("", SALT, FAST)
    with pytest.raises(ValueError):
        derive_argon2id("x", b"short", FAST)


@pytest.mark.parametrize(
    "t, m_kib, p",
    [
        (0, 8, 1), (17, 8, 1), (1, 7, 1), (1, 16, 4),  # m below 8 KiB per lane
        (1, 512 * 1024 + 1, 1),  # more than 512 MiB
        (5, 512 * 1024, 1),  # 2.5 GiB-passes of work
        (1, 8, 0), (1, 1024, 9), (True, 8, 1), (1.0, 8, 1), (2**32, 2**32, 255),
    ],
)
def test_hostile_argon2_parameters_are_refused_without_work(t: object, m_kib: object, p: object) -> None:
    start = time.perf_counter()
    with pytest.raises(ValueError):
        Argon2Params(t, m_kib, p)  # type: ignore[arg-type]
    assert time.perf_counter() - start < 0.05


def test_the_largest_accepted_argon2_parameters() -> None:
    assert Argon2Params(4, 512 * 1024, 1) and Argon2Params(16, 128 * 1024, 8)


@pytest.mark.parametrize(
    "n, r, p",
    [(3, 8, 1), (2**9, 8, 1), (2**23, 1, 1), (2**10, 33, 1), (2**10, 8, 17),
     (2**19, 8, 1),  # 512 MiB
     (2**18, 8, 5),  # 2^23 * 1.25 of work
     ],
)
def test_hostile_scrypt_parameters_are_refused(n: int, r: int, p: int) -> None:
    with pytest.raises(ValueError):
        ScryptParams(n, r, p)


def test_accepted_scrypt_parameters() -> None:
    assert ScryptParams().n == 2**15 and ScryptParams().log2_n == 15
    assert ScryptParams(2**18, 8, 4) and ScryptParams(2**10, 8, 1)


@pytest.mark.parametrize("password", ["", "x", "eleven char", "ab" * 5 + "c", "é" * 11, "e\u0301" * 11])
def test_short_new_passwords_are_refused(password: str) -> None:
    with pytest.raises(PasswordTooShortError) as exc:
        check_new_password(password)
    # NFC: "e" + combining acute is one character, so 11 of them are 11, not 22.
    assert exc.value.exit_code == 25 and "at least 12" in str(exc.value) and exc.value.hint
    if password:
        assert password not in str(exc.value) + exc.value.hint


@pytest.mark.parametrize("password", ["twelve chars", "é" * 12, "correct horse battery staple", b"twelve bytes"])
def test_long_enough_passwords_pass(password: str | bytes) -> None:
    check_new_password(password)
