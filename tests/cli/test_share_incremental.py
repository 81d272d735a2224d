"""A share's index grows with the change, not the folder: against the real INN.

Version 2 of a share whose folder changed by one file posts a few index
articles (the changed chunks and the table), not the whole index again, and
a reader holding version 1 fetches as little.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.cli.test_share_download import Users, publish, snapshot, users  # noqa: F401 - fixture
from tests.cli.test_share_squatting import _Posted
from tests.support.inn import InnServer


def _many_files(src: Path, n: int) -> None:
    for d in range(5):
        (src / f"album-{d}").mkdir(parents=True)
    for i in range(n):
        (src / f"album-{i % 5}" / f"holiday-picture-{i:06d}-with-a-rather-long-name.jpg").write_bytes(b"x%d" % i)


def _chunks(err: str) -> tuple[int, int]:
    """(chunks in the index, chunks fetched) from the download's report."""
    found = re.search(r"\(([\d,]+) chunks, ([\d,]+) fetched", err)
    assert found, err
    return int(found.group(1).replace(",", "")), int(found.group(2).replace(",", ""))


def test_a_small_change_posts_and_fetches_a_small_part_of_the_index(
    users: Users, tmp_path: Path, inn: InnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _many_files(src, 10_000)  # ~1.7 MB of records: ~30 chunks (20 at the least in 200 simulated draws)
    posted = _Posted(monkeypatch)
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))
    first = posted.take_sizes()[:-1]  # the index articles, without the root
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, str(dest))
    assert r.code == 0, r.err
    chunks, fetched = _chunks(r.err)
    assert chunks == fetched >= 8

    (src / "album-3" / "holiday-picture-005003-with-a-rather-long-name.jpg").write_bytes(b"edited")
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "upload", str(src), "--redundancy", "0").code == 0
    posted.take()  # the upload's own articles
    r = users.as_("alice", "share", "update", "s", "--json")
    assert r.code == 0, r.err
    second = posted.take_sizes()[:-1]
    # Version 2 posts the changed chunks (the header's, the changed file's, its old and new pack's: 3-5 of
    # ~30, of random sizes) and the table: well under half of version 1's index (all of it without reuse).
    assert 2 * sum(second) < sum(first), (second, first)

    r = users.as_("bob", "download", sid, str(dest), "--sync")
    assert r.code == 0, r.err
    chunks2, fetched2 = _chunks(r.err)
    assert chunks2 >= 8 and 1 <= fetched2 <= 5  # the header (counts), the changed file's, its packs' records
    assert snapshot(dest) == snapshot(src)
    # The reader keeps only this version's chunks.
    cache = [p for p in (users.tmp / "home-bob").rglob("chunks") if p.is_dir()]
    assert len(cache) == 1 and 0 < len(os.listdir(cache[0])) < 64


def test_chunks_of_a_pack_gone_from_the_server_are_posted_again(
    users: Users, tmp_path: Path, inn: InnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.cli.test_share_download import _index_ids

    src = tmp_path / "src"
    _many_files(src, 1500)
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))
    root, *packs_and_table = _index_ids(users)
    for mid in packs_and_table:
        inn.cancel(mid)  # expired, or removed by a takedown
    r = users.as_("bob", "download", sid, str(tmp_path / "broken"))
    assert r.code != 0
    posted = _Posted(monkeypatch)
    r = users.as_("alice", "share", "update", "s")  # the content did not change: nothing is published
    assert r.code == 0 and "nothing changed" in r.err and posted.take() == [], r.err
    r = users.as_("alice", "share", "update", "s", "--force")
    assert r.code == 0, r.err
    assert len(posted.take()) >= 3  # its chunks again, a new table, a root
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, str(dest))
    assert r.code == 0, r.err
    assert snapshot(dest) == snapshot(src)


@pytest.mark.slow
def test_300k_files_ten_deletions_post_a_tenth_of_the_index_articles(
    tmp_path: Path, inn: InnServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """300,000 files with random names in 300 folders; a version deleting 10 files in 10 folders posts at most
    10 % + 2 of the first publication's index articles, counted at the wire by the fault proxy."""
    import random

    from tests.cli.helpers import run
    from tests.pipeline.upload_support import fabricate_posted
    from tests.support.faultproxy import FaultProxy
    from usenetsync_cli.store import catalog
    from usenetsync_cli.store.home import Home
    from usenetsync_cli.store.state import State

    seg = 16_384
    rnd = random.Random(300)
    src = tmp_path / "src"
    names: list[Path] = []
    for d in range(300):
        folder = src / f"d{d:03d}-{rnd.randbytes(6).hex()}"
        folder.mkdir(parents=True)
        for _ in range(1000):
            path = folder / "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=80))
            with open(path, "wb") as f:
                f.truncate(seg)  # sparse: one segment each, nothing on disk
            names.append(path)
    with FaultProxy(inn.host, inn.port) as proxy:
        host, port = proxy.address
        monkeypatch.setenv("USENETSYNC_HOME", str(tmp_path / "alice"))
        assert run(capsys, "server", "add", "local", "--host", host, "--port", str(port), "--group", inn.group).code == 0
        assert run(capsys, "keys", "init", "--no-passphrase").code == 0
        assert run(capsys, "index", str(src)).code == 0
        with State.open(Home.resolve()) as st:
            folder_row = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
            assert folder_row is not None
            assert fabricate_posted(st, folder_row, seg) == 300_000
        before = proxy.commands_seen(b"POST")
        r = run(capsys, "share", "create", str(src), "--public", "--name", "s")
        assert r.code == 0 and "published share 's' version 1" in r.err, r.err
        first = proxy.commands_seen(b"POST") - before - 1  # without the root
        assert first >= 20

        for d in range(10):  # one file in each of 10 folders
            names[d * 1000 + rnd.randrange(1000)].unlink()
        assert run(capsys, "index", str(src)).code == 0
        before = proxy.commands_seen(b"POST")
        r = run(capsys, "share", "update", "s")
        assert r.code == 0, r.err
        second = proxy.commands_seen(b"POST") - before - 1
    assert 1 <= second <= first // 10 + 2, (first, second)
