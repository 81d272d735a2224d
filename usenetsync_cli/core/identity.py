"""A user's identity: an Ed25519 signing key, an X25519 key-agreement key and a backup key.

Owns: making identities from a recovery phrase (or generating one), their
public half (``PublicIdentity``), its fingerprint and its copy-pasteable text
form (``uspk1…``), the private identity file format (JSON, versioned,
optionally passphrase-protected), signing and verifying, and the X25519
exchange every other module uses.

Derivation from the phrase (a format: a phrase must give the same identity
forever; ``core.phrase`` turns the 24 words into the 32 bytes of entropy)::

    sign_seed  = HKDF-SHA256(ikm = entropy, salt = none (32 zero bytes, RFC 5869),
                             info = b"usenetsync/v2/identity/sign",   length = 32)
    box_priv   = HKDF-SHA256(same, info = b"usenetsync/v2/identity/box",    length = 32)
    backup_key = HKDF-SHA256(same, info = b"usenetsync/v2/identity/backup", length = 32)

``sign_seed`` is the RFC 8032 Ed25519 private key, ``box_priv`` the RFC 7748
X25519 private scalar (clamped when used), ``backup_key`` a symmetric key for
the owner's backups (nothing else of it is stored). Identities made before
recovery phrases (random keys) have no phrase and no backup key.

Public key text form::

    "uspk1" + base32-lower-nopad( sign_pub(32) || box_pub(32) || checksum(4) )
    checksum    = SHA-256(b"usenetsync/v1/pubkey"   || sign_pub || box_pub)[:4]
    fingerprint = SHA-256(b"usenetsync/v1/identity" || sign_pub || box_pub)[:8]

Identity file, version 2 (JSON, UTF-8, written ``indent=2``; what is written now)::

    {"type": "usenetsync-identity", "version": 2,
     "sign_pub": b64, "box_pub": b64,
     "kind": "phrase" | "keys",      # secret = the phrase's entropy (32 bytes)
                                     #   | sign_priv || box_priv (64; an old identity re-wrapped)
     "protection": "argon2id-aes256gcm" | "none",
     "argon2id": {"t": int, "m_kib": int, "p": int, "salt": b64},   # protected only
     "nonce": b64,                                                  # protected only
     "private": b64,    # AES-256-GCM(Argon2id(passphrase), secret),
                        #   AAD = b"usenetsync/v2/identity-file" || canonical JSON of
                        #   the header (every field above but nonce and private);
                        #   or, unprotected, the secret in clear
     "checksum": b64}   # SHA-256(b"usenetsync/v2/identity-file/checksum" || canonical
                        #   JSON of every other field)

Identity file, version 1 (read only; written by earlier versions)::

    {"type": "usenetsync-identity", "version": 1, "sign_pub", "box_pub",
     "protection": "scrypt-aes256gcm" | "none",
     "scrypt": {"n", "r", "p", "salt"}, "nonce",          # protected only
     "private": sign_priv || box_priv (AES-256-GCM(scrypt(passphrase)), AAD =
                b"usenetsync/v1/identity-file" || canonical header) or in clear,
     "checksum": SHA-256(b"usenetsync/v1/identity-file/checksum" || canonical rest)}

"Canonical JSON" is ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=True)``. Protected version 1 files are re-wrapped as version 2
(kind "keys") by ``store.keystore`` the first time their passphrase opens them.

Invariants:
- No private key byte, phrase, entropy or passphrase ever appears in a
  ``repr``, ``str`` or exception message.
- Loading never returns an identity whose private keys do not match the
  public keys written in the file (for kind "phrase": the keys derived from
  the stored entropy).
- The unkeyed ``checksum`` only classifies accidental damage (so a corrupt
  file says "damaged", not "wrong passphrase"), and it is checked before any
  KDF runs; security rests on AES-GCM with the header as AAD, plus the
  private/public consistency check. KDF parameters read from a file are
  bounded before use (``core.kdf``).
- Every base32/base64 decode is canonical (re-encoding must give the same
  text), so a changed character can never decode to the same bytes.
- No I/O except the marked EDGEs that read the OS CSPRNG.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from usenetsync_cli.core.kdf import (
    DEFAULT_ARGON2,
    DEFAULT_SCRYPT,
    KDF_SALT_SIZE,
    Argon2Params,
    ScryptParams,
    derive_argon2id,
    derive_scrypt,
    normalize_passphrase,
)
from usenetsync_cli.core.phrase import ENTROPY_SIZE, entropy_to_phrase, phrase_to_entropy
from usenetsync_cli.errors import ConfigError, TamperedError, WrongPasswordError

__all__ = [
    "DEFAULT_ARGON2",
    "DEFAULT_SCRYPT",
    "FINGERPRINT_SIZE",
    "IDENTITY_FILE_VERSION",
    "KEY_SIZE",
    "PUBKEY_PREFIX",
    "SIGNATURE_SIZE",
    "Argon2Params",
    "Identity",
    "IdentityFileInfo",
    "NoRecoveryPhraseError",
    "PublicIdentity",
    "ScryptParams",
    "derive_scrypt",
    "identity_file_info",
    "normalize_passphrase",
    "verify",
    "x25519_exchange",
]

KEY_SIZE = 32
FINGERPRINT_SIZE = 8
SIGNATURE_SIZE = 64
PUBKEY_PREFIX = "uspk1"
IDENTITY_FILE_VERSION = 2

_FP_LABEL = b"usenetsync/v1/identity"
_PUBKEY_CHECK_LABEL = b"usenetsync/v1/pubkey"
_INFO_SIGN = b"usenetsync/v2/identity/sign"
_INFO_BOX = b"usenetsync/v2/identity/box"
_INFO_BACKUP = b"usenetsync/v2/identity/backup"
_FILE_TYPE = "usenetsync-identity"
_V1_AAD_LABEL = b"usenetsync/v1/identity-file"
_V1_CHECK_LABEL = b"usenetsync/v1/identity-file/checksum"
_V2_AAD_LABEL = b"usenetsync/v2/identity-file"
_V2_CHECK_LABEL = b"usenetsync/v2/identity-file/checksum"
_PROT_SCRYPT = "scrypt-aes256gcm"
_PROT_ARGON2 = "argon2id-aes256gcm"
_PROT_NONE = "none"
_KIND_PHRASE = "phrase"
_KIND_KEYS = "keys"
_SECRET_SIZE = {_KIND_PHRASE: ENTROPY_SIZE, _KIND_KEYS: 2 * KEY_SIZE}
_SALT_SIZE = KDF_SALT_SIZE
_NONCE_SIZE = 12
_TAG_SIZE = 16
_CHECKSUM_SIZE = 4
# 68 payload bytes -> ceil(544 / 5) = 109 base32 characters.
_PUBKEY_TEXT_LEN = -(-(2 * KEY_SIZE + _CHECKSUM_SIZE) * 8 // 5)

_B32_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


# --- base32 / base64 helpers ---------------------------------------------------


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _unb32(text: str) -> bytes | None:
    """Strict decode of lowercase unpadded base32; None if not canonical."""
    if not set(text) <= _B32_ALPHABET:
        return None
    try:
        data = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return None
    # The last character may carry unused low bits; b32decode ignores them, so
    # without this check a typo there would decode to the same key.
    return data if _b32(data) == text else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise _damaged(f"{what} is not a string")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _damaged(f"{what} is not valid base64") from None
    if _b64(data) != value:  # unused trailing bits changed: still damage
        raise _damaged(f"{what} is not canonical base64")
    if size is not None and len(data) != size:
        raise _damaged(f"{what} has {len(data)} bytes, expected {size}")
    return data


def _damaged(detail: str) -> TamperedError:
    return TamperedError(
        f"identity file is damaged or was altered: {detail}",
        hint="restore it from your export (`usenetsync keys import FILE`) or your phrase (`usenetsync keys restore`)",
    )


# --- public identity -----------------------------------------------------------


def _pubkey_check(sign_pub: bytes, box_pub: bytes) -> bytes:
    return hashlib.sha256(_PUBKEY_CHECK_LABEL + sign_pub + box_pub).digest()[:_CHECKSUM_SIZE]


def _bad_pubkey(detail: str) -> ConfigError:
    return ConfigError(
        f"not a valid public key: {detail}",
        hint="copy the whole key again, exactly as `usenetsync keys show` printed it",
    )


@dataclass(frozen=True, slots=True)
class PublicIdentity:
    """The public half of an identity: what others need to verify and address you."""

    sign_pub: bytes
    box_pub: bytes

    def __post_init__(self) -> None:
        for name in ("sign_pub", "box_pub"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != KEY_SIZE:
                raise ValueError(f"{name} must be {KEY_SIZE} bytes")

    def fingerprint(self) -> bytes:
        """8 bytes naming this identity (in share IDs, listings)."""
        return hashlib.sha256(_FP_LABEL + self.sign_pub + self.box_pub).digest()[:FINGERPRINT_SIZE]

    def to_text(self) -> str:
        """``uspk1…`` (114 characters), safe to paste anywhere."""
        return PUBKEY_PREFIX + _b32(self.sign_pub + self.box_pub + _pubkey_check(self.sign_pub, self.box_pub))

    @classmethod
    def from_text(cls, text: str) -> PublicIdentity:
        """Parse ``uspk1…``; tolerant of surrounding whitespace and case; ConfigError otherwise."""
        s = text.strip().lower()
        if not s.startswith(PUBKEY_PREFIX):
            raise _bad_pubkey(f"expected text starting with {PUBKEY_PREFIX}")
        body = s[len(PUBKEY_PREFIX):]
        if len(body) != _PUBKEY_TEXT_LEN:
            raise _bad_pubkey(
                f"{len(body)} characters after {PUBKEY_PREFIX}, expected {_PUBKEY_TEXT_LEN} (cut off or pasted twice?)"
            )
        for i, ch in enumerate(body):
            if ch not in _B32_ALPHABET:
                # Showing the character is safe: it is not part of any valid key.
                raise _bad_pubkey(f"character {ch!r} at position {len(PUBKEY_PREFIX) + i + 1} is not allowed")
        raw = _unb32(body)
        if raw is None:
            raise _bad_pubkey("checksum mismatch (typo?)")
        sign_pub, box_pub, check = raw[:KEY_SIZE], raw[KEY_SIZE:2 * KEY_SIZE], raw[2 * KEY_SIZE:]
        if _pubkey_check(sign_pub, box_pub) != check:
            raise _bad_pubkey("checksum mismatch (typo?)")
        return cls(sign_pub=sign_pub, box_pub=box_pub)

    def verify(self, sig: bytes, data: bytes) -> None:
        """Raise TamperedError unless ``sig`` is this identity's signature of ``data``."""
        verify(self.sign_pub, sig, data)

    def __repr__(self) -> str:
        return f"PublicIdentity(fingerprint={self.fingerprint().hex()})"


def verify(sign_pub: bytes, sig: bytes, data: bytes) -> None:
    """Check an Ed25519 signature; TamperedError if it does not hold."""
    try:
        Ed25519PublicKey.from_public_bytes(bytes(sign_pub)).verify(bytes(sig), data)
    except (InvalidSignature, ValueError):
        raise TamperedError("signature check failed: the data was altered or signed by another key") from None


def x25519_exchange(private_key: X25519PrivateKey, peer_pub: bytes) -> bytes:
    """The 32-byte X25519 shared secret; TamperedError for a degenerate peer key.

    OpenSSL refuses low-order peer points (all-zero result) with ValueError;
    such a key can only come from damaged or hostile input.
    """
    try:
        return private_key.exchange(X25519PublicKey.from_public_bytes(bytes(peer_pub)))
    except ValueError:
        raise TamperedError("key exchange failed: the peer public key is invalid") from None


# --- derivation ------------------------------------------------------------------


def _hkdf(entropy: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(entropy)


class NoRecoveryPhraseError(ConfigError):
    """The identity predates recovery phrases: it has neither a phrase nor a backup key."""

    hint = (
        "make a new identity with a phrase: `usenetsync keys init --force`"
        " (save this one first with `usenetsync keys export FILE`)"
    )

    def __init__(
        self, message: str = "this identity was made before recovery phrases existed and has none",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint)


# --- private identity ------------------------------------------------------------


class Identity:
    """A private identity. ``repr`` shows only the fingerprint."""

    __slots__ = ("_box", "_entropy", "_public", "_sign")

    def __init__(self, sign_key: Ed25519PrivateKey, box_key: X25519PrivateKey, *, entropy: bytes | None = None) -> None:
        """Prefer the constructors below; ``entropy`` must be what ``sign_key``/``box_key`` derive from."""
        self._sign = sign_key
        self._box = box_key
        self._entropy = entropy
        raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
        self._public = PublicIdentity(
            sign_pub=sign_key.public_key().public_bytes(*raw), box_pub=box_key.public_key().public_bytes(*raw)
        )

    @classmethod
    def generate(cls) -> Identity:
        """EDGE (reads the OS CSPRNG): a fresh identity, from a fresh recovery phrase."""
        return cls.from_entropy(os.urandom(ENTROPY_SIZE))

    @classmethod
    def from_entropy(cls, entropy: bytes) -> Identity:
        """The identity the 32 bytes of a recovery phrase derive (see the module docstring)."""
        entropy = bytes(entropy)
        if len(entropy) != ENTROPY_SIZE:
            raise ValueError(f"entropy must be {ENTROPY_SIZE} bytes")
        return cls(
            Ed25519PrivateKey.from_private_bytes(_hkdf(entropy, _INFO_SIGN)),
            X25519PrivateKey.from_private_bytes(_hkdf(entropy, _INFO_BOX)),
            entropy=entropy,
        )

    @classmethod
    def from_phrase(cls, phrase: str) -> Identity:
        """The identity of a typed recovery phrase; RecoveryPhraseError naming a bad word or checksum."""
        return cls.from_entropy(phrase_to_entropy(phrase))

    @classmethod
    def from_private_bytes(cls, sign_priv: bytes, box_priv: bytes) -> Identity:
        """An identity from raw keys: it has no recovery phrase (identities made before them)."""
        if len(sign_priv) != KEY_SIZE or len(box_priv) != KEY_SIZE:
            raise ValueError(f"private keys must be {KEY_SIZE} bytes each")
        return cls(Ed25519PrivateKey.from_private_bytes(sign_priv), X25519PrivateKey.from_private_bytes(box_priv))

    def public(self) -> PublicIdentity:
        return self._public

    def fingerprint(self) -> bytes:
        return self._public.fingerprint()

    def sign(self, data: bytes) -> bytes:
        """64-byte Ed25519 signature of ``data``."""
        return self._sign.sign(data)

    def exchange(self, peer_box_pub: bytes) -> bytes:
        """X25519 shared secret between our box key and a peer's public key."""
        return x25519_exchange(self._box, peer_box_pub)

    def has_phrase(self) -> bool:
        """False for an identity made before recovery phrases (random keys)."""
        return self._entropy is not None

    def phrase(self) -> str:
        """The 24-word recovery phrase; NoRecoveryPhraseError for an old identity."""
        if self._entropy is None:
            raise NoRecoveryPhraseError()
        return entropy_to_phrase(self._entropy)

    def backup_key(self) -> bytes:
        """32-byte symmetric key for the owner's backups; NoRecoveryPhraseError for an old identity."""
        if self._entropy is None:
            raise NoRecoveryPhraseError()
        return _hkdf(self._entropy, _INFO_BACKUP)

    def _private_bytes(self) -> bytes:
        raw = serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        return self._sign.private_bytes(*raw) + self._box.private_bytes(*raw)

    def _secret(self) -> tuple[str, bytes]:
        if self._entropy is not None:
            return _KIND_PHRASE, self._entropy
        return _KIND_KEYS, self._private_bytes()

    def __repr__(self) -> str:
        return f"Identity(fingerprint={self.fingerprint().hex()})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        # Equal public keys imply equal private keys (both are derived from them).
        return isinstance(other, Identity) and other._public == self._public

    def __hash__(self) -> int:
        return hash(self._public)

    # -- file format --

    def to_file_bytes(
        self,
        passphrase: str | bytes | None,
        *,
        params: Argon2Params | None = None,
        salt: bytes | None = None,
        nonce: bytes | None = None,
    ) -> bytes:
        """Serialize (version 2); ``passphrase=None`` writes the secret in clear (the file must then be 0600).

        ``params`` defaults to ``DEFAULT_ARGON2``. ``salt``/``nonce`` default
        to fresh random bytes (EDGE); they are parameters only so tests can be
        deterministic. The passphrase length rule is the caller's (an old
        passphrase being re-wrapped is kept as it is).
        """
        params = DEFAULT_ARGON2 if params is None else params
        pub = self._public
        kind, secret = self._secret()
        header: dict[str, Any] = {
            "type": _FILE_TYPE,
            "version": IDENTITY_FILE_VERSION,
            "sign_pub": _b64(pub.sign_pub),
            "box_pub": _b64(pub.box_pub),
            "kind": kind,
        }
        if passphrase is None:
            header["protection"] = _PROT_NONE
            doc = {**header, "private": _b64(secret)}
        else:
            if not normalize_passphrase(passphrase):
                raise ConfigError("the passphrase is empty", hint="use --no-passphrase for an unprotected key")
            if not isinstance(params, Argon2Params):
                raise TypeError("identity files are written with Argon2id parameters")
            salt = os.urandom(_SALT_SIZE) if salt is None else salt
            nonce = os.urandom(_NONCE_SIZE) if nonce is None else nonce
            if len(salt) != _SALT_SIZE or len(nonce) != _NONCE_SIZE:
                raise ValueError("salt must be 16 bytes and nonce 12 bytes")
            header["protection"] = _PROT_ARGON2
            header["argon2id"] = {"t": params.t, "m_kib": params.m_kib, "p": params.p, "salt": _b64(salt)}
            key = derive_argon2id(passphrase, salt, params)
            ct = AESGCM(key).encrypt(nonce, secret, _canonical(_V2_AAD_LABEL, header))
            doc = {**header, "nonce": _b64(nonce), "private": _b64(ct)}
        doc["checksum"] = _b64(_file_checksum(doc, IDENTITY_FILE_VERSION))
        return (json.dumps(doc, indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_file_bytes(cls, data: bytes, passphrase: str | bytes | None) -> Identity:
        """Load a file of version 1 or 2.

        Raises ConfigError for a newer format version or a missing
        passphrase, TamperedError for damage, WrongPasswordError when the
        passphrase does not open it.
        """
        doc, info = _parse(data)
        kind = _KIND_PHRASE if info.has_phrase else _KIND_KEYS
        size = _SECRET_SIZE[kind]
        if info.protected:
            if passphrase is None or not normalize_passphrase(passphrase):
                raise ConfigError("this identity is protected by a passphrase and none was given")
            nonce = _unb64(doc["nonce"], "nonce", _NONCE_SIZE)
            ct = _unb64(doc["private"], "private", size + _TAG_SIZE)
            header = {k: v for k, v in doc.items() if k not in ("nonce", "private", "checksum")}
            if isinstance(info.params, ScryptParams):
                salt = _unb64(doc["scrypt"]["salt"], "scrypt salt", _SALT_SIZE)
                key, label = derive_scrypt(passphrase, salt, info.params), _V1_AAD_LABEL
            else:
                assert isinstance(info.params, Argon2Params)
                salt = _unb64(doc["argon2id"]["salt"], "argon2id salt", _SALT_SIZE)
                key, label = derive_argon2id(passphrase, salt, info.params), _V2_AAD_LABEL
            try:
                secret = AESGCM(key).decrypt(nonce, ct, _canonical(label, header))
            except InvalidTag:
                # The checksum held, so the file is as written: the passphrase is wrong.
                raise WrongPasswordError("wrong passphrase for the identity file") from None
        else:
            secret = _unb64(doc["private"], "private", size)
        if kind == _KIND_PHRASE:
            ident = cls.from_entropy(secret)
        else:
            ident = cls.from_private_bytes(secret[:KEY_SIZE], secret[KEY_SIZE:])
        if ident.public() != info.public:
            raise _damaged("the private keys do not match the public keys")
        return ident


@dataclass(frozen=True, slots=True)
class IdentityFileInfo:
    """What an identity file says without opening it."""

    public: PublicIdentity
    protected: bool
    params: Argon2Params | ScryptParams | None = field(default=None)
    version: int = IDENTITY_FILE_VERSION
    has_phrase: bool = False

    @property
    def outdated_kdf(self) -> bool:
        """Protected with the old scrypt KDF: re-wrap it (with Argon2id) once its passphrase opens it."""
        return self.protected and isinstance(self.params, ScryptParams)


def identity_file_info(data: bytes) -> IdentityFileInfo:
    """Validate an identity file's structure and checksum; no passphrase needed.

    The public keys returned are as written in the file; they are checked
    against the private keys whenever the identity is loaded.
    """
    return _parse(data)[1]


def _canonical(label: bytes, obj: dict[str, Any]) -> bytes:
    return label + json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _file_checksum(doc: dict[str, Any], version: int) -> bytes:
    label = _V1_CHECK_LABEL if version == 1 else _V2_CHECK_LABEL
    return hashlib.sha256(_canonical(label, {k: v for k, v in doc.items() if k != "checksum"})).digest()


_V1_FIELDS = {
    _PROT_SCRYPT: {"type", "version", "sign_pub", "box_pub", "protection", "scrypt", "nonce", "private", "checksum"},
    _PROT_NONE: {"type", "version", "sign_pub", "box_pub", "protection", "private", "checksum"},
}
_V2_FIELDS = {
    _PROT_ARGON2: {"type", "version", "sign_pub", "box_pub", "kind", "protection", "argon2id", "nonce", "private",
                   "checksum"},
    _PROT_NONE: {"type", "version", "sign_pub", "box_pub", "kind", "protection", "private", "checksum"},
}


def _parse(data: bytes) -> tuple[dict[str, Any], IdentityFileInfo]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _damaged("not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("type") != _FILE_TYPE:
        raise _damaged("not a usenetsync identity file")
    version = doc.get("version")
    if version not in (1, IDENTITY_FILE_VERSION) or isinstance(version, bool):
        if isinstance(version, int) and not isinstance(version, bool) and version > IDENTITY_FILE_VERSION:
            raise ConfigError(
                f"identity file has format version {version}; this usenetsync reads versions 1 to"
                f" {IDENTITY_FILE_VERSION}",
                hint="upgrade usenetsync",
            )
        raise _damaged("unknown format version")
    fields = _V1_FIELDS if version == 1 else _V2_FIELDS
    protection = doc.get("protection")
    if protection not in fields:
        raise _damaged("unknown protection")
    if set(doc) != fields[protection]:
        raise _damaged("unexpected or missing fields")
    # Checksum before anything expensive: a damaged KDF header must not make us run the KDF.
    if _unb64(doc["checksum"], "checksum", 32) != _file_checksum(doc, version):
        raise _damaged("checksum mismatch")
    public = PublicIdentity(_unb64(doc["sign_pub"], "sign_pub", KEY_SIZE), _unb64(doc["box_pub"], "box_pub", KEY_SIZE))
    has_phrase = False
    if version != 1:
        if doc["kind"] not in _SECRET_SIZE:
            raise _damaged("unknown kind of secret")
        has_phrase = doc["kind"] == _KIND_PHRASE
    params: Argon2Params | ScryptParams | None = None
    if protection == _PROT_SCRYPT:
        params = _kdf_params(doc["scrypt"], "scrypt", ("n", "r", "p"), ScryptParams)
    elif protection == _PROT_ARGON2:
        params = _kdf_params(doc["argon2id"], "argon2id", ("t", "m_kib", "p"), Argon2Params)
    return doc, IdentityFileInfo(
        public=public, protected=params is not None, params=params, version=version, has_phrase=has_phrase
    )


def _kdf_params(header: Any, name: str, keys: tuple[str, ...], cls: type[Any]) -> Any:
    if not isinstance(header, dict) or set(header) != {*keys, "salt"}:
        raise _damaged(f"bad {name} header")
    try:
        # Bounded here, before any caller runs the KDF (core.kdf).
        return cls(*(header[k] for k in keys))
    except ValueError as e:
        raise _damaged(str(e)) from None
