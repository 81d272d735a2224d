"""Fill servers in the fetch engine, against the real INN through two counting fault proxies.

Owns: evidence that a server of role ``fill`` is asked only for the articles
the others lack (SABnzbd/NZBGet server priorities): no BODY at all while the
primary has everything, exactly the missing articles' BODYs when it lacks
some (the primary proxy answers 430 for chosen Message-IDs), and a job that
used up its retries on the primaries still gets its try on the fill server.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from tests.pipeline.test_fetch_inn import post
from tests.support.faultproxy import FaultProxy
from tests.support.inn import InnServer
from usenetsync_cli.nntp import Article, ServerSpec
from usenetsync_cli.pipeline.fetch import FetchJob, FetchPool, body_limit


@pytest.fixture(scope="module")
def articles(inn: InnServer) -> dict[str, bytes]:
    data = [os.urandom(5_000 + i) for i in range(60)]
    return dict(zip(post(inn, *data), data))


@pytest.fixture
def proxies(inn: InnServer) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    with FaultProxy(inn.host, inn.port) as primary, FaultProxy(inn.host, inn.port) as fill:
        yield primary, fill


def _fetch(
    proxies: tuple[FaultProxy, FaultProxy], articles: dict[str, bytes], *, retries: int = 1, primaries: int = 1
) -> tuple[dict[str, list[str | None]], dict[str, str]]:
    primary, fill = proxies
    got: dict[str, list[str | None]] = {}
    lock = threading.Lock()

    def handle(job: FetchJob, art: Article | None) -> str | None:
        with lock:
            got.setdefault(job.message_id, []).append(job.server)
        if art is None:
            return "missing"
        assert bytes(art.data) == articles[job.message_id] and art.crc_ok
        return None

    failed: dict[str, str] = {}
    specs = [ServerSpec(f"primary{i}", "127.0.0.1", primary.port, timeout=10.0, connections=2)
             for i in range(primaries)]
    pool = FetchPool(specs, retries=retries, fill=[ServerSpec("fill", "127.0.0.1", fill.port, timeout=10.0,
                                                              connections=2)])
    try:
        pool.run([FetchJob(m, body_limit(len(d))) for m, d in articles.items()], handle,
                 lambda j, r: failed.__setitem__(j.message_id, r))
    finally:
        pool.close()
    return got, failed


def test_a_fill_server_is_not_asked_when_the_primary_has_everything(
    proxies: tuple[FaultProxy, FaultProxy], articles: dict[str, bytes]
) -> None:
    primary, fill = proxies
    got, failed = _fetch(proxies, articles)
    assert failed == {}
    assert all(servers == ["primary0"] for servers in got.values()) and len(got) == len(articles)
    assert primary.commands_seen(b"BODY") == len(articles)
    assert fill.commands_seen(b"BODY") == 0 and fill.connections_total == 0  # not even connected


@pytest.mark.parametrize(("retries", "primaries"), [(1, 1), (0, 1), (1, 2)])
def test_a_fill_server_gets_exactly_the_missing_articles(
    proxies: tuple[FaultProxy, FaultProxy], articles: dict[str, bytes], retries: int, primaries: int
) -> None:
    primary, fill = proxies
    lost = list(articles)[:5]  # asked first: their retries come while most jobs are still queued
    for mid in lost:  # the primary provider lost these
        primary.inject_reply(b"BODY " + mid.encode(), b"430 No such article", times=None)
    got, failed = _fetch(proxies, articles, retries=retries, primaries=primaries)
    assert failed == {}
    assert fill.commands_seen(b"BODY") == len(lost)  # exactly the missing ones, once each
    for mid in articles:
        if mid in lost:
            assert got[mid][-1] == "fill" and got[mid][:-1] and "fill" not in got[mid][:-1]
        else:
            assert got[mid] == [got[mid][0]] and got[mid][0].startswith("primary")


def test_an_article_missing_everywhere_fails_once(
    proxies: tuple[FaultProxy, FaultProxy], articles: dict[str, bytes]
) -> None:
    primary, fill = proxies
    gone = max(articles)
    for p in (primary, fill):
        p.inject_reply(b"BODY " + gone.encode(), b"430 No such article", times=None)
    got, failed = _fetch(proxies, articles)
    assert list(failed) == [gone] and got[gone] == ["primary0", "fill"]
    assert fill.commands_seen(b"BODY") == 1
