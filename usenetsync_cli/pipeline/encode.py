"""Read, hash, seal and frame one segment: the CPU stage of the upload.

Owns: turning a planned segment (``Work``) into the wire buffers of its
article, checking that the source did not change while it was read.

Invariants:
- A segment is never posted half-old/half-new: each source file is
  ``fstat``ed before and after its ``pread`` and both must equal the
  (size, mtime_ns, ctime_ns, inode) it was planned from. ctime cannot be set
  back by a user, so a rewrite that restores the mtime (``touch -r``,
  ``os.utime``) is seen too. Since every segment of one generation is read
  under the same planned stat, a file's segments all come from one version
  of it. A large file that changed makes the whole segment ``changed``; a
  pack member that changed or vanished is left out (its bytes zeroed) and
  reported, the rest of the pack goes on.
- Every segment gets its BLAKE3 hash (core/hashing.py): a file segment the
  piece hash of its payload, a pack the pack hash of its included members,
  each member its piece hash.
- A segment posted before is re-posted only with the same plaintext (its
  stored hash); anything else counts as changed. Its stored AES-GCM nonce is
  reused only when the stored hash is a BLAKE3 one and equal (then the
  ciphertext is identical, which PAR2 needs); with a legacy xxh3 hash the
  bytes are sealed under a fresh nonce, never the stored one.
- Nothing here writes state; results travel back to the collector.
- The heavy calls (pread, BLAKE3, AES-GCM, yEnc) release the GIL, except
  AES-GCM.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from usenetsync_cli.core.article import article_parts, format_date
from usenetsync_cli.core.crypto import new_nonce
from usenetsync_cli.core.epochs import FolderContext
from usenetsync_cli.core.hashing import is_crypto_hash, pack_hash, payload_matches, piece_hash
from usenetsync_cli.core.msgid import message_domain
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
    ctime_ns: int | None
    inode: int

    @property
    def planned(self) -> tuple[int, int, int | None, int]:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)


@dataclass(slots=True)
class Work:
    shard: int
    seg_id: int
    attempt: int
    length: int
    is_pack: bool
    sources: list[Source]
    retries: int = 0
    epoch: int = 0  # the key epoch it is sealed and named in (core/epochs.py)
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


def _read_source(src: Source) -> bytes | None:
    """The planned bytes of ``src``, or None if the file is not what was planned.

    Its stat must equal the planned one before and after the read: a write
    before the read shows in the first look, one during or after it in the
    second (it moves ctime even when the mtime is put back).
    """
    try:
        fd = os.open(src.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if _stat_key(os.fstat(fd)) != src.planned:
            return None
        data = os.pread(fd, src.length, src.file_offset)
        if len(data) != src.length or _stat_key(os.fstat(fd)) != src.planned:
            return None
        return data
    except OSError:
        return None
    finally:
        os.close(fd)


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def encode(work: Work, ctx: FolderContext, names: WireNames) -> Work:
    """Fill ``work`` with its article; sets ``changed`` instead if the source moved."""
    layout: list[tuple[int, int]] | None = None
    if not work.is_pack:
        payload: bytes | None = _read_source(work.sources[0])
        if payload is None:
            work.changed = True
            return work
        work.hash = piece_hash(payload)
    else:
        buf = bytearray(work.length)
        members: list[tuple[int, int, bytes]] = []
        for src in work.sources:
            data = _read_source(src)
            if data is None:
                work.dropped.append(src.file_id)
                continue
            buf[src.pack_offset : src.pack_offset + src.length] = data
            h = piece_hash(data)
            work.member_hashes.append((src.file_id, h))
            members.append((src.pack_offset, src.length, h))
        if len(work.dropped) == len(work.sources):
            work.changed = True
            return work
        payload = bytes(buf)
        work.hash = pack_hash(work.length, members)
        layout = [(off, n) for off, n, _h in members]
    expect = work.expect_hash
    if expect is not None and not (work.hash == expect if is_crypto_hash(expect) else payload_matches(expect, payload, layout)):
        work.changed = True  # same stat, other bytes: never post different content under this segment
        return work
    if work.nonce is None or not is_crypto_hash(expect):
        # A stored nonce is only ever reused with the plaintext whose BLAKE3 hash was stored with it.
        work.nonce = new_nonce()
    sealed = ctx.seal(work.shard, work.seg_id, work.epoch, payload, work.nonce)
    work.msgid = ctx.message_id(work.shard, work.seg_id, work.attempt, work.epoch)
    work.buffers = article_parts(
        message_id=work.msgid,
        subject=names.subject(),
        poster=names.poster(message_domain(work.msgid)),
        newsgroups=ctx.groups,
        date=format_date(time.time()),
        payload=sealed,
        yenc_name=names.yenc_name(),
    )
    work.wire_bytes = sum(len(b) for b in work.buffers)
    return work
