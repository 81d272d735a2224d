"""Properties of identities, public key text and the identity file (usenetsync_cli.core.identity)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import unicodedata

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from hypothesis import given
from hypothesis import strategies as st

from tests.core.identity_vectors import (
    PHRASE,
    PHRASE_BACKUP_KEY,
    PHRASE_PUBKEY,
    V1_IDENTITY,
    V1_PASS,
    V1_PLAIN,
    V1_PROTECTED,
)
from usenetsync_cli.core import identity as mod
from usenetsync_cli.core.identity import (
    PUBKEY_PREFIX,
    Argon2Params,
    Identity,
    NoRecoveryPhraseError,
    PublicIdentity,
    ScryptParams,
    identity_file_info,
    verify,
)
from usenetsync_cli.errors import (
    ConfigError,
    CryptoError,
    RecoveryPhraseError,
    TamperedError,
    UsenetSyncError,
    WrongPasswordError,
)

FAST = Argon2Params(t=1, m_kib=8, p=1)
# Made before recovery phrases: random keys, no phrase (the identity of the version 1 files).
ALICE = V1_IDENTITY
BOB = Identity.from_private_bytes(bytes(range(64, 96)), bytes(range(96, 128)))
PASS = "correct horse battery staple"
CAROL = Identity.from_phrase(PHRASE)
# Every character someone might mistype into a key: base32, digits, case, punctuation, space.
SUBSTITUTES = "abcdefghijklmnopqrstuvwxyz0123456789-_=+/ ."


def _private_fragments(ident: Identity) -> list[str]:
    raw = ident._private_bytes()
    frags = [raw.hex(), raw[:32].hex(), raw[32:].hex(), base64.b64encode(raw).decode(), repr(raw)]
    if ident.has_phrase():
        entropy = ident._secret()[1]
        frags += [entropy.hex(), base64.b64encode(entropy).decode(), ident.phrase(), ident.phrase().split()[0] + " "]
    return frags


def _protected_file(passphrase: str = PASS, ident: Identity = CAROL) -> bytes:
    return ident.to_file_bytes(passphrase, params=FAST, salt=b"s" * 16, nonce=b"n" * 12)


PROTECTED = _protected_file()


def _with_checksum(doc: dict[str, object]) -> bytes:
    # Re-seal a deliberately edited file the way a careful attacker would.
    doc = {k: v for k, v in doc.items() if k != "checksum"}
    doc["checksum"] = base64.b64encode(mod._file_checksum(doc, int(doc["version"]))).decode()  # type: ignore[call-overload]
    return json.dumps(doc).encode()


def _v1_file(ident: Identity, passphrase: str, n: int = 2**10) -> bytes:
    """A version 1 file written from its spec, independently of the module (as the old code did)."""
    pub = ident.public()
    salt, nonce = os.urandom(16), os.urandom(12)
    header = {"type": "usenetsync-identity", "version": 1, "sign_pub": base64.b64encode(pub.sign_pub).decode(),
              "box_pub": base64.b64encode(pub.box_pub).decode(), "protection": "scrypt-aes256gcm",
              "scrypt": {"n": n, "r": 8, "p": 1, "salt": base64.b64encode(salt).decode()}}
    canon = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    key = Scrypt(salt=salt, length=32, n=n, r=8, p=1).derive(passphrase.encode())
    ct = AESGCM(key).encrypt(nonce, ident._private_bytes(), b"usenetsync/v1/identity-file" + canon)
    doc = {**header, "nonce": base64.b64encode(nonce).decode(), "private": base64.b64encode(ct).decode()}
    rest = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    doc["checksum"] = base64.b64encode(hashlib.sha256(b"usenetsync/v1/identity-file/checksum" + rest).digest()).decode()
    return json.dumps(doc, indent=2).encode()


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


def test_generate_is_random_and_has_a_phrase() -> None:
    a, b = Identity.generate(), Identity.generate()
    assert a != b and a.fingerprint() != b.fingerprint()
    assert a == Identity.from_private_bytes(a._private_bytes()[:32], a._private_bytes()[32:])
    assert a.has_phrase() and Identity.from_phrase(a.phrase()) == a
    assert a.backup_key() == Identity.from_phrase(a.phrase()).backup_key() != b.backup_key()


# --- identity from a recovery phrase -------------------------------------------------


def test_fixed_phrase_gives_the_fixed_identity() -> None:
    # A format: if this test has to change, every phrase written down now restores someone else.
    assert CAROL.public().to_text() == PHRASE_PUBKEY
    assert CAROL.backup_key().hex() == PHRASE_BACKUP_KEY
    assert CAROL.phrase() == PHRASE and CAROL.has_phrase()


def test_derivation_is_the_documented_hkdf() -> None:
    entropy = bytes(range(32))

    def hkdf(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"\0" * 32, info=info).derive(entropy)

    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    sign_pub = Ed25519PrivateKey.from_private_bytes(hkdf(b"usenetsync/v2/identity/sign")).public_key().public_bytes(*raw)
    box_pub = X25519PrivateKey.from_private_bytes(hkdf(b"usenetsync/v2/identity/box")).public_key().public_bytes(*raw)
    assert CAROL.public() == PublicIdentity(sign_pub, box_pub)
    assert CAROL.backup_key() == hkdf(b"usenetsync/v2/identity/backup")
    assert Identity.from_entropy(entropy) == CAROL
    # Three distinct keys: none is another under a different name.
    keys = {CAROL.backup_key(), CAROL._private_bytes()[:32], CAROL._private_bytes()[32:], entropy}
    assert len(keys) == 4


def test_phrase_is_tolerant_of_layout_and_strict_on_words() -> None:
    assert Identity.from_phrase(f"  {PHRASE.upper()}\n").public().to_text() == PHRASE_PUBKEY
    words = PHRASE.split()
    with pytest.raises(RecoveryPhraseError, match="^word 7 'xyzzy' is not in the wordlist$"):
        Identity.from_phrase(" ".join([*words[:6], "xyzzy", *words[7:]]))
    with pytest.raises(RecoveryPhraseError, match="^the checksum does not match"):
        Identity.from_phrase(" ".join([words[1], words[0], *words[2:]]))


def test_identities_without_a_phrase_say_so() -> None:
    assert not ALICE.has_phrase()
    for call in (ALICE.phrase, ALICE.backup_key):
        with pytest.raises(NoRecoveryPhraseError) as exc:
            call()
        assert str(exc.value) == "this identity was made before recovery phrases existed and has none"
        assert "keys init --force" in exc.value.hint and exc.value.exit_code == ConfigError.exit_code


def test_repr_hides_the_phrase() -> None:
    for s in (repr(CAROL), str(CAROL)):
        for frag in _private_fragments(CAROL):
            assert frag not in s


# --- identity file (version 2) ------------------------------------------------------------


def test_protected_file_round_trip_and_contents() -> None:
    data = _protected_file()
    doc = json.loads(data)
    assert doc["protection"] == "argon2id-aes256gcm" and doc["version"] == 2 and doc["kind"] == "phrase"
    assert doc["argon2id"] == {"t": 1, "m_kib": 8, "p": 1, "salt": base64.b64encode(b"s" * 16).decode()}
    for frag in _private_fragments(CAROL):
        assert frag not in data.decode()
    loaded = Identity.from_file_bytes(data, PASS)
    assert loaded == CAROL and loaded.phrase() == PHRASE and loaded.backup_key() == CAROL.backup_key()
    info = identity_file_info(data)
    assert info.protected and info.public == CAROL.public() and info.params == FAST
    assert info.version == 2 and info.has_phrase and not info.outdated_kdf


def test_default_parameters_are_recorded() -> None:
    # The one test that pays for the real cost (~0.5 s): new files get the strong default.
    data = CAROL.to_file_bytes(PASS)
    doc = json.loads(data)["argon2id"]
    assert (doc["t"], doc["m_kib"], doc["p"]) == (4, 131072, 1)
    assert identity_file_info(data).params == Argon2Params()


def test_old_identity_rewrapped_keeps_its_keys_and_has_no_phrase() -> None:
    data = ALICE.to_file_bytes(PASS, params=FAST)
    assert json.loads(data)["kind"] == "keys"
    loaded = Identity.from_file_bytes(data, PASS)
    assert loaded == ALICE and not loaded.has_phrase()
    assert not identity_file_info(data).has_phrase
    for frag in _private_fragments(ALICE):
        assert frag not in data.decode()


@pytest.mark.parametrize("ident", [CAROL, ALICE])
def test_unprotected_file_round_trip(ident: Identity) -> None:
    data = ident.to_file_bytes(None)
    assert json.loads(data)["protection"] == "none"
    loaded = Identity.from_file_bytes(data, None)
    assert loaded == ident and loaded.has_phrase() == ident.has_phrase()
    assert Identity.from_file_bytes(data, "ignored") == ident
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
        CAROL.to_file_bytes("", params=FAST)


def test_passphrase_is_unicode_normalized() -> None:
    composed = unicodedata.normalize("NFC", "pässwörd")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert Identity.from_file_bytes(CAROL.to_file_bytes(composed, params=FAST), decomposed) == CAROL


@pytest.mark.parametrize("which", ["v2-protected", "v2-plain", "v1-protected", "v1-plain"])
def test_tampering_any_byte_fails(which: str) -> None:
    data, passphrase = {
        "v2-protected": (_protected_file(), PASS),
        "v2-plain": (CAROL.to_file_bytes(None), None),
        "v1-protected": (V1_PROTECTED, V1_PASS),
        "v1-plain": (V1_PLAIN, None),
    }[which]
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
                Identity.from_file_bytes(bad, passphrase)
            # Only a changed version number is not "damaged": it means "newer format".
            assert isinstance(exc.value, TamperedError) or "format version" in str(exc.value), (i, repl)


def test_resealed_edits_never_load() -> None:
    # Someone who edits fields *and* fixes the checksum still gets nothing.
    doc = json.loads(_protected_file())
    for field_ in ("sign_pub", "box_pub"):
        edited = dict(doc, **{field_: base64.b64encode(BOB.public().sign_pub).decode()})
        with pytest.raises(CryptoError):
            Identity.from_file_bytes(_with_checksum(edited), PASS)
    # The KDF parameters and the kind are authenticated too (AAD), not only checksummed.
    for edited in (dict(doc, argon2id=dict(doc["argon2id"], t=2)), dict(doc, kind="keys")):
        with pytest.raises(CryptoError):
            Identity.from_file_bytes(_with_checksum(edited), PASS)
    for ident in (ALICE, CAROL):
        plain = json.loads(ident.to_file_bytes(None))
        edited = dict(plain, box_pub=base64.b64encode(BOB.public().box_pub).decode())
        with pytest.raises(TamperedError, match="do not match"):
            Identity.from_file_bytes(_with_checksum(edited), None)
    # A phrase file whose stored entropy was swapped for another phrase's.
    plain = json.loads(CAROL.to_file_bytes(None))
    edited = dict(plain, private=base64.b64encode(bytes(32)).decode())
    with pytest.raises(TamperedError, match="do not match"):
        Identity.from_file_bytes(_with_checksum(edited), None)


def test_hostile_kdf_parameters_are_refused_before_running(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args: object) -> bytes:
        raise AssertionError("the KDF ran on hostile parameters")

    doc = json.loads(PROTECTED)
    monkeypatch.setattr(mod, "derive_argon2id", must_not_run)
    monkeypatch.setattr(mod, "derive_scrypt", must_not_run)
    for t, m, p in ((1, 2**21, 1), (2**20, 8, 1), (8, 512 * 1024, 1), (0, 8, 1), (1, 8, 10**6), (1, "8", 1)):
        edited = dict(doc, argon2id=dict(doc["argon2id"], t=t, m_kib=m, p=p))
        start = time.perf_counter()
        with pytest.raises(TamperedError, match="damaged"):
            Identity.from_file_bytes(_with_checksum(edited), PASS)
        assert time.perf_counter() - start < 0.1
    old = json.loads(V1_PROTECTED)
    for n, r, p in ((2**30, 8, 1), (2**20, 32, 1), (1000, 8, 1), (2**10, 0, 1), (2**10, 8, 10**6), (2**18, 8, 16)):
        edited = dict(old, scrypt=dict(old["scrypt"], n=n, r=r, p=p))
        with pytest.raises(TamperedError, match="damaged"):
            Identity.from_file_bytes(_with_checksum(edited), V1_PASS)


def test_newer_version_and_foreign_files() -> None:
    doc = json.loads(_protected_file())
    with pytest.raises(ConfigError, match="format version 3"):
        Identity.from_file_bytes(_with_checksum(dict(doc, version=3)), PASS)
    for junk in (b"", b"\xff\xfe", b"[]", b'{"type": "other"}', _with_checksum(dict(doc, extra=1)),
                 _with_checksum(dict(doc, kind="other")), _with_checksum(dict(doc, version=1))):
        with pytest.raises(TamperedError):
            Identity.from_file_bytes(junk, PASS)


@pytest.mark.parametrize(
    "passphrase", [PASS.upper(), PASS + " ", " " + PASS, PASS[:-1], PASS.encode("utf-16"), "x", unicodedata.normalize("NFKD", "ﬀ")]
)
def test_no_near_miss_passphrase_opens(passphrase: str | bytes) -> None:
    with pytest.raises(WrongPasswordError):
        Identity.from_file_bytes(PROTECTED, passphrase)


# --- identity file (version 1, written by earlier versions) ------------------------------------


def test_version_1_files_still_load() -> None:
    # Bytes written by the version 1 code itself (scrypt n = 2^15).
    info = identity_file_info(V1_PROTECTED)
    assert info.version == 1 and info.protected and info.params == ScryptParams(2**15, 8, 1)
    assert info.outdated_kdf and not info.has_phrase and info.public == ALICE.public()
    loaded = Identity.from_file_bytes(V1_PROTECTED, V1_PASS)
    assert loaded == ALICE and loaded._private_bytes() == ALICE._private_bytes() and not loaded.has_phrase()
    with pytest.raises(WrongPasswordError):
        Identity.from_file_bytes(V1_PROTECTED, PASS)
    plain = identity_file_info(V1_PLAIN)
    assert plain.version == 1 and not plain.protected and not plain.outdated_kdf
    assert Identity.from_file_bytes(V1_PLAIN, None) == ALICE


def test_version_1_files_from_the_spec_load() -> None:
    ident = Identity.from_private_bytes(os.urandom(32), os.urandom(32))
    assert Identity.from_file_bytes(_v1_file(ident, "short"), "short") == ident
