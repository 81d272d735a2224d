"""Properties of the segment planner (usenetsync_cli.core.packing)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Hashable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usenetsync_cli.core.packing import DEFAULT_SEGMENT_SIZE, Member, SegmentPlan, plan_segments


def sizes_for(segment: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.just(0),
        st.integers(1, segment // 2 - 1),  # small
        st.integers(segment // 2 - 1, segment // 2 + 1),  # around the threshold
        st.integers(segment - 1, segment + 1),
        st.integers(1, 5 * segment),
    )


@st.composite
def plans(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    segment = draw(st.integers(4, 5000))
    sizes = draw(st.lists(sizes_for(segment), max_size=60))
    return segment, list(enumerate(sizes))


@given(plans())
def test_every_byte_exactly_once_and_limits_hold(case: tuple[int, list[tuple[int, int]]]) -> None:
    segment, files = case
    sizes: dict[Hashable, int] = dict(files)
    covered: dict[Hashable, list[tuple[int, int]]] = defaultdict(list)
    members_of: dict[Hashable, int] = defaultdict(int)
    for plan in plan_segments(files, segment):
        assert 0 < plan.length <= segment
        assert plan.length == sum(m.length for m in plan.members)
        offset = 0
        for member in plan.members:
            assert member.pack_offset == offset
            assert member.length > 0
            offset += member.length
            covered[member.file_ref].append((member.file_offset, member.length))
            members_of[member.file_ref] += 1
        if plan.kind == "file":
            (member,) = plan.members
            assert sizes[member.file_ref] >= segment // 2
            assert member.pack_offset == 0
        else:
            for member in plan.members:
                size = sizes[member.file_ref]
                assert 0 < size < segment // 2
                # Never split: the whole small file is this one member.
                assert (member.file_offset, member.length) == (0, size)
    for ref, size in sizes.items():
        runs = sorted(covered.get(ref, []))
        position = 0
        for start, length in runs:
            assert start == position
            position += length
        assert position == size
        if 0 < size < segment // 2:
            assert members_of[ref] == 1
        if size >= segment // 2:
            assert members_of[ref] == -(-size // segment)
        if size == 0:
            assert ref not in covered


@given(plans())
def test_large_file_segments_are_full_except_the_last(case: tuple[int, list[tuple[int, int]]]) -> None:
    segment, files = case
    by_file: dict[Hashable, list[SegmentPlan]] = defaultdict(list)
    for plan in plan_segments(files, segment):
        if plan.kind == "file":
            by_file[plan.members[0].file_ref].append(plan)
    for chunks in by_file.values():
        assert all(c.length == segment for c in chunks[:-1])


@given(plans())
def test_packs_close_only_when_the_next_small_file_does_not_fit(case: tuple[int, list[tuple[int, int]]]) -> None:
    segment, files = case
    packs = [p for p in plan_segments(files, segment) if p.kind == "pack"]
    small = [(ref, size) for ref, size in files if 0 < size < segment // 2]
    # Packs hold the small files in stream order, first-fit into the open pack.
    assert [m.file_ref for p in packs for m in p.members] == [ref for ref, _ in small]
    for pack, following in itertools.pairwise(packs):
        assert pack.length + following.members[0].length > segment


def test_examples() -> None:
    plan = list(plan_segments([("a", 10), ("b", 0), ("c", 3), ("d", 25), ("e", 4), ("f", 4)], 10))
    assert plan == [
        SegmentPlan("file", (Member("a", 0, 10, 0),), 10),
        SegmentPlan("file", (Member("d", 0, 10, 0),), 10),
        SegmentPlan("file", (Member("d", 10, 10, 0),), 10),
        SegmentPlan("file", (Member("d", 20, 5, 0),), 5),
        SegmentPlan("pack", (Member("c", 0, 3, 0), Member("e", 0, 4, 3)), 7),
        SegmentPlan("pack", (Member("f", 0, 4, 0),), 4),
    ]
    assert list(plan_segments([], 10)) == []
    assert list(plan_segments([("z", 0)], 10)) == []


def test_default_segment_size() -> None:
    assert DEFAULT_SEGMENT_SIZE == 768_000
    (only,) = plan_segments([("x", 384_000)])
    assert only.kind == "file" and only.length == 384_000
    (pack,) = plan_segments([("x", 383_999), ("y", 383_999)])
    assert pack.kind == "pack" and pack.length == 767_998


def test_streaming_consumes_lazily() -> None:
    consumed = 0

    def endless() -> Iterator[tuple[int, int]]:
        nonlocal consumed
        for i in itertools.count():
            consumed += 1
            yield i, 1000

    first = list(itertools.islice(plan_segments(endless(), 10_000), 3))
    assert [len(p.members) for p in first] == [10, 10, 10]
    assert consumed <= 31


def test_millions_of_tiny_files_stream_in_bounded_memory() -> None:
    import tracemalloc

    tracemalloc.start()
    count = 0
    for plan in plan_segments(((i, 37) for i in range(300_000)), DEFAULT_SEGMENT_SIZE):
        count += len(plan.members)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 300_000
    assert peak < 8 * 1024 * 1024  # one pack of ~20k members, not 300k


def test_tiny_segment_sizes() -> None:
    assert list(plan_segments([("a", 1), ("b", 3)], 2)) == [
        SegmentPlan("file", (Member("a", 0, 1, 0),), 1),
        SegmentPlan("file", (Member("b", 0, 2, 0),), 2),
        SegmentPlan("file", (Member("b", 2, 1, 0),), 1),
    ]
    assert list(plan_segments([("a", 1), ("b", 1), ("c", 1)], 5)) == [
        SegmentPlan("pack", (Member("a", 0, 1, 0), Member("b", 0, 1, 1), Member("c", 0, 1, 2)), 3),
    ]


@pytest.mark.parametrize("segment", [0, 1, -5])
def test_rejects_degenerate_segment_sizes(segment: int) -> None:
    with pytest.raises(ValueError):
        list(plan_segments([("a", 1)], segment))


def test_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError):
        list(plan_segments([("a", -1)]))
