"""Properties of share-key wrapping (usenetsync_cli.core.keywrap)."""

from __future__ import annotations

import os
import struct
import time

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from usenetsync_cli.core import keywrap
from usenetsync_cli.core.identity import Identity, PublicIdentity
from usenetsync_cli.core.kdf import Argon2Params, ScryptParams
from usenetsync_cli.core.keywrap import (
    ENTRY_SIZE,
    LEGACY_PASSWORD_BLOB_SIZE,
    PASSWORD_BLOB_SIZE,
    NotARecipientError,
    padded_count,
    password_blob_params,
    recipients_blob_size,
    unwrap_for_recipient,
    unwrap_with_password,
    wrap_for_recipients,
    wrap_with_password,
)
from usenetsync_cli.errors import ConfigError, CryptoError, PasswordTooShortError, TamperedError, WrongPasswordError

FAST = Argon2Params(t=1, m_kib=8, p=1)  # cheap Argon2id for tests; production default is t=4, 128 MiB
KEY = bytes(range(200, 232))
PW = "open sesame, please"
PEOPLE = [Identity.from_private_bytes(bytes([i]) * 32, bytes([i + 100]) * 32) for i in range(1, 11)]
STRANGER = Identity.from_private_bytes(b"\xee" * 32, b"\xef" * 32)
# A password blob exactly as the version 1 code wrote it: scrypt n=2^15, r=8, p=1,
# salt 00..0f, password "short" (shorter than today's minimum), share key 100..131.
V1_BLOB = bytes.fromhex(
    "010f00080001000102030405060708090a0b0c0d0e0fa7323e9cf984c5b4f5ce698b1ce15c5ecc0921c0379aafbb50f38efcb040ca38"
    "bb4336dd2dda0d4c02ca1d5c44b5349ecf0c6fe94535d7c68d237fa7"
)
V1_KEY = bytes(range(100, 132))


def _pubs(n: int) -> list[PublicIdentity]:
    return [p.public() for p in PEOPLE[:n]]


def _entries(blob: bytes) -> list[bytes]:
    return [blob[1 + i * ENTRY_SIZE:1 + (i + 1) * ENTRY_SIZE] for i in range((len(blob) - 1) // ENTRY_SIZE)]


def _v1_blob(key: bytes, password: str, n_log2: int = 10) -> bytes:
    """A version 1 password blob written from its spec, independently of the module."""
    salt, nonce = os.urandom(16), os.urandom(12)
    header = struct.pack(">BBHH", 1, n_log2, 8, 1) + salt
    kek = Scrypt(salt=salt, length=32, n=1 << n_log2, r=8, p=1).derive(password.encode())
    return header + nonce + AESGCM(kek).encrypt(nonce, key, b"usenetsync/v1/share/password-wrap" + header)


def _no_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args: object) -> bytes:
        raise AssertionError("the KDF ran")

    monkeypatch.setattr(keywrap, "derive_argon2id", must_not_run)
    monkeypatch.setattr(keywrap, "derive_scrypt", must_not_run)


# --- password ------------------------------------------------------------------------


def test_password_round_trip_size_and_header() -> None:
    blob = wrap_with_password(KEY, PW, params=FAST)
    assert len(blob) == PASSWORD_BLOB_SIZE == 86
    assert struct.unpack_from(">BIIB", blob) == (2, 1, 8, 1)
    assert password_blob_params(blob) == FAST
    assert unwrap_with_password(blob, PW) == KEY
    assert unwrap_with_password(blob, PW.encode()) == KEY
    assert KEY not in blob


def test_default_argon2id_parameters_are_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real cost, once (~0.5 s): what a share gets unless a test lowers it.
    monkeypatch.delenv("USENETSYNC_TESTONLY_WEAKEN_KDF")
    assert keywrap.PASSWORD_KDF == Argon2Params() == Argon2Params(4, 128 * 1024, 1)
    blob = wrap_with_password(KEY, PW)
    assert struct.unpack_from(">BIIB", blob) == (2, 4, 131072, 1)


def test_the_test_only_weakening_is_recorded_in_the_blob() -> None:
    # conftest sets USENETSYNC_TESTONLY_WEAKEN_KDF=1: the blob says what it used, so it stays readable.
    blob = wrap_with_password(KEY, PW)
    assert password_blob_params(blob) == Argon2Params(1, 8, 1)
    assert unwrap_with_password(blob, PW) == KEY


def test_module_default_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USENETSYNC_TESTONLY_WEAKEN_KDF")
    monkeypatch.setattr(keywrap, "PASSWORD_KDF", Argon2Params(2, 16, 1))
    assert password_blob_params(wrap_with_password(KEY, PW)) == Argon2Params(2, 16, 1)


def test_same_salt_still_gives_fresh_blobs() -> None:
    a = wrap_with_password(KEY, PW, salt=b"s" * 16, params=FAST)
    b = wrap_with_password(KEY, PW, salt=b"s" * 16, params=FAST)
    assert a != b and a[:26] == b[:26]
    assert unwrap_with_password(a, PW) == unwrap_with_password(b, PW) == KEY


def test_wrong_password_message() -> None:
    blob = wrap_with_password(KEY, PW, params=FAST)
    # A short password is just a wrong one when unwrapping (the rule is for new passwords).
    for wrong in ("open sesame, pleasE", "", PW + " ", PW.upper(), "short"):
        with pytest.raises(WrongPasswordError) as exc:
            unwrap_with_password(blob, wrong)
        assert str(exc.value) == "wrong password for this share"
        assert PW not in exc.value.hint


def test_short_passwords_are_refused_when_wrapping(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_kdf(monkeypatch)
    for short in ("open sesame", "x" * 11, "é" * 11, b"eleven byte"):
        with pytest.raises(PasswordTooShortError) as exc:
            wrap_with_password(KEY, short, params=FAST)
        assert exc.value.exit_code == 25 and "\n" not in str(exc.value)
        assert str(exc.value) == "the share password has 11 characters; at least 12 are needed"
        assert "12 or more" in exc.value.hint


def test_tampering_any_byte_of_a_password_blob_fails() -> None:
    for blob, pw in ((wrap_with_password(KEY, PW, params=FAST), PW), (_v1_blob(KEY, "short"), "short")):
        for i in range(len(blob)):
            bad = bytearray(blob)
            bad[i] ^= 0x01
            with pytest.raises(CryptoError):
                unwrap_with_password(bytes(bad), pw)


def test_malformed_password_blobs_are_tampered() -> None:
    blob = wrap_with_password(KEY, PW, params=FAST)
    for bad in (b"", blob[:-1], blob + b"\x00", b"\x03" + blob[1:], b"\x00" + blob[1:], V1_BLOB[:-1], b"\x01" + blob[1:]):
        with pytest.raises(TamperedError):
            unwrap_with_password(bad, PW)


@pytest.mark.parametrize(
    "t, m_kib, p",
    [(1, 2**20, 1), (2**31, 8, 1), (8, 512 * 1024, 1), (0, 8, 1), (1, 8, 0), (1, 0, 1), (1, 64, 200)],
)
def test_hostile_argon2id_parameters_are_refused_quickly(
    monkeypatch: pytest.MonkeyPatch, t: int, m_kib: int, p: int
) -> None:
    blob = wrap_with_password(KEY, PW, params=FAST)
    _no_kdf(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(TamperedError, match="unacceptable Argon2id parameters"):
        unwrap_with_password(struct.pack(">BIIB", 2, t, m_kib, p) + blob[10:], PW)
    assert time.perf_counter() - start < 0.1


def test_version_1_blobs_still_unwrap() -> None:
    assert len(V1_BLOB) == LEGACY_PASSWORD_BLOB_SIZE == 82
    assert password_blob_params(V1_BLOB) == ScryptParams(2**15, 8, 1)
    assert unwrap_with_password(V1_BLOB, "short") == V1_KEY
    with pytest.raises(WrongPasswordError):
        unwrap_with_password(V1_BLOB, "shorT")
    assert unwrap_with_password(_v1_blob(KEY, "x"), "x") == KEY


def test_hostile_scrypt_parameters_are_refused_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_kdf(monkeypatch)
    # Absurd cost parameters are refused before scrypt runs (the first would need 128 GiB).
    for header in (bytes([1, 30, 0, 8, 0, 1]), bytes([1, 200, 0, 8, 0, 1]), bytes([1, 10, 0, 0, 0, 1]),
                   bytes([1, 18, 0, 8, 0, 16]), bytes([1, 22, 0, 8, 0, 1])):
        start = time.perf_counter()
        with pytest.raises(TamperedError, match="impossible scrypt parameters"):
            unwrap_with_password(header + V1_BLOB[6:], "short")
        assert time.perf_counter() - start < 0.1


def test_password_wrap_argument_checks() -> None:
    with pytest.raises(ValueError):
        wrap_with_password(KEY[:31], PW, params=FAST)
    with pytest.raises(ValueError):
        wrap_with_password(KEY, PW, params=Argon2Params(t=0))
    with pytest.raises(TypeError):
        wrap_with_password(KEY, PW, params=ScryptParams(2**10))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        wrap_with_password(KEY, PW, salt=b"short", params=FAST)
    with pytest.raises(ConfigError):
        wrap_with_password(KEY, "", params=FAST)


# --- recipients ------------------------------------------------------------------------


def test_every_recipient_opens_it() -> None:
    blob = wrap_for_recipients(KEY, _pubs(5))
    for person in PEOPLE[:5]:
        assert unwrap_for_recipient(blob, person) == KEY


def test_non_recipient_is_told_plainly() -> None:
    blob = wrap_for_recipients(KEY, _pubs(5))
    for outsider in (STRANGER, PEOPLE[5]):
        with pytest.raises(NotARecipientError) as exc:
            unwrap_for_recipient(blob, outsider)
        assert str(exc.value) == "this share is not addressed to your key"
        assert isinstance(exc.value, CryptoError) and exc.value.exit_code == CryptoError.exit_code
        assert KEY.hex() not in str(exc.value) + exc.value.hint


def test_padding_hides_the_count() -> None:
    sizes = {len(wrap_for_recipients(KEY, _pubs(n))) for n in (1, 5, 8)}
    assert sizes == {recipients_blob_size(8)} == {1 + 8 * 92}
    assert len(wrap_for_recipients(KEY, _pubs(9))) == recipients_blob_size(16)
    assert len(wrap_for_recipients(KEY, _pubs(1), pad_to=32)) == recipients_blob_size(32)
    assert [padded_count(n) for n in (1, 7, 8, 9, 16, 17, 100)] == [8, 8, 8, 16, 16, 32, 128]
    with pytest.raises(ValueError):
        wrap_for_recipients(KEY, _pubs(5), pad_to=4)
    with pytest.raises(ValueError):
        wrap_for_recipients(KEY, [])


def test_entries_name_nobody() -> None:
    blob = wrap_for_recipients(KEY, _pubs(5))
    for person in PEOPLE[:5]:
        pub = person.public()
        for needle in (pub.box_pub, pub.sign_pub, pub.fingerprint(), pub.box_pub[:8], pub.sign_pub[:8]):
            assert needle not in blob
    assert KEY not in blob


def test_dummies_look_like_real_entries() -> None:
    # Real X25519 public keys have the top bit clear; raw random dummies would not.
    for _ in range(20):
        for entry in _entries(wrap_for_recipients(KEY, _pubs(1))):
            assert entry[31] & 0x80 == 0
    assert len({e[:32] for e in _entries(wrap_for_recipients(KEY, _pubs(1)))}) == 8


def test_entries_are_shuffled() -> None:
    positions = set()
    for _ in range(30):
        blob = wrap_for_recipients(KEY, _pubs(1))
        for i, entry in enumerate(_entries(blob)):
            try:
                unwrap_for_recipient(b"\x01" + entry, PEOPLE[0])
            except NotARecipientError:
                continue
            positions.add(i)
    assert len(positions) > 1  # all 30 at one position has probability 8**-29


def test_duplicates_are_wrapped_once() -> None:
    blob = wrap_for_recipients(KEY, _pubs(1) * 9)
    assert len(blob) == recipients_blob_size(8)
    opened = 0
    for entry in _entries(blob):
        try:
            unwrap_for_recipient(b"\x01" + entry, PEOPLE[0])
            opened += 1
        except NotARecipientError:
            pass
    assert opened == 1


def test_tampering_the_recipients_entry_fails() -> None:
    # Changing a dummy entry changes nothing a reader can see (by design: they
    # are random); the signature over the share index guards the blob as a whole.
    blob = wrap_for_recipients(KEY, _pubs(1), pad_to=1)
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(CryptoError):
            unwrap_for_recipient(bytes(bad), PEOPLE[0])


def test_malformed_recipient_blobs_are_tampered() -> None:
    blob = wrap_for_recipients(KEY, _pubs(2))
    for bad in (b"", b"\x01", blob[:-1], blob + b"\x00", b"\x02" + blob[1:]):
        with pytest.raises(TamperedError):
            unwrap_for_recipient(bad, PEOPLE[0])


def test_degenerate_keys() -> None:
    # A recipient key that is a low-order point cannot be used.
    with pytest.raises(ConfigError, match="not usable"):
        wrap_for_recipients(KEY, [PublicIdentity(bytes(32), bytes(32))])
    # An entry carrying such a point is skipped, not a crash, and the next one is tried.
    real = wrap_for_recipients(KEY, _pubs(1), pad_to=1)[1:]
    assert unwrap_for_recipient(b"\x01" + bytes(ENTRY_SIZE) + real, PEOPLE[0]) == KEY
    with pytest.raises(NotARecipientError):
        unwrap_for_recipient(b"\x01" + bytes(ENTRY_SIZE), PEOPLE[0])
