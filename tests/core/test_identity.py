"""Properties of identities, public key text and the identity file (usenetsync_cli.core.identity)."""

from __future__ import annotations

import base64
import hashlib
import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usenetsync_cli.core.identity import (
    PUBKEY_PREFIX,
    Identity,
    PublicIdentity,
    ScryptParams,
    identity_file_info,
    verify,
)
from usenetsync_cli.errors import ConfigError, CryptoError, TamperedError, UsenetSyncError, WrongPasswordError

FAST = ScryptParams(n=2**10, r=8, p=1)
ALICE = Identity.from_private_bytes(bytes(range(32)), bytes(range(32, 64)))
BOB = Identity.from_private_bytes(bytes(range(64, 96)), bytes(range(96, 128)))
PASS = "correct horse battery staple"
# Every character someone might mistype into a key: base32, digits, case, punctuation, space.
SUBSTITUTES = "abcdefghijklmnopqrstuvwxyz0123456789-_=+/ ."


def _private_fragments(ident: Identity) -> list[str]:
    raw = ident._private_bytes()
    return [raw.hex(), raw[:32].hex(), raw[32:].hex(), base64.b64encode(raw).decode(), repr(raw)]


def _protected_file(passphrase: str = PASS) -> bytes:
    return ALICE.to_file_bytes(passphrase, params=FAST, salt=b"s" * 16, nonce=b"n" * 12)


PROTECTED = _protected_file()


def _with_checksum(doc: dict[str, object]) -> bytes:
    # Re-seal a deliberately edited file the way a careful attacker would.
    from usenetsync_cli.core import identity as mod

    doc = {k: v for k, v in doc.items() if k != "checksum"}
    doc["checksum"] = base64.b64encode(mod._file_checksum(doc)).decode()
    return json.dumps(doc).encode()


# --- public identity ---------------------------------------------------------


def test_fingerprint_is_the_documented_hash() -> None:
    pub = ALICE.public()
    expected = hashlib.sha256(b"usenetsync/v1/identity" + pub.sign_pub + pub.box_pub).digest()[:8]
    assert pub.fingerprint() == ALICE.fingerprint() == expected
    assert BOB.fingerprint() != expected


def test_public_text_layout() -> None:
    pub = ALICE.public()
    text = pub.to_text()
    assert text.startswith(PUBKEY_PREFIX) and len(text) == 114 and text == text.lower()
    body = text[len(PUBKEY_PREFIX):].upper()
    raw = base64.b32decode(body + "=" * (-len(body) % 8))
    check = hashlib.sha256(b"usenetsync/v1/pubkey" + pub.sign_pub + pub.box_pub).digest()[:4]
    assert raw == pub.sign_pub + pub.box_pub + check


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_public_text_round_trip(sign_pub: bytes, box_pub: bytes) -> None:
    pub = PublicIdentity(sign_pub, box_pub)
    text = pub.to_text()
    assert PublicIdentity.from_text(text) == pub
    assert PublicIdentity.from_text(f"  {text.upper()}\n") == pub


def test_every_substitution_in_public_text_is_rejected() -> None:
    text = ALICE.public().to_text()
    for i, orig in enumerate(text):
        for ch in SUBSTITUTES:
            if ch == orig or (i in (0, len(text) - 1) and ch == " "):
                continue
            with pytest.raises(ConfigError, match="^not a valid public key: "):
                PublicIdentity.from_text(text[:i] + ch + text[i + 1:])


def test_public_text_errors_are_clear() -> None:
    text = ALICE.public().to_text()
    bad_last = text[:-1] + ("a" if text[-1] != "a" else "b")
    with pytest.raises(ConfigError, match=r"checksum mismatch \(typo\?\)"):
        PublicIdentity.from_text(text[:20] + ("a" if text[20] != "a" else "b") + text[21:])
    with pytest.raises(ConfigError, match="checksum mismatch"):
        PublicIdentity.from_text(bad_last)
    with pytest.raises(ConfigError, match="expected text starting with uspk1"):
        PublicIdentity.from_text("ssh-ed25519 AAAA")
    with pytest.raises(ConfigError, match="expected 109"):
        PublicIdentity.from_text(text[:-3])
    with pytest.raises(ConfigError, match="character '0' at position 30"):
        PublicIdentity.from_text(text[:29] + "0" + text[30:])


def test_repr_shows_only_fingerprints() -> None:
    fp = ALICE.fingerprint().hex()
    for s in (repr(ALICE), str(ALICE), repr(ALICE.public())):
        assert fp in s
        for frag in _private_fragments(ALICE):
            assert frag not in s


# --- signatures and exchange -----------------------------------------------------


@given(st.binary(max_size=512))
def test_sign_verify(data: bytes) -> None:
    sig = ALICE.sign(data)
    assert len(sig) == 64
    verify(ALICE.public().sign_pub, sig, data)
    ALICE.public().verify(sig, data)
    with pytest.raises(TamperedError):
        verify(BOB.public().sign_pub, sig, data)
    with pytest.raises(TamperedError):
        verify(ALICE.public().sign_pub, sig, data + b"x")
    with pytest.raises(TamperedError):
        verify(ALICE.public().sign_pub, sig[:-1], data)


def test_every_signature_bit_matters() -> None:
    sig = ALICE.sign(b"index")
    for i in range(len(sig)):
        bad = bytearray(sig)
        bad[i] ^= 0x01
        with pytest.raises(TamperedError):
            verify(ALICE.public().sign_pub, bytes(bad), b"index")


def test_exchange_agrees_and_rejects_degenerate_points() -> None:
    assert ALICE.exchange(BOB.public().box_pub) == BOB.exchange(ALICE.public().box_pub)
    with pytest.raises(TamperedError):
        ALICE.exchange(bytes(32))


def test_generate_is_random() -> None:
    a, b = Identity.generate(), Identity.generate()
    assert a != b and a.fingerprint() != b.fingerprint()
    assert a == Identity.from_private_bytes(a._private_bytes()[:32], a._private_bytes()[32:])


# --- identity file ------------------------------------------------------------------


def test_protected_file_round_trip_and_contents() -> None:
    data = _protected_file()
    doc = json.loads(data)
    assert doc["protection"] == "scrypt-aes256gcm" and doc["version"] == 1
    assert doc["scrypt"]["n"] == 2**10 and doc["scrypt"]["r"] == 8 and doc["scrypt"]["p"] == 1
    for frag in _private_fragments(ALICE):
        assert frag not in data.decode()
    assert Identity.from_file_bytes(data, PASS) == ALICE
    info = identity_file_info(data)
    assert info.protected and info.public == ALICE.public() and info.params == FAST


def test_unprotected_file_round_trip() -> None:
    data = ALICE.to_file_bytes(None)
    assert json.loads(data)["protection"] == "none"
    assert Identity.from_file_bytes(data, None) == ALICE
    assert Identity.from_file_bytes(data, "ignored") == ALICE
    assert not identity_file_info(data).protected


def test_wrong_passphrase_is_one_line_and_secret_free() -> None:
    data = _protected_file()
    with pytest.raises(WrongPasswordError) as exc:
        Identity.from_file_bytes(data, "correct horse battery stapler")
    msg = str(exc.value)
    assert msg == "wrong passphrase for the identity file" and "\n" not in msg
    assert PASS not in msg and "stapler" not in msg and PASS not in exc.value.hint


def test_missing_or_empty_passphrase() -> None:
    with pytest.raises(ConfigError, match="protected by a passphrase"):
        Identity.from_file_bytes(_protected_file(), None)
    with pytest.raises(ConfigError, match="passphrase is empty"):
        ALICE.to_file_bytes("", params=FAST)


def test_passphrase_is_unicode_normalized() -> None:
    composed = unicodedata.normalize("NFC", "pässwörd")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert Identity.from_file_bytes(ALICE.to_file_bytes(composed, params=FAST), decomposed) == ALICE


@pytest.mark.parametrize("protected", [True, False])
def test_tampering_any_byte_fails(protected: bool) -> None:
    data = _protected_file() if protected else ALICE.to_file_bytes(None)
    original = json.loads(data)
    for i in range(len(data)):
        for repl in (b"A", b"7", b" "):
            bad = data[:i] + repl + data[i + 1:]
            if bad == data:
                continue
            try:
                same = json.loads(bad) == original
            except ValueError:
                same = False
            if same:  # whitespace only: the very same file
                continue
            with pytest.raises(UsenetSyncError) as exc:
                Identity.from_file_bytes(bad, PASS if protected else None)
            # Only a changed version number is not "damaged": it means "newer format".
            assert isinstance(exc.value, TamperedError) or "format version" in str(exc.value), (i, repl)


def test_resealed_edits_never_load() -> None:
    # Someone who edits fields *and* fixes the checksum still gets nothing.
    doc = json.loads(_protected_file())
    for field_ in ("sign_pub", "box_pub"):
        edited = dict(doc, **{field_: base64.b64encode(BOB.public().sign_pub).decode()})
        with pytest.raises(CryptoError):
            Identity.from_file_bytes(_with_checksum(edited), PASS)
    plain = json.loads(ALICE.to_file_bytes(None))
    edited = dict(plain, box_pub=base64.b64encode(BOB.public().box_pub).decode())
    with pytest.raises(TamperedError, match="do not match"):
        Identity.from_file_bytes(_with_checksum(edited), None)


def test_hostile_scrypt_parameters_are_refused_before_running() -> None:
    doc = json.loads(_protected_file())
    for n, r, p in ((2**30, 8, 1), (2**20, 32, 1), (1000, 8, 1), (2**10, 0, 1), (2**10, 8, 10**6)):
        edited = dict(doc, scrypt=dict(doc["scrypt"], n=n, r=r, p=p))
        with pytest.raises(TamperedError, match="damaged"):
            Identity.from_file_bytes(_with_checksum(edited), PASS)


def test_newer_version_and_foreign_files() -> None:
    doc = json.loads(_protected_file())
    with pytest.raises(ConfigError, match="format version 2"):
        Identity.from_file_bytes(_with_checksum(dict(doc, version=2)), PASS)
    for junk in (b"", b"\xff\xfe", b"[]", b'{"type": "other"}', _with_checksum(dict(doc, extra=1))):
        with pytest.raises(TamperedError):
            Identity.from_file_bytes(junk, PASS)


def test_scrypt_params_validation() -> None:
    for bad in ((3, 8, 1), (2**9, 8, 1), (2**23, 1, 1), (2**10, 33, 1), (2**10, 8, 17), (2**22, 8, 1)):
        with pytest.raises(ValueError):
            ScryptParams(*bad)
    assert ScryptParams().n == 2**15 and ScryptParams().log2_n == 15


@pytest.mark.parametrize(
    "passphrase", [PASS.upper(), PASS + " ", " " + PASS, PASS[:-1], PASS.encode("utf-16"), "x", unicodedata.normalize("NFKD", "ﬀ")]
)
def test_no_near_miss_passphrase_opens(passphrase: str | bytes) -> None:
    with pytest.raises(WrongPasswordError):
        Identity.from_file_bytes(PROTECTED, passphrase)
