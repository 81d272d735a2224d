"""Properties of share-key wrapping (usenetsync_cli.core.keywrap)."""

from __future__ import annotations

import pytest

from usenetsync_cli.core.identity import Identity, PublicIdentity
from usenetsync_cli.core.keywrap import (
    ENTRY_SIZE,
    PASSWORD_BLOB_SIZE,
    NotARecipientError,
    padded_count,
    recipients_blob_size,
    unwrap_for_recipient,
    unwrap_with_password,
    wrap_for_recipients,
    wrap_with_password,
)
from usenetsync_cli.errors import ConfigError, CryptoError, TamperedError, WrongPasswordError

N = 2**10  # fast scrypt for tests; production default is 2**15
KEY = bytes(range(200, 232))
PW = "open sesame"
PEOPLE = [Identity.from_private_bytes(bytes([i]) * 32, bytes([i + 100]) * 32) for i in range(1, 11)]
STRANGER = Identity.from_private_bytes(b"\xee" * 32, b"\xef" * 32)


def _pubs(n: int) -> list[PublicIdentity]:
    return [p.public() for p in PEOPLE[:n]]


def _entries(blob: bytes) -> list[bytes]:
    return [blob[1 + i * ENTRY_SIZE:1 + (i + 1) * ENTRY_SIZE] for i in range((len(blob) - 1) // ENTRY_SIZE)]


# --- password ------------------------------------------------------------------------


def test_password_round_trip_and_size() -> None:
    blob = wrap_with_password(KEY, PW, n=N)
    assert len(blob) == PASSWORD_BLOB_SIZE == 82 and blob[0] == 1 and blob[1] == 10
    assert unwrap_with_password(blob, PW) == KEY
    assert unwrap_with_password(blob, PW.encode()) == KEY
    assert KEY not in blob


def test_same_salt_still_gives_fresh_blobs() -> None:
    a = wrap_with_password(KEY, PW, salt=b"s" * 16, n=N)
    b = wrap_with_password(KEY, PW, salt=b"s" * 16, n=N)
    assert a != b and a[:22] == b[:22]
    assert unwrap_with_password(a, PW) == unwrap_with_password(b, PW) == KEY


def test_wrong_password_message() -> None:
    blob = wrap_with_password(KEY, PW, n=N)
    for wrong in ("open sesamE", "", "open sesame ", PW.upper()):
        with pytest.raises(WrongPasswordError) as exc:
            unwrap_with_password(blob, wrong)
        assert str(exc.value) == "wrong password for this share"
        assert PW not in exc.value.hint


def test_tampering_any_byte_of_a_password_blob_fails() -> None:
    blob = wrap_with_password(KEY, PW, n=N)
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(CryptoError):
            unwrap_with_password(bytes(bad), PW)


def test_malformed_password_blobs_are_tampered() -> None:
    blob = wrap_with_password(KEY, PW, n=N)
    for bad in (b"", blob[:-1], blob + b"\x00", b"\x02" + blob[1:]):
        with pytest.raises(TamperedError):
            unwrap_with_password(bad, PW)
    # Absurd cost parameters are refused before scrypt runs (this would need 128 GiB).
    for header in (bytes([1, 30, 0, 8, 0, 1]), bytes([1, 200, 0, 8, 0, 1]), bytes([1, 10, 0, 0, 0, 1])):
        with pytest.raises(TamperedError, match="impossible scrypt parameters"):
            unwrap_with_password(header + blob[6:], PW)


def test_password_wrap_argument_checks() -> None:
    with pytest.raises(ValueError):
        wrap_with_password(KEY[:31], PW, n=N)
    with pytest.raises(ValueError):
        wrap_with_password(KEY, PW, n=1000)
    with pytest.raises(ValueError):
        wrap_with_password(KEY, PW, salt=b"short", n=N)
    with pytest.raises(ConfigError):
        wrap_with_password(KEY, "", n=N)


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
