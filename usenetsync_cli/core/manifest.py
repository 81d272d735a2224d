"""The share index (manifest): its records and path safety.

Owns the record format, version 4 (the same number as the wire format of
core/share_root.py, which seals, names, signs and posts the record stream;
versions 1 to 3, made by older usenetsync releases, are refused with a "made
by an older version" error: `share update` republishes a share in this
format under a new ID).

A reader trusts nothing of the index before its root verifies and the
SHA-256 of the sealed parts equals the signed digest (core/share_root.py).

Manifest records (one JSON array per line; paths are the raw bytes decoded
as latin-1, so any byte sequence round-trips; hashes are BLAKE3-256 in hex,
core/hashing.py):

    ["H", {header: format, segment_size, folder_uid, files, bytes,
           epochs: {"<epoch>": {enc, msgid, domains}, ...}}]           -- only epochs a listed segment is in
    ["D", path, mode, mtime_ns]
    ["F", path, size, mtime_ns, mode, content_hash_hex,
          [[shard, seg_id, attempt, length, piece_hash_hex, msgid|null, epoch], ...]]
    ["K", shard, seg_id, attempt, length, pack_hash_hex, msgid|null, epoch]  -- a pack; its members follow
    ["P", path, size, mtime_ns, mode, offset_in_pack, piece_hash_hex] -- member of the last K
    ["E", path, mtime_ns, mode]                                       -- empty file
    ["H", path, first_path, size, content_hash_hex, mtime_ns, mode]   -- another name (hard link) of first_path
    ["X", path, [[name, value_b64], ...]]                             -- user.* extended attributes of path
    ["L", path, target, mtime_ns]                                     -- symlink
    ["R", shard, group_id, gnonce_hex, block_size,
          [[seg_id, pos, sealed_len, sealed_hash|null, msgid, plain_hash|null], ...],
          [[idx, attempt, msgid|null], ...], epoch]                   -- a PAR2 recovery group
    ["T", record_count]                                               -- trailer: truncation check

The epoch keys (core/epochs.py) are the keys of each epoch's segments, never
the epoch key they are derived from: a reader of this version can name and
open exactly the segments this version lists and the others of those epochs,
never anything sealed in a later epoch (a revocation starts one).

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
from typing import Any

from usenetsync_cli.errors import TamperedError

FORMAT = 4


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


MAX_XATTRS, MAX_XATTR_NAME, MAX_XATTR_VALUE = 64, 255, 64 * 1024


def xattr_pairs(blob: bytes) -> list[list[str]]:
    """The X record form of a state's xattr blob (pipeline/scan.py ``xattr_blob``)."""
    out, pos = [], 0
    while pos < len(blob):
        n = int.from_bytes(blob[pos : pos + 2], "big")
        name = blob[pos + 2 : pos + 2 + n].decode("utf-8", "surrogateescape")
        pos += 2 + n
        m = int.from_bytes(blob[pos : pos + 4], "big")
        out.append([name, b64(blob[pos + 4 : pos + 4 + m])])
        pos += 4 + m
    return out


def xattrs_of(rec: list[Any]) -> list[tuple[str, bytes]]:
    """The (name, value) pairs of an X record, bounded: only ``user.*`` names, few and small."""
    pairs = rec[2] if len(rec) > 2 and isinstance(rec[2], list) else None
    if pairs is None or len(pairs) > MAX_XATTRS:
        raise TamperedError("the share index holds a malformed or oversized list of extended attributes")
    out = []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise TamperedError("the share index holds a malformed extended attribute")
        name, value = pair[0], unb64(pair[1])
        if not name.startswith("user.") or len(name.encode("utf-8", "surrogateescape")) > MAX_XATTR_NAME \
                or len(value) > MAX_XATTR_VALUE or "\0" in name:
            raise TamperedError(f"the share index holds an extended attribute outside its bounds ({name[:40]!r})")
        out.append((name, value))
    return out


class LayoutCheck:
    """The publisher's proof that a stream of records resolves, before anything is posted.

    Checks what a reader relies on: the header first and the trailer's count;
    every path safe; every F record's segments add up to its size, its piece
    hashes are well formed and its content hash is the hash of them; every P
    member lies inside the K pack before it; every H record names a content
    hash. ``problem`` is the first thing that does not hold (a bug of the
    publisher: the version must not be posted).
    """

    def __init__(self) -> None:
        self.records = 0
        self.files = 0
        self.bytes = 0
        self.dirs = 0  # D records and L records: the download's summary counts them apart from files
        self.symlinks = 0
        self.problem: str | None = None
        self._pack_len: int | None = None
        self._ended = False

    def _fail(self, why: str) -> None:
        if self.problem is None:
            self.problem = f"record {self.records}: {why}"

    def add(self, rec: list[Any]) -> None:
        from usenetsync_cli.core.hashing import file_content_hash

        self.records += 1
        kind = rec[0]
        if self.records == 1:
            if kind != "H" or not isinstance(rec[1], dict) or rec[1].get("format") != FORMAT:
                self._fail("the index does not start with its header")
            return
        if self._ended:
            self._fail("records after the trailer")
            return
        if kind != "P":
            self._pack_len = None if kind != "K" else int(rec[4])
        try:
            if kind in ("D", "F", "P", "E", "L", "H", "X"):
                safe_relpath(path_bytes(rec[1]))
            if kind == "X":
                xattrs_of(rec)
            if kind == "F":
                size, segs = int(rec[2]), rec[6]
                pieces = [bytes.fromhex(s[4]) for s in segs]
                if not segs or sum(int(s[3]) for s in segs) != size:
                    self._fail(f"the segments of {rec[1]!r} do not add up to its size")
                elif any(len(p) != 32 for p in pieces) or file_content_hash(size, pieces) != bytes.fromhex(rec[5]):
                    self._fail(f"the content hash of {rec[1]!r} is not the hash of its pieces")
                self.files += 1
                self.bytes += size
            elif kind == "P":
                off, size = int(rec[5]), int(rec[2])
                if self._pack_len is None:
                    self._fail(f"{rec[1]!r} is a pack member without its pack")
                elif off < 0 or size <= 0 or off + size > self._pack_len or len(bytes.fromhex(rec[6])) != 32:
                    self._fail(f"{rec[1]!r} does not lie inside its pack")
                self.files += 1
                self.bytes += size
            elif kind == "H":
                safe_relpath(path_bytes(rec[2]))
                if len(bytes.fromhex(rec[4])) != 32:
                    self._fail(f"the hard link {rec[1]!r} has no content hash")
                self.files += 1
            elif kind == "E":
                self.files += 1
            elif kind == "D":
                self.dirs += 1
            elif kind == "L":
                self.symlinks += 1
            elif kind == "T":
                self._ended = True
                if int(rec[1]) != self.records:
                    self._fail("the trailer's count is not the number of records")
        except (TamperedError, ValueError, TypeError, IndexError, KeyError) as e:
            self._fail(f"a malformed {kind} record ({e})")

    def finish(self) -> None:
        if not self._ended:
            self._fail("no trailer")
