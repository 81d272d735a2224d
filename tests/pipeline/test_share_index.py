"""pipeline/share_index.py: version discovery is bounded, whatever the server says."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import pytest

from usenetsync_cli.errors import TamperedError
from usenetsync_cli.pipeline.publish import root_message_id
from usenetsync_cli.pipeline.share_index import MAX_VERSION, VERSION_GAP, newest_version

LOCATOR = os.urandom(32)


class _Stats:
    """Answers STAT from a set of present Message-IDs (or everything), counting the windows asked."""

    def __init__(self, present: set[str] | None) -> None:
        self.present = present
        self.windows = 0

    def stat_many(self, ids: Iterable[str], window: int = 64) -> Iterator[tuple[str, bool]]:
        self.windows += 1
        for mid in ids:
            yield mid, self.present is None or mid in self.present


def _published(versions: Iterable[int]) -> _Stats:
    return _Stats({root_message_id(LOCATOR, v) for v in versions})


@pytest.mark.parametrize("newest", [1, 2, 3, 7, 8, 100, 1000])
def test_finds_the_newest_version_across_gaps(newest: int) -> None:
    skipped = {v for v in range(2, newest, 5)}  # crashed publications leave single gaps
    conn = _published(v for v in range(1, newest + 1) if v not in skipped or v == newest)
    assert newest_version(conn, LOCATOR) == newest  # type: ignore[arg-type]
    assert conn.windows <= 2 * (newest.bit_length() + 1) + 1


def test_gap_of_the_maximum_width_is_crossed() -> None:
    conn = _published([1, 2] + [2 + VERSION_GAP + 1])
    assert newest_version(conn, LOCATOR) == 2 + VERSION_GAP + 1  # type: ignore[arg-type]


def test_no_version_at_all() -> None:
    assert newest_version(_published([]), LOCATOR) == 0  # type: ignore[arg-type]


def test_a_server_claiming_every_root_exists_is_stopped_in_bounded_probes() -> None:
    conn = _Stats(None)
    with pytest.raises(TamperedError, match="claims more than"):
        newest_version(conn, LOCATOR)  # type: ignore[arg-type]
    assert conn.windows <= MAX_VERSION.bit_length() + 2
