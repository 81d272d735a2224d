"""NNTP wire parsing: status lines, reply codes -> typed errors, dot-stuffing.

Owns: the ``Response`` value, the NNTP error classes and the one table that maps
reply codes to them (``raise_for``, DESIGN.md §7), the multi-line block codec
(``dot_stuff`` / ``dot_unstuff`` / ``wire_buffers``) and ``Reader``, the
buffered line/block reader that the connection drives through an injected
``recv_into`` callable (so it is testable without a socket).

Invariants:
- Pure: no sockets, clocks or logging here. ``Reader`` only calls the callable
  it was given.
- Every error raised from this module is a ``UsenetSyncError`` (through the
  project's ``errors`` classes) and an ``NNTPError``, which carries
  ``.retryable`` and ``.fatal_for_server`` so callers never parse messages.
- No message built here contains a password: the command is reduced to its
  verb (``AUTHINFO PASS`` never carries its argument) and server text passes
  through ``errors.redact``.
- The block codec never splits or joins lines in Python loops: articles are
  ~800 KB, so all scans are ``re``/``bytes`` C calls.
- Bounded: ``Reader`` never holds more than the caller's bound for one reply
  (``read_block(max_bytes)``, ``MAX_LINE`` for a status line) plus one
  receive; past it, ``ReplyTooLarge`` is raised before anything grows. Its
  buffer grows to the bound at most, never by doubling past it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Union

from usenetsync_cli.errors import (
    AuthError,
    NetworkError,
    NotFoundError,
    ProtocolError,
    ServerRefusedError,
    UsenetSyncError,
    redact,
)

BytesLike = Union[bytes, bytearray, memoryview]

# Reply codes that mean "that article/group is not here": an answer, not a fault.
MISSING_CODES = frozenset({411, 420, 423, 430})

MAX_LINE = 64 * 1024  # a status line longer than this is not NNTP
# Default bound of a multi-line block that is not an article (CAPABILITIES, …):
# callers reading articles pass the article's own bound.
MAX_BLOCK = 1024 * 1024
_MAX_LINE = MAX_LINE
_TERMINATOR = b".\r\n"

# ``re`` scans a two-byte literal prefix ~2-3x faster than bytes.find/count on
# this CPython, and it accepts memoryview/bytearray without a copy.
_NL_DOT = re.compile(rb"\n\.")
_CRLF_DOT = re.compile(rb"\r\n\.")
_STATUS = re.compile(rb"([1-5][0-9][0-9])(?: (.*)|)\Z", re.DOTALL)
_SUBCODE = re.compile(r"([1-5][0-9][0-9])(?:\s|\Z)")
_TOO_MANY = re.compile(r"too many connections|connection limit|max.*conn", re.IGNORECASE)
_ANGLE_ID = re.compile(r"<[^\s<>]+>")


@dataclass(frozen=True, slots=True)
class Response:
    """One status line: the three-digit code and the text after it."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.text else str(self.code)

    def message_id(self) -> str | None:
        """The first ``<...>`` token in the text (240/223/222 replies carry one)."""
        m = _ANGLE_ID.search(self.text)
        return m.group(0) if m else None


# --------------------------------------------------------------------------- errors


class NNTPError(UsenetSyncError):
    """Base of every NNTP failure; always combined with an ``errors`` class
    listed after it, which supplies ``exit_code`` and ``hint`` (this class
    defines neither, so the MRO finds the project's).

    ``retryable``: the same request may succeed later (after a backoff).
    ``fatal_for_server``: stop using this server for the rest of the run.
    """

    retryable: bool = False
    fatal_for_server: bool = False

    def __init__(
        self,
        message: str,
        *,
        response: Response | None = None,
        hint: str | None = None,
        retryable: bool | None = None,
        fatal_for_server: bool | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.response = response
        if retryable is not None:
            self.retryable = retryable
        if fatal_for_server is not None:
            self.fatal_for_server = fatal_for_server


class TransientError(NNTPError, NetworkError):
    """Timeouts, resets, 499/503 and unknown 4xx/5xx: retry with backoff."""

    retryable = True


class NNTPTimeout(TransientError):
    """No reply within the socket timeout."""


class ConnectionLost(TransientError):
    """The server reset or closed the connection (EOF)."""


class ConnectFailed(TransientError):
    """The TCP connection could not be opened (refused, unreachable, DNS)."""


class ServiceClosing(TransientError):
    """400: the server is closing the session. Back off; never reconnect at once."""

    hint = "the server is busy or restarting; usenetsync backs off and retries"


class NNTPProtocolError(NNTPError, ProtocolError):
    """Unparseable or out-of-sequence reply: the session state is unknown."""

    fatal_for_server = True


class ReplyTooLarge(NNTPProtocolError):
    """A reply grew past the bound its caller set (an endless line or block, a
    reply far larger than the article it answers). The session is abandoned —
    the rest of that reply is never read — but the server is not condemned:
    the fault belongs to the one request, which fails."""

    fatal_for_server = False


class TLSError(NNTPError, NetworkError):
    """The TLS handshake failed (not TLS on that port, no common protocol)."""

    fatal_for_server = True
    hint = "check that the port speaks implicit TLS (usually 563), or turn TLS off"


class TLSVerifyFailed(TLSError):
    """The server's certificate could not be verified."""

    hint = (
        "trust the server's CA with ca_file (--ca-file), or, only if you accept"
        " the risk, disable verification with insecure (--insecure)"
    )


class AuthRequired(NNTPError, AuthError):
    """480 and no (working) credentials to answer it."""

    fatal_for_server = True
    hint = "this server needs a user name and password; add them to the server config"


class AuthFailed(NNTPError, AuthError):
    """481/482: the server refused the credentials."""

    fatal_for_server = True


class PostingNotAllowed(NNTPError, ServerRefusedError):
    """440: this server (or this login) may not post."""

    fatal_for_server = True
    hint = "this account cannot post on this server; use another server for uploads"


class ServiceUnavailable(NNTPError, ServerRefusedError):
    """502 (not about connection counts), 483: permanently refused."""

    fatal_for_server = True


class TooManyConnections(NNTPError, ServerRefusedError):
    """502 whose text is about the connection limit: use fewer connections."""

    retryable = True
    hint = "lower `connections` for this server (your plan's limit is lower)"


class PostRejected(NNTPError, ServerRefusedError):
    """441: this one article was refused. ``subcode`` is the code inside the text."""

    hint = "the server refused this article; see the reason above"

    def __init__(
        self,
        message: str,
        *,
        subcode: int | None = None,
        message_id: str | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.subcode = subcode
        self.message_id = message_id


class DuplicateArticle(PostRejected):
    """441 435: the Message-ID is already known (posted before, or burnt)."""


class ArticleRefused(PostRejected):
    """441 437: rejected by the server's policy (e.g. Date too old, too big)."""


class ArticleMissing(NNTPError, NotFoundError):
    """430/423/420/411: not on this server. An answer, not a server fault."""

    hint = "the article (or group) is not on this server; `verify --repair` re-posts"


# --------------------------------------------------------------------------- parsing


def parse_status(line: BytesLike) -> Response:
    """Parse one status line (without its CRLF) into a ``Response``.

    Raises ``NNTPProtocolError`` for anything that is not ``DDD[ text]``.
    """
    m = _STATUS.match(line)
    if m is None:
        shown = bytes(line[:80]).decode("ascii", "backslashreplace")
        raise NNTPProtocolError(f"unexpected reply from server: {redact(shown)!r}")
    text = m.group(2)
    return Response(int(m.group(1)), text.decode("utf-8", "replace").strip() if text else "")


def describe_command(command: str | bytes) -> str:
    """The part of a command that is safe to show: never a password."""
    if isinstance(command, (bytes, bytearray)):
        command = bytes(command).decode("utf-8", "replace")
    words = command.split()
    if not words:
        return "(greeting)"
    if words[0].upper() == "AUTHINFO":
        # The user name is not secret, but AUTHINFO's arguments are dropped
        # wholesale so no future AUTHINFO variant can leak through here.
        return " ".join(w.upper() for w in words[:2])
    return redact(" ".join(words))[:120]


def raise_for(
    response: Response,
    command: str | bytes,
    *,
    ok: Container[int] | None = None,
    server: str | None = None,
) -> Response:
    """Return ``response`` if it is a success, else raise its typed error.

    Success is ``ok`` when given (any other code below 400 is then a protocol
    error: the reply does not belong to the command), else any code < 400.
    """
    code = response.code
    if ok is not None:
        if code in ok:
            return response
    elif code < 400:
        return response
    text = redact(response.text)
    where = f"{server}: " if server else ""
    msg = f"{where}{describe_command(command)} failed: {code} {text}".rstrip()
    kw: dict[str, object] = {"response": response}

    if code < 400:
        raise NNTPProtocolError(f"{where}unexpected reply to {describe_command(command)}: {code} {text}", **kw)
    if code == 441:
        sub_m = _SUBCODE.match(text)
        subcode = int(sub_m.group(1)) if sub_m else None
        if subcode == 435:
            raise DuplicateArticle(msg, subcode=subcode, **kw)
        if subcode == 437:
            raise ArticleRefused(msg, subcode=subcode, **kw)
        # 436 inside a 441 is "transfer not possible; try again later".
        raise PostRejected(msg, subcode=subcode, retryable=subcode == 436, **kw)
    if code in MISSING_CODES:
        raise ArticleMissing(msg, **kw)
    if code == 400:
        raise ServiceClosing(msg, **kw)
    if code == 440:
        raise PostingNotAllowed(msg, **kw)
    if code == 480:
        raise AuthRequired(msg, **kw)
    if code in (481, 482):
        raise AuthFailed(msg, **kw)
    if code == 483:
        raise ServiceUnavailable(msg, hint="this server requires TLS; connect with tls on (port 563)", **kw)
    if code == 502:
        if _TOO_MANY.search(text):
            raise TooManyConnections(msg, **kw)
        raise ServiceUnavailable(msg, **kw)
    if code in (401, 500, 501, 504):
        # The server did not understand us: retrying the same bytes cannot help.
        raise NNTPProtocolError(msg, **kw)
    # 499, 503 and any 4xx/5xx we do not know: the server is having a moment.
    raise TransientError(msg, **kw)


# --------------------------------------------------------------------------- block codec


def _as_bytes_view(buf: BytesLike) -> BytesLike:
    if isinstance(buf, memoryview) and (buf.format != "B" or buf.ndim != 1):
        return buf.cast("B")
    return buf


def normalize_crlf(data: BytesLike) -> bytes:
    """Turn every bare LF into CRLF (CRLF stays, a lone CR stays)."""
    data = bytes(data)
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def dot_stuff(data: BytesLike) -> bytes:
    """The wire form of a multi-line block: CRLF lines, every line starting
    with '.' gets one more '.', last line CRLF-terminated, then '.\\r\\n'.

    ``dot_stuff(b'')`` is just the terminator line.
    """
    data = normalize_crlf(data)
    if data[:1] == b".":
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if data and data[-2:] != b"\r\n":
        data += b"\r\n"
    return data + _TERMINATOR


def dot_unstuff(block: BytesLike) -> bytes:
    """Inverse of ``dot_stuff`` for a received block without its '.' line.

    Every received line that starts with '.' was stuffed (the only unstuffed
    one is the terminator), so one leading dot is removed from each.
    """
    data = bytes(block)
    if data[:1] == b".":
        data = data[1:]
    if _CRLF_DOT.search(data) is None:
        return data
    return data.replace(b"\r\n.", b"\r\n")


def wire_buffers(article: BytesLike | Iterable[BytesLike]) -> list[BytesLike]:
    """Buffers whose concatenation is the POST data of ``article``, terminator included.

    ``article`` is one buffer or several whose concatenation is the article
    (headers, blank line, body). When no line starts with '.' the pieces are
    returned as they are (no 800 KB copy) plus a small tail; otherwise the
    article is joined once and ``dot_stuff``-ed, which also normalizes bare LF.

    On the fast path line endings are the caller's: core.article and sabctools
    produce CRLF. A bare LF followed by '.' always takes the slow path, so no
    server can see an unstuffed dot at a line start either way.
    """
    if isinstance(article, (bytes, bytearray, memoryview)):
        pieces: list[BytesLike] = [_as_bytes_view(article)]
    else:
        pieces = [_as_bytes_view(p) for p in article]
    pieces = [p for p in pieces if len(p)]
    if not pieces:
        return [_TERMINATOR]
    at_line_start = True
    for p in pieces:
        if at_line_start and p[:1] == b".":
            return [dot_stuff(b"".join(pieces))]
        if _NL_DOT.search(p) is not None:
            return [dot_stuff(b"".join(pieces))]
        at_line_start = p[-1:] == b"\n"
    last = pieces[-1]
    if last[-2:] == b"\r\n":
        pieces.append(_TERMINATOR)
    elif last[-1:] == b"\n":
        # A bare LF at the very end: only normalizing gives a proper final CRLF.
        return [dot_stuff(b"".join(pieces))]
    else:
        pieces.append(b"\r\n" + _TERMINATOR)
    return pieces


# --------------------------------------------------------------------------- reader


class Reader:
    """Buffered reader of status lines and multi-line blocks.

    ``recv_into(view) -> int`` fills ``view`` and returns the byte count; 0
    means EOF. The connection passes a wrapper that maps socket exceptions to
    ``TransientError``s. One ``bytearray`` is reused for the whole session and
    grows to the largest block seen (~1 MB for articles), never past the bound
    of the read that needs it: a line is at most ``MAX_LINE`` bytes and a block
    at most its ``max_bytes``; beyond either, ``ReplyTooLarge``.
    """

    __slots__ = ("_recv_into", "_buf", "_r", "_w")

    def __init__(self, recv_into: Callable[[memoryview], int], size: int = 64 * 1024) -> None:
        self._recv_into = recv_into
        self._buf = bytearray(size)
        self._r = 0  # first unread byte
        self._w = 0  # end of valid data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed."""
        return self._w - self._r

    @property
    def capacity(self) -> int:
        """Size of the buffer (for tests of the memory bound)."""
        return len(self._buf)

    def _fill(self, cap: int) -> None:
        """Receive more bytes; keeps unread bytes, may move them to offset 0.

        ``cap``: the largest buffer the current read may need. The buffer grows
        (at most to ``cap``) only when unread bytes fill it; when they fill a
        buffer of ``cap`` bytes already, the reply is too large.
        """
        buf = self._buf
        if self._r == self._w:
            self._r = self._w = 0
        elif self._w == len(buf) and self._r:
            n = self._w - self._r
            buf[:n] = buf[self._r : self._w]
            self._r, self._w = 0, n
        if self._w == len(buf):
            if len(buf) >= cap:
                raise ReplyTooLarge(f"reply larger than expected (over {cap:,} bytes)")
            grown = bytearray(min(cap, 2 * len(buf)))
            grown[: self._w] = buf
            self._buf = buf = grown
        with memoryview(buf) as view:
            n = self._recv_into(view[self._w :])
        if not n:
            raise ConnectionLost("connection lost: the server closed the connection")
        self._w += n

    def readline(self) -> bytes:
        """One line without its CRLF."""
        scan = self._r
        while True:
            i = self._buf.find(b"\r\n", scan, self._w)
            if i >= 0:
                line = bytes(self._buf[self._r : i])
                self._r = i + 2
                return line
            if self._w - self._r > MAX_LINE:
                raise ReplyTooLarge("reply line too long: the server is not speaking NNTP")
            scan = max(self._r, self._w - 1) - self._r  # offset survives compaction
            self._fill(2 * MAX_LINE)
            scan += self._r

    def read_lines(self, limit: int) -> list[bytes]:
        """At least one and at most ``limit`` complete lines, each without CRLF.

        Returns every complete line already received (up to ``limit``) in one
        C-level split, which is what makes pipelined STAT cheap.
        """
        buf = self._buf
        while True:
            last = buf.rfind(b"\r\n", self._r, self._w)
            if last >= 0:
                break
            if self._w - self._r > MAX_LINE:
                raise ReplyTooLarge("reply line too long: the server is not speaking NNTP")
            self._fill(2 * MAX_LINE)
            buf = self._buf
        lines = bytes(buf[self._r : last]).split(b"\r\n")
        if len(lines) > limit:
            # More replies than asked for: give back the surplus untouched.
            lines = lines[:limit]
            consumed = sum(map(len, lines)) + 2 * limit
            self._r += consumed
        else:
            self._r = last + 2
        return lines

    def read_block(self, max_bytes: int = MAX_BLOCK) -> bytes:
        """The data of a multi-line block (lines with CRLF, terminator removed), unstuffed.

        Raises ``ReplyTooLarge`` once the block is known to exceed ``max_bytes``
        (counted as received, dot-stuffing included); the buffer never grows
        past ``max_bytes`` plus the terminator and one line of slack.
        """
        cap = max(max_bytes + 5, 64)
        while self._w - self._r < 3:
            self._fill(cap)
        buf = self._buf
        stuffed = False
        if buf[self._r] == 0x2E:  # '.'
            if buf[self._r + 1] == 0x0D and buf[self._r + 2] == 0x0A:
                self._r += 3
                return b""
            stuffed = True
        pos = 0  # offset from self._r where the next search starts
        while True:
            m = _CRLF_DOT.search(buf, self._r + pos, self._w)
            if m is None:
                pos = max(0, self._w - self._r - 2)
                self._fill(cap)  # unread bytes are all this block's: the cap bounds it
                buf = self._buf
                continue
            i = m.start()
            if i + 2 - self._r > max_bytes:
                raise ReplyTooLarge(f"reply larger than expected (over {max_bytes:,} bytes)")
            if i + 5 > self._w:
                pos = i - self._r
                self._fill(cap)  # unread bytes are all this block's: the cap bounds it
                buf = self._buf
                continue
            if buf[i + 3] == 0x0D and buf[i + 4] == 0x0A:
                with memoryview(buf) as view:
                    data = view[self._r : i + 2].tobytes()
                self._r = i + 5
                return dot_unstuff(data) if stuffed else data
            stuffed = True
            pos = i + 3 - self._r
