#!/usr/bin/env python3
"""A discard NNTP server: the cheapest possible peer, to measure a poster's own ceiling.

Owns: accepting NNTP connections on a loopback port and answering just enough
of the protocol for an uploader to run its real path end to end:

- greeting ``200`` (posting allowed);
- ``POST`` -> ``340``; the article is read and thrown away until its
  terminator (CRLF . CRLF), then ``240 <message-id>`` (the ID from the
  article's own Message-ID header, so the client sees what a real server
  says);
- ``STAT <id>`` -> ``223 0 <id>`` (everything "exists", so a post-check
  passes); pipelined STATs are answered in one ``sendall`` per batch;
- ``MODE READER`` -> 200, ``CAPABILITIES`` -> a short list, ``GROUP`` -> 211,
  ``AUTHINFO`` -> 281, ``QUIT`` -> 205, anything else -> 500.

It stores nothing and checks nothing, so the time an upload takes against it
is the client's own (plus the loopback copy). One thread per connection:
the blocking ``recv_into`` releases the GIL, and the per-chunk Python work is
a single ``bytearray.find`` over at most 1 MiB.

The terminator is found without joining chunks: each chunk is searched in
place, and a terminator straddling two chunks is caught by searching the
last 4 bytes of the stream so far plus the first 4 of the new chunk.

Usage (the benchmark starts and kills it itself):
    python3 benchmarks/discard_sink.py [--host 127.0.0.1] [--port 0]
It prints ``LISTENING <host> <port>`` on stdout once it accepts connections,
and a JSON line of totals on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import sys
import threading
import time
from types import FrameType

TERMINATOR = b"\r\n.\r\n"
RECV_SIZE = 1 << 20  # big reads: the per-recv Python cost is what limits a Python sink
HEADER_SCAN = 16 * 1024  # our headers are ~300 bytes; give up looking for Message-ID after this
_MSGID = re.compile(rb"(?im)^Message-ID:[ \t]*(<[^\s<>]+>)")

_CAPS = b"101 Capability list follows\r\nVERSION 2\r\nREADER\r\nPOST\r\n.\r\n"


class Totals:
    """Counters over all connections (reported on exit; updated under a lock once per article)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.articles = 0
        self.bytes = 0
        self.stats = 0


def _read_article(
    sock: socket.socket, buf: bytearray, view: memoryview, first: bytes
) -> tuple[bytes, int, bytes] | None:
    """Discard one article's data; returns (message-id or b'', bytes consumed, leftover) or None on EOF.

    ``first`` is whatever already arrived after the POST line. The stream is
    treated as if preceded by CRLF, so an article that is only ".\\r\\n" ends too.
    """
    tail = b"\r\n"  # the last <= 4 bytes seen; data starts at a line start
    head = bytearray()
    msgid = b""
    seen = 0
    chunk: memoryview | bytes = first
    n = len(first)
    while True:
        if n:
            if not msgid and len(head) < HEADER_SCAN:
                head += chunk[: min(n, HEADER_SCAN - len(head))]
                m = _MSGID.search(head)
                if m:
                    msgid = m.group(1)
            # Straddling terminator: starts in the previous <= 4 bytes, ends in the first 4 of this chunk.
            joint = tail + bytes(chunk[:4])
            i = joint.find(TERMINATOR)
            end = -1
            if i >= 0:
                end = i + len(TERMINATOR) - len(tail)
            else:
                j = buf.find(TERMINATOR, 0, n) if chunk is view else bytes(chunk).find(TERMINATOR)
                if j >= 0:
                    end = j + len(TERMINATOR)
            if end >= 0:
                return msgid, seen + end, bytes(chunk[end:n])
            seen += n
            tail = bytes(chunk[n - 4 : n]) if n >= 4 else (tail + bytes(chunk[:n]))[-4:]
        n = sock.recv_into(view, RECV_SIZE)
        if not n:
            return None
        chunk = view


def serve(sock: socket.socket, totals: Totals) -> None:
    """One client session until QUIT or EOF."""
    buf = bytearray(RECV_SIZE)
    view = memoryview(buf)
    pending = b""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"200 discard sink ready (posting ok)\r\n")
        while True:
            if b"\n" not in pending:
                n = sock.recv_into(view, RECV_SIZE)
                if not n:
                    return
                pending += bytes(view[:n])
                continue
            replies: list[bytes] = []
            post = False
            quit_ = False
            # Answer every complete command line (STATs arrive pipelined, in batches).
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                words = line.rstrip(b"\r").split()
                verb = words[0].upper() if words else b""
                if verb == b"STAT":
                    replies.append(b"223 0 " + (words[1] if len(words) > 1 else b"<>") + b"\r\n")
                    with totals.lock:
                        totals.stats += 1
                elif verb == b"POST":
                    replies.append(b"340 send article\r\n")
                    post = True
                    break  # the rest of ``pending`` is article data
                elif verb == b"QUIT":
                    replies.append(b"205 bye\r\n")
                    quit_ = True
                    break
                elif verb == b"MODE":
                    replies.append(b"200 reader mode, posting ok\r\n")
                elif verb == b"CAPABILITIES":
                    replies.append(_CAPS)
                elif verb == b"GROUP":
                    name = words[1] if len(words) > 1 else b"x"
                    replies.append(b"211 0 1 0 " + name + b"\r\n")
                elif verb == b"AUTHINFO":
                    replies.append(b"281 ok\r\n")
                elif verb:
                    replies.append(b"500 unknown command\r\n")
            if replies:
                sock.sendall(b"".join(replies))
            if quit_:
                return
            if post:
                got = _read_article(sock, buf, view, pending)
                if got is None:
                    return
                msgid, size, pending = got
                with totals.lock:
                    totals.articles += 1
                    totals.bytes += size
                sock.sendall(b"240 " + (msgid or b"<unknown@sink>") + b" article received\r\n")
    except OSError:
        return
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = an ephemeral port (printed on stdout)")
    a = p.parse_args(argv)
    totals = Totals()
    t0 = time.monotonic()
    lsock = socket.create_server((a.host, a.port), backlog=128)
    host, port = lsock.getsockname()[:2]

    def stop(_sig: int, _frame: FrameType | None) -> None:
        cpu = time.process_time()
        print(json.dumps({"connections": totals.connections, "articles": totals.articles, "bytes": totals.bytes,
                          "stats": totals.stats, "uptime_s": round(time.monotonic() - t0, 3),
                          "cpu_s": round(cpu, 3)}), flush=True)
        lsock.close()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"LISTENING {host} {port}", flush=True)
    while True:
        try:
            conn, _ = lsock.accept()
        except OSError:
            return 0
        with totals.lock:
            totals.connections += 1
        threading.Thread(target=serve, args=(conn, totals), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
