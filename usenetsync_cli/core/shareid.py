"""Share IDs: the short, copy-pasteable, typo-checked names of shares.

Owns: the ``ShareId`` value, its text form, parsing with clear errors, and the
two keys derived from its secret.

Text form (format 2; ``us1…`` IDs, made by an older usenetsync, are refused
with a "made by an older version" error: their shares are republished under
new IDs by `share update`)::

    "us2" + kind letter + base32-lower-nopad( signer(16) || secret || checksum(4) )
    kind letter: 'p' public (32-byte secret), 'w' password, 'r' private (16-byte secret)
    signer   = SHA-256(b"usenetsync/v2/signer" || sign_pub)[:16]   # pins the publisher: 128 bits,
                                                                     # over the signing key alone
    checksum = SHA-256(b"usenetsync/v2/shareid" || kind || signer || secret)[:4]
    -> us2p + 84 characters (88 in all); us2w / us2r + 58 characters (62 in all)

Derivations (HKDF-SHA256, no salt, 32 bytes)::

    locator_key      = HKDF(secret, info=b"usenetsync/v2/share/locator")  # names and seals the roots
    public_share_key = HKDF(secret, info=b"usenetsync/v2/share/key")      # public shares only

Invariants:
- A public share ID *is* the share key: ``repr``/``str`` of a ``ShareId``
  never show the secret, and no error message quotes the ID.
- Parsing accepts exactly the IDs ``to_text`` produces, modulo surrounding
  whitespace and letter case; any single-character change is rejected (the
  checksum catches value changes, the canonical-base32 check catches changes
  to the unused bits of the last character, the length catches a changed kind
  between public and the others, and the kind is inside the checksum).
- No I/O except the EDGE ``new_share_id`` that reads the OS CSPRNG.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from usenetsync_cli.errors import ShareIdError

__all__ = [
    "OLD_PREFIXES",
    "SIGNER_SIZE",
    "KIND_LETTERS",
    "SECRET_SIZES",
    "SHARE_ID_PREFIX",
    "ShareId",
    "ShareIdError",
    "ShareKind",
    "locator_key",
    "new_share_id",
    "public_share_key",
    "signer_of",
]

ShareKind = Literal["public", "password", "private"]

SHARE_ID_PREFIX = "us2"
OLD_PREFIXES = ("us1",)
SIGNER_SIZE = 16
_CHECKSUM_SIZE = 4
KIND_LETTERS: dict[str, str] = {"public": "p", "password": "w", "private": "r"}
_KIND_BY_LETTER = {v: k for k, v in KIND_LETTERS.items()}
# Public IDs carry the key material itself, so 256 bits; the others only
# locate the share (the key is wrapped), so 128 bits are enough.
SECRET_SIZES: dict[str, int] = {"public": 32, "password": 16, "private": 16}

_CHECK_LABEL = b"usenetsync/v2/shareid"
_SIGNER_LABEL = b"usenetsync/v2/signer"
_INFO_LOCATOR = b"usenetsync/v2/share/locator"
_INFO_KEY = b"usenetsync/v2/share/key"
_B32_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def _body_len(kind: str) -> int:
    return -(-(SIGNER_SIZE + SECRET_SIZES[kind] + _CHECKSUM_SIZE) * 8 // 5)


def signer_of(sign_pub: bytes) -> bytes:
    """The 16 bytes a share ID pins its publisher by (their Ed25519 public key)."""
    return hashlib.sha256(_SIGNER_LABEL + bytes(sign_pub)).digest()[:SIGNER_SIZE]


def _checksum(kind: str, signer: bytes, secret: bytes) -> bytes:
    return hashlib.sha256(_CHECK_LABEL + kind.encode("ascii") + signer + secret).digest()[:_CHECKSUM_SIZE]


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


@dataclass(frozen=True, slots=True)
class ShareId:
    """A parsed share ID. ``repr`` shows the kind and signer only."""

    kind: ShareKind
    signer: bytes
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.kind not in SECRET_SIZES:
            raise ValueError(f"unknown share kind {self.kind!r}")
        if not isinstance(self.signer, bytes) or len(self.signer) != SIGNER_SIZE:
            raise ValueError(f"signer must be {SIGNER_SIZE} bytes")
        size = SECRET_SIZES[self.kind]
        if not isinstance(self.secret, bytes) or len(self.secret) != size:
            raise ValueError(f"a {self.kind} share secret must be {size} bytes")

    def to_text(self) -> str:
        """The ``us2…`` form. For a public share this is the key: treat it as a secret."""
        return (
            SHARE_ID_PREFIX
            + KIND_LETTERS[self.kind]
            + _b32(self.signer + self.secret + _checksum(self.kind, self.signer, self.secret))
        )

    @classmethod
    def parse(cls, text: str) -> ShareId:
        """Parse a share ID; tolerant of surrounding whitespace and case, ShareIdError otherwise."""
        s = text.strip().lower()
        if s.startswith(OLD_PREFIXES):
            raise ShareIdError(
                "this share ID was made by an older version of usenetsync (us1…), which this version no longer reads",
                hint="ask the publisher for the share's new ID: `usenetsync share update` republishes it in the new"
                " format and `usenetsync share show NAME --show-id` shows it",
            )
        if not s.startswith(SHARE_ID_PREFIX):
            hint = None
            if len(s) > 3 and s.startswith("us") and s[2].isdigit():
                hint = "this looks like a share ID from a newer usenetsync; upgrade and retry"
            raise ShareIdError(f"not a usenetsync share ID (expected {SHARE_ID_PREFIX}…)", hint=hint)
        if len(s) == len(SHARE_ID_PREFIX):
            raise ShareIdError(f"share ID is cut off after {SHARE_ID_PREFIX}")
        letter = s[len(SHARE_ID_PREFIX)]
        kind = _KIND_BY_LETTER.get(letter)
        if kind is None:
            # The letter is not secret; quoting it helps spot the typo.
            raise ShareIdError(f"unknown share ID kind {letter!r} (expected us2p, us2w or us2r)")
        body = s[len(SHARE_ID_PREFIX) + 1:]
        expected = _body_len(kind)
        if len(body) != expected:
            what = "missing" if len(body) < expected else "extra"
            raise ShareIdError(
                f"share ID has the wrong length: {len(body)} characters after {SHARE_ID_PREFIX}{letter}, expected {expected} "
                f"(a character is {what}?)"
            )
        for i, ch in enumerate(body):
            if ch not in _B32_ALPHABET:
                # Only the position: the character is a typo, but nothing of the
                # ID goes into a message as a rule.
                raise ShareIdError(
                    f"share ID has a character that is not allowed at position {len(SHARE_ID_PREFIX) + 2 + i} "
                    "(only a-z and 2-7 are used)"
                )
        try:
            raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
        except (binascii.Error, ValueError):  # pragma: no cover - alphabet and length were checked
            raise ShareIdError("share ID checksum mismatch: a character is wrong (typo?)") from None
        fp = raw[:SIGNER_SIZE]
        secret = raw[SIGNER_SIZE:-_CHECKSUM_SIZE]
        # Re-encoding must reproduce the text: b32decode ignores the unused low
        # bits of the last character, so a typo there would otherwise pass.
        if _b32(raw) != body or _checksum(kind, fp, secret) != raw[-_CHECKSUM_SIZE:]:
            raise ShareIdError("share ID checksum mismatch: a character is wrong (typo?)")
        return cls(kind=kind, signer=fp, secret=secret)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"ShareId(kind={self.kind!r}, signer={self.signer.hex()})"

    __str__ = __repr__


def new_share_id(kind: ShareKind, signer: bytes) -> ShareId:
    """EDGE (reads the OS CSPRNG): a fresh share ID for the publisher ``signer``."""
    if kind not in SECRET_SIZES:
        raise ValueError(f"unknown share kind {kind!r}")
    return ShareId(kind=kind, signer=signer, secret=os.urandom(SECRET_SIZES[kind]))


def _hkdf(secret: bytes, info: bytes) -> bytes:
    # No salt: the secret is uniformly random (128 or 256 bits), so HKDF's
    # extract step only needs to be a PRF.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def locator_key(share_id: ShareId) -> bytes:
    """32 bytes that find the share's root article (every kind)."""
    return _hkdf(share_id.secret, _INFO_LOCATOR)


def public_share_key(share_id: ShareId) -> bytes:
    """The share key of a public share (derived from the ID; nothing is wrapped)."""
    if share_id.kind != "public":
        raise ValueError(f"a {share_id.kind} share ID does not carry its key")
    return _hkdf(share_id.secret, _INFO_KEY)
