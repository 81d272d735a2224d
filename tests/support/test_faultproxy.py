"""Tests of the fault proxy itself, against the real INN.

Owns: evidence that every fault in ``tests.support.faultproxy`` does exactly
what integration tests rely on, judged by what the *server* ends up storing
(checked over a direct connection, never through the proxy).

Invariants checked: swallowed articles are never stored; a lost reply means
the article *is* stored; after any non-closing injection the connection stays
in step with the server (the next command gets its own reply); faults count
their firings; stop() leaks no threads or sockets; held replies come out
exactly as far as released, in order; the article log names each article's
Message-ID, fate and reply.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.support.faultproxy import ARTICLE, FaultProxy
from tests.support.inn import InnServer, fresh_message_id
from tests.support.rawnntp import RawNNTP, dot_stuff, make_article


@pytest.fixture
def proxy(inn: InnServer) -> Iterator[FaultProxy]:
    with FaultProxy(inn.host, inn.port) as p:
        yield p


def connect(p: FaultProxy, timeout: float = 5.0) -> RawNNTP:
    return RawNNTP(p.host, p.port, timeout=timeout)


def article_for(inn: InnServer, tag: str, body: bytes = b"hello\r\n") -> tuple[str, bytes]:
    mid = fresh_message_id(tag)
    return mid, make_article(mid, body, group=inn.group)


def assert_in_step(conn: RawNNTP, inn: InnServer) -> None:
    """The next command on ``conn`` gets its own reply: post+stat a fresh article."""
    mid, art = article_for(inn, "sync")
    assert conn.post(art)[0] == 240
    assert conn.stat(mid) == 223
    assert inn.stat(mid) == 223


def assert_closed(conn: RawNNTP) -> None:
    """The proxy closed the connection: EOF or reset, with no further reply."""
    with pytest.raises((EOFError, ConnectionError)):
        conn.read_line()


# ------------------------------------------------------------------ pass-through --
def test_transparent_post_body_and_pipelining(proxy: FaultProxy, inn: InnServer) -> None:
    body = b"line one\r\n.starts with dot\r\n..two dots\r\n.\r\n" + b"x" * 5000 + b"\r\n"
    mid, art = article_for(inn, "plain", body)
    with connect(proxy) as conn:
        assert conn.greeting is not None and conn.greeting[0] == 200
        assert conn.post(art)[0] == 240
        assert conn.body(mid) == body  # multi-line reply forwarded byte-exact
        # Pipelined commands: replies must come back in order and unaltered.
        missing = fresh_message_id("missing")
        conn.send_raw(f"STAT {mid}\r\nSTAT {missing}\r\nBODY {mid}\r\nSTAT {mid}\r\n".encode())
        assert conn.read_status()[0] == 223
        assert conn.read_status()[0] == 430
        assert conn.read_status()[0] == 222
        assert conn.read_block() == body
        assert conn.read_status()[0] == 223
    assert inn.stat(mid) == 223
    assert proxy.connections_total == 1
    assert proxy.bytes_client_to_server > len(art)
    assert proxy.faults_fired == {}


# ----------------------------------------------------------------- inject_reply --
def test_inject_441_on_post_never_sends_article(proxy: FaultProxy, inn: InnServer) -> None:
    proxy.inject_reply(b"POST", b"441 437 rejected\r\n")
    mid, art = article_for(inn, "inj441")
    with connect(proxy) as conn:
        assert conn.post(art) == (441, "437 rejected")
        assert inn.stat(mid) == 430
        assert_in_step(conn, inn)  # times=1: the second POST goes through
    assert proxy.faults_fired == {"inject_reply": 1}


def test_inject_without_swallow_replaces_server_reply(proxy: FaultProxy, inn: InnServer) -> None:
    mid, art = article_for(inn, "noswallow")
    assert inn.post(art)[0] == 240
    proxy.inject_reply(b"stat", b"430 injected", swallow=False)  # prefix is case-insensitive
    with connect(proxy) as conn:
        assert conn.command(f"STAT {mid}") == (430, "injected")
        assert conn.stat(mid) == 223  # the server's real 223 was discarded, not queued


def test_inject_without_swallow_on_post_unsticks_server(proxy: FaultProxy, inn: InnServer) -> None:
    # The server answered 340 but the client saw 441: the proxy must end the server's article.
    proxy.inject_reply(b"POST", b"441 no", swallow=False)
    mid, art = article_for(inn, "unstick")
    with connect(proxy) as conn:
        assert conn.post(art)[0] == 441
        assert_in_step(conn, inn)
    assert inn.stat(mid) == 430


def test_inject_400_closes_connection(proxy: FaultProxy, inn: InnServer) -> None:
    proxy.inject_reply(b"STAT", b"400 service going down")
    with connect(proxy) as conn:
        assert conn.command(f"STAT {fresh_message_id('x')}") == (400, "service going down")
        assert_closed(conn)


def test_inject_auth_replies_on_auth_port(inn: InnServer) -> None:
    with FaultProxy(inn.host, inn.auth_port) as p:
        p.inject_reply(b"AUTHINFO PA", b"502 second")
        p.inject_reply(b"AUTHINFO PASS", b"481 injected failure")  # longest prefix first
        p.inject_reply(b"POST", b"480 auth required")
        with connect(p) as conn:
            assert conn.login(inn.user, inn.password) == (481, "injected failure")
            assert conn.login(inn.user, inn.password) == (502, "second")
            assert conn.login(inn.user, inn.password)[0] == 281
            assert conn.command("POST") == (480, "auth required")
            assert_in_step(conn, inn)
        assert p.faults_fired == {"inject_reply": 3}


def test_inject_reply_rejects_340() -> None:
    p = FaultProxy("127.0.0.1", 9)
    with pytest.raises(ValueError):
        p.inject_reply(b"POST", b"340 send it")
    with pytest.raises(ValueError):
        p.inject_reply(b"POST", b"oops")


# -------------------------------------------------------------------- greeting --
def test_greeting_injection_502_closes_without_upstream(proxy: FaultProxy, inn: InnServer) -> None:
    proxy.inject_reply(b"", b"502 too many connections")
    with connect(proxy) as conn:
        assert conn.greeting == (502, "too many connections")
        assert_closed(conn)
    with connect(proxy) as conn:  # times=1: next connection is normal
        assert conn.greeting is not None and conn.greeting[0] == 200
    assert proxy.faults_fired == {"inject_greeting": 1}
    assert proxy.connections_total == 2


def test_greeting_injection_replaces_server_greeting(proxy: FaultProxy, inn: InnServer) -> None:
    proxy.inject_reply(b"", b"400 shutting down", swallow=False)
    with connect(proxy) as conn:
        assert conn.greeting == (400, "shutting down")
        assert_closed(conn)
    # A non-error replacement keeps the session usable.
    proxy.inject_reply(b"", b"201 fake greeting", swallow=False)
    with connect(proxy) as conn:
        assert conn.greeting == (201, "fake greeting")
        assert_in_step(conn, inn)


# ------------------------------------------------------------- article faults --
def test_inject_after_article_swallows_and_keeps_sync(proxy: FaultProxy, inn: InnServer) -> None:
    proxy.inject_after_article(b"441 437 rejected")
    mid, art = article_for(inn, "after")
    with connect(proxy) as conn:
        assert conn.post(art) == (441, "437 rejected")
        assert_in_step(conn, inn)
    assert inn.stat(mid) == 430
    assert proxy.faults_fired == {"inject_after_article": 1}


def test_inject_after_article_400_closes(proxy: FaultProxy, inn: InnServer) -> None:
    proxy.inject_after_article(b"400 going down")
    mid, art = article_for(inn, "after400")
    with connect(proxy) as conn:
        assert conn.post(art)[0] == 400
        assert_closed(conn)
    assert inn.stat(mid) == 430


def test_article_terminator_split_across_tiny_writes(proxy: FaultProxy, inn: InnServer) -> None:
    # The proxy must find CRLF.CRLF across TCP segment boundaries and ignore
    # look-alikes inside the body (stuffed "..", a lone "." mid-line).
    proxy.inject_after_article(b"441 swallowed")
    body = b"a.\r\n..\r\n. x\r\n.\rnot end\r\n"
    mid, art = article_for(inn, "split", body)
    wire = dot_stuff(art) + b".\r\n"
    with connect(proxy) as conn:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert conn.command("POST")[0] == 340
        split = len(wire) - 12
        conn.send_raw(wire[:split])
        for i in range(split, len(wire)):
            conn.send_raw(wire[i : i + 1])
            time.sleep(0.005)  # separate segments, so the proxy sees 1-byte reads
        assert conn.read_status() == (441, "swallowed")
        assert_in_step(conn, inn)
    assert inn.stat(mid) == 430


def test_lose_reply_after_article_stores_but_never_answers(proxy: FaultProxy, inn: InnServer) -> None:
    proxy.lose_reply_after_article()
    mid, art = article_for(inn, "lose")
    with connect(proxy) as conn:
        assert conn.command("POST")[0] == 340
        conn.send_raw(dot_stuff(art) + b".\r\n")
        assert_closed(conn)
    assert inn.stat(mid) == 223
    # The retry path a client will take: same id again is a duplicate.
    code, text = inn.post(art)
    assert (code, text) == (441, "435 Duplicate")
    assert proxy.faults_fired == {"lose_reply_after_article": 1}


def test_drop_mid_article_is_exact_reset_and_not_stored(proxy: FaultProxy, inn: InnServer) -> None:
    mid, art = article_for(inn, "drop", b"y" * 60 + b"\r\n" * 1 + (b"z" * 98 + b"\r\n") * 200)
    with connect(proxy) as conn:
        assert conn.command("POST")[0] == 340
        before = proxy.bytes_client_to_server
        proxy.drop_after_client_bytes(5000)
        with pytest.raises(ConnectionError):
            conn.send_raw(dot_stuff(art) + b".\r\n")
            conn.read_line()
    proxy.wait_fired("drop")
    assert proxy.bytes_client_to_server - before == 5000
    assert inn.stat(mid) == 430
    with connect(proxy) as conn:  # times=1: new connections are unaffected
        assert_in_step(conn, inn)


def test_drop_sends_rst(proxy: FaultProxy) -> None:
    with connect(proxy) as conn:
        proxy.drop_after_client_bytes(0)
        conn.send_raw(b"DATE\r\n")
        with pytest.raises(ConnectionResetError):
            conn.read_line()
    assert proxy.faults_fired == {"drop": 1}


# ----------------------------------------------------------------------- stall --
def test_stall_delays_reply_past_client_timeout(proxy: FaultProxy, inn: InnServer) -> None:
    mid, art = article_for(inn, "stall")
    assert inn.post(art)[0] == 240
    with connect(proxy) as conn:
        proxy.stall(0.8)
        # Raw recv, not the file: a timed-out makefile() object refuses further reads.
        conn.sock.settimeout(0.3)
        start = time.monotonic()
        conn.send_raw(f"STAT {mid}\r\n".encode())
        with pytest.raises(TimeoutError):
            conn.sock.recv(100)
        conn.sock.settimeout(5)
        assert conn.sock.recv(100).startswith(b"223 ")  # held, not lost
        assert time.monotonic() - start >= 0.75
        start = time.monotonic()
        assert conn.stat(mid) == 223  # times=1: no further delay
        assert time.monotonic() - start < 0.5
    assert proxy.faults_fired == {"stall": 1}


def test_stall_after_client_bytes(proxy: FaultProxy, inn: InnServer) -> None:
    mid, art = article_for(inn, "stallafter")
    assert inn.post(art)[0] == 240
    line = f"STAT {mid}\r\n".encode()
    with connect(proxy) as conn:
        proxy.stall(0.6, after_client_bytes=len(line) + 1)
        start = time.monotonic()
        assert conn.stat(mid) == 223  # below the threshold: prompt
        assert time.monotonic() - start < 0.4
        assert conn.stat(mid) == 223  # crosses it: held
        assert time.monotonic() - start >= 0.55


# ------------------------------------------------------------------ connections --
def test_refuse_connections(proxy: FaultProxy) -> None:
    proxy.refuse_connections(1)
    with RawNNTP(proxy.host, proxy.port, read_greeting=False, timeout=5) as conn:
        assert conn.sock.recv(100) == b""
    with connect(proxy) as conn:
        assert conn.greeting is not None and conn.greeting[0] == 200
    proxy.refuse_connections()  # all, until cleared
    for _ in range(3):
        with RawNNTP(proxy.host, proxy.port, read_greeting=False, timeout=5) as conn:
            assert conn.sock.recv(100) == b""
    proxy.refuse_connections(0)
    with connect(proxy) as conn:
        assert conn.greeting is not None and conn.greeting[0] == 200
    assert proxy.faults_fired == {"refuse": 4}
    assert proxy.connections_total == 6


def test_max_connections(proxy: FaultProxy) -> None:
    proxy.max_connections(1)
    first = connect(proxy)
    try:
        assert first.greeting is not None and first.greeting[0] == 200
        with connect(proxy) as second:
            assert second.greeting == (502, "too many connections")
            assert_closed(second)
    finally:
        first.quit()
        first.close()
    proxy.wait_for(lambda: proxy.active_connections == 0)
    with connect(proxy) as third:
        assert third.greeting is not None and third.greeting[0] == 200
    assert proxy.faults_fired == {"max_connections": 1}


def test_down_refuses_and_kills_then_up_same_port(proxy: FaultProxy, inn: InnServer) -> None:
    port = proxy.port
    existing = connect(proxy)
    try:
        proxy.down()
        assert not proxy.is_up
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((proxy.host, port), timeout=2).close()
        assert_closed(existing)
    finally:
        existing.close()
    proxy.up()
    assert proxy.is_up and proxy.port == port
    with connect(proxy) as conn:
        assert_in_step(conn, inn)


def test_kill_connections(proxy: FaultProxy) -> None:
    conns = [connect(proxy) for _ in range(2)]
    try:
        assert proxy.kill_connections() == 2
        for conn in conns:
            assert_closed(conn)
    finally:
        for conn in conns:
            conn.close()


# ------------------------------------------------------------------ byte modes --
def test_starttls_becomes_passthrough(proxy: FaultProxy, inn: InnServer) -> None:
    mid, art = article_for(inn, "starttls")
    assert inn.post(art)[0] == 240
    with connect(proxy) as conn:
        assert conn.command("STARTTLS")[0] == 382
        tls = inn.tls_context().wrap_socket(conn.sock, server_hostname="127.0.0.1")
        tls.sendall(f"STAT {mid}\r\n".encode())
        assert tls.makefile("rb").readline().startswith(b"223 ")
        tls.close()


def test_raw_mode_in_front_of_implicit_tls(inn: InnServer) -> None:
    with FaultProxy(inn.host, inn.tls_port, nntp=False) as p:
        with pytest.raises(ValueError):
            p.inject_reply(b"POST", b"441 x")
        ctx = inn.tls_context()
        conn = RawNNTP(p.host, p.port, tls_context=ctx, server_hostname="127.0.0.1")
        with conn:
            assert conn.greeting is not None and conn.greeting[0] == 200
            assert conn.login(inn.user, inn.password)[0] == 281
        assert isinstance(conn.sock, ssl.SSLSocket)


# -------------------------------------------------------------------- lifecycle --
def test_stop_leaks_nothing(inn: InnServer) -> None:
    me = psutil.Process()
    fds_before = me.num_fds()
    threads_before = threading.active_count()
    p = FaultProxy(inn.host, inn.port).start()
    port = p.port
    open_conns = [connect(p) for _ in range(3)]
    p.stall(30)  # a stalled connection must not hold up stop()
    open_conns[0].send_raw(b"DATE\r\n")
    start = time.monotonic()
    p.stop()
    assert time.monotonic() - start < 2
    for conn in open_conns:
        assert_closed(conn)
        conn.close()
    p.stop()  # idempotent
    assert threading.active_count() == threads_before
    assert me.num_fds() == fds_before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_concurrent_large_articles_round_trip(proxy: FaultProxy, inn: InnServer) -> None:
    # Several connections moving ~300 KB articles both ways: the parser must
    # never confuse article or BODY content with protocol lines.
    errors: list[BaseException] = []
    body = b"".join(b".%05d" % i + b"=" * 120 + b"\r\n" for i in range(2500))  # every line dot-led

    def worker(n: int) -> None:
        try:
            with connect(proxy, timeout=20) as conn:
                for k in range(3):
                    mid, art = article_for(inn, f"conc{n}-{k}", body)
                    assert conn.post(art)[0] == 240
                    assert conn.body(mid) == body
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert proxy.connections_total == 4
    # Counters trail the client by one send(); wait instead of racing the I/O thread.
    proxy.wait_for(lambda: proxy.bytes_server_to_client > 12 * len(body))


# ------------------------------------------------------- records: commands, articles --
def test_counts_commands_and_logs_every_article_with_its_reply(proxy: FaultProxy, inn: InnServer) -> None:
    mid, art = article_for(inn, "log")
    swallowed, sw_art = article_for(inn, "logsw")
    lost, lost_art = article_for(inn, "loglost")
    with connect(proxy) as conn:
        assert conn.post(art)[0] == 240
        assert conn.post(art) == (441, "435 Duplicate")  # the same Message-ID a second time
        proxy.inject_after_article(b"441 437 swallowed here")
        assert conn.post(sw_art)[0] == 441
        assert conn.stat(mid) == 223
    proxy.lose_reply_after_article()
    with connect(proxy) as conn:
        assert conn.command("POST")[0] == 340
        conn.send_raw(dot_stuff(lost_art) + b".\r\n")
        assert_closed(conn)
    log = proxy.articles
    assert [(a.message_id, a.fate, a.reply) for a in log] == [
        (mid, "forward", log[0].reply),
        (mid, "forward", "441 435 Duplicate"),
        (swallowed, "swallow", "441 437 swallowed here"),
        (lost, "lose", log[3].reply),
    ]
    assert log[0].code == 240 and log[3].code == 240  # the lost reply was the server's 240
    assert [a.reached_server for a in log] == [True, True, False, True]
    assert log[0].connection == log[1].connection != log[3].connection
    assert proxy.commands_seen(b"post") == 4 and proxy.commands_seen(b"STAT") == 1
    assert proxy.replies_forwarded(ARTICLE) == 4 and proxy.replies_forwarded(b"POST") == 4
    assert proxy.posted_message_ids() == {mid: 2, lost: 1}
    assert proxy.posted_message_ids(since=2) == {lost: 1}
    assert inn.stat(swallowed) == 430 and inn.stat(lost) == 223


def test_message_id_header_is_found_case_insensitively_and_across_tiny_writes(proxy: FaultProxy, inn: InnServer) -> None:
    mid = fresh_message_id("case")
    art = make_article(mid, b"body\r\n", group=inn.group).replace(b"Message-ID:", b"message-id:")
    wire = dot_stuff(art) + b".\r\n"
    with connect(proxy) as conn:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert conn.command("POST")[0] == 340
        for i in range(0, len(wire), 7):  # headers split mid-name
            conn.send_raw(wire[i : i + 7])
        assert conn.read_status()[0] == 240
    (only,) = proxy.articles
    assert only.message_id == mid


# ------------------------------------------------------------------------- hold --
def test_hold_replies_lets_a_budget_through_then_holds_until_released(proxy: FaultProxy, inn: InnServer) -> None:
    mid, art = article_for(inn, "hold")
    assert inn.post(art)[0] == 240
    proxy.hold_replies(b"STAT", after=2)
    with connect(proxy) as conn:
        conn.send_raw(f"STAT {mid}\r\n".encode() * 5)  # pipelined
        assert conn.read_status()[0] == 223
        assert conn.read_status()[0] == 223
        proxy.wait_fired("hold_replies")  # the third reply came from the server and was held
        assert proxy.replies_forwarded(b"STAT") == 2
        assert select.select([conn.sock], [], [], 0)[0] == []
        proxy.release_replies(1)
        assert conn.read_status()[0] == 223
        proxy.wait_fired("hold_replies", 2)
        assert proxy.replies_forwarded(b"STAT") == 3
        proxy.release_replies()  # everything
        assert conn.read_status()[0] == 223 and conn.read_status()[0] == 223
        assert conn.command("DATE")[0] == 111  # in step after the hold
    assert proxy.faults_fired == {"hold_replies": 2}


def test_hold_article_replies_stores_the_article_but_keeps_the_client_waiting(proxy: FaultProxy, inn: InnServer) -> None:
    first, art1 = article_for(inn, "holdart1")
    second, art2 = article_for(inn, "holdart2")
    proxy.hold_replies(ARTICLE, after=1)
    with connect(proxy) as conn:
        assert conn.post(art1)[0] == 240
        assert conn.command("POST")[0] == 340  # POST's own reply is not held
        conn.send_raw(dot_stuff(art2) + b".\r\n")
        proxy.wait_fired("hold_replies")
        assert inn.stat(second) == 223  # stored, though the client has no answer
        assert [a.reply for a in proxy.articles] == [proxy.articles[0].reply, None]
        proxy.release_replies()
        assert conn.read_status()[0] == 240
    assert proxy.articles[1].code == 240


def test_raw_greeting_is_not_nntp(proxy: FaultProxy) -> None:
    proxy.inject_reply(b"", b"SSH-2.0-OpenSSH_9.2p1 Debian-2", raw=True)
    with RawNNTP(proxy.host, proxy.port, read_greeting=False, timeout=5) as conn:
        assert conn.read_line() == b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
        assert_closed(conn)
    with pytest.raises(ValueError):
        proxy.inject_reply(b"", b"SSH-2.0-OpenSSH")  # without raw=True only NNTP replies
