"""Posting and fetching over implicit TLS (INN's port 563, TLS + AUTHINFO), end to end through the CLI.

Owns: the evidence that everything the plain-port tests show also holds over
TLS: an upload posts, post-checks and publishes; ``status`` and
``verify --read-data`` find every article and read every body back over TLS;
a share downloads byte-identical over TLS; a certificate that is not trusted
stops the upload with one line and exit 10 before a single article byte is
sent; TLS spoken to a plain port fails at once with one line (no hang); a
connection cut mid-article is re-established and the upload completes with
every segment on the server exactly once.

How: the CLI talks to a ``FaultProxy(nntp=False)`` (a blind byte relay) in
front of port 563, so the proxy counts the TLS bytes each way and can cut a
connection mid-article; the proxy cannot read them, and 563 speaks nothing
but TLS, so every success proves the session was TLS. What is on the server
is judged independently of the product: STAT/BODY on fresh raw connections
to the plain port (``tests.support.inn``) and ``read_back``, which rebuilds
the files from the articles with its own reader.

The certificate: INN's is self-signed for ``localhost`` / ``127.0.0.1``;
``server add --ca-file`` trusts exactly it. The proxy listens on 127.0.0.1
too, so the name checked (the configured host) is the one in the certificate.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import Result, run
from tests.pipeline.upload_support import read_back
from tests.support.faultproxy import FaultProxy
from tests.support.inn import InnServer
from usenetsync_cli.nntp import Connection, ServerSpec
from usenetsync_cli.nntp.response import (
    ConnectionLost,
    NNTPError,
    TLSError,
    TransientError,
)
from usenetsync_cli.pipeline.upload import folder_context
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

SEG = 16384


@pytest.fixture
def tls_relay(inn: InnServer) -> Iterator[FaultProxy]:
    """A blind TCP relay in front of INN's TLS port: counts (and can cut) the TLS byte stream."""
    with FaultProxy(inn.host, inn.tls_port, nntp=False) as p:
        yield p


def _home(mp: pytest.MonkeyPatch, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    mp.setenv("USENETSYNC_HOME", str(path))


def _add_tls_server(
    capsys: pytest.CaptureFixture[str], inn: InnServer, tmp: Path, port: int, *extra: str, trust: bool = True,
    connections: int = 2,
) -> None:
    pw = tmp / "nntp-pass"
    if not pw.exists():
        pw.write_text(inn.password + "\n")
        pw.chmod(0o600)
    trust_args = ("--ca-file", str(inn.cert)) if trust else ()
    r = run(capsys, "server", "add", "tls", "--host", "127.0.0.1", "--port", str(port), "--tls", *trust_args,
            "--user", inn.user, "--password-file", str(pw), "--group", inn.group,
            "--connections", str(connections), "--timeout", "60", "--replace", *extra)
    assert r.code == 0, r.err


def _tree(root: Path) -> dict[bytes, bytes]:
    """Two multi-segment files, a few packed small ones and an empty one."""
    files = {
        b"big0.bin": os.urandom(SEG * 4 + 123),
        b"big1.bin": os.urandom(SEG * 3 + 4567),
        b"empty.dat": b"",
        **{b"small/s%d.txt" % i: os.urandom(200 + 97 * i) for i in range(5)},
    }
    for rel, data in files.items():
        p = os.path.join(os.fsencode(root), rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    return files


def _summary(r: Result, kind: str) -> dict:  # type: ignore[type-arg]
    (s,) = [x for x in r.json_lines() if x["type"] == kind]
    return s


def _segments(capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    """Segment counts by state over every shard, as ``status --json`` reports them."""
    r = run(capsys, "status", "--json")
    assert r.code == 0, r.err
    totals: dict[str, int] = {}
    for shard in (x for x in r.json_lines() if x["type"] == "status.shard"):
        for name, n in shard["segments"].items():
            totals[name] = totals.get(name, 0) + n
    return totals


def _layout(src: Path) -> tuple[list[tuple[int, int, int, int, int]], int]:
    """Every segment row of the folder as (shard, seg_id, state, attempt, epoch), and the live ones' payload bytes."""
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        rows = []
        payload = 0
        for shard, conn in enumerate(st.shards):
            for seg_id, state, attempt, epoch, length in conn.execute(
                "SELECT seg_id, state, attempt, epoch, length FROM segments WHERE folder_id=?", (folder.folder_id,)
            ):
                rows.append((shard, seg_id, state, attempt, epoch))
                if state in (1, 2):
                    payload += length
        return rows, payload


def _ids_by_attempt(src: Path, extra: int) -> dict[tuple[int, int], list[str]]:
    """(shard, seg_id) -> the derived Message-IDs of attempts 0 .. recorded attempt + ``extra``."""
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        ctx = folder_context(folder, ("alt.binaries.test",))
        out: dict[tuple[int, int], list[str]] = {}
        for shard, conn in enumerate(st.shards):
            for seg_id, attempt, epoch in conn.execute(
                "SELECT seg_id, attempt, epoch FROM segments WHERE folder_id=?", (folder.folder_id,)
            ):
                out[(shard, seg_id)] = [ctx.message_id(shard, seg_id, a, epoch) for a in range(attempt + extra + 1)]
        return out


def _read_back(src: Path) -> dict[bytes, bytes]:
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        return read_back(st, folder)


def _one_line_error(r: Result) -> str:
    assert "Traceback" not in r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("usenetsync: error: ") and "(hint: " in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------


def test_tls_upload_verify_read_data_and_share_download(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, inn: InnServer,
    tls_relay: FaultProxy,
) -> None:
    src = tmp_path / "src"
    files = _tree(src)
    _home(monkeypatch, tmp_path / "home-alice")
    _add_tls_server(capsys, inn, tmp_path, tls_relay.port)
    assert run(capsys, "keys", "init", "--no-passphrase").code == 0
    assert run(capsys, "index", str(src)).code == 0
    assert run(capsys, "share", "create", str(src), "--public", "--name", "s").code == 0
    up0 = tls_relay.bytes_client_to_server
    r = run(capsys, "upload", str(src), "--segment-size", str(SEG), "--json")
    assert r.code == 0, r.err
    up = _summary(r, "upload.summary")
    assert up["complete"] and up["failed"] == 0 and up["rejected"] == 0
    assert up["verified"] == up["segments"] == up["posted_now"] >= 8
    assert "published share 's' version 1" in r.err
    rows, payload = _layout(src)
    # Every article went through the relay, i.e. over TLS (563 speaks nothing else): at least the payload.
    assert tls_relay.bytes_client_to_server - up0 >= payload > 0

    # The server has every segment (checked on the plain port, on fresh connections) and the bytes are ours.
    ids = _ids_by_attempt(src, 0)
    live = [(sh, sid) for sh, sid, state, _a, _e in rows if state in (1, 2)]
    assert len(live) == up["segments"]
    assert all(inn.stat(ids[k][-1]) == 223 for k in live)
    assert _read_back(src) == files

    # status: every live segment verified, nothing queued or failed.
    seg = _segments(capsys)
    assert seg.get("verified", 0) == up["segments"], seg
    assert all(n == 0 for name, n in seg.items() if name not in ("verified", "superseded")), seg

    # verify --read-data 100: STAT and BODY of every article, over TLS (the relay carries at least the payload back).
    down0 = tls_relay.bytes_server_to_client
    r = run(capsys, "verify", "--read-data", "100", "--json")
    assert r.code == 0, r.err
    v = _summary(r, "verify.summary")
    assert v["checked"] >= up["segments"] and v["present"] == v["checked"] and v["missing"] == 0
    assert v["damaged"] == 0 and v["bodies_read"] == v["checked"]
    assert tls_relay.bytes_server_to_client - down0 >= payload

    r = run(capsys, "share", "show", "s", "--show-id")
    assert r.code == 0, r.err
    sid = r.out.strip().splitlines()[-1]
    id_file = tmp_path / "share.id"
    id_file.write_text(sid + "\n")
    id_file.chmod(0o600)

    # Another user downloads the share over TLS: byte-identical.
    _home(monkeypatch, tmp_path / "home-bob")
    _add_tls_server(capsys, inn, tmp_path, tls_relay.port)
    assert run(capsys, "keys", "init", "--no-passphrase").code == 0
    dest = tmp_path / "dest"
    down0 = tls_relay.bytes_server_to_client
    r = run(capsys, "download", "--id-file", str(id_file), str(dest), "--json")
    assert r.code == 0, r.err
    d = _summary(r, "download.summary")
    assert d["files_written"] == len(files) and d["bytes_written"] == sum(map(len, files.values()))
    for rel, data in files.items():
        assert (Path(os.fsdecode(os.path.join(os.fsencode(dest), rel)))).read_bytes() == data
    assert tls_relay.bytes_server_to_client - down0 >= payload


def test_untrusted_certificate_refuses_the_upload_and_posts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer, tls_relay: FaultProxy
) -> None:
    src = tmp_path / "src"
    files = _tree(src)
    # No --ca-file: INN's self-signed certificate is not in the system store.
    _add_tls_server(capsys, inn, tmp_path, tls_relay.port, trust=False)
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "upload", str(src), "--segment-size", str(SEG), "--redundancy", "0", "--json")
    assert r.code == 10, r.err
    line = _one_line_error(r)
    assert "certificate verification failed" in line and "--ca-file" in line
    assert inn.password not in r.out + r.err
    # Nothing was posted: the relay saw TLS handshakes, never an article's worth of bytes ...
    assert tls_relay.connections_total >= 1
    assert tls_relay.bytes_client_to_server < 4 * 1024 * tls_relay.connections_total < SEG
    # ... the state records no posted segment ...
    seg = _segments(capsys)
    assert not any(seg.get(k) for k in ("posted", "verified")), seg
    # ... and no derived Message-ID of the folder (attempts 0-2) is on the server (today the upload connects
    # before it plans, so there are none to check yet; this holds if planning ever moves first).
    assert all(inn.stat(m) == 430 for ms in _ids_by_attempt(src, 2).values() for m in ms)

    # Trusting the certificate (the hint's way) completes the same upload.
    _add_tls_server(capsys, inn, tmp_path, tls_relay.port)
    r = run(capsys, "upload", str(src), "--segment-size", str(SEG), "--redundancy", "0", "--json")
    assert r.code == 0, r.err
    assert _summary(r, "upload.summary")["complete"]
    assert _read_back(src) == files


def test_tls_to_a_plain_port_fails_at_once_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer
) -> None:
    src = tmp_path / "src"
    _tree(src)
    # --tls against INN's plain port: the greeting arrives where a TLS ServerHello is expected.
    # The timeout is long so that a hang (waiting for a handshake that never comes) could not pass.
    _add_tls_server(capsys, inn, tmp_path, inn.port, "--timeout", "120")
    assert run(capsys, "index", str(src)).code == 0
    t0 = time.monotonic()
    r = run(capsys, "upload", str(src), "--segment-size", str(SEG), "--redundancy", "0")
    elapsed = time.monotonic() - t0
    assert r.code == 10, r.err
    line = _one_line_error(r)
    assert "TLS handshake failed" in line and "implicit TLS" in line, line
    assert elapsed < 60, f"took {elapsed:.0f} s: waited for a timeout instead of failing on the handshake"
    seg = _segments(capsys)
    assert not any(seg.get(k) for k in ("posted", "verified")), seg


def test_plain_connection_to_the_tls_port_names_tls_in_its_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer
) -> None:
    """The reverse mistake: a server added without --tls on port 563. INN waits for our ClientHello while
    we wait for its greeting, so all there is to see is a timeout: its hint says what to try."""
    src = tmp_path / "src"
    _tree(src)
    r = run(capsys, "server", "add", "plain", "--host", "127.0.0.1", "--port", str(inn.tls_port), "--timeout", "1",
            "--group", inn.group, "--no-check")
    assert r.code == 0, r.err
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "upload", str(src), "--segment-size", str(SEG), "--redundancy", "0")
    assert r.code == 10, r.err
    line = _one_line_error(r)
    assert "no greeting" in line and "add --tls" in line and "--resume" in line, line
    seg = _segments(capsys)
    assert not any(seg.get(k) for k in ("posted", "verified")), seg


def test_connection_cut_mid_article_over_tls_is_retried_and_posts_each_segment_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer, tls_relay: FaultProxy
) -> None:
    src = tmp_path / "src"
    files = {f"f{i}.bin".encode(): os.urandom(SEG * 3 + 1000 * (i + 1)) for i in range(4)}  # 16 articles
    src.mkdir()
    for rel, data in files.items():
        (src / os.fsdecode(rel)).write_bytes(data)
    _add_tls_server(capsys, inn, tmp_path, tls_relay.port)
    assert run(capsys, "index", str(src)).code == 0
    # Counted from now over both connections: the TLS handshakes and logins are ~1 KB each, an article
    # ~17 KB, so each cut lands inside an article's TLS records. Twice: with 2 connections, both must recover.
    tls_relay.drop_after_client_bytes(SEG + SEG // 2, times=2)
    r = run(capsys, "upload", str(src), "--segment-size", str(SEG), "--redundancy", "0", "--json")
    assert r.code == 0, r.err
    assert tls_relay.faults_fired.get("drop") == 2
    up = _summary(r, "upload.summary")
    assert up["complete"] and up["failed"] == 0 and up["rejected"] == 0
    assert up["verified"] == up["segments"] >= 16
    assert up["reconnects"] >= 2 and up["retries"] >= 2
    # Exactly once on the server: each segment is there under its recorded Message-ID and under no other
    # attempt's (a re-post of a cut article under attempt+1 would leave a second copy behind).
    rows, _payload = _layout(src)
    ids = _ids_by_attempt(src, 1)
    live = [(sh, sid) for sh, sid, state, _a, _e in rows if state in (1, 2)]
    assert len(live) == up["segments"]
    for key in live:
        present = [m for m in ids[key] if inn.stat(m) == 223]
        assert present == [ids[key][-2]], (key, present)
    assert _read_back(src) == files



@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_reconnect_closed_by_the_server_during_the_handshake_is_retried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer, tls: bool
) -> None:
    """A busy server accepts a connection and closes it at once (FIN): a transient failure, retried.

    On the plain port the client then sees EOF before the greeting; over TLS it sees EOF inside the
    handshake. Both are the same event and must get the same answer: back off and connect again (not
    "this port does not speak TLS"). Staged with one posting connection: once it is up (the preflight
    connection plus the poster's = 2 accepted), the next connection is refused and the poster's is cut
    mid-article, so its reconnect is the one refused.
    """
    src = tmp_path / "src"
    files = {b"f%d.bin" % i: os.urandom(SEG * 8 + 77 * i) for i in range(4)}  # 35 articles
    src.mkdir()
    for rel, data in files.items():
        (src / os.fsdecode(rel)).write_bytes(data)
    with FaultProxy(inn.host, inn.tls_port if tls else inn.port, nntp=False) as relay:
        if tls:
            _add_tls_server(capsys, inn, tmp_path, relay.port, "--no-check", connections=1)  # counted below
        else:
            r = run(capsys, "server", "add", "plain", "--host", "127.0.0.1", "--port", str(relay.port),
                    "--group", inn.group, "--connections", "1", "--timeout", "60", "--no-check")
            assert r.code == 0, r.err
        assert run(capsys, "index", str(src)).code == 0
        armed: list[AssertionError] = []

        def arm() -> None:
            try:
                relay.wait_for(lambda: relay.connections_total >= 2, timeout=120)
                relay.refuse_connections(1)  # first, so that the reconnect the cut causes is the one refused
                relay.drop_after_client_bytes(SEG * 2)
            except AssertionError as e:  # wait_for's timeout; reported by the test thread
                armed.append(e)

        t = threading.Thread(target=arm, daemon=True)
        t.start()
        r = run(capsys, "upload", str(src), "--segment-size", str(SEG), "--redundancy", "0", "--json")
        t.join(10)
        assert not armed, armed
        assert r.code == 0, r.err
        # Both faults landed while the upload was posting: the cut, then the refusal of its reconnect.
        assert relay.faults_fired.get("drop") == 1 and relay.faults_fired.get("refuse") == 1
        assert relay.connections_total == 4  # preflight, poster, the refused reconnect, the good one
        up = _summary(r, "upload.summary")
        assert up["complete"] and up["verified"] == up["segments"] >= 35 and up["reconnects"] >= 1
    assert _read_back(src) == files


def _closing_server(after_client_hello: bool) -> tuple[socket.socket, threading.Thread]:
    """A listener whose one connection is closed with a FIN, either at once or after the whole ClientHello.

    A server INN cannot imitate: a busy TLS front end that gives up on a connection mid-handshake.
    Reading the ClientHello before closing makes the close a FIN, never a RST (unread data turns a close
    into a RST), so the client deterministically sees EOF where the ServerHello should be.
    """
    lsock = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = lsock.accept()
        with conn:
            if after_client_hello:
                head = conn.recv(5, socket.MSG_WAITALL)  # TLS record header: type, version, length
                assert head[:1] == b"\x16", head  # a handshake record
                conn.recv(int.from_bytes(head[3:5], "big"), socket.MSG_WAITALL)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):  # until the client hangs up
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lsock, t


def test_eof_inside_the_tls_handshake_is_a_transient_connection_loss(inn: InnServer) -> None:
    """EOF where the ServerHello belongs is a lost connection (retried with backoff), like EOF before a greeting.

    Only a reply that is not TLS at all (the plain port's greeting) means "this port does not speak TLS",
    which is fatal for the server; see test_tls_to_a_plain_port_fails_at_once_with_one_line.
    """
    lsock, t = _closing_server(after_client_hello=True)
    with lsock:
        spec = ServerSpec(name="busy", host="127.0.0.1", port=lsock.getsockname()[1], tls=True,
                          ca_file=str(inn.cert), timeout=30)
        with pytest.raises(NNTPError) as info:
            Connection(spec).connect()
        t.join(10)
    assert isinstance(info.value, ConnectionLost) and isinstance(info.value, TransientError), repr(info.value)
    assert not getattr(info.value, "fatal_for_server", False)
    assert "TLS handshake" in str(info.value)
    # The plain port answering a ClientHello with its greeting stays a fatal, typed TLS error.
    spec = ServerSpec(name="plain", host=inn.host, port=inn.port, tls=True, ca_file=str(inn.cert), timeout=30)
    with pytest.raises(TLSError) as info2:
        Connection(spec).connect()
    assert info2.value.fatal_for_server and not isinstance(info2.value, TransientError)
