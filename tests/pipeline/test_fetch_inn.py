"""The fetch engine against the real INN: a retry fetched from another server (the
fault proxy fails it on the first), a reply past its bound failing only its own
article, and the one-segment NZB that used to hang ``download --nzb``.
"""

from __future__ import annotations

import email.utils
import os
import threading
import uuid
from pathlib import Path

import pytest

from tests.cli.helpers import run
from tests.support.faultproxy import FaultProxy
from tests.support.inn import InnServer
from usenetsync_cli.core.article import build_article
from usenetsync_cli.core.nzb import open_nzb_for_write
from usenetsync_cli.nntp import Article, Connection, ServerSpec
from usenetsync_cli.pipeline.fetch import FetchJob, FetchPool, body_limit
from usenetsync_cli.pipeline.poster import open_connection


def post(inn: InnServer, *payloads: bytes) -> list[str]:
    ids = []
    with Connection(ServerSpec("inn", inn.host, inn.port, timeout=10.0)) as conn:
        for data in payloads:
            mid = f"<fetch.{uuid.uuid4().hex}@test.invalid>"
            conn.post(build_article(message_id=mid, subject="s", poster="p <p@example.invalid>",
                                    newsgroups=[inn.group], date=email.utils.formatdate(usegmt=True),
                                    payload=data, yenc_name="n.bin"), mid)
            ids.append(mid)
    return ids


def test_a_failed_article_is_fetched_from_the_other_server(inn: InnServer) -> None:
    data = os.urandom(30_000)
    (mid,) = post(inn, data)
    gate = threading.Event()

    def connect(spec: ServerSpec) -> Connection:
        if spec.name == "direct":
            gate.wait(30)  # the first attempt must go through the proxy
        return open_connection(spec)

    answers: list[tuple[str | None, object]] = []

    def handle(job: FetchJob, art: Article | None) -> str | None:
        answers.append((job.server, art))
        if art is None:
            gate.set()
            return "missing"
        assert bytes(art.data) == data and art.crc_ok
        return None

    failed: list[str] = []
    with FaultProxy(inn.host, inn.port) as proxy:
        proxy.inject_reply(b"BODY", b"430 no such article", times=None)  # this server lost everything
        specs = [ServerSpec("proxy", "127.0.0.1", proxy.port, timeout=10.0, connections=1),
                 ServerSpec("direct", inn.host, inn.port, timeout=10.0, connections=1)]
        pool = FetchPool(specs, connect=connect)
        try:
            stats = pool.run([FetchJob(mid, body_limit(len(data)))], handle, lambda j, r: failed.append(r))
        finally:
            pool.close()
        assert proxy.faults_fired.get("inject_reply") == 1
    assert failed == []
    assert [(server, art is None) for server, art in answers] == [("proxy", True), ("direct", False)]
    assert (stats.retries, stats.articles, stats.missing) == (1, 1, 1)


def test_a_reply_past_its_bound_fails_only_its_article(inn: InnServer) -> None:
    small = [os.urandom(3_000 + i) for i in range(6)]
    big = os.urandom(300_000)
    ids = post(inn, *small[:2], big, *small[2:])
    limits = {mid: 20_000 for mid in ids}
    seen: dict[str, int] = {}
    tries: dict[str, int] = {}

    def handle(job: FetchJob, art: Article | None) -> None:
        assert isinstance(art, Article) and art.crc_ok
        seen[job.message_id] = seen.get(job.message_id, 0) + 1
        tries[job.message_id] = job.tries

    failed: dict[str, str] = {}
    pool = FetchPool([ServerSpec("inn", inn.host, inn.port, timeout=10.0)], 1, window=8)
    try:
        stats = pool.run((FetchJob(m, limits[m]) for m in ids), handle, lambda j, r: failed.__setitem__(j.message_id, r))
    finally:
        pool.close()
    big_id = ids[2]
    assert list(failed) == [big_id] and "reply larger than expected" in failed[big_id]
    assert stats.too_large == 2 and stats.reconnects == 2  # closed each time the reply ran past its bound
    # The requests behind it went back untouched: each fetched once, never counted as an attempt.
    assert seen == {m: 1 for m in ids if m != big_id}
    assert set(tries.values()) == {0}


@pytest.mark.timeout(60)  # a hang guard, not a timing assertion: the run ends in well under a second
def test_one_segment_nzb_with_four_connections_ends(
    inn: InnServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "server", "add", "local", "--host", inn.host, "--port", str(inn.port), "--group", inn.group,
               "--connections", "4").code == 0
    nzb = tmp_path / "one.nzb"
    with open_nzb_for_write(nzb, title="one") as w:
        w.add_file('"lonely.bin" yEnc (1/1)', "p <p@example.invalid>", 1_700_000_000, [inn.group],
                   [(1, 5000, f"<gone.{uuid.uuid4().hex}@test.invalid>")])

    r = run(capsys, "download", "--nzb", str(nzb), str(tmp_path / "out"))

    assert r.code == 16, r.err
    assert "1 file(s) damaged" in r.err and "lonely.bin" in r.err
