"""Read, hash, seal and frame one segment: the CPU stage of the upload.

Owns: turning a planned segment (``Work``) into the wire buffers of its
article, checking that the source did not change while it was read.

Invariants:
- A segment is never posted half-old/half-new: each source file is
  ``fstat``ed after ``pread`` and compared with the (size, mtime_ns, inode)
  it was planned from (a write before or during the read moves mtime). A large file that changed makes the
  whole segment ``changed``; a pack member that changed or vanished is left
  out (its bytes zeroed) and reported, the rest of the pack goes on.
- A segment posted before is re-posted only with the same plaintext (its
  stored hash); anything else counts as changed.
- Nothing here writes state; results travel back to the collector.
- The heavy calls (pread, xxh3, AES-GCM, yEnc) release the GIL, so several
  encoder threads use several cores.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import xxhash

from usenetsync_cli.core.article import article_parts, format_date
from usenetsync_cli.core.crypto import FolderKeys, new_nonce, place_aad, seal_segment
from usenetsync_cli.core.msgid import segment_message_id
from usenetsync_cli.core.names import WireNames


@dataclass(slots=True)
class Source:
    """One file's bytes inside a segment."""

    file_id: int
    path: bytes
    file_offset: int
    length: int
    pack_offset: int
    size: int
    mtime_ns: int
    inode: int


@dataclass(slots=True)
class Work:
    shard: int
    seg_id: int
    attempt: int
    length: int
    is_pack: bool
    sources: list[Source]
    retries: int = 0
    # The plaintext hash of an earlier post of this segment: a re-post (after a
    # missing article, or a repair) must carry exactly the same bytes.
    expect_hash: bytes | None = None
    nonce: bytes | None = None  # set for a re-post: seal exactly as the first time
    # Filled in by encode():
    msgid: str = ""
    buffers: list[bytes] = field(default_factory=list)
    wire_bytes: int = 0
    hash: bytes = b""
    member_hashes: list[tuple[int, bytes]] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)  # pack members left out (changed/vanished)
    changed: bool = False  # a large file changed: nothing to post


@dataclass(frozen=True)
class FolderContext:
    uid: bytes
    keys: FolderKeys
    domains: tuple[str, ...]
    groups: tuple[str, ...]


def _read_source(src: Source) -> bytes | None:
    """The planned bytes of ``src``, or None if the file is not what was planned."""
    try:
        fd = os.open(src.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        data = os.pread(fd, src.length, src.file_offset)
        # One fstat after the read is enough: any write before or during the read
        # moved mtime (or size) away from what was planned by the time we look.
        after = os.fstat(fd)
        if len(data) != src.length or (after.st_size, after.st_mtime_ns, after.st_ino) != (src.size, src.mtime_ns, src.inode):
            return None
        return data
    except OSError:
        return None
    finally:
        os.close(fd)


def encode(work: Work, ctx: FolderContext, names: WireNames) -> Work:
    """Fill ``work`` with its article; sets ``changed`` instead if the source moved."""
    if not work.is_pack:
        payload = _read_source(work.sources[0])
        if payload is None:
            work.changed = True
            return work
        work.hash = xxhash.xxh3_128_digest(payload)
    else:
        buf = bytearray(work.length)
        for src in work.sources:
            data = _read_source(src)
            if data is None:
                work.dropped.append(src.file_id)
                continue
            buf[src.pack_offset : src.pack_offset + src.length] = data
            work.member_hashes.append((src.file_id, xxhash.xxh3_128_digest(data)))
        if len(work.dropped) == len(work.sources):
            work.changed = True
            return work
        payload = bytes(buf)
        work.hash = xxhash.xxh3_128_digest(payload)
    if work.expect_hash is not None and work.hash != work.expect_hash:
        work.changed = True  # same stat, other bytes: never post different content under this segment
        return work
    if work.nonce is None or work.expect_hash is None:
        # A stored nonce is only ever reused with the plaintext whose hash was stored with it.
        work.nonce = new_nonce()
    aad = place_aad(ctx.uid, work.shard, work.seg_id)
    sealed = seal_segment(ctx.keys.aesgcm, aad, payload, work.nonce)
    work.msgid = segment_message_id(ctx.keys.msgid_key, ctx.domains, work.shard, work.seg_id, work.attempt)
    work.buffers = article_parts(
        message_id=work.msgid,
        subject=names.subject(),
        poster=names.poster(),
        newsgroups=ctx.groups,
        date=format_date(time.time()),
        payload=sealed,
        yenc_name=names.yenc_name(),
    )
    work.wire_bytes = sum(len(b) for b in work.buffers)
    return work
