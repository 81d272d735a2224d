"""verify and verify --repair against the real INN (articles removed with ctlinnd cancel, corrupted in the spool).

Nothing here depends on timing or luck: PAR2 victims are chosen per recovery
group (never more than the group's blocks), and the ``kill -9`` tests run the
CLI through the fault proxy, which holds replies so that the kill provably
lands after some and before all of the work is committed (0 < done < total).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from tests.cli.test_share_download import Users, make_folder, publish, snapshot, users  # noqa: F401 - fixture
from tests.pipeline.upload_support import message_ids
from tests.support.faultproxy import ARTICLE, FaultProxy
from tests.support.inn import InnServer
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State


def _ids(users: Users, src: Path) -> dict[tuple[int, int], str]:
    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        return message_ids(st, folder)


def _summary(r):  # type: ignore[no-untyped-def]
    return [x for x in r.json_lines() if x["type"] == "verify.summary"][0]


def _victims_per_group(users: Users, src: Path, count: int) -> list[str]:
    """``count`` segment Message-IDs spread over the PAR2 groups, never more in a group than it has recovery blocks.

    Picked round-robin over the groups (spread within each), so the result
    depends on the layout, never on the order of random Message-IDs.
    """
    from usenetsync_cli.pipeline.recovery import iter_layouts

    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        groups = [(len(g.recovery), [m.msgid for m in g.members]) for g in iter_layouts(st, folder)]
    assert sum(min(blocks, len(members)) for blocks, members in groups) >= count, "too little recovery data for the test"
    picked: list[list[str]] = [[] for _ in groups]
    while sum(map(len, picked)) < count:
        for (blocks, members), mine in zip(groups, picked):
            cap = min(blocks, len(members))
            if len(mine) < cap and sum(map(len, picked)) < count:
                mine.append(members[len(mine) * len(members) // cap])  # evenly spread, distinct
    return [mid for mine in picked for mid in mine]


def test_verify_finds_exactly_the_cancelled_and_repair_restores(users: Users, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    make_folder(src)
    for i in range(3):
        (src / f"bulk{i}.bin").write_bytes(os.urandom(70_000))
    sid = publish(users, src, "--public")
    ids = _ids(users, src)
    victims = sorted(ids.values())[:3]
    for mid in victims:
        inn.cancel(mid)
    r = users.as_("alice", "verify", "--json")
    assert r.code == 17, r.err
    s = _summary(r)
    assert s["checked"] == len(ids) and s["missing"] == 3 and s["present"] == len(ids) - 3
    assert s["missing_files"]
    r = users.as_("alice", "verify", "--repair", "--json")
    assert r.code == 0, r.err
    rep = [x for x in r.json_lines() if x["type"] == "verify.repair"][0]
    assert rep["repaired"] == 3 and rep["unrepairable"] == 0
    assert "published share 's' version 2" in r.err
    new_ids = _ids(users, src)
    assert all(inn.stat(m) == 223 for m in new_ids.values())
    assert len(set(new_ids.values()) - set(ids.values())) == 3
    r = users.as_("alice", "verify", "--json")
    assert r.code == 0 and _summary(r)["missing"] == 0
    r = users.as_("bob", "download", sid, str(tmp_path / "dest"))
    assert r.code == 0, r.err
    assert snapshot(tmp_path / "dest") == snapshot(src)


def test_repair_refuses_a_changed_source(users: Users, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(100_000))
    publish(users, src, "--public", upload_args=("--redundancy", "0"))  # no PAR2 to fall back on
    inn.cancel(sorted(_ids(users, src).values())[0])
    (src / "big.bin").write_bytes(os.urandom(100_000))  # the source moved on
    r = users.as_("alice", "verify", "--repair", "--json")
    assert r.code == 18 and "could not be repaired" in r.err


def test_read_data_finds_a_corrupted_body(users: Users, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(100_000))
    publish(users, src, "--public")
    victim = sorted(_ids(users, src).values())[0]
    inn.corrupt(victim, 500)
    r = users.as_("alice", "verify", "--json")
    assert r.code == 0 and _summary(r)["present"] > 0  # STAT alone cannot see it
    r = users.as_("alice", "verify", "--read-data", "100", "--json")
    assert r.code == 17
    s = _summary(r)
    assert s["damaged"] == 1 and s["bodies_read"] == s["checked"]


def test_max_duration_and_max_age_resume_the_sweep(users: Users, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(400_000))
    publish(users, src, "--public")
    total = len(_ids(users, src))
    r = users.as_("alice", "verify", "--max-duration", "0.000001s", "--json")
    first = _summary(r)
    assert first["checked"] < total and first["unchecked_left"] == total - first["checked"]
    r = users.as_("alice", "verify", "--max-age", "1h", "--json")
    assert _summary(r)["checked"] == 0  # everything was checked within the hour
    r = users.as_("alice", "verify", "--json")
    assert _summary(r)["checked"] == total


def test_status_shows_share_health(users: Users, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(100_000))
    publish(users, src, "--public")
    ids = _ids(users, src)
    inn.cancel(sorted(ids.values())[0])
    users.as_("alice", "verify")
    r = users.as_("alice", "status", "--json")
    (share,) = [x for x in r.json_lines() if x["type"] == "status.share"]
    assert share["articles"] == len(ids) and share["at_risk"] == 1 and share["present"] == len(ids) - 1
    assert 0 < share["pct_present"] < 100 and share["last_verified_ns"]
    assert "shares" in users.as_("alice", "status").out


def test_repair_from_par2_after_the_source_is_deleted(users: Users, tmp_path: Path, inn: InnServer) -> None:
    """The issue's 'done when': cancel ~5% of a share's articles, delete the source, repair from PAR2, download."""
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.bin").write_bytes(os.urandom(400_000))
    sid = publish(users, src, "--public")  # upload runs with the default --redundancy 10
    victims = _victims_per_group(users, src, 5)  # ~5%, each group within its recovery blocks
    for mid in victims:
        inn.cancel(mid)
    keep = snapshot(src)
    shutil.rmtree(src)
    r = users.as_("alice", "verify", "--json")
    assert r.code == 17 and _summary(r)["missing"] == len(victims)
    r = users.as_("alice", "verify", "--repair", "--json")
    assert r.code == 0, r.err
    rep = [x for x in r.json_lines() if x["type"] == "verify.repair"][0]
    assert rep["rebuilt_from_par2"] == len(victims) and rep["unrepairable"] == 0
    r = users.as_("bob", "download", sid, str(tmp_path / "dest"))
    assert r.code == 0, r.err
    assert snapshot(tmp_path / "dest") == keep


def test_download_repairs_from_par2_on_the_fly(users: Users, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.bin").write_bytes(os.urandom(400_000))
    sid = publish(users, src, "--public")
    *cancelled, corrupted = _victims_per_group(users, src, 4)  # each group within its recovery blocks
    for mid in cancelled:
        inn.cancel(mid)
    inn.corrupt(corrupted, 200)
    r = users.as_("bob", "download", sid, str(tmp_path / "dest"), "--json")
    assert r.code == 0, r.err
    summary = [x for x in r.json_lines() if x["type"] == "download.summary"][0]
    assert summary["segments_repaired"] == 4 and summary["damaged"] == []
    assert snapshot(tmp_path / "dest") == snapshot(src)


def test_download_reports_exactly_what_par2_cannot_rebuild(users: Users, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "lost.bin").write_bytes(os.urandom(400_000))
    (src / "fine.txt").write_bytes(b"small and fine")
    sid = publish(users, src, "--public")
    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        big = [message_ids(st, folder)[(sh, seg)] for sh, c in enumerate(st.shards)
               for (seg,) in c.execute("SELECT s.seg_id FROM segments s JOIN files f USING(file_id) WHERE f.name=?", (b"lost.bin",))]
    for mid in big[:8]:  # more than the group's recovery blocks
        inn.cancel(mid)
    r = users.as_("bob", "download", sid, str(tmp_path / "dest"))
    assert r.code == 16 and "lost.bin" in r.err
    assert (tmp_path / "dest" / "fine.txt").read_bytes() == b"small and fine"
    assert not (tmp_path / "dest" / "lost.bin").exists()


def _spawn(users: Users, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "USENETSYNC_HOME": str(users.homes["alice"])}
    return subprocess.Popen([sys.executable, "-m", "usenetsync_cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_9(proc: subprocess.Popen[bytes]) -> None:
    assert proc.poll() is None, f"the run ended before it was killed: {proc.communicate()[1]!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _through_proxy(users: Users, proxy: FaultProxy) -> None:
    """Point alice's only server at the fault proxy (same name, so nothing else changes)."""
    r = users.as_("alice", "server", "add", "local", "--host", proxy.host, "--port", str(proxy.port),
                  "--group", users.inn.group, "--replace", "--timeout", "300")
    assert r.code == 0, r.err


def _checked_since(users: Users, t0: int) -> int:
    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    with State.open(Home.resolve()) as st:
        return sum(c.execute("SELECT count(*) FROM segments WHERE checked_ns>?", (t0,)).fetchall()[0][0] for c in st.shards)


def _age_checks(users: Users, seconds: int) -> None:
    """Move every article's last check ``seconds`` into the past (what a day between sweeps does)."""
    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    with State.open(Home.resolve()) as st:
        for c in st.shards:
            with c:
                c.execute("UPDATE segments SET checked_ns=checked_ns-? WHERE checked_ns IS NOT NULL", (seconds * 10**9,))


def _reposted(users: Users) -> int:
    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    with State.open(Home.resolve()) as st:
        return sum(c.execute("SELECT count(*) FROM segments WHERE attempt>0 AND state>=1").fetchall()[0][0]
                   for c in st.shards)


def _wait(what: str, predicate, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` (a DB row count, a proxy counter) while ``proc`` lives; the timeout is only a safety net."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended while waiting for {what}: {proc.communicate()[1]!r}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


def test_kill_9_during_sweep_then_resume(users: Users, tmp_path: Path, inn: InnServer) -> None:
    """STAT replies are let through one at a time until a page is committed; then the sweep is killed."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(24):  # ~72 articles over most of the 16 shards: many small pages
        (src / f"f{i:02d}.bin").write_bytes(os.urandom(40_000))
    publish(users, src, "--public", upload_args=("--redundancy", "0"))
    total = len(_ids(users, src))
    _age_checks(users, 86_400)  # as if the last check (the upload's) was a day ago
    with FaultProxy(inn.host, inn.port) as proxy:
        _through_proxy(users, proxy)
        proxy.hold_replies(b"STAT", after=0)
        t0 = time.time_ns()
        proc = _spawn(users, "verify", "--connections", "2")
        try:
            released = 0
            while _checked_since(users, t0) == 0:
                assert released < total - 1, "the sweep committed nothing before its last reply"
                released += 1
                proxy.release_replies(1)
                _wait("STAT reply", lambda: proxy.replies_forwarded(b"STAT") >= released, proc)
            _kill_9(proc)  # its remaining replies are still held: it cannot have finished
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        done = _checked_since(users, t0)
        assert 0 < done < total
        assert done <= proxy.replies_forwarded(b"STAT")
    _through_proxy_undo(users)
    r = users.as_("alice", "verify", "--max-age", "1h", "--json")  # only what the killed sweep did not reach
    assert r.code == 0 and _summary(r)["checked"] == total - done


def _through_proxy_undo(users: Users) -> None:
    r = users.as_("alice", "server", "add", "local", "--host", users.inn.host, "--port", str(users.inn.port),
                  "--group", users.inn.group, "--replace")
    assert r.code == 0, r.err


def test_kill_9_during_repair_then_resume(users: Users, tmp_path: Path, inn: InnServer) -> None:
    """Ten re-posts are answered and committed, the next ones' replies held; then the repair is killed."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(2_000_000))
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))  # repaired from the source
    ids = sorted(_ids(users, src).values())
    for mid in ids[:40]:
        inn.cancel(mid)
    assert users.as_("alice", "verify").code == 17
    with FaultProxy(inn.host, inn.port) as proxy:
        _through_proxy(users, proxy)
        proxy.hold_replies(ARTICLE, after=10)
        proc = _spawn(users, "verify", "--repair")
        try:
            _wait("held re-post", lambda: proxy.faults_fired.get("hold_replies", 0) >= 1, proc)
            _wait("commit of the answered re-posts", lambda: _reposted(users) >= 10, proc)
            _kill_9(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        done = _reposted(users)
        assert proxy.replies_forwarded(ARTICLE) == 10
        assert 0 < done < 40
    _through_proxy_undo(users)
    r = users.as_("alice", "verify", "--repair", "--json")
    assert r.code == 0, r.err
    r = users.as_("alice", "verify", "--json")
    assert r.code == 0 and _summary(r)["missing"] == 0
    assert _reposted(users) == 40
    r = users.as_("bob", "download", sid, str(tmp_path / "dest"))
    assert r.code == 0, r.err
    assert snapshot(tmp_path / "dest") == snapshot(src)


def test_verify_checks_recovery_articles(users: Users, tmp_path: Path, inn: InnServer) -> None:
    from usenetsync_cli.pipeline.recovery import iter_layouts
    from usenetsync_cli.pipeline.upload import folder_context

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(300_000))
    publish(users, src, "--public")
    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        ctx = folder_context(folder, ())
        rec = [mid for lay in iter_layouts(st, folder, ctx) for _i, mid in lay.recovery_ids(ctx)]
    assert rec
    inn.cancel(rec[0])
    r = users.as_("alice", "verify", "--json")
    s = _summary(r)
    assert s["recovery_checked"] == len(rec) and s["recovery_missing"] == 1


def test_lost_share_index_is_reported_and_republished(users: Users, tmp_path: Path, inn: InnServer) -> None:
    from tests.cli.test_share_download import _index_ids

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(50_000))
    sid = publish(users, src, "--public")
    root, *parts = _index_ids(users)
    inn.cancel(parts[0])
    r = users.as_("alice", "verify", "--json")
    assert r.code == 17
    (idx,) = [x for x in r.json_lines() if x["type"] == "verify.share_index"]
    assert idx["missing"] == 1
    r = users.as_("alice", "verify", "--repair")
    assert r.code == 0 and "published share 's' version 2" in r.err
    r = users.as_("bob", "download", sid, str(tmp_path / "dest"))
    assert r.code == 0, r.err
    assert (tmp_path / "dest" / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
