"""Minimal raw-socket NNTP client for test tooling only.

Owns: talking NNTP to the real INN from tests, fixtures and the fault proxy's
tests, *independently* of the product's own client (``usenetsync_cli.nntp``),
so a bug in the product cannot hide itself by also being in the checker.

Invariants:
- Every command is one CRLF-terminated line; replies are read exactly (status
  line, then a dot-terminated block only when the caller asks for one).
- ``read_block`` returns the content dot-unstuffed with its CRLF line endings
  kept and without the terminating ``.`` line, so it is byte-comparable with
  what was posted.
- ``post`` dot-stuffs the article and guarantees the ``CRLF.CRLF`` terminator;
  it never sends the article unless the server answered 340 to POST.
- Nothing here retries or hides errors: a dropped connection surfaces as an
  ``OSError``/``EOFError`` to the test.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from types import TracebackType

CRLF = b"\r\n"


class NNTPProtocolError(Exception):
    """The server sent something that is not a valid NNTP reply."""


def dot_stuff(data: bytes) -> bytes:
    """Wire-encode ``data`` as the body of a multi-line block (no terminator).

    A leading '.' on any line is doubled; ``data`` is expected to use CRLF.
    """
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed


def dot_unstuff(data: bytes) -> bytes:
    """Inverse of :func:`dot_stuff` for CRLF-separated block content."""
    unstuffed = data.replace(b"\r\n..", b"\r\n.")
    if unstuffed.startswith(b".."):
        unstuffed = unstuffed[1:]
    return unstuffed


def make_article(
    message_id: str,
    body: bytes,
    *,
    group: str = "alt.binaries.test",
    subject: str = "usenetsync test",
    sender: str = "tester <tester@test.invalid>",
) -> bytes:
    """Build an unstuffed article (headers + blank line + body, CRLF endings).

    ``body`` should use CRLF line endings; a missing final CRLF is added
    because NNTP articles are line-based.
    """
    if body and not body.endswith(CRLF):
        body += CRLF
    headers = (
        f"From: {sender}\r\n"
        f"Newsgroups: {group}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n"
    ).encode("ascii")
    return headers + CRLF + body


def fresh_message_id(tag: str = "t") -> str:
    """Return a never-before-used ``<tag.uuid4@test.invalid>`` Message-ID.

    INN remembers every ID it ever saw (even cancelled ones answer
    ``441 435 Duplicate``), so tests must never reuse one.
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in tag) or "t"
    return f"<{safe}.{uuid.uuid4().hex}@test.invalid>"


class RawNNTP:
    """One NNTP connection over a plain or TLS socket; use as a context manager."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        read_greeting: bool = True,
    ) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if tls_context is not None:
                sock = tls_context.wrap_socket(sock, server_hostname=server_hostname or host)
        except BaseException:
            sock.close()
            raise
        self.sock: socket.socket = sock
        self._rfile = sock.makefile("rb")
        self.greeting: tuple[int, str] | None = None
        if read_greeting:
            self.greeting = self.read_status()

    # -- context management ------------------------------------------------------------
    def __enter__(self) -> RawNNTP:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._rfile.close()
        finally:
            self.sock.close()

    # -- primitives --------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self) -> bytes:
        """One line including its CRLF; EOFError when the server closed."""
        line = self._rfile.readline()
        if not line:
            raise EOFError("connection closed by peer")
        return line

    def read_status(self) -> tuple[int, str]:
        line = self.read_line()
        code = line[:3]
        if len(line) < 3 or not code.isdigit():
            raise NNTPProtocolError(f"not a status line: {line!r}")
        return int(code), line[3:].strip().decode("utf-8", "replace")

    def read_block(self) -> bytes:
        """Read a dot-terminated block; return it unstuffed, CRLFs kept."""
        chunks: list[bytes] = []
        while True:
            line = self.read_line()
            if line == b".\r\n":
                return b"".join(chunks)
            chunks.append(line[1:] if line.startswith(b"..") else line)

    def command(self, line: str | bytes) -> tuple[int, str]:
        """Send one command line and return its status (code, text)."""
        raw = line.encode("utf-8") if isinstance(line, str) else line
        if b"\r" in raw or b"\n" in raw:
            raise ValueError("command must be a single line without CR/LF")
        self.send_raw(raw + CRLF)
        return self.read_status()

    # -- conveniences ------------------------------------------------------------------
    def login(self, user: str, password: str) -> tuple[int, str]:
        code, text = self.command(f"AUTHINFO USER {user}")
        if code != 381:
            return code, text
        return self.command(f"AUTHINFO PASS {password}")

    def post(self, article: bytes) -> tuple[int, str]:
        """POST an unstuffed article; returns the final reply (or POST's, if not 340)."""
        code, text = self.command("POST")
        if code != 340:
            return code, text
        payload = dot_stuff(article)
        if not payload.endswith(CRLF):
            payload += CRLF
        self.send_raw(payload + b".\r\n")
        return self.read_status()

    def stat(self, message_id: str) -> int:
        return self.command(f"STAT {message_id}")[0]

    def body(self, message_id: str) -> bytes | None:
        code, text = self.command(f"BODY {message_id}")
        if code == 430:
            return None
        if code != 222:
            raise NNTPProtocolError(f"BODY {message_id}: {code} {text}")
        return self.read_block()

    def quit(self) -> None:
        try:
            self.command("QUIT")
        except (OSError, EOFError, NNTPProtocolError):
            pass  # the server may already be gone; quitting is best-effort
