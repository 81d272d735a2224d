"""Upload faults, injected by a TCP proxy in front of the real INN.

Each fault either recovers (with backoff, nothing lost, every article
verified on the real server) or stops with a clear typed error, state
intact, and a later run completes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pipeline.upload_support import SEG, indexed, make_tree, message_ids, read_back, spec_for
from tests.support.faultproxy import FaultProxy
from tests.support.inn import InnServer
from usenetsync_cli.errors import AuthError, NetworkError, ServerRefusedError
from usenetsync_cli.pipeline.poster import PosterOptions
from usenetsync_cli.pipeline.upload import UploadOptions, upload_folder
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

FAST = PosterOptions(backoff_base=0.05, backoff_cap=0.2, max_retries=6, max_reconnects=4)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    with State.open(Home.resolve(tmp_path / "home")) as s:
        yield s


@pytest.fixture
def proxy(inn: InnServer) -> Iterator[FaultProxy]:
    with FaultProxy(inn.host, inn.port) as p:
        yield p


@pytest.fixture
def job(state: State, tmp_path: Path) -> tuple[catalog.Folder, dict[bytes, bytes]]:
    src = tmp_path / "src"
    files = make_tree(src, large=2, small=12)
    return indexed(state, src), files


def _opts(proxy: FaultProxy, *, connections: int = 2, timeout: float = 5.0, **kw: object) -> UploadOptions:
    spec = spec_for("127.0.0.1", proxy.port, connections=connections, timeout=timeout)
    return UploadOptions(servers=[spec], segment_size=SEG, check_delay=0, poster=FAST, **kw)  # type: ignore[arg-type]


def _all_there(state: State, folder: catalog.Folder, files: dict[bytes, bytes], inn: InnServer) -> None:
    ids = message_ids(state, folder)
    assert all(inn.stat(m) == 223 for m in ids.values())
    assert read_back(state, folder) == files


def test_drop_mid_article_recovers(state: State, proxy: FaultProxy, job, inn: InnServer) -> None:  # type: ignore[no-untyped-def]
    folder, files = job
    proxy.drop_after_client_bytes(SEG + SEG // 2, times=2)
    s = upload_folder(state, folder, _opts(proxy))
    assert proxy.faults_fired["drop"] == 2
    assert s.complete and s.retries >= 2
    _all_there(state, folder, files, inn)


def test_stall_past_timeout_recovers(state: State, proxy: FaultProxy, job, inn: InnServer) -> None:  # type: ignore[no-untyped-def]
    folder, files = job
    proxy.stall(3.0, after_client_bytes=SEG, times=1)
    s = upload_folder(state, folder, _opts(proxy, timeout=1.0))
    assert proxy.faults_fired["stall"] == 1 and s.complete and s.retries >= 1
    _all_there(state, folder, files, inn)


@pytest.mark.parametrize("reply", [b"400 service going down", b"503 overloaded"])
def test_transient_replies_back_off_and_recover(state: State, proxy: FaultProxy, job, inn: InnServer, reply: bytes) -> None:  # type: ignore[no-untyped-def]
    folder, files = job
    proxy.inject_reply(b"POST", reply, times=3)
    s = upload_folder(state, folder, _opts(proxy))
    assert proxy.faults_fired["inject_reply"] == 3 and s.complete and s.retries >= 3
    _all_there(state, folder, files, inn)


def test_441_rejection_fails_the_segment_then_resume_completes(state: State, proxy: FaultProxy, job, inn: InnServer) -> None:  # type: ignore[no-untyped-def]
    folder, files = job
    proxy.inject_after_article(b"441 437 Rejected by policy", times=1)
    s = upload_folder(state, folder, _opts(proxy))
    assert not s.complete and s.failed == 1 and s.rejected == 1
    assert "437" in " ".join(s.errors)
    s2 = upload_folder(state, folder, _opts(proxy))
    assert s2.complete and s2.posted_now == 1
    _all_there(state, folder, files, inn)


def test_lost_reply_is_confirmed_by_stat_exactly_once(state: State, proxy: FaultProxy, job, inn: InnServer) -> None:  # type: ignore[no-untyped-def]
    """The server stored the article but the 240 never came: the re-post gets 441 435, STAT confirms."""
    folder, files = job
    proxy.lose_reply_after_article(times=1)
    s = upload_folder(state, folder, _opts(proxy))
    assert proxy.faults_fired["lose_reply_after_article"] == 1
    assert s.complete and s.duplicates_confirmed == 1
    # exactly once: nothing was re-posted under attempt 1
    rows = [r for c in state.shards for r in c.execute("SELECT attempt FROM segments WHERE state=2")]
    assert all(a == 0 for (a,) in rows)
    _all_there(state, folder, files, inn)


def test_too_many_connections_uses_fewer(state: State, proxy: FaultProxy, job, inn: InnServer) -> None:  # type: ignore[no-untyped-def]
    folder, files = job
    proxy.max_connections(2)  # the checker holds one; so only one poster fits
    s = upload_folder(state, folder, _opts(proxy, connections=4))
    assert proxy.faults_fired["max_connections"] >= 1 and s.complete
    _all_there(state, folder, files, inn)


def test_server_down_at_start_is_a_clear_network_error(state: State, proxy: FaultProxy, job, inn: InnServer) -> None:  # type: ignore[no-untyped-def]
    folder, files = job
    proxy.down()
    with pytest.raises(NetworkError, match="cannot connect"):
        upload_folder(state, folder, _opts(proxy))
    assert not message_ids(state, folder)  # nothing marked posted
    proxy.up()
    assert upload_folder(state, folder, _opts(proxy)).complete
    _all_there(state, folder, files, inn)


def test_server_dies_mid_run_stops_cleanly_and_resumes(state: State, proxy: FaultProxy, job, inn: InnServer) -> None:  # type: ignore[no-untyped-def]
    folder, files = job
    killer = threading.Thread(
        target=lambda: (proxy.wait_for(lambda: proxy.bytes_client_to_server > SEG * 4, timeout=20), proxy.down())
    )
    killer.start()
    with pytest.raises(NetworkError, match="progress is saved"):
        upload_folder(state, folder, _opts(proxy))
    killer.join()
    proxy.up()
    posted = message_ids(state, folder)
    assert all(inn.stat(m) == 223 for m in posted.values())  # never "posted" without a 240
    proxy.clear_faults()
    s = upload_folder(state, folder, _opts(proxy))
    assert s.complete
    _all_there(state, folder, files, inn)


def test_every_connection_dropping_repeatedly_still_completes(state: State, proxy: FaultProxy, job, inn: InnServer) -> None:  # type: ignore[no-untyped-def]
    folder, files = job
    proxy.drop_after_client_bytes(SEG * 3, times=5)  # connections die again and again, mid-article
    s = upload_folder(state, folder, _opts(proxy))
    assert proxy.faults_fired["drop"] >= 2 and s.complete and s.reconnects >= proxy.faults_fired["drop"]
    _all_there(state, folder, files, inn)


def test_posting_not_allowed_is_fatal_and_typed(state: State, proxy: FaultProxy, job) -> None:  # type: ignore[no-untyped-def]
    folder, _ = job
    proxy.inject_reply(b"", b"201 server ready - no posting allowed", times=None)
    with pytest.raises(ServerRefusedError, match="does not allow posting"):
        upload_folder(state, folder, _opts(proxy))
    proxy.clear_faults()
    proxy.inject_reply(b"POST", b"440 posting not permitted", times=None)
    with pytest.raises(ServerRefusedError):
        upload_folder(state, folder, _opts(proxy))
    assert not message_ids(state, folder)


def test_wrong_password_is_an_auth_error(state: State, job, inn: InnServer) -> None:  # type: ignore[no-untyped-def]
    folder, _ = job
    spec = spec_for(inn.host, inn.auth_port, user=inn.user, password="wrong-secret-xyz")
    with pytest.raises(AuthError) as ei:
        upload_folder(state, folder, UploadOptions(servers=[spec], segment_size=SEG, poster=FAST))
    assert "wrong-secret-xyz" not in str(ei.value) and "wrong-secret-xyz" not in repr(ei.value)


def test_480_mid_session_reauthenticates(state: State, job, inn: InnServer) -> None:  # type: ignore[no-untyped-def]
    folder, files = job
    with FaultProxy(inn.host, inn.auth_port) as proxy:
        proxy.inject_reply(b"POST", b"480 authentication required", times=2)
        spec = spec_for("127.0.0.1", proxy.port, user=inn.user, password=inn.password)
        s = upload_folder(state, folder, UploadOptions(servers=[spec], segment_size=SEG, check_delay=0, poster=FAST))
        assert proxy.faults_fired["inject_reply"] == 2 and s.complete
    _all_there(state, folder, files, inn)
