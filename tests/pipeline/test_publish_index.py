"""pipeline/publish_index.py: which packs a version may reuse (the STAT-side is proven against INN in
tests/cli/test_share_incremental.py; here the half-live rule, over a server that has every pack)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from usenetsync_cli.core.index_chunks import TableEntry
from usenetsync_cli.pipeline.publish_index import _kept_packs

LOC = os.urandom(32)
P, Q = os.urandom(16), os.urandom(16)


class _All:
    def stat_many(self, ids: Iterable[str], window: int = 64) -> Iterator[tuple[str, bool]]:
        for mid in ids:
            yield mid, True


def _e(cid: bytes, pack: bytes, sealed: int) -> TableEntry:
    return TableEntry(cid, 10, pack, 0, sealed)


def test_a_pack_is_reused_only_while_at_least_half_of_it_is_live() -> None:
    known = {b"a" * 32: _e(b"a" * 32, P, 100), b"b" * 32: _e(b"b" * 32, P, 100), b"c" * 32: _e(b"c" * 32, Q, 300)}
    packs = {P: 400, Q: 300}
    assert _kept_packs(_All(), [b"a" * 32, b"b" * 32, b"c" * 32], known, packs, LOC) == {P, Q}  # type: ignore[arg-type]
    assert _kept_packs(_All(), [b"a" * 32, b"c" * 32], known, packs, LOC) == {Q}  # type: ignore[arg-type]
    # A chunk listed twice counts once; an unknown pack (no size) is never reused.
    assert _kept_packs(_All(), [b"a" * 32, b"a" * 32], known, packs, LOC) == set()  # type: ignore[arg-type]
    assert _kept_packs(_All(), [b"c" * 32], known, {P: 400}, LOC) == set()  # type: ignore[arg-type]
