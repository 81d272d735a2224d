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
- Each posting thread encodes its own articles into its own ``Scratch``
  (reused plaintext and sealed buffers); every byte of a pack, its padding
  included, is written for each segment (gaps and dropped members zeroed),
  so nothing of an earlier segment can reach the wire.
- The heavy calls (preadv, BLAKE3, AES-GCM through core/gcm_nogil.py, yEnc)
  release the GIL, so N threads encode side by side.

Why ``preadv`` into a reused buffer and not mmap (the design card says
"mmap segmentation"; measured by benchmarks/bench_read.py, README "mmap vs
pread"): per 768,000-byte segment of a 1 GiB file with a warm page cache,
the read's copy costs 0.08-0.10 CPU-s/GiB against 0.01-0.02 for touching
mapped pages, but once the segment is hashed and sealed the readers tie
(mmap 0.84-0.89, pread 0.81-0.92, preadv into a reused buffer 0.78-0.80
CPU-s/GiB): mmap's saved copy comes back as hashing from RAM. For small
files mmap loses (29 vs 12.5 µs per 200-byte file; 61 vs 40 µs at 1-64
KiB), a pack needs its members copied into one buffer anyway, and an empty
file cannot be mapped. Above all, a file truncated by another program while
mapped kills the process with SIGBUS on the first lost page: Python cannot
catch it, so there would be no one-line error and no safe stop. ``preadv``
turns the same event into a short read, which the stat check reports as
changed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from usenetsync_cli.core.article import article_parts, format_date
from usenetsync_cli.core.crypto import new_nonce
from usenetsync_cli.core.crypto import SEAL_OVERHEAD
from usenetsync_cli.core.epochs import PAD_SPREAD, FolderContext
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


class Scratch:
    """One posting thread's reused buffers: the plaintext read (with room for the padding) and the sealed
    bytes. Allocating ~1.6 MB per article costs more than the reads and copies it would save (page
    faults once glibc hands such blocks back), and these are written in place by ``preadv`` and AES-GCM."""

    __slots__ = ("plain", "sealed")

    def __init__(self) -> None:
        self.plain = bytearray()
        self.sealed = bytearray()

    def room(self, length: int) -> memoryview:
        """A view of the first ``length`` bytes of the plaintext buffer (grown when needed)."""
        need = length + PAD_SPREAD
        if len(self.plain) < need:
            self.plain = bytearray(need)  # replaced, not resized: an old view may still be alive
            self.sealed = bytearray(need + SEAL_OVERHEAD)
        return memoryview(self.plain)[:length]


def _read_into(src: Source, dest: memoryview) -> bool:
    """Read the planned bytes of ``src`` into ``dest``; False if the file is not what was planned.

    Its stat must equal the planned one before and after the read: a write
    before the read shows in the first look, one during or after it in the
    second (it moves ctime even when the mtime is put back). A file that
    shrank gives a short read, never a fault (the reason this is ``preadv``
    and not a mapping: see the module docstring).
    """
    try:
        fd = os.open(src.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if _stat_key(os.fstat(fd)) != src.planned:
            return False
        got = os.preadv(fd, [dest], src.file_offset) if src.length else 0
        return got == src.length and _stat_key(os.fstat(fd)) == src.planned
    except OSError:
        return False
    finally:
        os.close(fd)


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def encode(work: Work, ctx: FolderContext, names: WireNames, scratch: Scratch | None = None) -> Work:
    """Fill ``work`` with its article; sets ``changed`` instead if the source moved."""
    scratch = scratch or Scratch()
    layout: list[tuple[int, int]] | None = None
    payload = scratch.room(work.length)
    if not work.is_pack:
        if not _read_into(work.sources[0], payload):
            work.changed = True
            return work
        work.hash = piece_hash(payload)
    else:
        members: list[tuple[int, int, bytes]] = []
        cursor = 0
        for src in work.sources:  # in pack order
            part = payload[src.pack_offset : src.pack_offset + src.length]
            if src.pack_offset > cursor:
                payload[cursor : src.pack_offset] = bytes(src.pack_offset - cursor)
            cursor = max(cursor, src.pack_offset + src.length)
            if not _read_into(src, part):
                part[:] = bytes(src.length)  # left out: its place stays zero, as planned packs expect
                work.dropped.append(src.file_id)
                continue
            h = piece_hash(part)
            work.member_hashes.append((src.file_id, h))
            members.append((src.pack_offset, src.length, h))
        if cursor < work.length:
            payload[cursor:] = bytes(work.length - cursor)
        if len(work.dropped) == len(work.sources):
            work.changed = True
            return work
        work.hash = pack_hash(work.length, members)
        layout = [(off, n) for off, n, _h in members]
    expect = work.expect_hash
    if expect is not None and not (work.hash == expect if is_crypto_hash(expect) else payload_matches(expect, payload, layout)):
        work.changed = True  # same stat, other bytes: never post different content under this segment
        return work
    if work.nonce is None or not is_crypto_hash(expect):
        # A stored nonce is only ever reused with the plaintext whose BLAKE3 hash was stored with it.
        work.nonce = new_nonce()
    n = ctx.seal_into(work.shard, work.seg_id, work.epoch, scratch.plain, work.length, work.nonce, scratch.sealed)
    sealed = bytes(memoryview(scratch.sealed)[:n])  # sabctools encodes only bytes: the one copy
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
