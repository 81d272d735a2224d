"""Reading a share index: find the newest version, verify it, stream its records.

Owns: the reader's side of core/manifest.py. Nothing is trusted before:
1. the root's Ed25519 signature verifies with the key it names, and that
   key's fingerprint equals the one the share ID carries;
2. the SHA-256 of every sealed index part, in order, equals the signed
   digest (parts are first spooled, still sealed, to a file: memory stays
   flat for a million-file index);
3. each part opens under the share key with its place-bound AAD.
Then the records are streamed from the spool through zstd, one line at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from usenetsync_cli.core.article import decode_yenc_article
from usenetsync_cli.core.crypto import open_segment
from usenetsync_cli.core.identity import PublicIdentity, verify
from usenetsync_cli.core.manifest import RootHeader, index_aad, loads_record, split_root
from usenetsync_cli.errors import NotFoundError, TamperedError
from usenetsync_cli.nntp import Connection
from usenetsync_cli.pipeline.publish import part_message_id, root_message_id

# A crashed publication can skip a version number; readers look this far past a gap.
VERSION_GAP = 3
# Versions are counted from 1; nothing honest comes near this. Bounds discovery at ~64 STAT windows.
MAX_VERSION = 1 << 31


class ShareNotFoundError(NotFoundError):
    hint = "check the share ID, and that this server carries the group it was posted to"


@dataclass
class OpenedIndex:
    header: RootHeader
    version: int
    spool: Path
    part_ids: list[str]


def newest_version(conn: Connection, locator_key: bytes) -> int:
    """The highest published version (0 if none), in a bounded number of pipelined STAT windows.

    ``window(v)`` — is any root of versions v..v+VERSION_GAP present? — is
    true for every v up to the newest version and false above it (a crashed
    publication skips at most VERSION_GAP versions), so a galloping search
    (1, 2, 4, …) and a binary search find it in at most ~2·log2(newest)
    windows. A server that claims every root exists is caught at
    ``MAX_VERSION`` instead of being probed forever.
    """

    def window(v: int) -> int:
        ids = {root_message_id(locator_key, x): x for x in range(v, v + VERSION_GAP + 1)}
        return max((ids[m] for m, ok in conn.stat_many(list(ids)) if ok), default=0)

    if not window(1):
        return 0
    lo, hi = 1, 2  # window(lo) is true; window(hi) is unknown, then false
    while window(hi):
        lo = hi
        if hi >= MAX_VERSION:
            raise TamperedError(
                f"the server claims more than {MAX_VERSION:,} versions of this share exist",
                hint="the server is misbehaving (it answers every STAT as present); try another server",
            )
        hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if window(mid):
            lo = mid
        else:
            hi = mid
    return window(lo)


def fetch_root(conn: Connection, locator_key: bytes, version: int, fingerprint: bytes) -> RootHeader:
    body = conn.body(root_message_id(locator_key, version))
    if body is None:
        raise ShareNotFoundError(f"version {version} of this share is not on the server")
    payload, _name, crc_ok = decode_yenc_article(body)
    if not crc_ok:
        raise TamperedError("the share's root article is damaged (CRC mismatch)")
    signed, header_bytes, sig = split_root(payload)
    header = RootHeader.decode(header_bytes)
    if PublicIdentity(sign_pub=header.sign_pub, box_pub=header.box_pub).fingerprint() != fingerprint:
        raise TamperedError(
            "the share index is signed by a key that does not match the share ID",
            hint="someone else published under this ID, or the ID is wrong; nothing was written",
        )
    verify(header.sign_pub, sig, signed)
    if header.version != version:
        raise TamperedError("the share's root article names another version")
    return header


def open_index(
    conn: Connection, locator_key: bytes, fingerprint: bytes, spool_dir: Path, *, version: int | None = None
) -> OpenedIndex:
    v = version or newest_version(conn, locator_key)
    if v == 0:
        raise ShareNotFoundError("no share with this ID was found on the server")
    header = fetch_root(conn, locator_key, v, fingerprint)
    ids = [part_message_id(locator_key, header.part_nonce, v, n) for n in range(header.parts)]
    spool_dir.mkdir(parents=True, exist_ok=True)
    spool = spool_dir / f"index-v{v}.bin"
    spool_parts(conn, ids, header.index_sha256, spool)
    return OpenedIndex(header=header, version=v, spool=spool, part_ids=ids)


def iter_records(spool: Path, share_key: bytes, locator_key: bytes, version: int, parts: int) -> Iterator[list[Any]]:
    """Records of a verified spool: decrypt part by part, decompress as a stream, split lines."""
    aes = AESGCM(share_key)
    dctx = zstandard.ZstdDecompressor().decompressobj()
    pending = b""
    with open(spool, "rb") as f:
        for part in range(parts):
            size = int.from_bytes(f.read(4), "big")
            sealed = f.read(size)
            if len(sealed) != size:
                raise TamperedError("the share index spool is truncated")
            chunk = open_segment(aes, index_aad(locator_key, version, part), sealed)
            try:
                data = dctx.decompress(chunk)
            except zstandard.ZstdError:
                raise TamperedError("the share index is damaged (bad compression)") from None
            pending += data
            lines = pending.split(b"\n")
            pending = lines.pop()
            for line in lines:
                if line:
                    yield loads_record(line)
    if pending.strip():
        yield loads_record(pending)


def spool_parts(
    conn: Connection, ids: list[str], expected_sha256: bytes, spool: Path, progress: Callable[[int], None] | None = None
) -> None:
    """Fetch every sealed part into ``spool`` (length-prefixed) and check the signed digest."""
    digest = hashlib.sha256()
    tmp = spool.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for n, (mid, body) in enumerate(conn.body_many(ids, window=4)):
            if body is None:
                raise ShareNotFoundError(f"share index article {n + 1} of {len(ids)} is missing from the server")
            sealed, _name, crc_ok = decode_yenc_article(body)
            if not crc_ok:
                raise TamperedError(f"share index article {n + 1} is damaged (CRC mismatch)")
            digest.update(sealed)
            f.write(len(sealed).to_bytes(4, "big"))
            f.write(sealed)
            if progress:
                progress(n + 1)
    if digest.digest() != expected_sha256:
        tmp.unlink()
        raise TamperedError("the share index does not match its signature (an article was altered)")
    os.replace(tmp, spool)
