"""Wrapping a 32-byte share key for password and private (recipient) shares.

Owns: the wrapped-key blob formats, the password rule for new share
passwords, and the error classification of unwrapping.

Password blob, version 2 (86 bytes; what is written now)::

    version(1)=2 | t(u32 BE) | m_kib(u32 BE) | p(1) | salt(16) | nonce(12) | AES-256-GCM(kek, share_key)(48)
    kek = Argon2id(NFC-UTF-8(password), salt, t, m_kib, p) -> 32 bytes   (core.kdf)
    AAD = b"usenetsync/v2/share/password-wrap" || the 26 header bytes (version .. salt)

Password blob, version 1 (82 bytes; read only, written by earlier versions)::

    version(1)=1 | log2_n(1) | r(u16 BE) | p(u16 BE) | salt(16) | nonce(12) | AES-256-GCM(kek, share_key)(48)
    kek = scrypt(NFC-UTF-8(password), salt, n, r, p) -> 32 bytes
    AAD = b"usenetsync/v1/share/password-wrap" || the 22 header bytes (version .. salt)

Recipients blob (1 + 92 * count bytes)::

    version(1)=1 | entry * count, entry = eph_pub(32) | nonce(12) | AES-256-GCM(kek, share_key)(48)
    kek = HKDF-SHA256(ikm = X25519(eph, recipient.box_pub) || eph_pub || recipient.box_pub,
                      info = b"usenetsync/v1/share/recipient-kek")
    AAD = b"usenetsync/v1/share/recipient" || version

Invariants:
- A new share password has at least ``MIN_PASSWORD_CHARS`` characters (NFC);
  wrapping a shorter one raises ``PasswordTooShortError``. Unwrapping applies
  no rule: a short password is just a wrong one.
- The KDF parameters of a password blob are in its header, covered by the
  AAD here and by the signature over the share root that carries the blob.
  They are bounded (``core.kdf``) before the KDF runs, so a hostile blob
  cannot make a reader spend more than a few seconds or 512 MiB.
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

from usenetsync_cli.core.identity import Identity, PublicIdentity, x25519_exchange
from usenetsync_cli.core.kdf import (
    DEFAULT_ARGON2,
    for_new_data,
    MIN_PASSWORD_CHARS,
    Argon2Params,
    ScryptParams,
    check_new_password,
    derive_argon2id,
    derive_scrypt,
)
from usenetsync_cli.errors import ConfigError, CryptoError, TamperedError, WrongPasswordError

__all__ = [
    "ENTRY_SIZE",
    "LEGACY_PASSWORD_BLOB_SIZE",
    "MIN_PASSWORD_CHARS",
    "MIN_RECIPIENT_SLOTS",
    "PASSWORD_BLOB_SIZE",
    "PASSWORD_KDF",
    "PASSWORD_WRAP_VERSION",
    "SHARE_KEY_SIZE",
    "WRAP_VERSION",
    "NotARecipientError",
    "check_new_password",
    "padded_count",
    "password_blob_params",
    "recipients_blob_size",
    "unwrap_for_recipient",
    "unwrap_with_password",
    "wrap_for_recipients",
    "wrap_with_password",
]

WRAP_VERSION = 1  # of the recipients blob
PASSWORD_WRAP_VERSION = 2
_LEGACY_PASSWORD_WRAP_VERSION = 1
SHARE_KEY_SIZE = 32
_NONCE_SIZE = 12
_TAG_SIZE = 16
_SALT_SIZE = 16
_CT_SIZE = SHARE_KEY_SIZE + _TAG_SIZE  # 48

# Module-level and read at call time, so tests can make wrapping cheap; the
# parameters travel in each blob, so readers need no setting.
PASSWORD_KDF: Argon2Params = DEFAULT_ARGON2

_PW_HEADER = struct.Struct(">BIIB")  # version, t, m_kib, p
_PW_AAD_LABEL = b"usenetsync/v2/share/password-wrap"
PASSWORD_BLOB_SIZE = _PW_HEADER.size + _SALT_SIZE + _NONCE_SIZE + _CT_SIZE  # 86

_PW1_HEADER = struct.Struct(">BBHH")  # version, log2_n, r, p
_PW1_AAD_LABEL = b"usenetsync/v1/share/password-wrap"
LEGACY_PASSWORD_BLOB_SIZE = _PW1_HEADER.size + _SALT_SIZE + _NONCE_SIZE + _CT_SIZE  # 82

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
    params: Argon2Params | None = None,
) -> bytes:
    """Wrap ``share_key`` under a key derived from ``password`` (Argon2id); 86 bytes.

    ``params`` defaults to ``PASSWORD_KDF``; ``salt`` to 16 fresh random bytes
    (EDGE); the nonce is always fresh. ConfigError for an empty password,
    PasswordTooShortError for one under MIN_PASSWORD_CHARS characters.
    """
    share_key = _check_share_key(share_key)
    params = for_new_data(PASSWORD_KDF) if params is None else params
    if not isinstance(params, Argon2Params):
        raise TypeError("password blobs are written with Argon2id parameters")
    salt = os.urandom(_SALT_SIZE) if salt is None else bytes(salt)
    if len(salt) != _SALT_SIZE:
        raise ValueError(f"salt must be {_SALT_SIZE} bytes")
    if not password:
        raise ConfigError("the share password is empty")
    check_new_password(password, "share password")
    header = _PW_HEADER.pack(PASSWORD_WRAP_VERSION, params.t, params.m_kib, params.p) + salt
    nonce = os.urandom(_NONCE_SIZE)  # EDGE
    kek = derive_argon2id(password, salt, params)
    return header + nonce + AESGCM(kek).encrypt(nonce, share_key, _PW_AAD_LABEL + header)


def password_blob_params(blob: bytes) -> Argon2Params | ScryptParams:
    """The KDF parameters a password blob records, checked against the bounds; TamperedError otherwise."""
    blob = bytes(blob)
    if not blob:
        raise TamperedError("password-wrapped key is empty")
    version = blob[0]
    if version == PASSWORD_WRAP_VERSION:
        if len(blob) != PASSWORD_BLOB_SIZE:
            raise TamperedError(f"password-wrapped key is {len(blob)} bytes, expected {PASSWORD_BLOB_SIZE}")
        _, t, m_kib, p = _PW_HEADER.unpack_from(blob)
        try:
            return Argon2Params(t, m_kib, p)
        except ValueError as e:
            # Checked before Argon2id runs: a hostile header must not cost us minutes or gigabytes.
            raise TamperedError(f"password-wrapped key has unacceptable Argon2id parameters: {e}") from None
    if version == _LEGACY_PASSWORD_WRAP_VERSION:
        if len(blob) != LEGACY_PASSWORD_BLOB_SIZE:
            raise TamperedError(f"password-wrapped key is {len(blob)} bytes, expected {LEGACY_PASSWORD_BLOB_SIZE}")
        _, log2_n, r, p = _PW1_HEADER.unpack_from(blob)
        try:
            if log2_n >= 64:
                raise ValueError("scrypt n is absurd")
            return ScryptParams(1 << log2_n, r, p)
        except ValueError:
            raise TamperedError("password-wrapped key has impossible scrypt parameters") from None
    raise TamperedError(f"password-wrapped key has unknown format version {version}")


def unwrap_with_password(blob: bytes, password: str | bytes) -> bytes:
    """The share key; WrongPasswordError if ``password`` does not open ``blob`` (version 2, or 1 from before)."""
    blob = bytes(blob)
    params = password_blob_params(blob)
    if isinstance(params, Argon2Params):
        header_end, label = _PW_HEADER.size + _SALT_SIZE, _PW_AAD_LABEL
    else:
        header_end, label = _PW1_HEADER.size + _SALT_SIZE, _PW1_AAD_LABEL
    header, salt = blob[:header_end], blob[header_end - _SALT_SIZE:header_end]
    nonce, ct = blob[header_end:header_end + _NONCE_SIZE], blob[header_end + _NONCE_SIZE:]
    if not password:
        raise WrongPasswordError("wrong password for this share")
    if isinstance(params, Argon2Params):
        kek = derive_argon2id(password, salt, params)
    else:
        kek = derive_scrypt(password, salt, params)
    try:
        return AESGCM(kek).decrypt(nonce, ct, label + header)
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
