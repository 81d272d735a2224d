"""One NNTP client session over TCP or implicit TLS.

Owns: ``ServerSpec`` (how to reach and log in to one server) and
``Connection``: greeting, AUTHINFO USER/PASS, MODE READER, CAPABILITIES,
GROUP, POST, STAT/BODY single and pipelined, pipelined BODY decoded by
sabctools straight from the socket (``fetch_articles``, under the fetch
engine of pipeline/fetch.py), QUIT.

Invariants:
- A ``Connection`` is driven by one thread at a time (the pool hands it out);
  socket calls release the GIL, so N connections on N threads post in parallel.
- Every socket call runs under ``spec.timeout``: a timeout raises
  ``NNTPTimeout``, a reset or EOF ``ConnectionLost`` (both ``TransientError``),
  and any failure that may leave replies unread closes the socket, so a
  half-read session is never reused.
- POST and AUTHINFO are never pipelined. STAT and BODY pipelines keep replies in
  request order; abandoning a pipeline early drains (or closes) the session.
- Bounded memory against any server: every reply is read under a byte bound
  (``max_bytes`` of ``body``/``body_many``, ``BODY_MAX_BYTES`` by default,
  ``response.MAX_BLOCK`` for other blocks, each request's ``limit`` in
  ``fetch_articles``). Past it the reply is abandoned — the session is closed,
  the rest never read — and ``ReplyTooLarge`` names the request it belonged
  to. Decoded pipelines receive into sabctools' fixed 2 MiB buffer, capped
  so the oldest reply never gets more than its bound plus 64 KiB.
- The password is sent only in ``authenticate()`` and appears in no repr, log
  or exception text (``ServerSpec.password`` is ``repr=False``; errors name the
  command as ``AUTHINFO PASS`` without its argument).
- Certificates are verified unless ``spec.insecure``; ``spec.ca_file`` adds a
  trust anchor (self-signed servers) instead of switching checks off.
"""

from __future__ import annotations

import functools
import re
import socket
import ssl
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from types import TracebackType
from typing import Any, NamedTuple, Protocol

from usenetsync_cli.errors import ConfigError

from .bodies import Article, RawNeeded, YendScanner, article_from_response
from .response import (
    MISSING_CODES,
    AuthRequired,
    BytesLike,
    ConnectFailed,
    MAX_BLOCK,
    ConnectionLost,
    NNTPError,
    NNTPProtocolError,
    NNTPTimeout,
    PostRejected,
    Reader,
    ReplyTooLarge,
    Response,
    TLSError,
    TLSVerifyFailed,
    parse_status,
    raise_for,
    wire_buffers,
)

_MSGID = re.compile(r"<[^\x00-\x20\x7f]{1,250}>\Z")
_HDR_MSGID = re.compile(rb"(?im)^Message-ID:[ \t]*(<[^\s<>]+>)")
_UNSAFE = re.compile(r"[\x00\r\n]")

_OK_STAT = frozenset({223}) | MISSING_CODES
_OK_BODY = frozenset({222}) | MISSING_CODES
_OK_POST_READY = frozenset({340})
_OK_POSTED = frozenset({240})
_OK_GROUP = frozenset({211})
_OK_LIST = frozenset({215})
_OK_MODE = frozenset({200, 201})
_OK_CAPS = frozenset({101, 500})  # 500: a pre-RFC 3977 server without CAPABILITIES
_OK_QUIT = frozenset({205})
ARTICLE_END = b".\r\n"
_MAX_STAT_WINDOW = 1024  # bounded so requests and replies both fit in socket buffers
_MAX_BODY_WINDOW = 64
# Default bound of one BODY reply when the caller knows no better: our own
# articles stay under 1,000,000 bytes; other posters' rarely pass 2 MB.
BODY_MAX_BYTES = 4 * 1024 * 1024
_DECODER_BYTES = 2 << 20  # sabctools' receive buffer per connection
_RECV_SLACK = 64 * 1024  # how far one receive may run past the oldest reply's bound
# INN (like many servers) leaves Nagle on: while its first pipelined reply is
# unacknowledged it holds the rest, and our delayed ACK costs ~40 ms per batch
# (measured: 64 STATs took 45 ms, 1 400/s). Quick-ACK mode during pipelines
# removes the stall. Linux only; elsewhere the option simply does not exist.
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """How to reach and log in to one server; immutable, safe to share across threads."""

    name: str
    host: str
    port: int = 119
    tls: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    insecure: bool = False
    connections: int = 4
    timeout: float = 30.0
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"server {self.name}: port {self.port} is not a TCP port")
        if self.connections < 1:
            raise ConfigError(f"server {self.name}: connections must be at least 1")
        if not self.timeout > 0:
            raise ConfigError(f"server {self.name}: timeout must be positive")
        if self.password is not None and self.user is None:
            raise ConfigError(f"server {self.name}: a password is set but no user")
        # CR/LF would let a config value inject NNTP commands.
        if self.user is not None and (_UNSAFE.search(self.user) or not self.user.strip()):
            raise ConfigError(f"server {self.name}: the user name contains invalid characters")
        if self.password is not None and _UNSAFE.search(self.password):
            raise ConfigError(f"server {self.name}: the password contains a line break or NUL")
        if not isinstance(self.groups, tuple):
            object.__setattr__(self, "groups", tuple(self.groups))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class GroupInfo(NamedTuple):
    """A 211 reply to GROUP: estimated count and the low/high water marks."""

    name: str
    count: int
    low: int
    high: int


@functools.lru_cache(maxsize=16)
def _ssl_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    # Cached: loading the system CA store costs tens of ms and contexts are
    # thread-safe, so every connection to a server shares one.
    if insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class BodyRequest(Protocol):
    """What ``fetch_articles`` needs of a request: the ID and the reply's byte bound."""

    message_id: str
    limit: int


class _Req:
    __slots__ = ("message_id", "limit")

    def __init__(self, message_id: str, limit: int) -> None:
        self.message_id = message_id
        self.limit = limit


def valid_message_id(msgid: str) -> bool:
    """True if ``msgid`` can be sent in a command (``<…>``, no spaces or controls)."""
    return _MSGID.match(msgid) is not None


def _encode_id(msgid: str) -> bytes:
    if _MSGID.match(msgid) is None:
        raise ValueError(f"not a Message-ID in angle brackets: {msgid[:80]!r}")
    return msgid.encode()


def _header_message_id(first: BytesLike) -> str | None:
    head = bytes(first[:65536])
    end = head.find(b"\r\n\r\n")
    m = _HDR_MSGID.search(head, 0, end if end >= 0 else len(head))
    return m.group(1).decode("utf-8", "replace") if m else None


class Connection:
    """One NNTP session to ``spec``. Use as a context manager or call ``connect()``."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.greeting: Response | None = None
        self.posting_allowed = False
        self.authenticated = False
        self._sock: socket.socket | None = None
        self._reader: Reader | None = None
        self._plain = not spec.tls
        self._caps: dict[str, tuple[str, ...]] | None = None
        self._mode_reader_sent = False
        # Once a reader command succeeded, auth and mode are settled and
        # pipelines may start without a single-command warm-up.
        self._reader_ok = False
        self._decoder: Any = None
        self._where = f"{spec.name} ({spec.address})"
        self._in_auth = False  # a 480 inside a login must not start another login

    def __repr__(self) -> str:
        state = "open" if self._sock is not None else "closed"
        return f"<Connection {self._where} {state}{' authenticated' if self.authenticated else ''}>"

    def __enter__(self) -> Connection:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.quit()
        else:
            self.close()

    @property
    def closed(self) -> bool:
        return self._sock is None

    # ------------------------------------------------------------------ session

    def connect(self) -> Response:
        """Open the socket (and TLS), read the greeting; returns it."""
        if self._sock is not None and self.greeting is not None:
            return self.greeting
        spec = self.spec
        try:
            raw = socket.create_connection((spec.host, spec.port), timeout=spec.timeout)
        except TimeoutError:
            raise NNTPTimeout(f"{self._where}: timeout connecting after {spec.timeout:g} s") from None
        except socket.gaierror as e:
            raise ConnectFailed(
                f"{self._where}: cannot resolve host: {e.strerror or e}",
                retryable=False,
                fatal_for_server=True,
            ) from None
        except OSError as e:
            raise ConnectFailed(f"{self._where}: cannot connect: {e.strerror or e}") from None
        # Small commands must leave at once; POST sends its pieces in one sendmsg.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock: socket.socket = raw
        if spec.tls:
            sock = self._wrap_tls(raw)
        self._sock = sock
        self._plain = not spec.tls
        self._reader = Reader(self._recv_into)
        self._caps = None
        self._mode_reader_sent = False
        try:
            resp = self._read_response()
        except NNTPTimeout as e:
            if spec.tls:
                raise
            # A TLS port waits for our ClientHello while we wait for its greeting: the timeout is all we see.
            e.hint = (f"no greeting from {spec.host}:{spec.port}: if this port speaks implicit TLS"
                      " (usually 563), add --tls to the server; else check that the server is up")
            raise
        if resp.code not in _OK_MODE:
            self._abort()
            raise_for(resp, "", ok=_OK_MODE, server=self._where)
        self.greeting = resp
        self.posting_allowed = resp.code == 200
        return resp

    def _wrap_tls(self, raw: socket.socket) -> socket.socket:
        spec = self.spec
        try:
            ctx = _ssl_context(spec.ca_file, spec.insecure)
        except (OSError, ValueError) as e:
            raw.close()
            msg = getattr(e, "strerror", None) or str(e)
            raise ConfigError(f"server {spec.name}: cannot load ca_file {spec.ca_file!r}: {msg}") from None
        try:
            return ctx.wrap_socket(raw, server_hostname=spec.host)
        except ssl.SSLCertVerificationError as e:
            raw.close()
            raise TLSVerifyFailed(
                f"{self._where}: TLS certificate verification failed: {e.verify_message}"
            ) from None
        except ssl.SSLEOFError:
            # Closed where the ServerHello belongs: a busy server or front end giving up, as EOF before a
            # plain greeting is; retried like it. A reply that is not TLS at all stays TLSError (fatal).
            raw.close()
            raise ConnectionLost(
                f"{self._where}: connection lost during the TLS handshake (closed by the server)"
            ) from None
        except ssl.SSLError as e:
            raw.close()
            raise TLSError(f"{self._where}: TLS handshake failed: {e.reason or e}") from None
        except TimeoutError:
            raw.close()
            raise NNTPTimeout(f"{self._where}: timeout during the TLS handshake") from None
        except OSError as e:
            raw.close()
            raise ConnectionLost(f"{self._where}: connection lost during the TLS handshake: {e}") from None

    def authenticate(self, *, force: bool = False) -> None:
        """AUTHINFO USER/PASS. No-op when already logged in (unless ``force``)."""
        if self.authenticated and not force:
            return
        self._in_auth = True
        try:
            self._login()
        finally:
            self._in_auth = False

    def _login(self) -> None:
        spec = self.spec
        if spec.user is None:
            raise AuthRequired(f"{self._where}: the server requires a login and none is configured")
        self._send(b"AUTHINFO USER " + spec.user.encode() + b"\r\n")
        resp = self._read_response()
        if resp.code == 381:
            if spec.password is None:
                raise AuthRequired(f"{self._where}: the server wants a password and none is configured")
            self._send(b"AUTHINFO PASS " + spec.password.encode() + b"\r\n")
            resp = self._read_response()
            label = "AUTHINFO PASS"
        else:
            label = "AUTHINFO USER"
        if resp.code == 502 and self.authenticated:
            # RFC 4643 §2.3.2: AUTHINFO in an authenticated session answers 502.
            # A 480 there was spurious; the session is still logged in.
            return
        if resp.code != 281:
            self._fail(resp, label, frozenset({281}))
        self.authenticated = True
        self._caps = None  # RFC 4643: capabilities may change after login
        if not self.posting_allowed:
            # Many providers greet 201 before login and allow POST after it;
            # the fresh capability list is the authoritative answer (RFC 3977 §5.2).
            try:
                caps = self.capabilities()
            except AuthRequired:
                caps = {}
            if caps:
                self.posting_allowed = "POST" in caps

    def capabilities(self) -> dict[str, tuple[str, ...]]:
        """CAPABILITIES as {LABEL: args}; {} for servers that predate it. Cached."""
        if self._caps is None:
            resp = self._command(b"CAPABILITIES\r\n", "CAPABILITIES", _OK_CAPS)
            caps: dict[str, tuple[str, ...]] = {}
            if resp.code == 101:
                for line in self._read_block().decode("utf-8", "replace").splitlines():
                    words = line.split()
                    if words:
                        caps[words[0].upper()] = tuple(words[1:])
            self._caps = caps
        return self._caps

    def mode_reader(self, *, force: bool = False) -> bool:
        """Send MODE READER if the server asks for it (or ``force``); True if sent.

        nnrpd (INN) is a reader already; transit-mode servers advertise
        MODE-READER or answer reader commands with 401/500.
        """
        if not force and "MODE-READER" not in self.capabilities():
            return False
        self._mode_reader_sent = True
        resp = self._command(b"MODE READER\r\n", "MODE READER", _OK_MODE)
        self.posting_allowed = resp.code == 200
        self._caps = None
        return True

    def group(self, name: str) -> GroupInfo:
        """GROUP; raises ``ArticleMissing`` (411) for an unknown group."""
        if not name or _UNSAFE.search(name) or " " in name:
            raise ValueError(f"not a newsgroup name: {name!r}")
        resp = self._command(b"GROUP " + name.encode() + b"\r\n", "GROUP " + name, _OK_GROUP, reader=True)
        parts = resp.text.split()
        try:
            count, low, high = (int(p) for p in parts[:3])
        except ValueError:
            self._abort()
            raise NNTPProtocolError(f"{self._where}: malformed GROUP reply: {resp}") from None
        return GroupInfo(parts[3] if len(parts) > 3 else name, count, low, high)

    def group_status(self, name: str) -> str | None:
        """LIST ACTIVE for one group: its status flag ("y" posting allowed, "n" no posting, "m" moderated,
        "x"/"j"/"=..." others), or None if the server does not carry it."""
        if not name or _UNSAFE.search(name) or " " in name or any(c in name for c in "*?[]!,\\"):
            raise ValueError(f"not a newsgroup name: {name!r}")
        self._command(b"LIST ACTIVE " + name.encode() + b"\r\n", "LIST ACTIVE " + name, _OK_LIST, reader=True)
        for line in self._read_block(1 << 16).decode("utf-8", "replace").splitlines():
            words = line.split()
            if len(words) >= 4 and words[0] == name:
                return words[3]
        return None

    def quit(self) -> None:
        """Say goodbye politely and close; never raises for a dead session."""
        if self._sock is None:
            return
        try:
            self._send(b"QUIT\r\n")
            self._read_response()
        except NNTPError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Close the socket without QUIT. Idempotent."""
        sock, self._sock = self._sock, None
        self._reader = None
        self._decoder = None  # it may hold half a reply of the dead session
        self.authenticated = False
        self._reader_ok = False
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def interrupt(self) -> None:
        """Unblock a receive in progress on another thread (Ctrl-C, a stopping pool).

        Shuts the socket down; the thread using the session then gets
        ``ConnectionLost`` and closes it. Never raises.
        """
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ------------------------------------------------------------------ posting

    def post(
        self,
        article: BytesLike | Sequence[BytesLike],
        expect_id: str | None = None,
        *,
        trusted: bool = False,
    ) -> str:
        """POST one encoded article; returns its Message-ID.

        ``article`` is one buffer or a sequence whose concatenation is the
        article (headers, blank line, body), e.g. ``(headers, body)``; pieces
        are sent with one ``sendmsg`` without joining unless a line needs
        dot-stuffing. The ID is the one in ``240 <id>`` when the server names
        one, else ``expect_id``, else the article's Message-ID header.
        Raises ``PostRejected`` (``.subcode``, ``.message_id``) on 441.
        """
        if trusted:
            # The caller proves no line starts with '.' and the article ends in CRLF
            # (core.article's framing; property-tested): skip the 800 KB scan, which
            # holds the GIL for ~0.26 ms per article.
            bufs: list[BytesLike] = [*article, ARTICLE_END] if not isinstance(article, (bytes, bytearray, memoryview)) else [article, ARTICLE_END]
        else:
            bufs = wire_buffers(article)
        self._command(b"POST\r\n", "POST", _OK_POST_READY)
        self._send_buffers(bufs)
        resp = self._read_response()
        if resp.code == 240:
            return resp.message_id() or expect_id or _header_message_id(bufs[0]) or ""
        try:
            self._fail(resp, "POST", _OK_POSTED)
        except PostRejected as e:
            e.message_id = expect_id or _header_message_id(bufs[0])
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ reading

    def stat(self, msgid: str) -> bool:
        """STAT: True if the server has the article (223), False if not (430 family)."""
        resp = self._command(b"STAT " + _encode_id(msgid) + b"\r\n", "STAT " + msgid, _OK_STAT, reader=True)
        return resp.code == 223

    def body(self, msgid: str, *, max_bytes: int = BODY_MAX_BYTES) -> bytes | None:
        """BODY: the dot-unstuffed body (CRLF lines), or None if the article is missing.

        ``ReplyTooLarge`` (session closed) once the body passes ``max_bytes``.
        """
        resp = self._command(b"BODY " + _encode_id(msgid) + b"\r\n", "BODY " + msgid, _OK_BODY, reader=True)
        if resp.code != 222:
            return None
        return self._read_block(max_bytes)

    def stat_many(self, msgids: Iterable[str], window: int = 64) -> Iterator[tuple[str, bool]]:
        """Pipelined STAT: yields (msgid, present) in input order.

        Up to ``window`` requests are in flight; requests go out in batches of
        about window/2 and replies are parsed in bulk, so one connection does
        tens of thousands of STAT/s instead of one per round trip.
        """
        window = max(1, min(window, _MAX_STAT_WINDOW))
        it = iter(msgids)
        if not self._reader_ok:
            # The first STAT goes alone so a 480 (login) or 401 (MODE READER)
            # is handled by the single-command path before anything is queued.
            for mid in it:
                yield mid, self.stat(mid)
                break
        inflight: deque[tuple[str, bytes]] = deque()
        refill_at = window // 2
        more = True
        try:
            while True:
                if more and len(inflight) <= refill_at:
                    more = self._queue(b"STAT ", it, window - len(inflight), inflight)
                if not inflight:
                    return
                lines = self._read_lines(len(inflight))
                done = [inflight.popleft() for _ in lines]
                for (mid, enc), line in zip(done, lines):
                    code = line[:3]
                    if code == b"223":
                        if enc not in line and b"<" in line:
                            self._desync("STAT", mid, line)
                        yield mid, True
                    elif code == b"430":
                        yield mid, False
                    else:
                        resp = self._parse(line)
                        if resp.code not in MISSING_CODES:
                            self._abort()  # replies behind this one are unread
                            self._fail(resp, "STAT " + mid, _OK_STAT)
                        yield mid, False
        finally:
            if inflight and self._sock is not None:
                self._drain(len(inflight), blocks=False)

    def fetch_articles(
        self, take: Callable[[int], Sequence[BodyRequest]], window: int = 8, *, file_crc: bool = False
    ) -> Iterator[tuple[Any, Article | RawNeeded | str | None]]:
        """Pipelined BODY decoded by sabctools from the socket, each reply under its request's bound.

        ``take(n)`` hands over up to ``n`` more requests (objects with
        ``message_id`` and ``limit``, the byte bound of the whole reply); it is
        called whenever the window has room and the pipeline ends once it
        returns nothing and every reply is in. Yields ``(request, result)`` in
        request order; result is an ``Article`` (222, decoded and checked), None
        (430 family: missing), ``RawNeeded`` (222 that sabctools cannot be
        trusted with: fetch it again with ``body`` and decode it exactly) or a
        one-line failure reason (a 222 whose yEnc claims exceed its bound).
        ``file_crc``: also find each reply's ``=yend`` line for the whole-file
        ``crc32=`` (one extra C scan per received chunk).

        A reply that ended past its bound is that request's failure reason
        (the session is still in step); one still going when it passes its
        bound raises ``ReplyTooLarge`` (session closed) — it belongs to the
        oldest request taken and not yielded. Any other reply code raises its
        typed error.
        """
        for req, resp, yend in self._decoded_replies(take, window, scan=file_crc):
            if resp.bytes_read > req.limit:
                # Complete (so the session is still in step), but not what was asked for.
                yield req, self._too_large(resp.bytes_read, req.limit)
            elif resp.status_code != 222:
                yield req, None
            else:
                yield req, article_from_response(resp, req.limit, yend)

    def _too_large(self, got: int, bound: int) -> str:
        return f"{self._where}: reply larger than expected ({got:,} bytes, over {bound:,})"

    def _decoded_replies(
        self, take: Callable[[int], Sequence[BodyRequest]], window: int, *, scan: bool
    ) -> Iterator[tuple[Any, Any, dict[str, int] | None]]:
        """The pipeline under ``fetch_articles``: (request, response, =yend fields)."""
        import sabctools

        window = max(1, min(window, _MAX_BODY_WINDOW))
        first = list(take(window))
        if not first:
            return
        if not self._reader_ok:
            self.stat(first[0].message_id)  # one plain command first: 480 login / MODE READER are handled there
        reader = self._open_reader()
        if reader.buffered:
            self._abort()
            raise NNTPProtocolError(f"{self._where}: unexpected data before BODY replies")
        dec = self._decoder
        if dec is None:
            dec = self._decoder = sabctools.Decoder(_DECODER_BYTES)
        dec.clear_expected()
        scanner = YendScanner() if scan else None
        inflight: deque[Any] = deque()

        def send(reqs: Sequence[BodyRequest]) -> None:
            lines = []
            for r in reqs:
                lines.append(b"BODY " + _encode_id(r.message_id) + b"\r\n")
            for r in reqs:
                dec.expect(r)
                inflight.append(r)
            self._send(b"".join(lines))

        used = 0  # bytes received of the oldest unanswered reply
        start = 0  # its stream offset (for the =yend scanner)
        low = max(1, window // 2)  # refill in batches: one write carries several requests
        try:
            send(first)
            while inflight:
                bound = inflight[0].limit
                with memoryview(dec) as room:
                    if not len(room):
                        # A line longer than the whole receive buffer.
                        self._abort()
                        raise ReplyTooLarge(
                            f"{self._where}: reply larger than expected (a line over {_DECODER_BYTES:,} bytes)"
                        )
                    n = self._recv_into(room[: min(len(room), bound - used + _RECV_SLACK)])
                    if scanner is not None:
                        scanner.feed(room[:n])
                try:
                    dec.process(n)
                except BufferError:
                    self._abort()  # sabctools' own ceiling for decoded data
                    raise ReplyTooLarge(f"{self._where}: reply larger than expected (over {bound:,} bytes)") from None
                except ValueError as e:
                    self._abort()
                    raise NNTPProtocolError(f"{self._where}: undecodable BODY reply: {e}") from None
                used += n
                done = []
                for resp in dec:
                    req = inflight.popleft() if inflight else None
                    if req is None or resp.context is not req:
                        self._abort()
                        raise NNTPProtocolError(f"{self._where}: BODY replies out of step")
                    used -= resp.bytes_read
                    yend = scanner.take(start, start + resp.bytes_read) if scanner is not None else None
                    start += resp.bytes_read
                    done.append((req, resp, yend))
                if len(inflight) <= low:
                    # Keep the server busy while the results are handled.
                    more = take(window - len(inflight))
                    if more:
                        send(more)
                if not inflight and used:
                    # Bytes nobody asked for: the replies that came with them are suspect too.
                    self._abort()
                    raise NNTPProtocolError(f"{self._where}: data after the last BODY reply")
                for req, resp, yend in done:
                    code = resp.status_code
                    if code == 222:
                        message = resp.message or ""
                        if "<" in message and req.message_id not in message:
                            self._abort()
                            raise NNTPProtocolError(
                                f"{self._where}: reply out of order for BODY {req.message_id}: {message[:120]!r}"
                            )
                    elif code not in MISSING_CODES:
                        self._abort()
                        raise_for(Response(code, str(resp.message or "")), "BODY " + req.message_id,
                                  ok=_OK_BODY, server=self._where)
                    yield req, resp, yend
                if inflight and used > inflight[0].limit:
                    self._abort()
                    raise ReplyTooLarge(
                        f"{self._where}: reply larger than expected (over {inflight[0].limit:,} bytes)"
                    )
        except BaseException:
            if self._sock is not None and inflight:
                self._abort()  # replies left unread: never reuse a half-read session
            raise

    def body_many(
        self, msgids: Iterable[str], window: int = 8, *, max_bytes: int = BODY_MAX_BYTES
    ) -> Iterator[tuple[str, bytes | None]]:
        """Pipelined BODY: yields (msgid, body or None) in input order; each body under ``max_bytes``."""
        window = max(1, min(window, _MAX_BODY_WINDOW))
        it = iter(msgids)
        if not self._reader_ok:
            for mid in it:
                yield mid, self.body(mid, max_bytes=max_bytes)
                break
        inflight: deque[tuple[str, bytes]] = deque()
        refill_at = window // 2
        more = True
        try:
            while True:
                if more and len(inflight) <= refill_at:
                    more = self._queue(b"BODY ", it, window - len(inflight), inflight)
                if not inflight:
                    return
                mid, enc = inflight.popleft()
                line = self._readline()
                if line[:3] == b"222":
                    if enc not in line and b"<" in line:
                        self._desync("BODY", mid, line)
                    yield mid, self._read_block(max_bytes)
                    continue
                resp = self._parse(line)
                if resp.code not in MISSING_CODES:
                    self._abort()
                    self._fail(resp, "BODY " + mid, _OK_BODY)
                yield mid, None
        finally:
            if inflight and self._sock is not None:
                self._drain(len(inflight), blocks=True, max_bytes=max_bytes)

    # ------------------------------------------------------------------ plumbing

    def _queue(self, verb: bytes, it: Iterator[str], want: int, inflight: deque[tuple[str, bytes]]) -> bool:
        """Send up to ``want`` more pipelined commands in one write; False once ``it`` ran dry."""
        chunk = list(islice(it, want))
        if chunk:
            encoded = [_encode_id(m) for m in chunk]
            inflight.extend(zip(chunk, encoded))
            self._send(b"".join([verb + e + b"\r\n" for e in encoded]))
        return len(chunk) == want

    def _command(self, line: bytes, label: str, ok: frozenset[int], *, reader: bool = False) -> Response:
        """Send one command and return its reply if its code is in ``ok``.

        A 480 is answered by one login (when credentials are known) and one
        retry; a 401/500 to a reader command by one MODE READER and one retry.
        """
        self._send(line)
        resp = self._read_response()
        if resp.code == 480 and self.spec.user is not None and not self._in_auth:
            self.authenticate(force=True)
            self._send(line)
            resp = self._read_response()
        elif reader and resp.code in (401, 500) and not self._mode_reader_sent:
            self.mode_reader(force=True)
            self._send(line)
            resp = self._read_response()
        if resp.code not in ok:
            self._fail(resp, label, ok)
        if reader:
            self._reader_ok = True
        return resp

    def _fail(self, resp: Response, label: str, ok: frozenset[int]) -> None:
        # 400 and 502 mean the server hangs up after this line.
        if resp.code in (400, 502):
            self._abort()
        raise_for(resp, label, ok=ok, server=self._where)

    def _desync(self, command: str, mid: str, line: bytes) -> None:
        self._abort()
        raise NNTPProtocolError(
            f"{self._where}: reply out of order for {command} {mid}: "
            f"{line[:120].decode('utf-8', 'replace')!r}"
        )

    def _drain(self, count: int, *, blocks: bool, max_bytes: int = BODY_MAX_BYTES) -> None:
        """Read and drop ``count`` pipelined replies so the session stays usable."""
        try:
            for _ in range(count):
                line = self._readline()
                if blocks and line[:3] == b"222":
                    self._read_block(max_bytes)
        except NNTPError:
            self._abort()

    def _abort(self) -> None:
        self.close()

    def _open_reader(self) -> Reader:
        reader = self._reader
        if reader is None:
            raise ConnectionLost(f"{self._where}: connection is closed")
        return reader

    def _recv_into(self, view: memoryview) -> int:
        sock = self._sock
        if sock is None:
            raise ConnectionLost(f"{self._where}: connection is closed")
        try:
            if _TCP_QUICKACK is not None:
                # INN leaves Nagle on, so any reply after the first waits for our
                # delayed ACK (40 ms: measured 44 ms per single BODY). Quick ACKs
                # are not sticky in Linux: re-arm before each wait.
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            n = sock.recv_into(view)
        except TimeoutError:
            self._abort()
            raise NNTPTimeout(f"{self._where}: timeout: no reply within {self.spec.timeout:g} s") from None
        except OSError as e:
            self._abort()
            raise ConnectionLost(f"{self._where}: connection lost: {e.strerror or e}") from None
        if not n:
            self._abort()
            raise ConnectionLost(f"{self._where}: connection lost: the server closed the connection")
        return n

    def _send(self, data: BytesLike) -> None:
        sock = self._sock
        if sock is None:
            raise ConnectionLost(f"{self._where}: connection is closed")
        try:
            sock.sendall(data)
        except TimeoutError:
            self._abort()
            raise NNTPTimeout(f"{self._where}: timeout: the server stopped reading") from None
        except OSError as e:
            self._abort()
            raise ConnectionLost(f"{self._where}: connection lost: {e.strerror or e}") from None

    def _send_buffers(self, bufs: list[BytesLike]) -> None:
        """Send several buffers as one stream without joining them."""
        sock = self._sock
        if len(bufs) == 1 or sock is None or not self._plain:
            # SSLSocket has no sendmsg; TLS copies into records anyway.
            for b in bufs:
                self._send(b)
            return
        views = [memoryview(b) for b in bufs]
        try:
            while views:
                sent = sock.sendmsg(views)
                while views and sent >= views[0].nbytes:
                    sent -= views[0].nbytes
                    views.pop(0)
                if sent:
                    views[0] = views[0][sent:]
        except TimeoutError:
            self._abort()
            raise NNTPTimeout(f"{self._where}: timeout: the server stopped reading") from None
        except OSError as e:
            self._abort()
            raise ConnectionLost(f"{self._where}: connection lost: {e.strerror or e}") from None

    def _readline(self) -> bytes:
        try:
            return self._open_reader().readline()
        except NNTPProtocolError as e:
            self._abort()
            if isinstance(e, ReplyTooLarge):
                raise ReplyTooLarge(f"{self._where}: {e}") from None
            raise

    def _read_lines(self, limit: int) -> list[bytes]:
        try:
            return self._open_reader().read_lines(limit)
        except NNTPProtocolError:
            self._abort()
            raise

    def _read_block(self, max_bytes: int = MAX_BLOCK) -> bytes:
        try:
            return self._open_reader().read_block(max_bytes)
        except NNTPProtocolError as e:
            self._abort()
            if isinstance(e, ReplyTooLarge):
                raise ReplyTooLarge(f"{self._where}: {e}") from None
            raise

    def _parse(self, line: bytes) -> Response:
        try:
            return parse_status(line)
        except NNTPProtocolError as e:
            self._abort()
            raise NNTPProtocolError(f"{self._where}: {e}") from None

    def _read_response(self) -> Response:
        return self._parse(self._readline())
