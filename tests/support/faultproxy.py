"""Fault-injecting TCP proxy between an NNTP client and the real INN server.

Owns: reproducible network and server faults for integration tests (DESIGN §8):
refused/limited connections, abrupt drops mid-article, stalled replies,
replies held until the test releases them, injected error (or non-NNTP)
replies, and "server stored it but the reply was lost"; and a record of what
clients did: command counts, reply counts, and every article with its
Message-ID and the reply it got.  The NNTP parsing lives in
``tests.support.faultproxy_nntp``.

Design: one I/O thread runs a ``selectors`` loop over non-blocking sockets, so
no socket is ever closed under another thread's blocked syscall, an abort is a
real RST (``SO_LINGER 0``), and a stall never blocks anything else.  Public
methods may be called from any thread: fault settings and counters live
behind one lock; operations on sockets (``down``/``up``/``kill_connections``)
are run inside the loop thread and the caller waits for them.

In ``nntp`` mode (default) both directions are parsed:

- client -> server: command lines while in command mode; after the server's
  340 to POST (335 to IHAVE) the connection is in *article* mode until the
  ``CRLF.CRLF`` terminator, and nothing inside an article is taken for a
  command.
- server -> client: each reply is matched, in order, to the command it answers
  (a FIFO, so pipelined clients work), and multi-line replies are recognised
  from their code, so a reply can be dropped or replaced as a whole.
- After a 382 to STARTTLS (or 206 to COMPRESS) the connection becomes a blind
  byte pipe; only byte-level faults apply from then on.

Invariants:
- Replies reach the client in command order, including locally injected ones
  (they wait behind replies still due from the server).
- When the client is shown something other than the server's 340, or an
  article is swallowed, the server is sent an empty article (``.``), which INN
  rejects with ``441 Article has no body``; that reply is dropped.  So the
  server never stores a swallowed article and the two streams stay in step.
- Every fault is counted in ``faults_fired`` before its effect can reach the
  client, so a client that saw the effect can assert the count (keys: ``refuse``,
  ``max_connections``, ``drop``, ``stall``, ``hold_replies``, ``inject_reply``,
  ``inject_greeting``, ``inject_after_article``, ``lose_reply_after_article``).
- A hold (``hold_replies``) never drops or reorders anything: it pauses a
  connection's replies at a reply boundary, and a test waits on counters
  (``replies_forwarded``, ``articles``) rather than on time.
- ``stop()`` closes every socket it opened and joins the I/O thread.
- Byte counters are updated just after each ``send()``, so they may trail
  what a client has already received; poll them with :meth:`wait_for`.

Byte thresholds (``drop_after_client_bytes``, ``stall(after_client_bytes=)``)
count bytes received from clients after the fault was armed, summed over all
connections; the connection carrying the byte that crosses the threshold is
the one affected.  ``times=None`` means "every time, until cleared".

``nntp=False`` gives a blind pipe (e.g. in front of the implicit-TLS port);
the command-level faults then raise ``ValueError``.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from tests.support.faultproxy_nntp import (
    ARTICLE,
    GREETING,
    Conn,
    Expect,
    Hold,
    NntpStreams,
    PostedArticle,
    Rule,
    normalise_reply,
    reply_code,
)

__all__ = ["ARTICLE", "FaultProxy", "PostedArticle"]

T = TypeVar("T")

_RECV = 256 * 1024
# Above this many bytes queued towards one side, stop reading the other side.
_HIGH_WATER = 4 * 1024 * 1024


def _command_key(word: bytes) -> bytes:
    """Command words are counted upper-case; pseudo-commands (``<article>``) as they are."""
    return word if word.startswith(b"<") else word.upper()


class FaultProxy(NntpStreams):
    """TCP proxy on 127.0.0.1:<ephemeral> forwarding to ``target`` with injectable faults."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        nntp: bool = True,
        listen_host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.host = listen_host
        self.port = port
        self.nntp = nntp
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        # fault settings (guarded by _lock)
        self._refuse: Rule | None = None
        self._max_conns: int | None = None
        self._drop: Rule | None = None
        self._stall: Rule | None = None
        self._inject: dict[bytes, Rule] = {}
        self._after_article: Rule | None = None
        self._lose_reply: Rule | None = None
        self._hold: Hold | None = None
        # counters (guarded by _lock)
        self._connections_total = 0
        self._bytes_c2s = 0
        self._bytes_s2c = 0
        self._fired: collections.Counter[str] = collections.Counter()
        self._commands: collections.Counter[bytes] = collections.Counter()
        self._replies: collections.Counter[bytes] = collections.Counter()
        self._articles: list[PostedArticle] = []
        # loop-thread state
        self._sel: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._conns: dict[int, Conn] = {}
        self._next_id = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._calls: collections.deque[tuple[Callable[[], Any], threading.Event, list[Any]]] = collections.deque()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # ================================================================ lifecycle ====
    def start(self) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        try:
            self._open_listener()
        except OSError:
            self._close_all()
            raise
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"FaultProxy:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every socket and join the I/O thread (idempotent)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake()
        thread.join(timeout=10)
        if thread.is_alive():
            raise RuntimeError("FaultProxy I/O thread did not stop")
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    # ================================================================== faults ====
    def refuse_connections(self, n: int | None = None) -> None:
        """Accept and immediately close the next ``n`` connections (None: all; 0: stop)."""
        with self._lock:
            self._refuse = None if n == 0 else Rule(remaining=n)

    def down(self, kill_existing: bool = True) -> None:
        """Stop listening (connects get ECONNREFUSED); optionally RST open connections."""

        def op() -> None:
            self._close_listener()
            if kill_existing:
                for conn in list(self._conns.values()):
                    self._abort(conn)

        self._call(op)

    def up(self) -> None:
        """Listen again on the same port."""
        self._call(self._open_listener)

    @property
    def is_up(self) -> bool:
        return self._call(lambda: self._listener is not None)

    def kill_connections(self) -> int:
        """RST every open connection now (like a server crash); returns how many."""

        def op() -> int:
            conns = list(self._conns.values())
            for conn in conns:
                self._abort(conn)
            return len(conns)

        return self._call(op)

    def drop_after_client_bytes(self, nbytes: int, times: int | None = 1) -> None:
        """After ``nbytes`` more client bytes, forward up to that byte, then RST both sides."""
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        with self._lock:
            self._drop = Rule(remaining=times, threshold=nbytes)

    def stall(self, seconds: float, after_client_bytes: int = 0, times: int | None = 1) -> None:
        """Hold server->client data for ``seconds``.

        Fires on the first server data that arrives once clients have sent
        ``after_client_bytes`` more bytes (0: the very next server data,
        which may be a new connection's greeting).
        """
        with self._lock:
            self._stall = Rule(remaining=times, threshold=after_client_bytes, seconds=seconds)

    def inject_reply(
        self,
        command_prefix: bytes,
        reply: bytes,
        times: int | None = 1,
        swallow: bool = True,
        close: bool | None = None,
        raw: bool = False,
    ) -> None:
        """Answer a client command starting with ``command_prefix`` with ``reply``.

        Matching is case-insensitive on the start of the command line.
        ``swallow=True``: the command is not forwarded.  ``swallow=False``: it
        is forwarded and the server's reply is replaced (and discarded).
        ``command_prefix=b''`` targets the greeting: the server's greeting is
        replaced; with ``swallow=True`` and an error code the proxy does not
        even connect upstream.  ``close`` (default: True for 400, and for a
        greeting of 400 or more) closes the connection after the reply.
        A 340/335 reply is refused: use :meth:`inject_after_article`.
        ``raw=True`` allows a reply that is not NNTP at all (e.g. an SSH or
        HTTP banner), for a server speaking another protocol; it closes the
        connection after it unless ``close=False``.
        """
        self._need_nntp()
        reply = normalise_reply(reply, raw=raw)
        if reply_code(reply) in (335, 340):
            raise ValueError("injecting 340/335 would desynchronise the article; use inject_after_article")
        greeting = command_prefix == b""
        if close is None:
            code = reply_code(reply)
            close = code == 0 or code == 400 or (greeting and code >= 400)
        with self._lock:
            self._inject[command_prefix.upper()] = Rule(remaining=times, reply=reply, swallow=swallow, close=close)

    def inject_after_article(self, reply: bytes, times: int | None = 1, close: bool | None = None) -> None:
        """Let POST through, swallow the article, answer ``reply``; the server stores nothing."""
        self._need_nntp()
        reply = normalise_reply(reply)
        with self._lock:
            self._after_article = Rule(
                remaining=times, reply=reply, close=(reply_code(reply) == 400) if close is None else close
            )

    def lose_reply_after_article(self, times: int | None = 1) -> None:
        """Forward the article, swallow the server's reply (240), then RST the connection."""
        self._need_nntp()
        with self._lock:
            self._lose_reply = Rule(remaining=times)

    def max_connections(self, n: int | None) -> None:
        """Beyond ``n`` simultaneous connections, greet ``502 too many connections`` and close."""
        with self._lock:
            self._max_conns = n

    def hold_replies(self, command: bytes, after: int = 0) -> None:
        """Let ``after`` more replies to ``command`` through (all connections), then hold the rest.

        ``command`` is a command word (``b"STAT"``, ``b"POST"``: the 340) or
        :data:`ARTICLE` (the reply to an article).  A held reply stays with
        the proxy, and so does everything after it on its connection, until
        :meth:`release_replies`; the client just waits.  The server is not
        affected: an article whose reply is held *is* stored.  Counted once
        per connection per held stretch as ``hold_replies``.
        """
        self._need_nntp()
        if after < 0:
            raise ValueError("after must be >= 0")
        with self._lock:
            self._hold = Hold(command=_command_key(command), budget=after)

    def release_replies(self, more: int | None = None) -> None:
        """Let ``more`` further held replies through (None: end the hold, release everything)."""
        with self._lock:
            if self._hold is not None:
                if more is None:
                    self._hold = None
                else:
                    self._hold.budget += more

        def op() -> None:
            for conn in list(self._conns.values()):
                if conn.s_in and not conn.closed:
                    self._server_data(conn, b"")
                    if not conn.closed:
                        self._pump(conn)

        self._call(op)

    def clear_faults(self) -> None:
        """Disarm every fault (counters are kept); held replies are released."""
        with self._lock:
            self._refuse = self._drop = self._stall = None
            self._after_article = self._lose_reply = None
            self._inject.clear()
            self._max_conns = None
        self.release_replies()

    # ================================================================ counters ====
    @property
    def connections_total(self) -> int:
        """Client connections accepted, including refused and over-limit ones."""
        with self._lock:
            return self._connections_total

    @property
    def bytes_client_to_server(self) -> int:
        """Bytes written to the server (client bytes forwarded, plus 3 per synthetic empty article)."""
        with self._lock:
            return self._bytes_c2s

    @property
    def bytes_server_to_client(self) -> int:
        """Bytes written to clients, injected replies included."""
        with self._lock:
            return self._bytes_s2c

    @property
    def faults_fired(self) -> dict[str, int]:
        with self._lock:
            return dict(self._fired)

    def commands_seen(self, word: bytes) -> int:
        """Command lines starting with ``word`` (e.g. ``b"POST"``) received from clients."""
        with self._lock:
            return self._commands[_command_key(word)]

    def replies_forwarded(self, command: bytes) -> int:
        """Replies to ``command`` (or :data:`ARTICLE`) handed towards clients, injected ones included."""
        with self._lock:
            return self._replies[_command_key(command)]

    @property
    def articles(self) -> list[PostedArticle]:
        """Every article clients completed, in order (copies; see :class:`PostedArticle`)."""
        with self._lock:
            return [dataclasses.replace(a) for a in self._articles]

    def posted_message_ids(self, since: int = 0) -> collections.Counter[str]:
        """How often each Message-ID reached the server in ``articles[since:]``."""
        return collections.Counter(
            a.message_id or "" for a in self.articles[since:] if a.reached_server
        )

    @property
    def active_connections(self) -> int:
        return self._call(lambda: len(self._conns))

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll ``predicate`` until true; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; fired={self.faults_fired}")
            time.sleep(0.01)

    def wait_fired(self, name: str, count: int = 1, timeout: float = 5.0) -> None:
        self.wait_for(lambda: self.faults_fired.get(name, 0) >= count, timeout)

    # ========================================================= thread plumbing ====
    def _need_nntp(self) -> None:
        if not self.nntp:
            raise ValueError("command-level faults need nntp=True")

    def _wake(self) -> None:
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"x")
            except (BlockingIOError, OSError):
                pass  # a full wake pipe already guarantees a wake-up

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the I/O thread (or directly if not running) and return its result."""
        if self._thread is None or threading.current_thread() is self._thread:
            return fn()
        done = threading.Event()
        box: list[Any] = []
        self._calls.append((fn, done, box))
        self._wake()
        if not done.wait(timeout=10):
            raise RuntimeError("FaultProxy I/O thread is not responding")
        if box and isinstance(box[0], BaseException):
            raise box[0]
        return box[1] if len(box) > 1 else None  # type: ignore[return-value]

    def _run_calls(self) -> None:
        while self._calls:
            fn, done, box = self._calls.popleft()
            try:
                box[:] = [None, fn()]
            except BaseException as exc:  # handed back to the calling thread
                box[:] = [exc]
            done.set()

    # ============================================================ socket setup ====
    def _open_listener(self) -> None:
        if self._listener is not None:
            return
        assert self._sel is not None
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Lets up() rebind the same port while old connections sit in TIME_WAIT.
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind((self.host, self.port))
            lsock.listen(128)
            lsock.setblocking(False)
        except OSError:
            lsock.close()
            raise
        self.port = lsock.getsockname()[1]
        self._listener = lsock
        self._sel.register(lsock, selectors.EVENT_READ, ("listen", None))

    def _close_listener(self) -> None:
        if self._listener is None:
            return
        assert self._sel is not None
        self._sel.unregister(self._listener)
        self._listener.close()
        self._listener = None

    def _close_all(self) -> None:
        for conn in list(self._conns.values()):
            self._abort(conn)
        self._close_listener()
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._wake_r = self._wake_w = None
        if self._sel is not None:
            self._sel.close()
            self._sel = None

    # =============================================================== main loop ====
    def _run(self) -> None:
        assert self._sel is not None
        try:
            while not self._stopping:
                self._run_calls()
                now = time.monotonic()
                timeout = 0.5
                for conn in self._conns.values():
                    if conn.stall_until > now:
                        timeout = min(timeout, conn.stall_until - now)
                    if not conn.s_connected:
                        timeout = min(timeout, max(0.0, conn.connect_deadline - now))
                for key, events in self._sel.select(timeout):
                    kind, conn = key.data
                    if kind == "wake":
                        try:
                            while self._wake_r is not None and self._wake_r.recv(4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                    elif kind == "listen":
                        self._accept()
                    elif not conn.closed:
                        self._on_event(conn, kind, events)
                now = time.monotonic()
                for conn in list(self._conns.values()):
                    if not conn.s_connected and not conn.closed and now > conn.connect_deadline:
                        self._abort(conn)  # upstream never answered the connect
                    elif not conn.closed:
                        self._pump(conn)
        finally:
            self._run_calls()
            self._close_all()
            # Callers that queued work after the loop ended must not hang.
            while self._calls:
                _, done, box = self._calls.popleft()
                box[:] = [RuntimeError("FaultProxy stopped")]
                done.set()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                csock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            with self._lock:
                self._connections_total += 1
                refuse = self._refuse is not None and self._refuse.consume()
                if refuse:
                    self._fired["refuse"] += 1
                    assert self._refuse is not None
                    if self._refuse.exhausted:
                        self._refuse = None
                limited = (
                    not refuse and self._max_conns is not None and len(self._conns) >= self._max_conns
                )
                if limited:
                    self._fired["max_connections"] += 1
                greet_rule = self._take_inject(b"", fire_name="inject_greeting") if not (refuse or limited) else None
            if refuse:
                csock.close()
                continue
            if limited or (greet_rule is not None and greet_rule.swallow and greet_rule.close):
                reply = b"502 too many connections\r\n" if limited else greet_rule.reply  # type: ignore[union-attr]
                try:
                    csock.setblocking(False)
                    csock.send(reply)  # a few bytes always fit a fresh socket buffer
                except OSError:
                    pass
                csock.close()
                continue
            self._open_conn(csock, greet_rule)

    def _open_conn(self, csock: socket.socket, greet_rule: Rule | None) -> None:
        assert self._sel is not None
        csock.setblocking(False)
        ssock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ssock.setblocking(False)
        for s in (csock, ssock):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._next_id += 1
        conn = Conn(cid=self._next_id, csock=csock, ssock=ssock)
        conn.connect_deadline = time.monotonic() + self.connect_timeout
        if self.nntp:
            if greet_rule is not None:
                conn.fifo.append(Expect(GREETING, "replace", greet_rule.reply, greet_rule.close))
            else:
                conn.fifo.append(Expect(GREETING, "forward"))
        self._conns[conn.cid] = conn
        err = ssock.connect_ex(self.target)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self._abort(conn)
            return
        self._sel.register(csock, selectors.EVENT_READ, ("client", conn))
        self._sel.register(ssock, selectors.EVENT_WRITE, ("server", conn))

    # ================================================================== events ====
    def _on_event(self, conn: Conn, kind: str, events: int) -> None:
        if kind == "server" and not conn.s_connected:
            assert conn.ssock is not None
            err = conn.ssock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._abort(conn)
                return
            conn.s_connected = True
        if events & selectors.EVENT_READ:
            if kind == "client":
                self._read_client(conn)
            else:
                self._read_server(conn)

    def _read_client(self, conn: Conn) -> None:
        try:
            data = conn.csock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._abort(conn)
            return
        if not data:
            conn.client_eof = True
            return
        abort = False
        with self._lock:
            drop = self._drop
            if drop is not None:
                room = max(0, drop.threshold - drop.seen)
                if len(data) >= room:
                    # Cut exactly at the threshold: the server sees nbytes, never more.
                    data = data[:room]
                    abort = True
                    drop.consume()
                    drop.seen = 0
                    if drop.exhausted:
                        self._drop = None
                else:
                    drop.seen += len(data)
            if self._stall is not None:
                self._stall.seen += len(data)
        if data:
            if self.nntp and conn.mode != "passthrough":
                self._client_data(conn, data)
            else:
                conn.s_out += data
        if abort:
            if conn.c_in:  # a partial command line still counts as sent
                conn.s_out += conn.c_in
                conn.c_in.clear()
            self._flush_server(conn)  # the bytes before the cut must still reach the server
            with self._lock:  # after the flush, before the RST: a client seeing it sees final counters
                self._fired["drop"] += 1
            self._abort(conn)

    def _read_server(self, conn: Conn) -> None:
        assert conn.ssock is not None
        try:
            data = conn.ssock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._abort(conn)
            return
        if not data:
            conn.server_eof = True
            if conn.s_in:  # an incomplete reply is still the server's last word
                conn.c_out += conn.s_in
                conn.s_in.clear()
            return
        with self._lock:
            stall = self._stall
            if stall is not None and stall.seen >= stall.threshold:
                stall.consume()
                self._fired["stall"] += 1
                conn.stall_until = time.monotonic() + stall.seconds
                if stall.exhausted:
                    self._stall = None
                else:
                    stall.seen = 0
        if self.nntp and conn.mode != "passthrough":
            self._server_data(conn, data)
        else:
            conn.c_out += data

    # =================================================================== output ====
    def _pump(self, conn: Conn) -> None:
        """Flush queues, apply back-pressure and closing rules, update interest sets."""
        if conn.s_connected:
            self._flush_server(conn)
        if conn.closed:
            return
        if conn.stall_until <= time.monotonic():
            conn.stall_until = 0.0
            self._flush_client(conn)
        if conn.closed:
            return
        if conn.close_when_flushed and not conn.c_out:
            self._close(conn)
            return
        if conn.client_eof and not conn.s_out:
            self._close(conn)
            return
        if conn.server_eof and not conn.c_out:
            self._close(conn)
            return
        assert self._sel is not None and conn.ssock is not None
        c_events = 0
        if not conn.client_eof and len(conn.s_out) < _HIGH_WATER and not conn.close_when_flushed:
            c_events |= selectors.EVENT_READ
        if conn.c_out and not conn.stall_until:
            c_events |= selectors.EVENT_WRITE
        s_events = 0
        if not conn.s_connected:
            s_events = selectors.EVENT_WRITE
        else:
            if not conn.server_eof and len(conn.c_out) < _HIGH_WATER and not conn.stall_until:
                s_events |= selectors.EVENT_READ
            if conn.s_out:
                s_events |= selectors.EVENT_WRITE
        self._set_events(conn.csock, c_events, ("client", conn))
        self._set_events(conn.ssock, s_events, ("server", conn))

    def _set_events(self, sock: socket.socket, events: int, data: tuple[str, Conn]) -> None:
        assert self._sel is not None
        try:
            key = self._sel.get_key(sock)
        except KeyError:
            key = None
        if events == 0:
            if key is not None:
                self._sel.unregister(sock)
        elif key is None:
            self._sel.register(sock, events, data)
        elif key.events != events:
            self._sel.modify(sock, events, data)

    def _flush_server(self, conn: Conn) -> None:
        if not conn.s_out or not conn.s_connected or conn.closed or conn.ssock is None:
            return
        try:
            sent = conn.ssock.send(conn.s_out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._abort(conn)
            return
        del conn.s_out[:sent]
        with self._lock:
            self._bytes_c2s += sent

    def _flush_client(self, conn: Conn) -> None:
        if not conn.c_out or conn.closed:
            return
        try:
            sent = conn.csock.send(conn.c_out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._abort(conn)
            return
        del conn.c_out[:sent]
        with self._lock:
            self._bytes_s2c += sent

    # ================================================================= closing ====
    def _close(self, conn: Conn, abort: bool = False) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn.cid, None)
        for sock in (conn.csock, conn.ssock):
            if sock is None:
                continue
            if self._sel is not None:
                try:
                    self._sel.unregister(sock)
                except (KeyError, ValueError):
                    pass
            if abort:
                try:
                    # linger on with timeout 0: close() sends RST instead of FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            sock.close()

    def _abort(self, conn: Conn) -> None:
        self._close(conn, abort=True)
