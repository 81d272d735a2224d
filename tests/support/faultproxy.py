"""Fault-injecting TCP proxy between an NNTP client and the real INN server.

Owns: reproducible network and server faults for integration tests (DESIGN §8):
refused/limited connections, abrupt drops mid-article, stalled replies,
injected error replies, and "server stored it but the reply was lost".

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
  ``max_connections``, ``drop``, ``stall``, ``inject_reply``,
  ``inject_greeting``, ``inject_after_article``, ``lose_reply_after_article``).
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
import errno
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["FaultProxy"]

T = TypeVar("T")

_RECV = 256 * 1024
# Above this many bytes queued towards one side, stop reading the other side.
_HIGH_WATER = 4 * 1024 * 1024
# Longest plausible status/command line; beyond it the stream is not NNTP.
_MAX_LINE = 64 * 1024
_TERMINATOR = b"\r\n.\r\n"

# Codes whose reply carries a dot-terminated block (RFC 3977 + common extensions).
_MULTILINE_CODES = frozenset({100, 101, 215, 220, 221, 222, 224, 225, 230, 231, 282})
_ARTICLE_START = {b"POST": 340, b"IHAVE": 335}
_GREETING = b"<greeting>"
_ARTICLE_END = b"<article>"
_SYNTHETIC = b"<synthetic-empty-article>"


def _normalise_reply(reply: bytes) -> bytes:
    if len(reply) < 3 or not reply[:3].isdigit():
        raise ValueError(f"reply must start with a 3-digit NNTP code: {reply!r}")
    return reply if reply.endswith(b"\r\n") else reply.rstrip(b"\r\n") + b"\r\n"


def _code(reply: bytes) -> int:
    return int(reply[:3])


@dataclass
class _Rule:
    """An armed fault; ``remaining`` None = unlimited."""

    remaining: int | None
    reply: bytes = b""
    swallow: bool = True
    close: bool = False
    threshold: int = 0
    seconds: float = 0.0
    seen: int = 0

    def consume(self) -> bool:
        """Use one firing; False if exhausted."""
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


@dataclass
class _Expect:
    """What to do with the reply to one command, or a locally generated reply."""

    cmd: bytes
    action: str  # forward | drop | replace | drop_close | local
    reply: bytes = b""
    close_after: bool = False


@dataclass(eq=False)
class _Conn:
    cid: int
    csock: socket.socket
    ssock: socket.socket | None
    c_out: bytearray = field(default_factory=bytearray)  # queued towards the client
    s_out: bytearray = field(default_factory=bytearray)  # queued towards the server
    s_connected: bool = False
    connect_deadline: float = 0.0
    mode: str = "command"  # command | article | passthrough
    article_fate: str = "forward"  # forward | swallow | lose
    article_reply: bytes = b""
    article_close: bool = False
    art_tail: bytes = b"\r\n"
    c_in: bytearray = field(default_factory=bytearray)
    s_in: bytearray = field(default_factory=bytearray)
    s_state: str = "status"  # status | block
    block_tail: bytes = b"\r\n"
    block_expect: _Expect | None = None
    block_code: int = 0
    fifo: collections.deque[_Expect] = field(default_factory=collections.deque)
    stall_until: float = 0.0
    close_when_flushed: bool = False
    client_eof: bool = False
    server_eof: bool = False
    closed: bool = False


class FaultProxy:
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
        self._refuse: _Rule | None = None
        self._max_conns: int | None = None
        self._drop: _Rule | None = None
        self._stall: _Rule | None = None
        self._inject: dict[bytes, _Rule] = {}
        self._after_article: _Rule | None = None
        self._lose_reply: _Rule | None = None
        # counters (guarded by _lock)
        self._connections_total = 0
        self._bytes_c2s = 0
        self._bytes_s2c = 0
        self._fired: collections.Counter[str] = collections.Counter()
        # loop-thread state
        self._sel: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._conns: dict[int, _Conn] = {}
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
            self._refuse = None if n == 0 else _Rule(remaining=n)

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
            self._drop = _Rule(remaining=times, threshold=nbytes)

    def stall(self, seconds: float, after_client_bytes: int = 0, times: int | None = 1) -> None:
        """Hold server->client data for ``seconds``.

        Fires on the first server data that arrives once clients have sent
        ``after_client_bytes`` more bytes (0: the very next server data,
        which may be a new connection's greeting).
        """
        with self._lock:
            self._stall = _Rule(remaining=times, threshold=after_client_bytes, seconds=seconds)

    def inject_reply(
        self,
        command_prefix: bytes,
        reply: bytes,
        times: int | None = 1,
        swallow: bool = True,
        close: bool | None = None,
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
        """
        self._need_nntp()
        reply = _normalise_reply(reply)
        if _code(reply) in (335, 340):
            raise ValueError("injecting 340/335 would desynchronise the article; use inject_after_article")
        greeting = command_prefix == b""
        if close is None:
            close = _code(reply) == 400 or (greeting and _code(reply) >= 400)
        with self._lock:
            self._inject[command_prefix.upper()] = _Rule(remaining=times, reply=reply, swallow=swallow, close=close)

    def inject_after_article(self, reply: bytes, times: int | None = 1, close: bool | None = None) -> None:
        """Let POST through, swallow the article, answer ``reply``; the server stores nothing."""
        self._need_nntp()
        reply = _normalise_reply(reply)
        with self._lock:
            self._after_article = _Rule(
                remaining=times, reply=reply, close=(_code(reply) == 400) if close is None else close
            )

    def lose_reply_after_article(self, times: int | None = 1) -> None:
        """Forward the article, swallow the server's reply (240), then RST the connection."""
        self._need_nntp()
        with self._lock:
            self._lose_reply = _Rule(remaining=times)

    def max_connections(self, n: int | None) -> None:
        """Beyond ``n`` simultaneous connections, greet ``502 too many connections`` and close."""
        with self._lock:
            self._max_conns = n

    def clear_faults(self) -> None:
        """Disarm every fault (counters are kept)."""
        with self._lock:
            self._refuse = self._drop = self._stall = None
            self._after_article = self._lose_reply = None
            self._inject.clear()
            self._max_conns = None

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

    def _open_conn(self, csock: socket.socket, greet_rule: _Rule | None) -> None:
        assert self._sel is not None
        csock.setblocking(False)
        ssock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ssock.setblocking(False)
        for s in (csock, ssock):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._next_id += 1
        conn = _Conn(cid=self._next_id, csock=csock, ssock=ssock)
        conn.connect_deadline = time.monotonic() + self.connect_timeout
        if self.nntp:
            if greet_rule is not None:
                conn.fifo.append(_Expect(_GREETING, "replace", greet_rule.reply, greet_rule.close))
            else:
                conn.fifo.append(_Expect(_GREETING, "forward"))
        self._conns[conn.cid] = conn
        err = ssock.connect_ex(self.target)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self._abort(conn)
            return
        self._sel.register(csock, selectors.EVENT_READ, ("client", conn))
        self._sel.register(ssock, selectors.EVENT_WRITE, ("server", conn))

    # ================================================================== events ====
    def _on_event(self, conn: _Conn, kind: str, events: int) -> None:
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

    def _read_client(self, conn: _Conn) -> None:
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

    def _read_server(self, conn: _Conn) -> None:
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

    # ========================================================= client parsing ====
    def _client_data(self, conn: _Conn, data: bytes) -> None:
        while data and not conn.closed:
            if conn.mode == "article":
                data = self._article_data(conn, data)
            elif conn.mode == "passthrough":
                conn.s_out += data
                return
            else:
                conn.c_in += data
                data = b""
                while conn.mode == "command" and not conn.closed:
                    if conn.close_when_flushed:  # an injected reply ended the session
                        conn.c_in.clear()
                        break
                    nl = conn.c_in.find(b"\n")
                    if nl < 0:
                        if len(conn.c_in) > _MAX_LINE:  # not NNTP; don't buffer forever
                            conn.s_out += conn.c_in
                            conn.c_in.clear()
                        break
                    line = bytes(conn.c_in[: nl + 1])
                    del conn.c_in[: nl + 1]
                    self._client_command(conn, line)
                if conn.mode != "command" and conn.c_in:
                    data = bytes(conn.c_in)
                    conn.c_in.clear()

    def _client_command(self, conn: _Conn, line: bytes) -> None:
        words = line.split(None, 1)
        word = words[0].upper() if words else b""
        upper = line.upper()
        rule: _Rule | None = None
        with self._lock:
            # Longest prefix wins, so b"AUTHINFO PASS" beats b"AUTHINFO".
            for prefix in sorted(self._inject, key=len, reverse=True):
                if prefix and upper.startswith(prefix):
                    rule = self._take_inject(prefix, fire_name="inject_reply")
                    if rule is not None:
                        break
        if rule is not None and rule.swallow:
            conn.fifo.append(_Expect(word, "local", rule.reply, rule.close))
            self._deliver_locals(conn)
            return
        if rule is not None:
            conn.fifo.append(_Expect(word, "replace", rule.reply, rule.close))
        else:
            conn.fifo.append(_Expect(word, "forward"))
        conn.s_out += line  # only after the expectation is queued, so its reply can't be unclaimed

    def _take_inject(self, prefix: bytes, *, fire_name: str) -> _Rule | None:
        """Consume one firing of the inject rule for ``prefix`` (caller holds _lock)."""
        rule = self._inject.get(prefix)
        if rule is None or not rule.consume():
            return None
        self._fired[fire_name] += 1
        if rule.exhausted:
            del self._inject[prefix]
        return rule

    def _article_data(self, conn: _Conn, data: bytes) -> bytes:
        """Consume article bytes; return what follows the terminator (command mode again)."""
        window = conn.art_tail + data
        idx = window.find(_TERMINATOR)
        end = len(data) if idx < 0 else idx + len(_TERMINATOR) - len(conn.art_tail)
        part = data[:end]
        conn.art_tail = (conn.art_tail + part)[-4:]
        if idx < 0:
            if conn.article_fate != "swallow":
                conn.s_out += part
            return b""
        conn.mode = "command"
        if conn.article_fate == "swallow":
            # The server is still waiting for an article: give it one it must reject.
            conn.fifo.append(_Expect(_SYNTHETIC, "drop"))
            conn.fifo.append(_Expect(_ARTICLE_END, "local", conn.article_reply, conn.article_close))
            conn.s_out += b".\r\n"
        elif conn.article_fate == "lose":
            conn.fifo.append(_Expect(_ARTICLE_END, "drop_close"))
            conn.s_out += part
        else:
            conn.fifo.append(_Expect(_ARTICLE_END, "forward"))
            conn.s_out += part
        self._deliver_locals(conn)
        return data[end:]

    # ========================================================= server parsing ====
    def _server_data(self, conn: _Conn, data: bytes) -> None:
        conn.s_in += data
        while conn.s_in and not conn.closed:
            if conn.close_when_flushed:  # the client was told goodbye; the rest is moot
                conn.s_in.clear()
                return
            if conn.mode == "passthrough":
                conn.c_out += conn.s_in
                conn.s_in.clear()
                return
            if conn.s_state == "block":
                if not self._server_block(conn):
                    return
                continue
            nl = conn.s_in.find(b"\n")
            if nl < 0:
                if len(conn.s_in) > _MAX_LINE:
                    conn.c_out += conn.s_in
                    conn.s_in.clear()
                return
            line = bytes(conn.s_in[: nl + 1])
            del conn.s_in[: nl + 1]
            code = int(line[:3]) if line[:3].isdigit() else 0
            expect = conn.fifo[0] if conn.fifo else None
            if expect is None:
                conn.c_out += line  # unsolicited (e.g. "400 idle timeout"): pass it on
                continue
            multiline = code in _MULTILINE_CODES or (code == 211 and expect.cmd == b"LISTGROUP")
            if expect.action == "forward":
                self._enter_article_if_due(conn, expect, code)
                conn.c_out += line
            elif expect.action == "replace":
                conn.c_out += expect.reply
            if multiline:
                conn.s_state = "block"
                conn.block_tail = b"\r\n"
                conn.block_expect = expect
                conn.block_code = code
            else:
                self._reply_done(conn, expect, code)

    def _server_block(self, conn: _Conn) -> bool:
        """Pass (or discard) multi-line block bytes; True once the block is complete."""
        expect = conn.block_expect
        assert expect is not None
        data = bytes(conn.s_in)
        window = conn.block_tail + data
        idx = window.find(_TERMINATOR)
        end = len(data) if idx < 0 else idx + len(_TERMINATOR) - len(conn.block_tail)
        part = data[:end]
        del conn.s_in[:end]
        conn.block_tail = (conn.block_tail + part)[-4:]
        if expect.action == "forward":
            conn.c_out += part
        if idx < 0:
            return False
        conn.s_state = "status"
        conn.block_expect = None
        self._reply_done(conn, expect, conn.block_code)
        return True

    def _enter_article_if_due(self, conn: _Conn, expect: _Expect, code: int) -> None:
        """Before the client sees 340/335, switch to article mode and pick the article's fate."""
        if _ARTICLE_START.get(expect.cmd) != code:
            return
        conn.mode = "article"
        conn.art_tail = b"\r\n"
        conn.article_fate = "forward"
        with self._lock:
            after, lose = self._after_article, self._lose_reply
            if after is not None and after.consume():
                self._fired["inject_after_article"] += 1
                conn.article_fate, conn.article_reply, conn.article_close = "swallow", after.reply, after.close
                if after.exhausted:
                    self._after_article = None
            elif lose is not None and lose.consume():
                self._fired["lose_reply_after_article"] += 1
                conn.article_fate = "lose"
                if lose.exhausted:
                    self._lose_reply = None
        # Anything the client sent early belongs to the article, not to the command parser.
        if conn.c_in:
            early = bytes(conn.c_in)
            conn.c_in.clear()
            rest = self._article_data(conn, early)
            if rest:
                self._client_data(conn, rest)

    def _reply_done(self, conn: _Conn, expect: _Expect, code: int) -> None:
        conn.fifo.popleft()
        if expect.action != "forward" and _ARTICLE_START.get(expect.cmd) == code:
            # The client never saw the 340, so it won't send an article; unstick the server.
            conn.fifo.appendleft(_Expect(_SYNTHETIC, "drop"))
            conn.s_out += b".\r\n"
        if expect.action == "forward" and (
            (expect.cmd == b"STARTTLS" and code == 382) or (expect.cmd == b"COMPRESS" and code == 206)
        ):
            # Encrypted/compressed from here on; we can only pipe bytes.
            conn.mode = "passthrough"
            conn.s_out += conn.c_in
            conn.c_in.clear()
        if expect.action == "drop_close":
            self._flush_client(conn)  # replies already due still reach the client first
            self._abort(conn)
            return
        if expect.close_after:
            conn.close_when_flushed = True
            return
        self._deliver_locals(conn)

    def _deliver_locals(self, conn: _Conn) -> None:
        """Send locally generated replies that have reached the head of the queue."""
        while conn.fifo and conn.fifo[0].action == "local" and not conn.close_when_flushed:
            expect = conn.fifo.popleft()
            conn.c_out += expect.reply
            if expect.close_after:
                conn.close_when_flushed = True

    # =================================================================== output ====
    def _pump(self, conn: _Conn) -> None:
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

    def _set_events(self, sock: socket.socket, events: int, data: tuple[str, _Conn]) -> None:
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

    def _flush_server(self, conn: _Conn) -> None:
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

    def _flush_client(self, conn: _Conn) -> None:
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
    def _close(self, conn: _Conn, abort: bool = False) -> None:
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

    def _abort(self, conn: _Conn) -> None:
        self._close(conn, abort=True)
