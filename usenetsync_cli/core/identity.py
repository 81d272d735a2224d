"""A user's identity: an Ed25519 signing key and an X25519 key-agreement key.

Owns: generating identities, their public half (``PublicIdentity``), its
fingerprint and its copy-pasteable text form (``uspk1…``), the private
identity file format (JSON, versioned, optionally passphrase-protected),
signing and verifying, and the X25519 exchange every other module uses.

Public key text form::

    "uspk1" + base32-lower-nopad( sign_pub(32) || box_pub(32) || checksum(4) )
    checksum    = SHA-256(b"usenetsync/v1/pubkey"   || sign_pub || box_pub)[:4]
    fingerprint = SHA-256(b"usenetsync/v1/identity" || sign_pub || box_pub)[:8]

Identity file (JSON, UTF-8, written ``indent=2``)::

    {"type": "usenetsync-identity", "version": 1,
     "sign_pub": b64, "box_pub": b64,
     "protection": "scrypt-aes256gcm" | "none",
     "scrypt": {"n": int, "r": int, "p": int, "salt": b64},   # protected only
     "nonce": b64,                                            # protected only
     "private": b64,    # AES-256-GCM(scrypt(passphrase), sign_priv || box_priv),
                        #   AAD = the header (every field above but nonce);
                        #   or, unprotected, sign_priv || box_priv in clear
     "checksum": b64}   # SHA-256 over the canonical form of every other field

Invariants:
- No private key byte and no passphrase ever appears in a ``repr``, ``str``
  or exception message.
- Loading never returns an identity whose private keys do not match the
  public keys written in the file.
- The unkeyed ``checksum`` only classifies accidental damage (so a corrupt
  file says "damaged", not "wrong passphrase"); security rests on AES-GCM
  with the header as AAD, plus the private/public consistency check.
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
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from usenetsync_cli.errors import ConfigError, TamperedError, WrongPasswordError

__all__ = [
    "DEFAULT_SCRYPT",
    "FINGERPRINT_SIZE",
    "IDENTITY_FILE_VERSION",
    "KEY_SIZE",
    "PUBKEY_PREFIX",
    "SIGNATURE_SIZE",
    "Identity",
    "IdentityFileInfo",
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
IDENTITY_FILE_VERSION = 1

_FP_LABEL = b"usenetsync/v1/identity"
_PUBKEY_CHECK_LABEL = b"usenetsync/v1/pubkey"
_FILE_AAD_LABEL = b"usenetsync/v1/identity-file"
_FILE_CHECK_LABEL = b"usenetsync/v1/identity-file/checksum"
_FILE_TYPE = "usenetsync-identity"
_PROT_SCRYPT = "scrypt-aes256gcm"
_PROT_NONE = "none"
_SALT_SIZE = 16
_NONCE_SIZE = 12
_CHECKSUM_SIZE = 4
# 68 payload bytes -> ceil(544 / 5) = 109 base32 characters.
_PUBKEY_TEXT_LEN = -(-(2 * KEY_SIZE + _CHECKSUM_SIZE) * 8 // 5)

_B32_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


# --- scrypt -----------------------------------------------------------------

# Bounds keep a damaged or hostile header from asking for gigabytes of memory
# (scrypt needs 128 * n * r bytes) or minutes of CPU before we can say no.
_MIN_LOG2_N = 10
_MAX_LOG2_N = 22
_MAX_R = 32
_MAX_P = 16
_MAX_SCRYPT_MEM = 1 << 30


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost parameters; ``n`` a power of two in [2**10, 2**22]."""

    n: int = 2**15
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str:
        """Why these parameters are unacceptable, or "" when they are fine."""
        n, r, p = self.n, self.r, self.p
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p)):
            return "scrypt parameters must be integers"
        if n < 2 or n & (n - 1):
            return "scrypt n must be a power of two"
        if not _MIN_LOG2_N <= n.bit_length() - 1 <= _MAX_LOG2_N:
            return f"scrypt n must be between 2**{_MIN_LOG2_N} and 2**{_MAX_LOG2_N}"
        if not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P:
            return f"scrypt r must be in 1..{_MAX_R} and p in 1..{_MAX_P}"
        if 128 * n * r > _MAX_SCRYPT_MEM:
            return "scrypt parameters need more than 1 GiB of memory"
        return ""

    @property
    def log2_n(self) -> int:
        return self.n.bit_length() - 1


DEFAULT_SCRYPT = ScryptParams()


def normalize_passphrase(passphrase: str | bytes) -> bytes:
    """UTF-8 of the NFC form, so the same passphrase typed on two systems matches."""
    if isinstance(passphrase, bytes):
        return passphrase
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def derive_scrypt(passphrase: str | bytes, salt: bytes, params: ScryptParams) -> bytes:
    """32 bytes from scrypt; an empty passphrase is a programming error here."""
    secret = normalize_passphrase(passphrase)
    if not secret:
        raise ValueError("empty passphrase")
    return Scrypt(salt=salt, length=32, n=params.n, r=params.r, p=params.p).derive(secret)


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
        hint="restore it from your export (`usenetsync keys import FILE`)",
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


# --- private identity ------------------------------------------------------------


class Identity:
    """A private identity. ``repr`` shows only the fingerprint."""

    __slots__ = ("_box", "_public", "_sign")

    def __init__(self, sign_key: Ed25519PrivateKey, box_key: X25519PrivateKey) -> None:
        self._sign = sign_key
        self._box = box_key
        raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
        self._public = PublicIdentity(
            sign_pub=sign_key.public_key().public_bytes(*raw), box_pub=box_key.public_key().public_bytes(*raw)
        )

    @classmethod
    def generate(cls) -> Identity:
        """EDGE (reads the OS CSPRNG): a fresh identity."""
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, sign_priv: bytes, box_priv: bytes) -> Identity:
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

    def _private_bytes(self) -> bytes:
        raw = serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        return self._sign.private_bytes(*raw) + self._box.private_bytes(*raw)

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
        params: ScryptParams = DEFAULT_SCRYPT,
        salt: bytes | None = None,
        nonce: bytes | None = None,
    ) -> bytes:
        """Serialize; ``passphrase=None`` writes the keys in clear (the file must then be 0600).

        ``salt``/``nonce`` default to fresh random bytes (EDGE); they are
        parameters only so tests can be deterministic.
        """
        pub = self._public
        header: dict[str, Any] = {
            "type": _FILE_TYPE,
            "version": IDENTITY_FILE_VERSION,
            "sign_pub": _b64(pub.sign_pub),
            "box_pub": _b64(pub.box_pub),
        }
        if passphrase is None:
            header["protection"] = _PROT_NONE
            doc = {**header, "private": _b64(self._private_bytes())}
        else:
            if not normalize_passphrase(passphrase):
                raise ConfigError("the passphrase is empty", hint="use --no-passphrase for an unprotected key")
            salt = os.urandom(_SALT_SIZE) if salt is None else salt
            nonce = os.urandom(_NONCE_SIZE) if nonce is None else nonce
            if len(salt) != _SALT_SIZE or len(nonce) != _NONCE_SIZE:
                raise ValueError("salt must be 16 bytes and nonce 12 bytes")
            header["protection"] = _PROT_SCRYPT
            header["scrypt"] = {"n": params.n, "r": params.r, "p": params.p, "salt": _b64(salt)}
            key = derive_scrypt(passphrase, salt, params)
            ct = AESGCM(key).encrypt(nonce, self._private_bytes(), _canonical(_FILE_AAD_LABEL, header))
            doc = {**header, "nonce": _b64(nonce), "private": _b64(ct)}
        doc["checksum"] = _b64(_file_checksum(doc))
        return (json.dumps(doc, indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_file_bytes(cls, data: bytes, passphrase: str | bytes | None) -> Identity:
        """Load a file written by ``to_file_bytes``.

        Raises ConfigError for a newer format version or a missing
        passphrase, TamperedError for damage, WrongPasswordError when the
        passphrase does not open it.
        """
        doc, info = _parse(data)
        if info.protected:
            if passphrase is None or not normalize_passphrase(passphrase):
                raise ConfigError("this identity is protected by a passphrase and none was given")
            scrypt = doc["scrypt"]
            params = ScryptParams(scrypt["n"], scrypt["r"], scrypt["p"])  # validated by _parse
            salt = _unb64(scrypt["salt"], "scrypt salt", _SALT_SIZE)
            nonce = _unb64(doc["nonce"], "nonce", _NONCE_SIZE)
            ct = _unb64(doc["private"], "private", 2 * KEY_SIZE + 16)
            header = {k: doc[k] for k in ("type", "version", "sign_pub", "box_pub", "protection", "scrypt")}
            key = derive_scrypt(passphrase, salt, params)
            try:
                priv = AESGCM(key).decrypt(nonce, ct, _canonical(_FILE_AAD_LABEL, header))
            except InvalidTag:
                # The checksum held, so the file is as written: the passphrase is wrong.
                raise WrongPasswordError("wrong passphrase for the identity file") from None
        else:
            priv = _unb64(doc["private"], "private", 2 * KEY_SIZE)
        ident = cls.from_private_bytes(priv[:KEY_SIZE], priv[KEY_SIZE:])
        if ident.public() != info.public:
            raise _damaged("the private keys do not match the public keys")
        return ident


@dataclass(frozen=True, slots=True)
class IdentityFileInfo:
    """What an identity file says without opening it."""

    public: PublicIdentity
    protected: bool
    params: ScryptParams | None = field(default=None)


def identity_file_info(data: bytes) -> IdentityFileInfo:
    """Validate an identity file's structure and checksum; no passphrase needed.

    The public keys returned are as written in the file; they are checked
    against the private keys whenever the identity is loaded.
    """
    return _parse(data)[1]


def _canonical(label: bytes, obj: dict[str, Any]) -> bytes:
    return label + json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _file_checksum(doc: dict[str, Any]) -> bytes:
    return hashlib.sha256(_canonical(_FILE_CHECK_LABEL, {k: v for k, v in doc.items() if k != "checksum"})).digest()


def _parse(data: bytes) -> tuple[dict[str, Any], IdentityFileInfo]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _damaged("not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("type") != _FILE_TYPE:
        raise _damaged("not a usenetsync identity file")
    version = doc.get("version")
    if version != IDENTITY_FILE_VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > IDENTITY_FILE_VERSION:
            raise ConfigError(
                f"identity file has format version {version}; this usenetsync reads version {IDENTITY_FILE_VERSION}",
                hint="upgrade usenetsync",
            )
        raise _damaged("unknown format version")
    protection = doc.get("protection")
    if protection == _PROT_SCRYPT:
        expected = {"type", "version", "sign_pub", "box_pub", "protection", "scrypt", "nonce", "private", "checksum"}
    elif protection == _PROT_NONE:
        expected = {"type", "version", "sign_pub", "box_pub", "protection", "private", "checksum"}
    else:
        raise _damaged("unknown protection")
    if set(doc) != expected:
        raise _damaged("unexpected or missing fields")
    # Checksum before anything expensive: a damaged scrypt header must not make us run scrypt.
    if _unb64(doc["checksum"], "checksum", 32) != _file_checksum(doc):
        raise _damaged("checksum mismatch")
    public = PublicIdentity(_unb64(doc["sign_pub"], "sign_pub", KEY_SIZE), _unb64(doc["box_pub"], "box_pub", KEY_SIZE))
    params = None
    if protection == _PROT_SCRYPT:
        scrypt = doc["scrypt"]
        if not isinstance(scrypt, dict) or set(scrypt) != {"n", "r", "p", "salt"}:
            raise _damaged("bad scrypt header")
        try:
            params = ScryptParams(scrypt["n"], scrypt["r"], scrypt["p"])
        except ValueError as e:
            raise _damaged(str(e)) from None
    return doc, IdentityFileInfo(public=public, protected=params is not None, params=params)
