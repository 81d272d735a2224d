"""Wrapping a 32-byte share key for password and private (recipient) shares.

Owns: the two wrapped-key blob formats and their error classification.

Password blob (82 bytes)::

    version(1)=1 | log2_n(1) | r(u16 BE) | p(u16 BE) | salt(16) | nonce(12) | AES-256-GCM(kek, share_key)(48)
    kek = scrypt(NFC-UTF-8(password), salt, n, r, p) -> 32 bytes
    AAD = b"usenetsync/v1/share/password-wrap" || the 22 header bytes (version .. salt)

Recipients blob (1 + 92 * count bytes)::

    version(1)=1 | entry * count, entry = eph_pub(32) | nonce(12) | AES-256-GCM(kek, share_key)(48)
    kek = HKDF-SHA256(ikm = X25519(eph, recipient.box_pub) || eph_pub || recipient.box_pub,
                      info = b"usenetsync/v1/share/recipient-kek")
    AAD = b"usenetsync/v1/share/recipient" || version

Invariants:
- A recipients blob reveals neither who nor how many: entries carry no
  recipient identifier (a reader tries each one), are shuffled, and the count
  is padded to the next power of two (at least 8) or ``pad_to`` with dummy
  entries. A dummy's ``eph_pub`` is a real freshly generated X25519 public
  key and the rest is random bytes, because raw random 32 bytes would be told
  apart from curve points (top bit, and only about half of all values are
  points), and AES-GCM output is indistinguishable from random.
- Malformed blobs (unknown version, bad length, impossible parameters) raise
  ``TamperedError`` before any expensive work. AES-GCM cannot tell a wrong
  key from a changed ciphertext, so a blob whose bytes were changed inside
  the ciphertext reports ``WrongPasswordError`` / ``NotARecipientError``;
  integrity of the blob itself is the job of the signature over the share
  index that carries it.
- No share key, KEK, password or private key appears in any message.
- No I/O except reading the OS CSPRNG (salt, nonces, ephemeral keys,
  dummies, shuffle), each marked EDGE.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from usenetsync_cli.core.identity import Identity, PublicIdentity, ScryptParams, derive_scrypt, x25519_exchange
from usenetsync_cli.errors import ConfigError, CryptoError, TamperedError, WrongPasswordError

__all__ = [
    "ENTRY_SIZE",
    "MIN_RECIPIENT_SLOTS",
    "PASSWORD_BLOB_SIZE",
    "SHARE_KEY_SIZE",
    "WRAP_VERSION",
    "NotARecipientError",
    "padded_count",
    "recipients_blob_size",
    "unwrap_for_recipient",
    "unwrap_with_password",
    "wrap_for_recipients",
    "wrap_with_password",
]

WRAP_VERSION = 1
SHARE_KEY_SIZE = 32
_NONCE_SIZE = 12
_TAG_SIZE = 16
_SALT_SIZE = 16
_CT_SIZE = SHARE_KEY_SIZE + _TAG_SIZE  # 48

_PW_HEADER = struct.Struct(">BBHH")  # version, log2_n, r, p
_PW_AAD_LABEL = b"usenetsync/v1/share/password-wrap"
PASSWORD_BLOB_SIZE = _PW_HEADER.size + _SALT_SIZE + _NONCE_SIZE + _CT_SIZE  # 82

_EPH_SIZE = 32
ENTRY_SIZE = _EPH_SIZE + _NONCE_SIZE + _CT_SIZE  # 92
MIN_RECIPIENT_SLOTS = 8
# Trial decryption costs one X25519 per entry (~50 us); this bounds the work
# a hostile blob can ask for to a few seconds.
_MAX_ENTRIES = 1 << 16
_RCPT_AAD = b"usenetsync/v1/share/recipient" + bytes((WRAP_VERSION,))
_INFO_RCPT_KEK = b"usenetsync/v1/share/recipient-kek"

_RAW_PUB = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class NotARecipientError(CryptoError):
    """None of the entries of a private share opens with our key."""

    hint = "ask the publisher to add your public key (see `usenetsync keys show`)"


def _check_share_key(share_key: bytes) -> bytes:
    share_key = bytes(share_key)
    if len(share_key) != SHARE_KEY_SIZE:
        raise ValueError(f"share key must be {SHARE_KEY_SIZE} bytes")
    return share_key


# --- password -------------------------------------------------------------------


def wrap_with_password(
    share_key: bytes,
    password: str | bytes,
    *,
    salt: bytes | None = None,
    n: int = 2**15,
    r: int = 8,
    p: int = 1,
) -> bytes:
    """Wrap ``share_key`` under a key derived from ``password`` (scrypt); 82 bytes.

    ``salt`` defaults to 16 fresh random bytes (EDGE); the nonce is always fresh.
    """
    share_key = _check_share_key(share_key)
    params = ScryptParams(n, r, p)  # ValueError for unusable parameters
    salt = os.urandom(_SALT_SIZE) if salt is None else bytes(salt)
    if len(salt) != _SALT_SIZE:
        raise ValueError(f"salt must be {_SALT_SIZE} bytes")
    if not password:
        raise ConfigError("the share password is empty")
    header = _PW_HEADER.pack(WRAP_VERSION, params.log2_n, r, p) + salt
    nonce = os.urandom(_NONCE_SIZE)  # EDGE
    kek = derive_scrypt(password, salt, params)
    return header + nonce + AESGCM(kek).encrypt(nonce, share_key, _PW_AAD_LABEL + header)


def unwrap_with_password(blob: bytes, password: str | bytes) -> bytes:
    """The share key; WrongPasswordError if ``password`` does not open ``blob``."""
    blob = bytes(blob)
    if len(blob) != PASSWORD_BLOB_SIZE:
        raise TamperedError(f"password-wrapped key is {len(blob)} bytes, expected {PASSWORD_BLOB_SIZE}")
    version, log2_n, r, p = _PW_HEADER.unpack_from(blob)
    if version != WRAP_VERSION:
        raise TamperedError(f"password-wrapped key has unknown format version {version}")
    if log2_n >= 64:
        raise TamperedError("password-wrapped key has impossible scrypt parameters")
    try:
        params = ScryptParams(1 << log2_n, r, p)
    except ValueError:
        # Checked before scrypt runs: a hostile header must not cost us gigabytes.
        raise TamperedError("password-wrapped key has impossible scrypt parameters") from None
    header_end = _PW_HEADER.size + _SALT_SIZE
    header, salt = blob[:header_end], blob[_PW_HEADER.size:header_end]
    nonce, ct = blob[header_end:header_end + _NONCE_SIZE], blob[header_end + _NONCE_SIZE:]
    if not password:
        raise WrongPasswordError("wrong password for this share")
    kek = derive_scrypt(password, salt, params)
    try:
        return AESGCM(kek).decrypt(nonce, ct, _PW_AAD_LABEL + header)
    except InvalidTag:
        raise WrongPasswordError("wrong password for this share") from None


# --- recipients -------------------------------------------------------------------


def padded_count(recipients: int, pad_to: int | None = None) -> int:
    """Entries in the blob: ``pad_to``, else the next power of two, at least 8."""
    if recipients < 1:
        raise ValueError("a private share needs at least one recipient")
    if pad_to is not None:
        if pad_to < recipients:
            raise ValueError(f"pad_to={pad_to} is smaller than the {recipients} recipients")
        if pad_to > _MAX_ENTRIES:
            raise ValueError(f"pad_to must be at most {_MAX_ENTRIES}")
        return pad_to
    count = max(MIN_RECIPIENT_SLOTS, 1 << (recipients - 1).bit_length())
    if count > _MAX_ENTRIES:
        raise ValueError(f"at most {_MAX_ENTRIES} recipients")
    return count


def recipients_blob_size(entries: int) -> int:
    return 1 + ENTRY_SIZE * entries


def _recipient_kek(shared: bytes, eph_pub: bytes, box_pub: bytes) -> bytes:
    # Both public keys go into the KDF input so the KEK is bound to this exact
    # exchange (the usual ECIES/HPKE practice), not to the shared point alone.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO_RCPT_KEK).derive(
        shared + eph_pub + box_pub
    )


def wrap_for_recipients(
    share_key: bytes, recipients: Sequence[PublicIdentity], *, pad_to: int | None = None
) -> bytes:
    """Wrap ``share_key`` once per recipient, padded and shuffled (EDGE: CSPRNG throughout).

    Duplicate recipients are wrapped once. Raises ValueError for no
    recipients or a ``pad_to`` below their count, ConfigError for a
    recipient whose box key is unusable.
    """
    share_key = _check_share_key(share_key)
    unique: dict[bytes, PublicIdentity] = {}
    for rcpt in recipients:
        unique.setdefault(rcpt.box_pub, rcpt)
    count = padded_count(len(unique), pad_to)
    entries: list[bytes] = []
    for rcpt in unique.values():
        eph = X25519PrivateKey.generate()
        eph_pub = eph.public_key().public_bytes(*_RAW_PUB)
        try:
            shared = x25519_exchange(eph, rcpt.box_pub)
        except TamperedError:
            raise ConfigError(
                f"recipient key {rcpt.fingerprint().hex()} is not usable (invalid X25519 public key)",
                hint="ask the recipient for their key again (`usenetsync keys show`)",
            ) from None
        nonce = os.urandom(_NONCE_SIZE)
        kek = _recipient_kek(shared, eph_pub, rcpt.box_pub)
        entries.append(eph_pub + nonce + AESGCM(kek).encrypt(nonce, share_key, _RCPT_AAD))
    while len(entries) < count:
        dummy_pub = X25519PrivateKey.generate().public_key().public_bytes(*_RAW_PUB)
        entries.append(dummy_pub + os.urandom(_NONCE_SIZE + _CT_SIZE))
    # Shuffled so the position of an entry says nothing (e.g. "first = owner").
    secrets.SystemRandom().shuffle(entries)
    return bytes((WRAP_VERSION,)) + b"".join(entries)


def unwrap_for_recipient(blob: bytes, identity: Identity) -> bytes:
    """Try every entry with our key; NotARecipientError if none opens."""
    blob = bytes(blob)
    if len(blob) < 1 + ENTRY_SIZE or (len(blob) - 1) % ENTRY_SIZE:
        raise TamperedError(f"recipient-wrapped key has an impossible length ({len(blob)} bytes)")
    if blob[0] != WRAP_VERSION:
        raise TamperedError(f"recipient-wrapped key has unknown format version {blob[0]}")
    count = (len(blob) - 1) // ENTRY_SIZE
    if count > _MAX_ENTRIES:
        raise TamperedError(f"recipient-wrapped key has {count} entries, more than the {_MAX_ENTRIES} allowed")
    box_pub = identity.public().box_pub
    for i in range(count):
        off = 1 + i * ENTRY_SIZE
        eph_pub = blob[off:off + _EPH_SIZE]
        nonce = blob[off + _EPH_SIZE:off + _EPH_SIZE + _NONCE_SIZE]
        ct = blob[off + _EPH_SIZE + _NONCE_SIZE:off + ENTRY_SIZE]
        try:
            shared = identity.exchange(eph_pub)
        except TamperedError:
            continue  # a degenerate point cannot be ours; keep trying
        try:
            return AESGCM(_recipient_kek(shared, eph_pub, box_pub)).decrypt(nonce, ct, _RCPT_AAD)
        except InvalidTag:
            continue
    raise NotARecipientError("this share is not addressed to your key")
