"""Segment planning: how file bytes are cut into segment payloads.

Owns: the mapping from a stream of ``(file_ref, size)`` to segments, each a
list of (file, file offset, length, offset inside the segment) members.

Rules:
- A file of at least ``segment_size // 2`` bytes is "large": it becomes
  ``ceil(size / segment_size)`` segments of kind ``"file"``, each holding one
  member; all but the last are exactly ``segment_size`` bytes.
- A non-empty file smaller than that is "small": it goes whole into the one
  open pack if it fits (pack length + size <= segment_size); otherwise the
  open pack is emitted and a new one starts with this file. Large files do
  not close the open pack (they do not compete for its space), so packs fill
  better when small and large files interleave.
- A zero-byte file yields nothing (state records it without an article).

Invariants (property-tested in tests/core/test_packing.py):
- Every byte of every file is covered by exactly one member.
- No segment is longer than ``segment_size``; no segment is empty.
- A small file is never split: it is exactly one member of one pack.
- Members of a pack are contiguous: ``pack_offset`` runs 0, l0, l0+l1, ...
- Streaming: memory is O(one pack); the input is consumed lazily and the
  plan is a deterministic function of the input order.
- Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Literal, NamedTuple

__all__ = ["DEFAULT_SEGMENT_SIZE", "Member", "SegmentPlan", "plan_segments"]

DEFAULT_SEGMENT_SIZE = 768_000


class Member(NamedTuple):
    """A run of one file's bytes placed in a segment."""

    file_ref: Hashable
    file_offset: int
    length: int
    pack_offset: int


class SegmentPlan(NamedTuple):
    """One segment payload: its members in order and its total length."""

    kind: Literal["file", "pack"]
    members: tuple[Member, ...]
    length: int


def plan_segments(
    files: Iterable[tuple[Hashable, int]], segment_size: int = DEFAULT_SEGMENT_SIZE
) -> Iterator[SegmentPlan]:
    """Yield the segment plan for ``files`` in stream order (see module rules)."""
    if segment_size < 2:
        # With segment_size 1 the small-file threshold would be 0, and every
        # file "large"; forbid the degenerate case rather than reason about it.
        raise ValueError("segment_size must be at least 2 bytes")
    threshold = segment_size // 2
    pack: list[Member] = []
    pack_len = 0
    for file_ref, size in files:
        if size < 0:
            raise ValueError(f"negative file size {size} for {file_ref!r}")
        if size == 0:
            continue
        if size >= threshold:
            offset = 0
            while offset < size:
                length = min(segment_size, size - offset)
                yield SegmentPlan("file", (Member(file_ref, offset, length, 0),), length)
                offset += length
            continue
        if pack_len + size > segment_size:
            yield SegmentPlan("pack", tuple(pack), pack_len)
            pack, pack_len = [], 0
        pack.append(Member(file_ref, 0, size, pack_len))
        pack_len += size
    if pack:
        yield SegmentPlan("pack", tuple(pack), pack_len)
