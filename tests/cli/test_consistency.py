"""A file is published only as one consistent read: rewrites during and after an upload (real INN, black box).

The publisher ("alice") posts through the fault proxy, which can hold the
server's replies to articles: the upload then stops reading ahead within a
few segments, so a test can change a file at a known point, mid-upload,
without relying on timing. Readers ("bob", "carol") download from INN
directly, in homes of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import Result, run
from tests.support.faultproxy import ARTICLE, FaultProxy
from tests.support.inn import InnServer

SEG = 16_384


class People:
    """Separate homes: alice (through ``port``), and readers straight to INN."""

    def __init__(self, tmp: Path, inn: InnServer, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch,
                 alice_port: int) -> None:
        self.tmp, self.inn, self.capsys, self.mp = tmp, inn, capsys, mp
        self.ports = {"alice": alice_port}
        self.homes: dict[str, Path] = {}

    def home(self, who: str) -> Path:
        if who not in self.homes:
            self.homes[who] = self.tmp / f"home-{who}"
            self.mp.setenv("USENETSYNC_HOME", str(self.homes[who]))
            port = self.ports.get(who, self.inn.port)
            assert run(self.capsys, "server", "add", "local", "--host", self.inn.host, "--port", str(port),
                       "--group", self.inn.group).code == 0
            assert run(self.capsys, "keys", "init", "--no-passphrase").code == 0
        return self.homes[who]

    def as_(self, who: str, *args: str) -> Result:
        self.mp.setenv("USENETSYNC_HOME", str(self.home(who)))
        return run(self.capsys, *args)

    def share_id(self, name: str = "s") -> str:
        r = self.as_("alice", "share", "show", name, "--show-id", "--json")
        return str(r.json_lines()[0]["share_id"])


@pytest.fixture
def proxy(inn: InnServer) -> Iterator[FaultProxy]:
    with FaultProxy(inn.host, inn.port) as p:
        yield p


@pytest.fixture
def people(tmp_path: Path, inn: InnServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
           proxy: FaultProxy) -> People:
    return People(tmp_path, inn, capsys, monkeypatch, proxy.port)


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """Other bytes of the same size, written into the same inode, with the old mtime put back."""
    st = os.stat(path)
    assert len(data) == st.st_size
    with open(path, "r+b") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def _upload_cli(home: Path, src: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "USENETSYNC_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "usenetsync_cli", "upload", str(src), "--segment-size", str(SEG), "--redundancy", "0",
         "--connections", "2", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_rewrite_in_place_mid_upload_is_published_as_one_content(people: People, proxy: FaultProxy,
                                                                  tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    old, new = os.urandom(100 * SEG), os.urandom(100 * SEG)
    (src / "big.bin").write_bytes(old)
    (src / "small.txt").write_bytes(b"unchanged small file")
    assert people.as_("alice", "index", str(src)).code == 0
    assert people.as_("alice", "share", "create", str(src), "--public", "--name", "s").code == 0
    # 20 articles get their 240; after that replies are held, so the upload stops (it reads at
    # most a few segments ahead of what is answered) with 80 segments of big.bin unread.
    proxy.hold_replies(ARTICLE, after=20)
    proc = _upload_cli(people.home("alice"), src)
    proxy.wait_for(lambda: proxy.faults_fired.get("hold_replies", 0) >= 1 or proc.poll() is not None, timeout=60)
    assert proc.poll() is None, proc.communicate()[1].decode()
    _rewrite_in_place(src / "big.bin", new)
    proxy.release_replies()
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert "published share 's' version 1" in err.decode()
    sid = people.share_id()
    r = people.as_("bob", "download", sid, str(tmp_path / "bob"))
    assert r.code == 0, r.err
    got = (tmp_path / "bob" / "big.bin").read_bytes()
    assert got == new, "the share holds a mix of the old and the new content" if got != old else "old content"
    # The same through index + upload + share update: still exactly the new content.
    assert people.as_("alice", "index", str(src)).code == 0
    r = people.as_("alice", "upload", str(src), "--json")
    assert r.code == 0, r.err
    assert [x for x in r.json_lines() if x["type"] == "upload.summary"][0]["posted_now"] == 0
    assert people.as_("alice", "share", "update", "s").code == 0
    r = people.as_("carol", "download", sid, str(tmp_path / "carol"))
    assert r.code == 0, r.err
    assert _read_tree(tmp_path / "carol") == _read_tree(src)


class _Churn:
    """Rewrites one file in place, over and over, putting its mtime back each time, until stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.stop = threading.Event()
        self.writes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        st = os.stat(self.path)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            while not self.stop.is_set():
                os.pwrite(fd, os.urandom(self.size), 0)
                os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns))
                self.writes += 1
        finally:
            os.close(fd)

    def __enter__(self) -> _Churn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_a_file_that_keeps_changing_keeps_its_last_consistent_content(people: People, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    first = os.urandom(5 * SEG)
    (src / "log.bin").write_bytes(first)
    (src / "notes.txt").write_bytes(b"steady")
    assert people.as_("alice", "index", str(src)).code == 0
    assert people.as_("alice", "share", "create", str(src), "--public", "--name", "s").code == 0
    r = people.as_("alice", "upload", str(src), "--segment-size", str(SEG), "--redundancy", "0")
    assert r.code == 0, r.err
    sid = people.share_id()
    (src / "fresh.bin").write_bytes(os.urandom(3 * SEG))  # new, and never still long enough to be read
    with _Churn(src / "log.bin") as churn, _Churn(src / "fresh.bin"):
        assert people.as_("alice", "index", str(src)).code == 0
        r = people.as_("alice", "upload", str(src), "--json")
        assert r.code == 15, r.err
        assert len(r.err.strip().splitlines()[-1:]) == 1 and "kept changing" in r.err
        assert "log.bin" in r.err or "fresh.bin" in r.err
        summary = [x for x in r.json_lines() if x["type"] == "upload.summary"][0]
        assert summary["unstable_count"] == 2 and sorted(summary["unstable"]) == ["fresh.bin", "log.bin"]
        r = people.as_("alice", "share", "update", "s")
        assert r.code == 15, r.err
        assert "log.bin: kept changing" in r.err and "fresh.bin: kept changing and was never read" in r.err
        assert churn.writes > 0
    r = people.as_("bob", "download", sid, str(tmp_path / "bob"), "--json")
    assert r.code == 0, r.err
    assert [x for x in r.json_lines() if x["type"] == "download.summary"][0]["version"] == 2
    assert (tmp_path / "bob" / "log.bin").read_bytes() == first  # the last consistent content, whole
    assert not (tmp_path / "bob" / "fresh.bin").exists()
    # Once the writers stopped, the next upload settles both and the share follows.
    assert people.as_("alice", "index", str(src)).code == 0
    assert people.as_("alice", "upload", str(src)).code == 0
    assert people.as_("alice", "share", "update", "s").code == 0
    r = people.as_("carol", "download", sid, str(tmp_path / "carol"))
    assert r.code == 0, r.err
    assert _read_tree(tmp_path / "carol") == _read_tree(src)


def test_metadata_only_change_is_rehashed_not_reposted(people: People, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3 * SEG))
    (src / "b.txt").write_bytes(b"small")
    assert people.as_("alice", "index", str(src)).code == 0
    assert people.as_("alice", "share", "create", str(src), "--public", "--name", "s").code == 0
    assert people.as_("alice", "upload", str(src), "--segment-size", str(SEG), "--redundancy", "0").code == 0
    sid = people.share_id()
    os.chmod(src / "a.bin", 0o600)
    os.chmod(src / "b.txt", 0o640)
    r = people.as_("alice", "index", str(src), "--json")
    assert r.json_lines()[-1]["changed"] == 2
    r = people.as_("alice", "upload", str(src), "--json")
    assert r.code == 0, r.err
    s = [x for x in r.json_lines() if x["type"] == "upload.summary"][0]
    assert s["posted_now"] == 0 and s["files_rehashed_same"] == 2
    assert people.as_("alice", "share", "update", "s").code == 0
    dest = tmp_path / "bob"
    assert people.as_("bob", "download", sid, str(dest)).code == 0
    assert (dest / "a.bin").stat().st_mode & 0o777 == 0o600 and (dest / "b.txt").stat().st_mode & 0o777 == 0o640


def test_same_size_rewrite_with_mtime_restored_reaches_readers(people: People, tmp_path: Path) -> None:
    """`touch -r` / `rsync -t` style: size and mtime as before, other bytes (issue 9 item 6, end to end)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3 * SEG))
    (src / "b.txt").write_bytes(b"small one")
    assert people.as_("alice", "index", str(src)).code == 0
    assert people.as_("alice", "share", "create", str(src), "--public", "--name", "s").code == 0
    assert people.as_("alice", "upload", str(src), "--segment-size", str(SEG), "--redundancy", "0").code == 0
    sid = people.share_id()
    _rewrite_in_place(src / "a.bin", os.urandom(3 * SEG))
    _rewrite_in_place(src / "b.txt", b"SMALL ONE")
    r = people.as_("alice", "index", str(src), "--json")
    assert r.json_lines()[-1]["changed"] == 2
    r = people.as_("alice", "upload", str(src), "--json")
    assert r.code == 0, r.err
    s = [x for x in r.json_lines() if x["type"] == "upload.summary"][0]
    assert s["posted_now"] == 4 and s["files_rehashed_same"] == 0  # 3 segments + 1 pack
    assert people.as_("alice", "share", "update", "s").code == 0
    dest = tmp_path / "bob"
    assert people.as_("bob", "download", sid, str(dest)).code == 0
    assert _read_tree(dest) == _read_tree(src)
