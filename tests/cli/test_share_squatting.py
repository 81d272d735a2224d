"""Squatting on a share's root slots, and a server hiding versions, against the real INN.

Anyone who holds a share ID (a reader, a revoked recipient) can compute its
future root Message-IDs and post junk there first. The publisher must move
on to the next slot (or version) without posting the index again and
without looping, and readers must find the publisher's root behind the junk.
A server that hides a newer version must not make a reader accept an older
one silently, nor make `--sync` delete what the newer one brought.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.cli.test_share_download import Users, make_folder, publish, snapshot, users  # noqa: F401 - fixture
from tests.support.inn import InnServer
from usenetsync_cli.core.article import build_article, format_date
from usenetsync_cli.core.share_root import ROOT_SLOTS, root_message_id
from usenetsync_cli.core.shareid import ShareId, locator_key


def _post_junk(inn: InnServer, mid: str) -> int:
    head, body = build_article(message_id=mid, subject="x", poster="M <m@example.com>", newsgroups=(inn.group,),
                               date=format_date(time.time()), payload=os.urandom(20_000), yenc_name="junk")
    return inn.post(head + body)[0]


class _Posted:
    """Records every article the publisher got accepted (a spy: each call goes through to INN)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from usenetsync_cli.pipeline import publish

        self.ids: list[str] = []
        self.sizes: list[int] = []
        real = publish.post_article

        def spy(conn, mid, payload, groups, names):  # type: ignore[no-untyped-def]
            real(conn, mid, payload, groups, names)
            self.ids.append(mid)
            self.sizes.append(len(payload))

        monkeypatch.setattr(publish, "post_article", spy)

    def take(self) -> list[str]:
        out, self.ids, self.sizes = self.ids, [], []
        return out

    def take_sizes(self) -> list[int]:
        out, self.ids, self.sizes = self.sizes, [], []
        return out


def _change(users: Users, src: Path, n: int) -> None:
    (src / f"change-{n}.bin").write_bytes(os.urandom(5_000))
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "upload", str(src), "--redundancy", "0", "--no-backup").code == 0  # shares only


def _published(users: Users, tmp_path: Path) -> tuple[Path, str, bytes]:
    """A public share at version 1: its folder, its ID and its locator key (what a squatter holds)."""
    src = tmp_path / "src"
    make_folder(src)
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))
    return src, sid, locator_key(ShareId.parse(sid))


def _update(users: Users) -> dict:
    r = users.as_("alice", "share", "update", "s", "--json")
    assert r.code == 0, r.err
    return [x for x in r.json_lines() if x["type"] == "share.published"][0]


def test_junk_at_root_slots_moves_the_publisher_on_without_reposting_the_index(
    users: Users, tmp_path: Path, inn: InnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, sid, lk = _published(users, tmp_path)
    for slot in (0, 1):  # version 2: two slots taken
        assert _post_junk(inn, root_message_id(lk, 2, slot)) == 240
    for slot in range(ROOT_SLOTS):  # version 3: every slot taken
        assert _post_junk(inn, root_message_id(lk, 3, slot)) == 240

    _change(users, src, 1)
    posted = _Posted(monkeypatch)
    event = _update(users)
    assert event["version"] == 2
    ids = posted.take()
    assert len(ids) == event["index_parts"] + 1  # the index once, one root...
    assert ids[-1] == root_message_id(lk, 2, 2) and inn.stat(ids[-1]) == 223  # ...at the first free slot

    _change(users, src, 2)
    event = _update(users)
    assert event["version"] == 4  # version 3 is the squatter's: skipped by publisher and readers alike
    ids = posted.take()
    assert len(ids) == event["index_parts"] + 1 and ids[-1] == root_message_id(lk, 4, 0)

    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, str(dest), "--json")
    assert r.code == 0, r.err
    assert [x["version"] for x in r.json_lines() if x["type"] == "download.summary"] == [4]
    assert snapshot(dest) == snapshot(src)


def test_a_server_where_every_root_slot_is_taken_ends_in_one_clear_error(
    users: Users, tmp_path: Path, inn: InnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usenetsync_cli.pipeline.publish import _ROOT_VERSIONS

    src, sid, lk = _published(users, tmp_path)
    for v in range(2, 2 + _ROOT_VERSIONS):
        for slot in range(ROOT_SLOTS):
            assert _post_junk(inn, root_message_id(lk, v, slot)) == 240
    _change(users, src, 1)
    posted = _Posted(monkeypatch)
    r = users.as_("alice", "share", "update", "s")
    assert r.code == 14 and "taken" in r.err and "Traceback" not in r.err
    assert r.err.strip().splitlines()[-1].startswith("usenetsync: error:")
    ids = posted.take()  # the index, each article once, and no root anywhere
    assert 1 <= len(ids) == len(set(ids)) and not set(ids) & {root_message_id(lk, v, s) for v in range(1, 20) for s in range(4)}
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, str(dest), "--json")
    assert r.code == 0, r.err  # readers still get version 1, behind 64 junk roots
    assert [x["version"] for x in r.json_lines() if x["type"] == "download.summary"] == [1]


def test_a_hidden_newer_version_is_refused_as_rollback_and_allowed_only_without_deleting(
    users: Users, tmp_path: Path, inn: InnServer
) -> None:
    from tests.cli.test_share_download import _index_ids

    src = tmp_path / "src"
    make_folder(src)
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))
    _change(users, src, 1)
    assert _update(users)["version"] == 2
    dest = tmp_path / "dest"
    assert users.as_("bob", "download", sid, str(dest)).code == 0
    have = snapshot(dest)
    assert (dest / "change-1.bin").exists()

    inn.cancel(_index_ids(users)[0])  # the server now hides version 2's root
    r = users.as_("bob", "download", sid, str(dest), "--sync")
    assert r.code == 24 and "already has version 2" in r.err and "--allow-rollback" in r.err, r.err
    assert snapshot(dest) == have  # nothing touched
    r = users.as_("bob", "download", sid, str(dest), "--sync", "--allow-rollback", "--json")
    assert r.code == 0, r.err
    assert [x["version"] for x in r.json_lines() if x["type"] == "download.summary"] == [1]
    assert (dest / "change-1.bin").read_bytes() == (src / "change-1.bin").read_bytes()  # kept: nothing deleted
    # The pin stays at 2: the next plain run is still refused.
    assert users.as_("bob", "download", sid, str(dest), "--sync").code == 24


def test_a_crash_after_the_root_moves_the_next_publication_to_the_next_version(
    users: Users, tmp_path: Path, inn: InnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publication that posted its root but died before recording it left a complete version of ours:
    the next one takes the next version (not another slot of the same one, which would leave two roots)."""
    from usenetsync_cli.pipeline import shares

    src, sid, lk = _published(users, tmp_path)
    _change(users, src, 1)
    with monkeypatch.context() as m:
        def crash(*_a: object) -> None:
            raise KeyboardInterrupt  # between the root's STAT and the catalog's commit

        m.setattr(shares, "save_layout", crash)
        assert users.as_("alice", "share", "update", "s").code == 130
    assert inn.stat(root_message_id(lk, 2, 0)) == 223  # the crashed publication's root
    r = users.as_("alice", "share", "show", "s", "--json")
    assert r.json_lines()[0]["version"] == 1  # not recorded
    _change(users, src, 2)
    assert _update(users)["version"] == 3
    assert inn.stat(root_message_id(lk, 2, 1)) == 430  # no second root for version 2
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, str(dest), "--json")
    assert r.code == 0, r.err
    assert [x["version"] for x in r.json_lines() if x["type"] == "download.summary"] == [3]
    assert snapshot(dest) == snapshot(src)


def test_kill_9_mid_publication_then_the_rerun_publishes_a_whole_version(
    users: Users, tmp_path: Path, inn: InnServer
) -> None:
    """kill -9 while the index of version 2 is being posted (proven: the first index article's reply came
    back, the next one is held, no root exists): the share stays at version 1 for everyone, and the
    rerun publishes a complete version 2."""
    import signal
    import subprocess
    import sys

    from tests.support.faultproxy import ARTICLE, FaultProxy

    src, sid, lk = _published(users, tmp_path)
    _change(users, src, 1)
    with FaultProxy(inn.host, inn.port) as proxy:
        host, port = proxy.address
        assert users.as_("alice", "server", "add", "proxy", "--host", host, "--port", str(port),
                         "--group", inn.group).code == 0
        proxy.hold_replies(ARTICLE, after=1)
        env = {**os.environ, "USENETSYNC_HOME": str(users.homes["alice"])}
        proc = subprocess.Popen([sys.executable, "-m", "usenetsync_cli", "share", "update", "s", "--server", "proxy"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proxy.wait_for(lambda: proxy.faults_fired.get("hold_replies", 0) >= 1, timeout=60)
            assert proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
        posted = len(proxy.posted_message_ids())
    assert posted >= 1  # mid-way: index articles went out...
    assert all(inn.stat(root_message_id(lk, 2, s)) == 430 for s in range(ROOT_SLOTS))  # ...and no root
    assert users.as_("alice", "share", "show", "s", "--json").json_lines()[0]["version"] == 1
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, str(dest), "--json")
    assert [x["version"] for x in r.json_lines() if x["type"] == "download.summary"] == [1]

    assert _update(users)["version"] == 2
    r = users.as_("bob", "download", sid, str(dest), "--sync", "--json")
    assert r.code == 0, r.err
    assert [x["version"] for x in r.json_lines() if x["type"] == "download.summary"] == [2]
    assert snapshot(dest) == snapshot(src)
