"""The NNTP half of the fault proxy: per-connection state and the two stream parsers.

Owns: how ``tests.support.faultproxy.FaultProxy`` reads NNTP in both
directions — commands and articles from the client, status lines and
multi-line blocks from the server — and where command-level faults, the
reply hold and the article log hook into that parsing.  ``FaultProxy``
mixes :class:`NntpStreams` in; everything here runs on the proxy's I/O
thread, and shared settings and counters are touched only under
``self._lock``.

Invariants (besides those in ``faultproxy``'s docstring):
- Every article a client completes (``CRLF.CRLF`` seen) is logged once, in
  completion order, as a :class:`PostedArticle` with its Message-ID (from
  its own header) and its fate; the reply the server (or an injection) gave
  it is filled in when that reply is parsed.
- A held reply is never parsed: it stays, byte-exact, in the connection's
  server buffer, and everything behind it on that connection waits with it,
  so replies still reach the client in command order after a release.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import socket

__all__ = ["ARTICLE", "GREETING", "PostedArticle", "NntpStreams"]

# Longest plausible status/command line; beyond it the stream is not NNTP.
MAX_LINE = 64 * 1024
TERMINATOR = b"\r\n.\r\n"

# Codes whose reply carries a dot-terminated block (RFC 3977 + common extensions).
MULTILINE_CODES = frozenset({100, 101, 215, 220, 221, 222, 224, 225, 230, 231, 282})
ARTICLE_START = {b"POST": 340, b"IHAVE": 335}
GREETING = b"<greeting>"
# The reply to an article (after POST's 340) is the reply to this pseudo-command.
ARTICLE = b"<article>"
SYNTHETIC = b"<synthetic-empty-article>"
# Enough for any real header block; the Message-ID is searched for only in here.
_MAX_HEAD = 64 * 1024


def normalise_reply(reply: bytes, *, raw: bool = False) -> bytes:
    if not raw and (len(reply) < 3 or not reply[:3].isdigit()):
        raise ValueError(f"reply must start with a 3-digit NNTP code: {reply!r}")
    return reply if reply.endswith(b"\r\n") else reply.rstrip(b"\r\n") + b"\r\n"


def reply_code(reply: bytes) -> int:
    """The 3-digit code of a reply; 0 for something that is not NNTP."""
    return int(reply[:3]) if reply[:3].isdigit() else 0


@dataclass
class Rule:
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
class Hold:
    """Replies to ``command`` beyond the first ``budget`` (counted from arming) are held."""

    command: bytes
    budget: int
    started: int = 0


@dataclass
class PostedArticle:
    """One article a client sent after a 340, as the proxy saw it.

    ``fate``: ``forward`` (passed to the server), ``lose`` (passed, the
    server's reply swallowed and the connection reset) or ``swallow`` (never
    reached the server).  ``reply`` is the status line the server gave it
    (for ``swallow``: the injected one), None while no reply was parsed —
    e.g. while replies are held.
    """

    message_id: str | None
    fate: str
    connection: int
    reply: str | None = None

    @property
    def code(self) -> int | None:
        return int(self.reply[:3]) if self.reply and self.reply[:3].isdigit() else None

    @property
    def reached_server(self) -> bool:
        return self.fate != "swallow"


@dataclass
class Expect:
    """What to do with the reply to one command, or a locally generated reply."""

    cmd: bytes
    action: str  # forward | drop | replace | drop_close | local
    reply: bytes = b""
    close_after: bool = False
    article: PostedArticle | None = None


@dataclass(eq=False)
class Conn:
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
    art_head: bytearray = field(default_factory=bytearray)
    c_in: bytearray = field(default_factory=bytearray)
    s_in: bytearray = field(default_factory=bytearray)
    s_state: str = "status"  # status | block
    block_tail: bytes = b"\r\n"
    block_expect: Expect | None = None
    block_code: int = 0
    fifo: collections.deque[Expect] = field(default_factory=collections.deque)
    stall_until: float = 0.0
    held: bool = False
    close_when_flushed: bool = False
    client_eof: bool = False
    server_eof: bool = False
    closed: bool = False


def header_message_id(head: bytes | bytearray) -> str | None:
    """The Message-ID header of an article's header block (as sent, dot-stuffed), or None."""
    end = head.find(b"\r\n\r\n")
    block = bytes(head if end < 0 else head[:end])
    if block.startswith(b"\r\n"):
        return None  # no headers at all
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"message-id":
            return value.strip().decode("latin-1")
    return None


class NntpStreams:
    """Mixin for ``FaultProxy``: parsing both directions of an NNTP connection."""

    # Provided by FaultProxy (guarded by _lock unless noted).
    _lock: threading.Lock
    _inject: dict[bytes, Rule]
    _after_article: Rule | None
    _lose_reply: Rule | None
    _hold: Hold | None
    _fired: collections.Counter[str]
    _commands: collections.Counter[bytes]
    _replies: collections.Counter[bytes]
    _articles: list[PostedArticle]

    def _abort(self, conn: Conn) -> None:  # pragma: no cover - provided by FaultProxy
        raise NotImplementedError

    def _flush_client(self, conn: Conn) -> None:  # pragma: no cover - provided by FaultProxy
        raise NotImplementedError

    # ========================================================= client parsing ====
    def _client_data(self, conn: Conn, data: bytes) -> None:
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
                        if len(conn.c_in) > MAX_LINE:  # not NNTP; don't buffer forever
                            conn.s_out += conn.c_in
                            conn.c_in.clear()
                        break
                    line = bytes(conn.c_in[: nl + 1])
                    del conn.c_in[: nl + 1]
                    self._client_command(conn, line)
                if conn.mode != "command" and conn.c_in:
                    data = bytes(conn.c_in)
                    conn.c_in.clear()

    def _client_command(self, conn: Conn, line: bytes) -> None:
        words = line.split(None, 1)
        word = words[0].upper() if words else b""
        upper = line.upper()
        rule: Rule | None = None
        with self._lock:
            self._commands[word] += 1
            # Longest prefix wins, so b"AUTHINFO PASS" beats b"AUTHINFO".
            for prefix in sorted(self._inject, key=len, reverse=True):
                if prefix and upper.startswith(prefix):
                    rule = self._take_inject(prefix, fire_name="inject_reply")
                    if rule is not None:
                        break
        if rule is not None and rule.swallow:
            conn.fifo.append(Expect(word, "local", rule.reply, rule.close))
            self._deliver_locals(conn)
            return
        if rule is not None:
            conn.fifo.append(Expect(word, "replace", rule.reply, rule.close))
        else:
            conn.fifo.append(Expect(word, "forward"))
        conn.s_out += line  # only after the expectation is queued, so its reply can't be unclaimed

    def _take_inject(self, prefix: bytes, *, fire_name: str) -> Rule | None:
        """Consume one firing of the inject rule for ``prefix`` (caller holds _lock)."""
        rule = self._inject.get(prefix)
        if rule is None or not rule.consume():
            return None
        self._fired[fire_name] += 1
        if rule.exhausted:
            del self._inject[prefix]
        return rule

    def _article_data(self, conn: Conn, data: bytes) -> bytes:
        """Consume article bytes; return what follows the terminator (command mode again)."""
        window = conn.art_tail + data
        idx = window.find(TERMINATOR)
        end = len(data) if idx < 0 else idx + len(TERMINATOR) - len(conn.art_tail)
        part = data[:end]
        conn.art_tail = (conn.art_tail + part)[-4:]
        if len(conn.art_head) < _MAX_HEAD and b"\r\n\r\n" not in conn.art_head:
            conn.art_head += part[: _MAX_HEAD - len(conn.art_head)]
        if idx < 0:
            if conn.article_fate != "swallow":
                conn.s_out += part
            return b""
        conn.mode = "command"
        article = PostedArticle(header_message_id(conn.art_head), conn.article_fate, conn.cid)
        conn.art_head = bytearray()
        with self._lock:
            self._articles.append(article)
        if conn.article_fate == "swallow":
            article.reply = conn.article_reply.rstrip(b"\r\n").decode("latin-1")
            # The server is still waiting for an article: give it one it must reject.
            conn.fifo.append(Expect(SYNTHETIC, "drop"))
            conn.fifo.append(Expect(ARTICLE, "local", conn.article_reply, conn.article_close))
            conn.s_out += b".\r\n"
        elif conn.article_fate == "lose":
            conn.fifo.append(Expect(ARTICLE, "drop_close", article=article))
            conn.s_out += part
        else:
            conn.fifo.append(Expect(ARTICLE, "forward", article=article))
            conn.s_out += part
        self._deliver_locals(conn)
        return data[end:]

    # ========================================================= server parsing ====
    def _server_data(self, conn: Conn, data: bytes) -> None:
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
                if len(conn.s_in) > MAX_LINE:
                    conn.c_out += conn.s_in
                    conn.s_in.clear()
                return
            expect = conn.fifo[0] if conn.fifo else None
            if expect is not None and self._hold_reply(conn, expect):
                return  # stays in s_in until release_replies()
            line = bytes(conn.s_in[: nl + 1])
            del conn.s_in[: nl + 1]
            code = int(line[:3]) if line[:3].isdigit() else 0
            if expect is None:
                conn.c_out += line  # unsolicited (e.g. "400 idle timeout"): pass it on
                continue
            if expect.article is not None:
                with self._lock:
                    expect.article.reply = line.rstrip(b"\r\n").decode("latin-1")
            multiline = code in MULTILINE_CODES or (code == 211 and expect.cmd == b"LISTGROUP")
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

    def _hold_reply(self, conn: Conn, expect: Expect) -> bool:
        """True if the reply now due on ``conn`` must wait for a release (see ``hold_replies``)."""
        if expect.action in ("local", "drop"):
            return False  # our own bookkeeping, never the server's answer to a client
        with self._lock:
            hold = self._hold
            if hold is None or expect.cmd != hold.command:
                return False
            if hold.started < hold.budget:
                hold.started += 1  # reserved at the start, so interleaved blocks cannot overshoot
                conn.held = False
                return False
            if not conn.held:
                conn.held = True
                self._fired["hold_replies"] += 1
            return True

    def _server_block(self, conn: Conn) -> bool:
        """Pass (or discard) multi-line block bytes; True once the block is complete."""
        expect = conn.block_expect
        assert expect is not None
        data = bytes(conn.s_in)
        window = conn.block_tail + data
        idx = window.find(TERMINATOR)
        end = len(data) if idx < 0 else idx + len(TERMINATOR) - len(conn.block_tail)
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

    def _enter_article_if_due(self, conn: Conn, expect: Expect, code: int) -> None:
        """Before the client sees 340/335, switch to article mode and pick the article's fate."""
        if ARTICLE_START.get(expect.cmd) != code:
            return
        conn.mode = "article"
        conn.art_tail = b"\r\n"
        conn.art_head = bytearray()
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

    def _reply_done(self, conn: Conn, expect: Expect, code: int) -> None:
        conn.fifo.popleft()
        if expect.action != "drop":
            with self._lock:
                self._replies[expect.cmd] += 1
        if expect.action != "forward" and ARTICLE_START.get(expect.cmd) == code:
            # The client never saw the 340, so it won't send an article; unstick the server.
            conn.fifo.appendleft(Expect(SYNTHETIC, "drop"))
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

    def _deliver_locals(self, conn: Conn) -> None:
        """Send locally generated replies that have reached the head of the queue."""
        while conn.fifo and conn.fifo[0].action == "local" and not conn.close_when_flushed:
            expect = conn.fifo.popleft()
            conn.c_out += expect.reply
            with self._lock:
                self._replies[expect.cmd] += 1
            if expect.close_after:
                conn.close_when_flushed = True
