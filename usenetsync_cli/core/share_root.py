"""Share roots and index articles, format 4: sealed, slotted and signed; nothing on the wire names the tool.

Owns the wire format of a published share version (the records inside the
index are core/manifest.py's) and the rules both the publisher and readers
use: Message-IDs, sealing, padding, signing, and the bounds a reader checks.

Keys (HKDF-SHA256, no salt, 32 bytes; ``locator_key`` from core/shareid.py)::

    root_key = HKDF(locator_key, info=b"usenetsync/v2/share/root-seal")

Message-IDs (core/msgid.py ``keyed_message_id``: id-left and domain both
from one HMAC, so every article has its own host)::

    root(version, slot) = keyed_message_id(locator_key, b"usenetsync/v2/root\\0" || u64 version || u8 slot)
    part(nonce, n)      = keyed_message_id(locator_key, b"usenetsync/v2/part\\0" || nonce(16) || u32 n)

A version has ``ROOT_SLOTS`` root slots. The publisher posts the root at the
first free slot; a slot taken by an article that does not open and verify as
its own (junk posted by anyone who holds the share ID) just moves it to the
next slot, and a slot holding its own verified root (a crashed publication)
moves it to the next version. The index parts hang off a random per-
publication nonce, not the version, so neither case posts the index again.

Root article payload (the yEnc-decoded body)::

    nonce(12) || AES-256-GCM(root_key, nonce, plain, AAD = b"usenetsync/v2/root\\0" || u64 version)
    plain = u32 len(body) || body || signature(64) || zero padding
    body  = canonical JSON {"format": 4, "kind", "version", "created", "sign_pub", "box_pub",
                            "key_wrap", "index": {"table": [[pack_nonce, sealed_len, sealed_sha256], ...],
                                                  "table_bytes", "chunks", "plain_bytes"}}
    signature = Ed25519(publisher, b"usenetsync/v2/root-sig\\0" || SHA-256(locator_key) || body)

The padding brings the plaintext to a multiple of ``ROOT_PAD_STEP`` plus a
random 0..``ROOT_PAD_STEP``-1 bytes, so a root's size says nothing about its
recipient count. The signature binds the root to this share (the locator
hash) and to its version; the reader also checks that SHA-256 of
``sign_pub`` gives the share ID's signer, so no other key can stand in.

Index articles (chunk packs and table pieces, core/index_chunks.py) are
posted under ``part(pack_nonce, 0)``; their payload is sealed bytes followed
by random padding of 0..``PART_PAD``-1 bytes, so they have the size spread of
segments. The root lists the table pieces; the table lists the chunks.

Invariants:
- Nothing of a root is trusted before GCM opens it, its signer matches the
  share ID, its signature verifies, and it names the version and kind asked
  for; every length is bounded before anything is allocated from it.
- Pure: no I/O; the only randomness is in the EDGE ``seal_root``/``padded``
  (nonces and padding).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from usenetsync_cli.core.identity import verify
from usenetsync_cli.core.index_chunks import MAX_CHUNKS, PACK_BYTES, is_int
from usenetsync_cli.core.msgid import keyed_message_id
from usenetsync_cli.core.shareid import signer_of
from usenetsync_cli.errors import TamperedError

__all__ = [
    "FORMAT",
    "MAX_TABLE_PIECES",
    "MAX_PLAIN_BYTES",
    "PART_CHUNK",
    "ROOT_MAX_BYTES",
    "ROOT_SLOTS",
    "IndexRef",
    "Root",
    "TablePiece",
    "open_root",
    "part_message_id",
    "root_key",
    "root_message_id",
    "padded",
    "seal_root",
]

FORMAT = 4
ROOT_SLOTS = 4
ROOT_PAD_STEP = 16_384
ROOT_MAX_BYTES = 4 << 20  # a root with ~30,000 recipient entries; a reader refuses anything bigger
PART_CHUNK = PACK_BYTES
PART_PAD = 8_192
MAX_TABLE_PIECES = 1024
MAX_PLAIN_BYTES = 1 << 40
_NONCE = 12
_TAG = 16
_INDEX_NONCE = 16
_SIG = 64
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_ROOT_ID = b"usenetsync/v2/root\x00"
_PART_ID = b"usenetsync/v2/part\x00"
_ROOT_AAD = b"usenetsync/v2/root\x00"
_SIG_LABEL = b"usenetsync/v2/root-sig\x00"
_INFO_ROOT = b"usenetsync/v2/share/root-seal"
_KINDS = ("public", "password", "private")


def root_key(locator_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO_ROOT).derive(locator_key)


def root_message_id(locator_key: bytes, version: int, slot: int) -> str:
    if not 0 <= slot < ROOT_SLOTS or not 0 < version < 1 << 63:
        raise ValueError("root version or slot out of range")
    return keyed_message_id(locator_key, _ROOT_ID + _U64.pack(version) + bytes([slot]))


def part_message_id(locator_key: bytes, index_nonce: bytes, part: int) -> str:
    return keyed_message_id(locator_key, _PART_ID + bytes(index_nonce) + _U32.pack(part))


@dataclass(frozen=True)
class TablePiece:
    """One article of a version's chunk table (core/index_chunks.py): its pack nonce, length and hash."""

    pack_nonce: bytes
    sealed_len: int
    sealed_sha256: bytes


@dataclass(frozen=True)
class IndexRef:
    """Where a version's chunk table is and what the index it names must add up to."""

    table: tuple[TablePiece, ...]
    table_bytes: int  # the decompressed table
    chunks: int
    plain_bytes: int  # the record stream: every chunk's plain length, summed

    def doc(self) -> dict[str, Any]:
        return {"table": [[p.pack_nonce.hex(), p.sealed_len, p.sealed_sha256.hex()] for p in self.table],
                "table_bytes": self.table_bytes, "chunks": self.chunks, "plain_bytes": self.plain_bytes}

    def digest(self) -> bytes:
        """Names this exact index (a reader keeps resume progress only for the same one)."""
        return hashlib.sha256(json.dumps(self.doc(), sort_keys=True).encode("ascii")).digest()

    @classmethod
    def from_doc(cls, doc: Any) -> IndexRef:
        pieces = doc["table"]
        if not isinstance(pieces, list) or not 1 <= len(pieces) <= MAX_TABLE_PIECES:
            raise ValueError("table pieces")
        table = tuple(TablePiece(bytes.fromhex(p[0]), _int(p[1]), bytes.fromhex(p[2])) for p in pieces)
        ref = cls(table=table, table_bytes=_int(doc["table_bytes"]), chunks=_int(doc["chunks"]),
                  plain_bytes=_int(doc["plain_bytes"]))
        if (any(len(p.pack_nonce) != _INDEX_NONCE or len(p.sealed_sha256) != 32
                or not _NONCE + _TAG < p.sealed_len <= PART_CHUNK + 64 for p in table)
                or not 0 <= ref.plain_bytes <= MAX_PLAIN_BYTES or not 0 <= ref.chunks <= MAX_CHUNKS):
            raise ValueError("index reference out of bounds")
        return ref


@dataclass(frozen=True)
class Root:
    """A verified root: what one version of a share is."""

    kind: str
    version: int
    created: int
    sign_pub: bytes
    box_pub: bytes
    key_wrap: bytes
    index: IndexRef

    def body(self) -> bytes:
        doc = {"format": FORMAT, "kind": self.kind, "version": self.version, "created": self.created,
               "sign_pub": self.sign_pub.hex(), "box_pub": self.box_pub.hex(), "key_wrap": self.key_wrap.hex(),
               "index": self.index.doc()}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


def _int(v: Any) -> int:
    if not is_int(v):
        raise ValueError("not an integer")
    return v


def _signed(locator_key: bytes, body: bytes) -> bytes:
    return _SIG_LABEL + hashlib.sha256(locator_key).digest() + body


def seal_root(locator_key: bytes, root: Root, sign: Callable[[bytes], bytes]) -> bytes:
    """EDGE (nonce and padding from the OS CSPRNG): the payload of ``root``'s article."""
    body = root.body()
    plain = _U32.pack(len(body)) + body + sign(_signed(locator_key, body))
    size = -(-len(plain) // ROOT_PAD_STEP) * ROOT_PAD_STEP + int.from_bytes(os.urandom(2), "big") % ROOT_PAD_STEP
    if size + _NONCE + _TAG > ROOT_MAX_BYTES:
        raise ValueError("share root too large (too many recipients)")
    nonce = os.urandom(_NONCE)
    aad = _ROOT_AAD + _U64.pack(root.version)
    return nonce + AESGCM(root_key(locator_key)).encrypt(nonce, plain.ljust(size, b"\0"), aad)


def open_root(locator_key: bytes, version: int, payload: bytes, signer: bytes, kind: str) -> Root:
    """The verified root of ``version`` in ``payload``; TamperedError for anything else (junk, forgery, damage)."""
    if not _NONCE + _TAG + 4 + _SIG <= len(payload) <= ROOT_MAX_BYTES:
        raise TamperedError("not a root of this share (size)")
    try:
        plain = AESGCM(root_key(locator_key)).decrypt(payload[:_NONCE], payload[_NONCE:],
                                                      _ROOT_AAD + _U64.pack(version))
    except InvalidTag:
        raise TamperedError("not a root of this share (it does not open with the share ID's key)") from None
    n = _U32.unpack_from(plain)[0]
    if 4 + n + _SIG > len(plain) or plain[4 + n + _SIG:].count(0) != len(plain) - 4 - n - _SIG:
        raise TamperedError("the share root is malformed")
    body, sig = plain[4:4 + n], plain[4 + n:4 + n + _SIG]
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("format")
        root = Root(kind=str(doc["kind"]), version=_int(doc["version"]), created=_int(doc["created"]),
                    sign_pub=bytes.fromhex(doc["sign_pub"]), box_pub=bytes.fromhex(doc["box_pub"]),
                    key_wrap=bytes.fromhex(doc["key_wrap"]), index=IndexRef.from_doc(doc["index"]))
        if len(root.sign_pub) != 32 or len(root.box_pub) != 32 or root.kind not in _KINDS:
            raise ValueError("keys")
    except (KeyError, TypeError, ValueError, AttributeError):
        raise TamperedError("the share root is malformed") from None
    if signer_of(root.sign_pub) != signer:
        raise TamperedError(
            "the share root is signed by a key that does not match the share ID",
            hint="someone else posted under this ID, or the ID is wrong; nothing was written",
        )
    verify(root.sign_pub, sig, _signed(locator_key, body))
    if root.version != version or root.kind != kind:
        raise TamperedError("the share root names another version or kind than the one asked for")
    return root


def padded(sealed: bytes) -> bytes:
    """EDGE (OS CSPRNG): an index article's payload: ``sealed`` and 0..PART_PAD-1 random bytes."""
    return sealed + os.urandom(int.from_bytes(os.urandom(2), "big") % PART_PAD)
