"""The NNTP client against the real INN 2.7 on 127.0.0.1 (DESIGN.md §8).

Ports: 119 (no auth), 1190 (AUTHINFO testuser/testpass), 563 (implicit TLS,
self-signed /etc/news/cert.pem, same auth). Every article gets a fresh
uuid4 Message-ID so tests never collide with each other or earlier runs.
"""

from __future__ import annotations

import email.utils
import os
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest
import sabctools

from usenetsync_cli import errors
from usenetsync_cli.nntp import (
    Article,
    ArticleMissing,
    AuthFailed,
    AuthRequired,
    ConnectFailed,
    Connection,
    ConnectionLost,
    DuplicateArticle,
    NNTPTimeout,
    PostRejected,
    ReplyTooLarge,
    ServerSpec,
    TLSVerifyFailed,
)

pytestmark = pytest.mark.inn

HOST = "127.0.0.1"
USER, PASSWORD = "testuser", "testpass"
CERT = "/etc/news/cert.pem"
GROUP = "alt.binaries.test"

PLAIN = ServerSpec("inn", HOST, 119, timeout=10.0, groups=(GROUP,))
AUTH = ServerSpec("inn-auth", HOST, 1190, user=USER, password=PASSWORD, timeout=10.0)
TLS = ServerSpec("inn-tls", HOST, 563, tls=True, user=USER, password=PASSWORD, ca_file=CERT, timeout=10.0)


def new_id() -> str:
    return f"<{uuid.uuid4().hex}@test.invalid>"


def headers(msgid: str, group: str = GROUP) -> bytes:
    return (
        "From: Tester <tester@test.invalid>\r\n"
        f"Newsgroups: {group}\r\n"
        f"Subject: nntp test {uuid.uuid4().hex[:8]}\r\n"
        f"Message-ID: {msgid}\r\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
        "\r\n"
    ).encode()


@pytest.fixture
def conn() -> Iterator[Connection]:
    with Connection(PLAIN) as c:
        yield c


def test_post_and_stat(conn: Connection) -> None:
    msgid = new_id()
    assert conn.greeting is not None and conn.greeting.code == 200
    assert conn.post((headers(msgid), b"hello\r\n"), msgid) == msgid
    assert conn.stat(msgid) is True
    assert conn.stat(new_id()) is False
    # A second, fresh connection sees it too (posts are readable at once).
    with Connection(PLAIN) as other:
        assert other.stat(msgid) is True


def test_post_returns_server_id_without_expect_id(conn: Connection) -> None:
    msgid = new_id()
    assert conn.post(headers(msgid) + b"x\r\n") == msgid


def test_dot_lines_round_trip_byte_exact(conn: Connection) -> None:
    msgid = new_id()
    # No NUL: NNTP forbids it and INN silently cuts the line there (yEnc escapes NUL).
    body = b".\r\n..\r\n.leading\r\n..double\r\n...\r\nmid.dle\r\n \t.\r\n\xff\x80 8-bit\r\n."
    conn.post([headers(msgid), body], msgid)
    got = conn.body(msgid)
    # The missing final CRLF is added on the way out; the rest is byte-exact.
    assert got == body + b"\r\n"
    assert conn.body(new_id()) is None


def test_yenc_article_round_trip_large() -> None:
    data = os.urandom(768_000)
    encoded, crc = sabctools.yenc_encode(data)
    name = uuid.uuid4().hex
    body = b"".join(
        [
            b"=ybegin part=1 total=1 line=128 size=%d name=%s\r\n" % (len(data), name.encode()),
            b"=ypart begin=1 end=%d\r\n" % len(data),
            encoded,
            b"\r\n=yend size=%d part=1 pcrc32=%08x crc32=%08x\r\n" % (len(data), crc, crc),
        ]
    )
    # sabctools escapes a leading '.', so the fast path (no copy) applies.
    assert b"\r\n." not in body
    msgid = new_id()
    for spec in (PLAIN, TLS):
        msgid = new_id()
        with Connection(spec) as c:
            c.post((headers(msgid), body), msgid)
            assert c.body(msgid) == body


def test_duplicate_message_id(conn: Connection) -> None:
    msgid = new_id()
    conn.post((headers(msgid), b"first\r\n"), msgid)
    with pytest.raises(DuplicateArticle) as ei:
        conn.post((headers(msgid), b"second\r\n"), msgid)
    err = ei.value
    assert err.subcode == 435 and err.message_id == msgid
    assert not err.retryable and not err.fatal_for_server
    assert isinstance(err, errors.ServerRefusedError)
    # The session is still usable after a 441.
    assert conn.stat(msgid) is True


def test_unknown_group_is_rejected(conn: Connection) -> None:
    msgid = new_id()
    with pytest.raises(PostRejected) as ei:
        conn.post((headers(msgid, group="alt.nonexistent.usenetsync"), b"x\r\n"), msgid)
    err = ei.value
    assert type(err) is PostRejected and err.subcode is None
    assert "No valid newsgroups" in str(err)
    assert conn.stat(msgid) is False
    with pytest.raises(ArticleMissing):
        conn.group("alt.nonexistent.usenetsync")
    info = conn.group(GROUP)
    assert info.name == GROUP and info.high >= info.low


def test_auth_wrong_password() -> None:
    spec = ServerSpec("inn-auth", HOST, 1190, user=USER, password="wrong-Pa55word", timeout=10.0)
    with Connection(spec) as c:
        with pytest.raises(AuthFailed) as ei:
            c.authenticate()
    err = ei.value
    assert err.fatal_for_server and not err.retryable
    assert isinstance(err, errors.AuthError) and err.exit_code == errors.AuthError.exit_code
    for text in (str(err), repr(err), repr(spec), repr(c)):
        assert "wrong-Pa55word" not in text


def test_auth_right_password() -> None:
    with Connection(AUTH) as c:
        c.authenticate()
        assert c.authenticated
        msgid = new_id()
        assert c.post((headers(msgid), b"authed\r\n"), msgid) == msgid
        assert c.stat(msgid) is True


def test_480_triggers_automatic_login() -> None:
    with Connection(AUTH) as c:
        assert not c.authenticated
        assert c.stat(new_id()) is False  # 480 -> AUTHINFO -> STAT again
        assert c.authenticated
    with Connection(AUTH) as c:
        msgid = new_id()
        assert c.post((headers(msgid), b"auto\r\n"), msgid) == msgid  # 480 on POST too
    with Connection(AUTH) as c:
        ids = [new_id() for _ in range(50)]
        assert list(c.stat_many(ids)) == [(i, False) for i in ids]  # 480 on a pipeline


def test_480_without_credentials() -> None:
    spec = ServerSpec("inn-auth", HOST, 1190, timeout=10.0)
    with Connection(spec) as c:
        with pytest.raises(AuthRequired) as ei:
            c.stat(new_id())
    assert ei.value.fatal_for_server


def test_tls_with_ca_file() -> None:
    with Connection(TLS) as c:
        msgid = new_id()
        c.post((headers(msgid), b"over tls\r\n.dot\r\n"), msgid)  # 480 -> login over TLS
        assert c.stat(msgid) is True
        assert c.body(msgid) == b"over tls\r\n.dot\r\n"
        assert list(c.stat_many([msgid, new_id()]))[0] == (msgid, True)


def test_tls_without_ca_file_fails_verification() -> None:
    spec = ServerSpec("inn-tls", HOST, 563, tls=True, user=USER, password=PASSWORD, timeout=10.0)
    with pytest.raises(TLSVerifyFailed) as ei:
        Connection(spec).connect()
    err = ei.value
    assert isinstance(err, errors.NetworkError) and err.fatal_for_server
    assert "certificate verification failed" in str(err)
    assert "ca_file" in err.hint and "insecure" in err.hint


def test_tls_insecure() -> None:
    spec = ServerSpec("inn-tls", HOST, 563, tls=True, user=USER, password=PASSWORD, insecure=True, timeout=10.0)
    with Connection(spec) as c:
        c.authenticate()
        assert c.stat(new_id()) is False


def _post_many(count: int, connections: int = 4) -> list[str]:
    ids = [new_id() for _ in range(count)]

    def worker(part: list[str]) -> None:
        with Connection(PLAIN) as c:
            for msgid in part:
                c.post((headers(msgid), b"small\r\n"), msgid)

    threads = [threading.Thread(target=worker, args=(ids[i::connections],)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ids


def test_stat_many_pipelined() -> None:
    posted = _post_many(2000)
    missing = {new_id() for _ in range(150)}
    query = list(posted)
    for i, msgid in enumerate(sorted(missing)):
        query.insert(i * 13, msgid)
    with Connection(PLAIN) as c:
        assert len({i for i, _ in c.stat_many([posted[0]])}) == 1
        for window in (1, 7, 64, 500):
            result = list(c.stat_many(query, window=window))
            assert [m for m, _ in result] == query
            assert all(present is (m not in missing) for m, present in result)
        # Abandoning a pipeline halfway drains it: the session stays in step.
        gen = c.stat_many(query, window=64)
        for _ in range(10):
            next(gen)
        gen.close()
        assert c.stat(posted[-1]) is True
        assert c.stat(sorted(missing)[0]) is False


def test_body_many_pipelined(conn: Connection) -> None:
    bodies = {}
    for i in range(20):
        msgid = new_id()
        bodies[msgid] = b".%d\r\n" % i + os.urandom(3000).hex().encode() + b"\r\n"
        conn.post((headers(msgid), bodies[msgid]), msgid)
    gone = new_id()
    query = [*bodies, gone]
    query.insert(5, gone)
    result = list(conn.body_many(query, window=4))
    assert [m for m, _ in result] == query
    for msgid, body in result:
        assert body == bodies.get(msgid)


def test_connection_refused_is_network_error() -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ConnectFailed) as ei:
        Connection(ServerSpec("nowhere", HOST, port, timeout=5.0)).connect()
    assert isinstance(ei.value, errors.NetworkError)
    assert ei.value.retryable


def test_silent_and_closing_peers_are_transient() -> None:
    # Network faults, not a fake NNTP server: a listener that never speaks
    # (stall) and one that hangs up at once (reset/EOF).
    with socket.socket() as lsock:
        lsock.bind((HOST, 0))
        lsock.listen(4)
        port = lsock.getsockname()[1]
        with pytest.raises(NNTPTimeout) as ei:
            Connection(ServerSpec("stall", HOST, port, timeout=0.5)).connect()
        assert ei.value.retryable and "timeout" in str(ei.value)

        def hang_up() -> None:
            peer, _ = lsock.accept()
            peer.close()

        lsock.accept()[0].close()  # the stalled one
        t = threading.Thread(target=hang_up)
        t.start()
        with pytest.raises(ConnectionLost) as ei2:
            Connection(ServerSpec("eof", HOST, port, timeout=5.0)).connect()
        t.join()
        assert ei2.value.retryable and "connection lost" in str(ei2.value)


def test_spec_repr_hides_password() -> None:
    assert PASSWORD not in repr(AUTH)
    assert "password" not in repr(AUTH)
    with pytest.raises(errors.ConfigError):
        ServerSpec("bad", HOST, 119, user="u\r\nQUIT", password="p")


def test_fetched_bodies_decode_in_order_and_report_missing() -> None:
    """BODY replies decoded by sabctools straight from the socket: dot lines, missing IDs, order."""
    import os
    import uuid

    from usenetsync_cli.core.article import build_article
    from usenetsync_cli.nntp import Connection, ServerSpec

    conn = Connection(ServerSpec(name="t", host="127.0.0.1", port=119))
    conn.connect()
    payloads = {}
    for i in range(6):
        mid = f"<{uuid.uuid4().hex}@test.invalid>"
        data = b"." * 3000 + os.urandom(500) if i == 1 else os.urandom(50_000 + i)
        conn.post(build_article(message_id=mid, subject="s", poster="p <p@example.invalid>",
                                newsgroups=["alt.binaries.test"], date="Mon, 23 Nov 2026 20:00:00 GMT",
                                payload=data, yenc_name="n"), mid)
        payloads[mid] = data
    ids = list(payloads)
    ids.insert(3, f"<{uuid.uuid4().hex}@missing.invalid>")
    from usenetsync_cli.pipeline.fetch import OUR_ARTICLE_LIMIT, FetchJob, fetch_results

    got = [(job.message_id, art) for job, art in fetch_results(conn, (FetchJob(m, OUR_ARTICLE_LIMIT) for m in ids),
                                                              window=3)]
    assert [m for m, _ in got] == ids
    for mid, art in got:
        if mid in payloads:
            assert art is not None and not isinstance(art, str) and bytes(art.data) == payloads[mid] and art.crc_ok
        else:
            assert art is None
    assert conn.stat(ids[0])  # the session is still in step
    conn.close()


def _post_yenc(conn: Connection, data: bytes) -> str:
    from usenetsync_cli.core.article import build_article

    mid = new_id()
    conn.post(build_article(message_id=mid, subject="s", poster="p <p@example.invalid>", newsgroups=[GROUP],
                            date=email.utils.formatdate(usegmt=True), payload=data, yenc_name="n"), mid)
    return mid


def test_body_bound_abandons_the_session(conn: Connection) -> None:
    data = os.urandom(40_000)
    mid = _post_yenc(conn, data)
    with pytest.raises(ReplyTooLarge, match="larger than expected") as ei:
        conn.body(mid, max_bytes=10_000)
    assert "inn (127.0.0.1:119)" in str(ei.value) and "\n" not in str(ei.value)
    assert conn.closed  # the rest of the reply was never read: the session cannot be reused
    with Connection(PLAIN) as c:
        body = c.body(mid, max_bytes=60_000)
        assert body is not None and len(body) < 60_000
        assert [len(b or b"") for _, b in c.body_many([mid, mid], max_bytes=60_000)] == [len(body)] * 2
        with pytest.raises(ReplyTooLarge):
            list(c.body_many([mid, mid], max_bytes=len(body) - 1))


class _Req:
    def __init__(self, message_id: str, limit: int) -> None:
        self.message_id, self.limit = message_id, limit


def test_fetch_articles_bounds_each_reply_and_names_the_oldest(conn: Connection) -> None:
    small, big = os.urandom(5_000), os.urandom(300_000)  # far past 20,000 + one receive (64 KiB)
    a, b, c = _post_yenc(conn, small), _post_yenc(conn, big), _post_yenc(conn, small)
    gone = new_id()
    reqs = [_Req(a, 20_000), _Req(gone, 20_000), _Req(b, 20_000), _Req(c, 20_000)]
    queue = list(reqs)

    def take(n: int) -> list[_Req]:
        out = queue[:n]
        del queue[:n]
        return out

    got: list[tuple[str, object]] = []
    with pytest.raises(ReplyTooLarge, match="over 20,000 bytes"):
        for req, result in conn.fetch_articles(take, window=8):
            got.append((req.message_id, result))
    # Replies are checked in order; the one past its bound is the oldest not yielded (b).
    assert [m for m, _ in got] == [a, gone]
    first = got[0][1]
    assert isinstance(first, Article) and bytes(first.data) == small and first.crc_ok
    assert got[1][1] is None
    assert conn.closed
    with Connection(PLAIN) as fresh:  # the same requests with a fitting bound
        queue[:] = [_Req(b, 400_000), _Req(c, 20_000)]
        results = [r for _, r in fresh.fetch_articles(take, window=1)]
        assert [bytes(r.data) for r in results if isinstance(r, Article)] == [big, small]
        assert fresh.stat(a)  # still in step
