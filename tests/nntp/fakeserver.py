"""A small fake NNTP server, only for replies the real INN cannot produce.

INN always ends its replies and never lies about articles, so the client's
defences against hostile servers need this: endless lines and blocks, a
status line that never ends, yEnc headers claiming gigabytes, and a server
that answers 223/222 to everything. Everything else is tested against INN.

The reply to BODY/STAT is chosen by the Message-ID's local part:

- ``<ok.SIZE.x@fake>``      222 + a valid single-part yEnc article of SIZE bytes
                             (payload ``payload(msgid, SIZE)``, deterministic)
- ``<missing.x@fake>``       430
- ``<endless-line.x@fake>``  222, then bytes without a line break, forever
- ``<endless-text.x@fake>``  222, then short text lines, never the terminator
- ``<endless-yenc.x@fake>``  222, =ybegin/=ypart, then yEnc lines, forever
- ``<endless-status.x@fake>`` "222 " and a status line that never ends
- ``<huge-part.x@fake>``     222, a single-part article claiming size=2 GiB (100 real bytes)
- ``<huge-file.x@fake>``     222, part 1 (100 bytes) of a file claiming size=2 GiB
- ``<lf.SIZE.x@fake>``       222 + the ``ok`` article with bare-LF line ends (other
                             decoders read it; sabctools does not)
- ``<stall.x@fake>``         no answer at all, until the client hangs up
- ``<wrong-id.x@fake>``      222 naming another Message-ID (a server out of step)
- ``<extra.x@fake>``         a good 1-byte article followed by the start of a reply nobody asked for
- anything else              430

``--yes`` (or ``yes=True``): STAT answers 223 and BODY 222 with a short
non-yEnc body for every ID. "Forever" is ``ENDLESS_BYTES`` (300 MB) per reply,
sent until the client hangs up.

Run in-process (``with FakeNNTP() as srv: srv.port``) for small tests, or as
a subprocess (``python -m tests.nntp.fakeserver [--yes]`` prints its port)
when it must not share the test's GIL or memory (throughput and RSS tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import sabctools

ENDLESS_BYTES = 300 * 1024 * 1024
_CHUNK = 1024 * 1024
_HUGE = 2 * 1024 * 1024 * 1024


def payload(msgid: str, size: int) -> bytes:
    """The deterministic payload of ``<ok.SIZE.x@fake>`` (what the test expects to decode)."""
    seed = hashlib.sha256(msgid.encode()).digest()
    out = bytearray()
    block = seed
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def _yenc_single(data: bytes, name: bytes, size_claim: int | None = None, part: tuple[int, int] | None = None) -> bytes:
    encoded, crc = sabctools.yenc_encode(data)
    size = len(data) if size_claim is None else size_claim
    if part is None:
        head = b"=ybegin line=128 size=%d name=%s\r\n" % (size, name)
        tail = b"\r\n=yend size=%d crc32=%08x\r\n" % (len(data), crc)
    else:
        head = b"=ybegin part=1 total=99 line=128 size=%d name=%s\r\n=ypart begin=%d end=%d\r\n" % (
            size, name, part[0], part[1])
        tail = b"\r\n=yend size=%d part=1 pcrc32=%08x\r\n" % (len(data), crc)
    return head + encoded + tail


class FakeNNTP:
    """Listens on 127.0.0.1 (port 0 = any); one thread per client."""

    def __init__(self, *, yes: bool = False, port: int = 0) -> None:
        self.yes = yes
        self._lsock = socket.create_server(("127.0.0.1", port))
        self.port = self._lsock.getsockname()[1]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.connections = 0
        self.commands = 0
        self.endless_sent = 0  # bytes sent in endless replies (all clients)
        self._line_chunk = b"x" * _CHUNK
        self._text_chunk = (b"not yEnc, and it never ends\r\n" * (_CHUNK // 29 + 1))[:_CHUNK]
        enc, _ = sabctools.yenc_encode(payload("<endless@fake>", 96 * 8192))
        self._yenc_chunk = enc[: _CHUNK - _CHUNK % 130] if len(enc) > _CHUNK else enc

    def __enter__(self) -> FakeNNTP:
        self._thread = threading.Thread(target=self.serve, name="fakenntp", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._lsock.close()
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(5)

    def serve(self) -> None:
        while not self._stop.is_set():
            try:
                csock, _ = self._lsock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._client, args=(csock,), daemon=True).start()

    # ------------------------------------------------------------------ one client

    def _client(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(b"200 fake NNTP ready\r\n")
            buf = b""
            while True:
                data = sock.recv(256 * 1024)
                if not data:
                    return
                buf += data
                if b"\r\n" not in buf:
                    continue
                *lines, buf = buf.split(b"\r\n")
                out: list[bytes] = []
                for line in lines:
                    with self._lock:
                        self.commands += 1
                    if self._answer(sock, line, out):
                        return
                if out:
                    sock.sendall(b"".join(out))
        except OSError:
            return
        finally:
            sock.close()

    def _answer(self, sock: socket.socket, line: bytes, out: list[bytes]) -> bool:
        """Append the reply to ``out`` (or stream it); True to hang up."""
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        if verb == b"QUIT":
            out.append(b"205 bye\r\n")
            sock.sendall(b"".join(out))
            return True
        if verb == b"CAPABILITIES":
            out.append(b"101 caps\r\nVERSION 2\r\nREADER\r\n.\r\n")
        elif verb == b"MODE":
            out.append(b"200 reader\r\n")
        elif verb == b"GROUP":
            out.append(b"211 0 1 0 " + arg + b"\r\n")
        elif verb == b"STAT":
            kind = _kind(arg)
            ok = self.yes or kind not in (b"missing", b"")
            out.append(b"223 0 " + arg + b"\r\n" if ok else b"430 no such article\r\n")
        elif verb == b"BODY":
            return self._body(sock, arg, out)
        else:
            out.append(b"500 what?\r\n")
        return False

    def _body(self, sock: socket.socket, mid: bytes, out: list[bytes]) -> bool:
        if self.yes:
            out.append(b"222 0 " + mid + b"\r\nthis is not yEnc\r\n.\r\n")
            return False
        kind = _kind(mid)
        if kind == b"ok":
            size = int(mid.split(b".")[1])
            data = payload(mid.decode(), size)
            out.append(b"222 0 " + mid + b"\r\n" + _yenc_single(data, b"ok.bin") + b".\r\n")
        elif kind == b"lf":
            size = int(mid.split(b".")[1])
            body = _yenc_single(payload(mid.decode(), size), b"lf.bin").replace(b"\r\n", b"\n")
            out.append(b"222 0 " + mid + b"\r\n" + body[:-1] + b"\r\n.\r\n")
        elif kind == b"wrong-id":
            out.append(b"222 0 <someone.else@fake>\r\n" + _yenc_single(b"x", b"w.bin") + b".\r\n")
        elif kind == b"extra":
            out.append(b"222 0 " + mid + b"\r\n" + _yenc_single(b"x", b"e.bin") + b".\r\n22")
        elif kind == b"stall":
            sock.sendall(b"".join(out))
            out.clear()
            while sock.recv(65536):
                pass
            return True
        elif kind == b"huge-part":
            out.append(b"222 0 " + mid + b"\r\n" + _yenc_single(bytes(100), b"huge.bin", _HUGE) + b".\r\n")
        elif kind == b"huge-file":
            out.append(b"222 0 " + mid + b"\r\n" + _yenc_single(bytes(100), b"huge.bin", _HUGE, (1, 100)) + b".\r\n")
        elif kind == b"endless-line":
            return self._endless(sock, out, b"222 0 " + mid + b"\r\n", self._line_chunk)
        elif kind == b"endless-status":
            return self._endless(sock, out, b"222 ", self._line_chunk)
        elif kind == b"endless-text":
            return self._endless(sock, out, b"222 0 " + mid + b"\r\n", self._text_chunk)
        elif kind == b"endless-yenc":
            head = b"222 0 " + mid + b"\r\n=ybegin part=1 total=1 line=128 size=%d name=e.bin\r\n" % _HUGE
            return self._endless(sock, out, head + b"=ypart begin=1 end=%d\r\n" % _HUGE, self._yenc_chunk)
        else:
            out.append(b"430 no such article\r\n")
        return False

    def _endless(self, sock: socket.socket, out: list[bytes], head: bytes, chunk: bytes) -> bool:
        sock.sendall(b"".join(out) + head)
        out.clear()
        sent = 0
        while sent < ENDLESS_BYTES and not self._stop.is_set():
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
        with self._lock:
            self.endless_sent += sent
        return True  # the stream is spoilt either way: hang up


def _kind(mid: bytes) -> bytes:
    local = mid.strip(b"<>").split(b"@")[0]
    return local.split(b".")[0]


@contextlib.contextmanager
def serve_subprocess(*args: str) -> Iterator[int]:
    """Run the fake server in a child process (``--yes`` …); yields its port."""
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.nntp.fakeserver", *args], cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        yield int(proc.stdout.readline())
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()


def main(argv: list[str]) -> None:
    srv = FakeNNTP(yes="--yes" in argv)
    print(srv.port, flush=True)
    threading.Thread(target=srv.serve, daemon=True).start()
    sys.stdin.read()  # serve until the parent closes our stdin (or kills us)
    srv.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
