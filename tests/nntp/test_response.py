"""Unit tests of the NNTP wire layer: status parsing, code -> error mapping,
the dot-stuffing codec, the buffered reader (fed by a fake recv, no server)
and the backoff schedule."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usenetsync_cli import errors
from usenetsync_cli.nntp import (
    ArticleMissing,
    ArticleRefused,
    AuthFailed,
    AuthRequired,
    Backoff,
    ConnectionLost,
    DuplicateArticle,
    NNTPError,
    NNTPProtocolError,
    PostingNotAllowed,
    PostRejected,
    Reader,
    ReplyTooLarge,
    Response,
    ServiceClosing,
    ServiceUnavailable,
    TooManyConnections,
    TransientError,
    describe_command,
    dot_stuff,
    dot_unstuff,
    parse_status,
    raise_for,
    wire_buffers,
)

# --------------------------------------------------------------------------- status lines


@pytest.mark.parametrize(
    ("line", "code", "text"),
    [
        (b"200 inn.localdomain InterNetNews NNRP server INN 2.7.1 ready (posting ok)", 200,
         "inn.localdomain InterNetNews NNRP server INN 2.7.1 ready (posting ok)"),
        (b"240 Article received <a@b>", 240, "Article received <a@b>"),
        (b"441 435 Duplicate", 441, "435 Duplicate"),
        (b"205", 205, ""),
        (b"223 ", 223, ""),
        (b"430 No such article", 430, "No such article"),
        (b"281 Ok \xff", 281, "Ok \ufffd"),
    ],
)
def test_parse_status(line: bytes, code: int, text: str) -> None:
    assert parse_status(line) == Response(code, text)


@pytest.mark.parametrize(
    "line", [b"", b"20", b"2000 x", b"abc def", b"600 nope", b"099 low", b"HTTP/1.1 400 Bad", b" 200 x", b"200x"]
)
def test_parse_status_rejects_garbage(line: bytes) -> None:
    with pytest.raises(NNTPProtocolError) as ei:
        parse_status(line)
    assert isinstance(ei.value, errors.ProtocolError)
    assert ei.value.fatal_for_server and not ei.value.retryable


def test_response_message_id() -> None:
    assert Response(240, "Article received <x.y@z>").message_id() == "<x.y@z>"
    assert Response(240, "Article posted").message_id() is None
    assert str(Response(441, "435 Duplicate")) == "441 435 Duplicate"


# --------------------------------------------------------------------------- code -> error


def _raised(code: int, text: str = "", command: str = "POST") -> NNTPError:
    with pytest.raises(NNTPError) as ei:
        raise_for(Response(code, text), command)
    return ei.value


@pytest.mark.parametrize("code", [100, 101, 111, 200, 201, 205, 211, 222, 223, 240, 281, 340, 381])
def test_success_codes_pass(code: int) -> None:
    r = Response(code, "x")
    assert raise_for(r, "X") is r


@pytest.mark.parametrize(
    ("code", "text", "cls", "parent", "retryable", "fatal"),
    [
        (400, "server closing", ServiceClosing, errors.NetworkError, True, False),
        (440, "Posting not permitted", PostingNotAllowed, errors.ServerRefusedError, False, True),
        (441, "No valid newsgroups in \"alt.nonexistent\"", PostRejected, errors.ServerRefusedError, False, False),
        (441, "435 Duplicate", DuplicateArticle, errors.ServerRefusedError, False, False),
        (441, "437 Article posted too long ago", ArticleRefused, errors.ServerRefusedError, False, False),
        (480, "Authentication required for command", AuthRequired, errors.AuthError, False, True),
        (481, "Authentication failed", AuthFailed, errors.AuthError, False, True),
        (482, "Authentication commands issued out of sequence", AuthFailed, errors.AuthError, False, True),
        (502, "Too many connections (8/8)", TooManyConnections, errors.ServerRefusedError, True, False),
        (502, "Connection limit reached", TooManyConnections, errors.ServerRefusedError, True, False),
        (502, "MAX CONNECTIONS EXCEEDED for user", TooManyConnections, errors.ServerRefusedError, True, False),
        (502, "Access denied", ServiceUnavailable, errors.ServerRefusedError, False, True),
        (502, "", ServiceUnavailable, errors.ServerRefusedError, False, True),
        (483, "Encryption required", ServiceUnavailable, errors.ServerRefusedError, False, True),
        (430, "No such article", ArticleMissing, errors.NotFoundError, False, False),
        (423, "No article with that number", ArticleMissing, errors.NotFoundError, False, False),
        (420, "No current article", ArticleMissing, errors.NotFoundError, False, False),
        (411, "No such group", ArticleMissing, errors.NotFoundError, False, False),
        (499, "something odd", TransientError, errors.NetworkError, True, False),
        (503, "Timeout", TransientError, errors.NetworkError, True, False),
        (599, "unknown", TransientError, errors.NetworkError, True, False),
        (436, "try later", TransientError, errors.NetworkError, True, False),
        (500, "What?", NNTPProtocolError, errors.ProtocolError, False, True),
        (501, "Syntax error", NNTPProtocolError, errors.ProtocolError, False, True),
        (401, "MODE-READER", NNTPProtocolError, errors.ProtocolError, False, True),
    ],
)
def test_error_mapping(
    code: int, text: str, cls: type, parent: type, retryable: bool, fatal: bool
) -> None:
    err = _raised(code, text)
    assert type(err) is cls
    assert isinstance(err, parent) and isinstance(err, errors.UsenetSyncError)
    assert err.exit_code == parent.exit_code
    assert err.retryable is retryable
    assert err.fatal_for_server is fatal
    assert err.response == Response(code, text)
    assert str(code) in str(err)


@pytest.mark.parametrize(
    ("text", "subcode", "cls"),
    [
        ("435 Duplicate", 435, DuplicateArticle),
        ("437 Article of 5029360 bytes exceeds local limit of 5000000 bytes", 437, ArticleRefused),
        ("436 Try again later", 436, PostRejected),
        ("Can't parse Date header field body", None, PostRejected),
        ("Article is bigger than local limit of 5000000 bytes", None, PostRejected),
        ("4350 not a subcode", None, PostRejected),
    ],
)
def test_441_subcodes(text: str, subcode: int | None, cls: type) -> None:
    err = _raised(441, text)
    assert type(err) is cls
    assert isinstance(err, PostRejected)
    assert err.subcode == subcode
    # 441 436 means "transfer not possible; try again later": retry that one.
    assert err.retryable is (subcode == 436)


def test_unexpected_success_code_is_protocol_error() -> None:
    with pytest.raises(NNTPProtocolError):
        raise_for(Response(211, "0 1 0 g"), "STAT <a@b>", ok={223, 430})
    assert raise_for(Response(430, "No such article"), "STAT <a@b>", ok={223, 430}).code == 430


def test_server_name_in_message() -> None:
    with pytest.raises(ServiceClosing, match=r"^news1: POST failed: 400 bye"):
        raise_for(Response(400, "bye"), "POST", server="news1")


def test_password_never_in_error_text() -> None:
    secret = "hunter2-very-secret"
    with pytest.raises(AuthFailed) as ei:
        raise_for(Response(481, "Authentication failed"), f"AUTHINFO PASS {secret}")
    assert secret not in str(ei.value) and secret not in repr(ei.value)
    assert "AUTHINFO PASS" in str(ei.value)
    # A server that echoes the command back is redacted too.
    with pytest.raises(TransientError) as ei2:
        raise_for(Response(503, f"bad AUTHINFO PASS {secret}"), "AUTHINFO PASS x")
    assert secret not in str(ei2.value)
    assert describe_command(b"authinfo pass " + secret.encode()) == "AUTHINFO PASS"
    assert describe_command("AUTHINFO USER bob") == "AUTHINFO USER"


# --------------------------------------------------------------------------- dot-stuffing

_line = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))
_dotty_line = st.one_of(_line, _line.map(lambda b: b"." + b), _line.map(lambda b: b".." + b), st.just(b"."))
_lines = st.lists(_dotty_line, max_size=30)


def _crlf(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


def test_dot_stuff_examples() -> None:
    assert dot_stuff(b"") == b".\r\n"
    assert dot_stuff(b"a\r\n") == b"a\r\n.\r\n"
    assert dot_stuff(b"a") == b"a\r\n.\r\n"
    assert dot_stuff(b".\r\n..\r\nx\r\n.y\r\n") == b"..\r\n...\r\nx\r\n..y\r\n.\r\n"
    assert dot_stuff(b"a\n.b\nc") == b"a\r\n..b\r\nc\r\n.\r\n"  # bare LF normalized
    assert dot_unstuff(b"..\r\n...\r\nx\r\n..y\r\n") == b".\r\n..\r\nx\r\n.y\r\n"
    assert dot_unstuff(b"") == b""


@given(_lines)
@settings(max_examples=400)
def test_dot_stuff_round_trip(lines: list[bytes]) -> None:
    body = _crlf(lines)
    wire = dot_stuff(body)
    assert wire.endswith(b".\r\n")
    block = wire[:-3]
    # The terminator line appears exactly once: at the very end.
    assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3
    assert dot_unstuff(block) == body


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_dot_stuff_arbitrary_bytes_is_crlf_and_safe(data: bytes) -> None:
    wire = dot_stuff(data)
    assert wire.count(b"\n") == wire.count(b"\r\n")
    assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3
    # Unstuffing gives the CRLF-normalized input (plus a final CRLF if missing).
    expected = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert dot_unstuff(wire[:-3]) == expected


@given(_lines, st.lists(st.integers(min_value=0, max_value=2000), max_size=5))
@settings(max_examples=400)
def test_wire_buffers_equals_dot_stuff_for_any_split(lines: list[bytes], cuts: list[int]) -> None:
    article = _crlf(lines)
    points = sorted({min(c, len(article)) for c in cuts})
    pieces = [article[a:b] for a, b in zip([0, *points], [*points, len(article)])]
    out = wire_buffers(pieces)
    assert b"".join(out) == dot_stuff(article)
    if b"\n." not in article and not article.startswith(b"."):
        # Fast path: the caller's buffers go out as they are, no copy.
        assert all(any(o is p for p in pieces) for o in out[:-1])


def test_wire_buffers_accepts_memoryview_and_missing_final_crlf() -> None:
    head = b"Subject: x\r\n\r\n"
    body = bytearray(b"line1\r\nline2")
    out = wire_buffers([memoryview(head), memoryview(body)])
    assert b"".join(out) == head + b"line1\r\nline2\r\n.\r\n"
    assert b"".join(wire_buffers(head + b".x\r\n")) == head + b"..x\r\n.\r\n"
    assert wire_buffers([]) == [b".\r\n"]


# --------------------------------------------------------------------------- reader


class FakeStream:
    """Feeds bytes to ``Reader`` in chunks of the given sizes (then EOF)."""

    def __init__(self, data: bytes, chunks: list[int] | None = None) -> None:
        self.data = data
        self.pos = 0
        self.chunks = list(chunks or [])

    def recv_into(self, view: memoryview) -> int:
        size = self.chunks.pop(0) if self.chunks else len(self.data)
        size = max(1, min(size, len(view), len(self.data) - self.pos))
        if self.pos >= len(self.data):
            return 0
        view[:size] = self.data[self.pos : self.pos + size]
        self.pos += size
        return size


def test_reader_lines_and_blocks() -> None:
    stream = b"200 hi\r\n222 0 <a@b> body\r\n..x\r\ny\r\n.\r\n222 0 <c@d>\r\n.\r\n430 no\r\n"
    r = Reader(FakeStream(stream).recv_into, size=8)
    assert r.readline() == b"200 hi"
    assert r.readline().startswith(b"222")
    assert r.read_block() == b".x\r\ny\r\n"
    assert r.readline() == b"222 0 <c@d>"
    assert r.read_block() == b""
    assert r.readline() == b"430 no"
    with pytest.raises(ConnectionLost):
        r.readline()


@given(_lines, st.lists(st.integers(min_value=1, max_value=64), max_size=50))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_reader_block_round_trip_any_chunking(lines: list[bytes], chunks: list[int]) -> None:
    body = _crlf(lines)
    stream = b"222 0 <a@b>\r\n" + dot_stuff(body) + b"223 0 <c@d>\r\n"
    r = Reader(FakeStream(stream, chunks).recv_into, size=16)
    assert r.readline() == b"222 0 <a@b>"
    assert r.read_block() == body
    assert r.readline() == b"223 0 <c@d>"
    assert r.buffered == 0


def test_reader_read_lines_respects_limit() -> None:
    r = Reader(FakeStream(b"223 a\r\n430 b\r\n223 c\r\n223 d").recv_into)
    assert r.read_lines(2) == [b"223 a", b"430 b"]
    assert r.read_lines(5) == [b"223 c"]
    with pytest.raises(ConnectionLost):
        r.read_lines(1)


def test_reader_rejects_endless_line() -> None:
    r = Reader(FakeStream(b"x" * 200_000).recv_into)
    with pytest.raises(NNTPProtocolError):
        r.readline()


def test_reader_large_block() -> None:
    body = b"".join(b"%0128d\r\n" % i for i in range(8000))  # ~1 MB, grows the buffer
    r = Reader(FakeStream(b"222 x\r\n" + dot_stuff(body), [65536] * 40).recv_into)
    r.readline()
    assert r.read_block() == body


class EndlessStream:
    """``head`` and then ``chunk`` forever: a server that never ends its reply."""

    def __init__(self, head: bytes, chunk: bytes) -> None:
        self.pending = head
        self.chunk = chunk
        self.sent = 0

    def recv_into(self, view: memoryview) -> int:
        if not self.pending:
            self.pending = self.chunk
        n = min(len(view), len(self.pending))
        view[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        self.sent += n
        return n


@pytest.mark.parametrize("chunk", [b"x" * 4096, b"short line\r\n" * 400, b"..stuffed\r\n" * 400])
def test_reader_endless_block_is_bounded(chunk: bytes) -> None:
    stream = EndlessStream(b"222 0 <a@b>\r\n", chunk)
    r = Reader(stream.recv_into)
    assert r.readline() == b"222 0 <a@b>"
    with pytest.raises(ReplyTooLarge, match="larger than expected") as ei:
        r.read_block(max_bytes=300_000)
    assert not ei.value.fatal_for_server  # the request fails, the server is not condemned
    # Neither the buffer nor what was read runs away: the bound plus one receive.
    assert r.capacity <= 300_005
    assert stream.sent <= 300_005 + 64 * 1024


def test_reader_endless_status_line_is_bounded() -> None:
    stream = EndlessStream(b"222 ", b"y" * 10_000)
    r = Reader(stream.recv_into)
    with pytest.raises(ReplyTooLarge, match="line too long"):
        r.readline()
    assert r.capacity <= 2 * 64 * 1024 and stream.sent <= 3 * 64 * 1024


def test_reader_block_bound_is_exact() -> None:
    body = b"".join(b"%0126d\r\n" % i for i in range(100))  # 12,800 bytes
    ok = Reader(FakeStream(b"222 x\r\n" + dot_stuff(body), [1000] * 40).recv_into)
    ok.readline()
    assert ok.read_block(max_bytes=len(body)) == body
    over = Reader(FakeStream(b"222 x\r\n" + dot_stuff(body), [1000] * 40).recv_into)
    over.readline()
    with pytest.raises(ReplyTooLarge):
        over.read_block(max_bytes=len(body) - 1)


# --------------------------------------------------------------------------- backoff


def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert b.attempts == 8
    b.reset()
    assert b.next_delay() == 1 and b.attempts == 1


def test_backoff_never_zero_and_jittered() -> None:
    b = Backoff(rand=lambda: 0.0)
    assert [b.next_delay() for _ in range(3)] == [0.5, 1, 2]
    rng = random.Random(7)
    b = Backoff(rand=rng.random)
    delays = [b.next_delay() for _ in range(2000)]
    assert all(0.5 <= d <= 60 for d in delays)
    assert len(set(delays[10:])) > 100  # jitter: connections do not reconnect in lockstep


def test_backoff_validates() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(base=10, cap=5)
