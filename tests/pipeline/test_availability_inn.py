"""``availability.stat_all`` against the real INN through the fault proxy: many connections, bounded, resilient."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.pipeline.test_fetch_inn import post
from tests.support.faultproxy import FaultProxy
from tests.support.inn import InnServer
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.availability import BATCH, stat_all


@pytest.fixture(scope="module")
def present(inn: InnServer) -> list[str]:
    return post(inn, *(os.urandom(200) for _ in range(40)))


def _absent(n: int) -> list[str]:
    return [f"<absent.{uuid.uuid4().hex}@test.invalid>" for _ in range(n)]


def test_every_answer_once_over_several_connections_with_bounded_work_in_flight(present: list[str], inn: InnServer) -> None:
    absent = _absent(3000)
    ids = present + absent
    n = 3
    pulled = 0
    most_ahead = 0
    seen: dict[str, bool] = {}

    def jobs() -> Iterator[tuple[str, str]]:
        nonlocal pulled
        for mid in ids:
            pulled += 1
            yield mid, mid

    with FaultProxy(inn.host, inn.port) as proxy:
        spec = ServerSpec("p", "127.0.0.1", proxy.port, timeout=10.0, connections=n)
        for tag, ok in stat_all(spec, jobs()):
            most_ahead = max(most_ahead, pulled - len(seen))
            assert tag not in seen
            seen[tag] = ok
        assert proxy.connections_total == n  # every connection worked
        assert proxy.commands_seen(b"STAT") == len(ids)
    assert seen == {m: m in present for m in ids}
    assert most_ahead <= 2 * n * BATCH  # never more than two batches per connection out


def test_a_dropped_connection_is_reopened_and_its_batch_asked_again(present: list[str], inn: InnServer) -> None:
    ids = present + _absent(1000)
    with FaultProxy(inn.host, inn.port) as proxy:
        proxy.drop_after_client_bytes(20_000)  # mid-way through the STATs
        spec = ServerSpec("p", "127.0.0.1", proxy.port, timeout=10.0, connections=2)
        got = dict(stat_all(spec, ((m, m) for m in ids)))
        assert proxy.faults_fired.get("drop", 0) == 1 and proxy.connections_total == 3  # one reopened
    assert got == {m: m in present for m in ids}


def test_fill_servers_are_asked_only_for_what_the_primary_lacks(present: list[str], inn: InnServer) -> None:
    absent = _absent(300)
    with FaultProxy(inn.host, inn.port) as primary, FaultProxy(inn.host, inn.port) as fill:
        spec = ServerSpec("p", "127.0.0.1", primary.port, timeout=10.0, connections=2)
        fills = [ServerSpec("f", "127.0.0.1", fill.port, timeout=10.0, connections=2)]
        got = dict(stat_all(spec, ((m, m) for m in present), fill=fills))
        assert all(got.values()) and fill.connections_total == 0  # not even connected
        got = dict(stat_all(spec, ((m, m) for m in present + absent), fill=fills))
        assert fill.commands_seen(b"STAT") == len(absent)
    assert got == {m: m in present for m in present + absent}
