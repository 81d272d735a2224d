"""The share index (manifest): its records, its root article, and path safety.

Owns the format, version 2 (version 1, made by usenetsync before content
hashes, is refused with a "made by an older version" error: there are no v1
shares to keep). A published share version is:

- index parts: the manifest stream — JSON lines, zstd-compressed, cut into
  ``PART_BYTES`` chunks, each sealed with AES-256-GCM under the share key
  (AAD = ``index_aad(locator, version, part)``) and posted as an ordinary
  obfuscated yEnc article whose Message-ID is derived from the share's
  locator key, the version and the part number;
- a root article: ``ROOT_MAGIC`` ‖ canonical JSON header ‖ 64-byte Ed25519
  signature over ``ROOT_MAGIC ‖ header``. The header names the share kind,
  version, number of parts, the SHA-256 of all sealed parts in order, the
  publisher's public keys, and how to obtain the share key (nothing for
  public shares; the password-wrapped key; or the padded recipient entries).

A reader trusts nothing before the signature verifies with a public key whose
fingerprint equals the one in the share ID, and nothing of the index before
the SHA-256 of the sealed parts equals the signed digest.

Manifest records (one JSON array per line; paths are the raw bytes decoded
as latin-1, so any byte sequence round-trips; hashes are BLAKE3-256 in hex,
core/hashing.py):

    ["H", {header: format, segment_size, folder_uid, enc_key, msgid_key, domains, files, bytes}]
    ["D", path, mode, mtime_ns]
    ["F", path, size, mtime_ns, mode, content_hash_hex,
          [[shard, seg_id, attempt, length, piece_hash_hex, msgid|null], ...]]
    ["K", shard, seg_id, attempt, length, pack_hash_hex, msgid|null]  -- a pack; its members follow
    ["P", path, size, mtime_ns, mode, offset_in_pack, piece_hash_hex] -- member of the last K
    ["E", path, mtime_ns, mode]                                       -- empty file
    ["L", path, target, mtime_ns]                                     -- symlink
    ["R", shard, group_id, gnonce_hex, block_size,
          [[seg_id, pos, sealed_len, sealed_hash|null, msgid, plain_hash|null], ...],
          [[idx, attempt, msgid|null], ...]]                          -- a PAR2 recovery group
    ["T", record_count]                                               -- trailer: truncation check

A file's content hash is ``file_content_hash(size, piece hashes)``: for an
F record over its listed segment hashes (the reader checks it against the
list before fetching, and each segment's plaintext against its entry); for
a P record over its one piece, so it is not repeated. A pack's own hash (K)
covers members a version may not list; readers check the members' pieces.
A reader writes a file under its name only after every piece matched.

Invariant: ``safe_relpath`` is applied to every path before it touches the
file system; an index (even validly signed) cannot name a path outside the
destination.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any

from usenetsync_cli.errors import TamperedError

FORMAT = 2
PART_BYTES = 700_000
ROOT_MAGIC = b"USNETSYNC-INDEX\x01"
_INDEX_AAD = b"usenetsync/v1/index"
_AAD_TAIL = struct.Struct(">QI")


class OldFormatError(TamperedError):
    """A share index of another format version (v1: made by an older usenetsync)."""

    def __init__(self, found: object) -> None:
        older = isinstance(found, int) and found < FORMAT
        super().__init__(
            f"this share was made by {'an older' if older else 'a newer'} version of usenetsync"
            f" (share index format {found!r}; this version reads format {FORMAT})",
            hint="ask the publisher to publish it again with this version" if older else "upgrade usenetsync",
        )


class UnsafePathError(TamperedError):
    """The index names a path that would escape the destination."""

    hint = "the share index is malicious or corrupt; nothing outside the destination was written"


def index_aad(locator: bytes, version: int, part: int) -> bytes:
    return _INDEX_AAD + locator + _AAD_TAIL.pack(version, part)


def path_str(p: bytes) -> str:
    return p.decode("latin-1")


def path_bytes(s: str) -> bytes:
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        raise TamperedError("the share index holds a path that is not bytes-encoded") from None


def safe_relpath(raw: bytes) -> bytes:
    """``raw`` if it is a harmless relative path; raises ``UnsafePathError`` otherwise."""
    shown = raw.decode("utf-8", "replace")[:200]
    if not raw or b"\0" in raw:
        raise UnsafePathError(f"the share index holds an empty path or a NUL byte: {shown!r}")
    if raw.startswith(b"/") or raw.startswith(b"\\"):
        raise UnsafePathError(f"the share index holds an absolute path: {shown!r}")
    for part in raw.split(b"/"):
        if part in (b"", b".", b".."):
            raise UnsafePathError(f"the share index holds a path that leaves the folder: {shown!r}")
    return raw


def dumps_record(rec: list[Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def loads_record(line: bytes) -> list[Any]:
    try:
        rec = json.loads(line)
    except ValueError:
        raise TamperedError("the share index is damaged (a record is not valid)") from None
    if not isinstance(rec, list) or not rec or not isinstance(rec[0], str):
        raise TamperedError("the share index is damaged (a record has the wrong shape)")
    return rec


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise TamperedError("the share index is damaged (bad base64)") from None


@dataclass(frozen=True)
class RootHeader:
    kind: str  # public | password | private
    version: int
    parts: int
    index_sha256: bytes
    index_bytes: int
    sign_pub: bytes
    box_pub: bytes
    created: int
    key_wrap: bytes  # b"" for public shares
    part_nonce: bytes  # 8 random bytes of this publication; part Message-IDs derive from it

    def encode(self) -> bytes:
        doc = {
            "format": FORMAT, "kind": self.kind, "version": self.version, "parts": self.parts,
            "index_sha256": self.index_sha256.hex(), "index_bytes": self.index_bytes,
            "sign_pub": b64(self.sign_pub), "box_pub": b64(self.box_pub), "created": self.created,
            "key_wrap": b64(self.key_wrap), "part_nonce": self.part_nonce.hex(),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> RootHeader:
        try:
            doc = json.loads(data)
            if doc["format"] != FORMAT:
                raise OldFormatError(doc["format"])
            return cls(
                kind=str(doc["kind"]), version=int(doc["version"]), parts=int(doc["parts"]),
                index_sha256=bytes.fromhex(doc["index_sha256"]), index_bytes=int(doc["index_bytes"]),
                sign_pub=unb64(doc["sign_pub"]), box_pub=unb64(doc["box_pub"]), created=int(doc["created"]),
                key_wrap=unb64(doc["key_wrap"]), part_nonce=bytes.fromhex(doc["part_nonce"]),
            )
        except (KeyError, TypeError, ValueError):
            raise TamperedError("the share's root article is damaged") from None


def encode_root(header: RootHeader, sign: Any) -> bytes:
    """``sign`` is a callable bytes -> 64-byte Ed25519 signature (the publisher's key)."""
    body = header.encode()
    signed = ROOT_MAGIC + body
    sig = sign(signed)
    return signed + b"\n" + sig


def split_root(payload: bytes) -> tuple[bytes, bytes, bytes]:
    """(signed bytes, header JSON, signature) of a root payload; shape checks only."""
    if not payload.startswith(ROOT_MAGIC) or len(payload) < len(ROOT_MAGIC) + 66:
        raise TamperedError("this is not a usenetsync share index (bad root article)")
    signed, sig = payload[:-65], payload[-64:]
    if payload[-65:-64] != b"\n":
        raise TamperedError("the share's root article is damaged")
    return signed, signed[len(ROOT_MAGIC):], sig
