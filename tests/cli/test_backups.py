"""Backups end to end against the real INN: lose the home, keep the phrase, get everything back.

Each "machine" is its own home (USENETSYNC_HOME switched per call); the
server is the real INN, reached directly or through the fault proxy when a
test counts what is posted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import Result, run
from tests.cli.test_share_download import make_folder, snapshot
from tests.support.faultproxy import FaultProxy
from tests.support.inn import InnServer

SEG = "16384"


class Machines:
    """Homes that share one recovery phrase (or not), each with a server entry."""

    def __init__(self, tmp: Path, inn: InnServer, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch) -> None:
        self.tmp, self.inn, self.capsys, self.mp = tmp, inn, capsys, mp
        self.homes: dict[str, Path] = {}
        self.phrase_file = tmp / "phrase.txt"

    def home(self, name: str) -> Path:
        return self.tmp / f"home-{name}"

    def as_(self, name: str, *args: str) -> Result:
        home = self.homes.get(name)
        if home is None:
            home = self.homes[name] = self.home(name)
            self.mp.setenv("USENETSYNC_HOME", str(home))
            assert run(self.capsys, "server", "add", "local", "--host", self.inn.host, "--port", str(self.inn.port),
                       "--group", self.inn.group).code == 0
            if self.phrase_file.exists():
                r = run(self.capsys, "keys", "restore", "--phrase-file", str(self.phrase_file), "--no-passphrase")
                assert r.code == 0, r.err
            else:
                assert run(self.capsys, "keys", "init", "--no-passphrase").code == 0
                r = run(self.capsys, "keys", "phrase")
                self.phrase_file.write_text(r.out.strip() + "\n")
                self.phrase_file.chmod(0o600)
        self.mp.setenv("USENETSYNC_HOME", str(home))
        return run(self.capsys, *args)

    def lose(self, name: str) -> None:
        """The machine's disk dies: its home is gone."""
        shutil.rmtree(self.homes.pop(name))

    def via_proxy(self, name: str, proxy: FaultProxy) -> None:
        assert self.as_(name, "server", "remove", "local").code == 0
        assert self.as_(name, "server", "add", "local", "--host", proxy.host, "--port", str(proxy.port),
                        "--group", self.inn.group, "--connections", "2").code == 0


@pytest.fixture
def machines(tmp_path: Path, inn: InnServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Machines:
    return Machines(tmp_path, inn, capsys, monkeypatch)


@pytest.fixture
def proxy(inn: InnServer) -> Iterator[FaultProxy]:
    with FaultProxy(inn.host, inn.port) as p:
        yield p


def upload(m: Machines, who: str, src: Path, *extra: str) -> Result:
    assert m.as_(who, "index", str(src)).code == 0
    r = m.as_(who, "upload", str(src), "--segment-size", SEG, "--json", *extra)
    assert r.code == 0, r.err
    return r


def types(r: Result) -> list[str]:
    return [x["type"] for x in r.json_lines()]


def test_lose_the_home_restore_everything_from_the_phrase(machines: Machines, tmp_path: Path) -> None:
    m = machines
    src = tmp_path / "Photos"
    make_folder(src)
    assert m.as_("a", "index", str(src)).code == 0
    assert m.as_("a", "share", "create", str(src), "--public", "--name", "pub").code == 0
    r = upload(m, "a", src)
    assert "backup.published" in types(r)
    v1 = snapshot(src)
    # A second run with nothing changed posts nothing and says so.
    r = upload(m, "a", src)
    assert "backup.unchanged" in types(r) and "backup.published" not in types(r)
    [st] = [x for x in m.as_("a", "status", "--json").json_lines() if x["type"] == "status.folder"]
    assert st["backup_version"] == 1 and st["backup_covered"]
    (src / "nested" / "small0.txt").write_bytes(b"version two")
    (src / "added.bin").write_bytes(os.urandom(40_000))
    assert m.as_("a", "index", str(src)).code == 0
    [st] = [x for x in m.as_("a", "status", "--json").json_lines() if x["type"] == "status.folder"]
    assert st["backup_version"] == 1 and not st["backup_covered"]  # indexed changes are not backed up yet
    assert "no: upload to back up the changes" in m.as_("a", "status").out
    upload(m, "a", src)
    v2 = snapshot(src)
    m.lose("a")

    r = m.as_("b", "backups", "--json")
    assert r.code == 0, r.err
    [entry] = [x for x in r.json_lines() if x["type"] == "backup.folder"]
    assert entry["label"] == "Photos" and entry["versions"] == 2 and entry["path"] == str(src)
    r = m.as_("b", "backups", "Photos", "--json")
    assert [x["version"] for x in r.json_lines()] == [1, 2]

    dest = tmp_path / "restored"
    r = m.as_("b", "restore", "Photos", str(dest))
    assert r.code == 0, r.err
    assert snapshot(dest) == v2
    old = tmp_path / "restored-v1"
    r = m.as_("b", "restore", "Photos", str(old), "--version", "1")
    assert r.code == 0, r.err
    assert snapshot(old) == v1

    r = m.as_("b", "ls", "Photos", "nested", "--json")
    paths = {x["path"] for x in r.json_lines()}
    assert "nested/small0.txt" in paths and "big.bin" not in paths
    r = m.as_("b", "diff", "Photos", "1", "2", "--json")
    assert r.code == 0, r.err
    changes = {(x["change"], x["path"]) for x in r.json_lines() if x["type"] == "diff.change"}
    assert changes == {("modified", "nested/small0.txt"), ("added", "added.bin")}


def test_restore_include_and_never_over_local_files(machines: Machines, tmp_path: Path) -> None:
    m = machines
    src = tmp_path / "Docs"
    make_folder(src)
    upload(m, "a", src)
    dest = tmp_path / "part"
    r = m.as_("a", "restore", "Docs", str(dest), "--include", "nested/*.txt")
    assert r.code == 0, r.err
    got = {k for k, v in snapshot(dest).items() if v[0] == "file"}
    assert got == {os.fsencode(f"nested/small{i}.txt") for i in range(6)}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "big.bin").write_bytes(b"my own file")
    r = m.as_("a", "restore", "Docs", str(mine))
    assert r.code == 19 and (mine / "big.bin").read_bytes() == b"my own file"


def test_adopt_posts_nothing_then_only_what_changed(machines: Machines, tmp_path: Path, proxy: FaultProxy) -> None:
    m = machines
    src = tmp_path / "Music"
    make_folder(src)
    (src / "large.bin").write_bytes(os.urandom(100_000))
    assert m.as_("a", "index", str(src)).code == 0
    assert m.as_("a", "share", "create", str(src), "--public", "--name", "pub").code == 0
    upload(m, "a", src)
    sid = m.as_("a", "share", "show", "pub", "--show-id").out.strip().splitlines()[-1]
    m.lose("a")

    copy = tmp_path / "copy"
    assert m.as_("b", "restore", "Music", str(copy)).code == 0
    r = m.as_("b", "adopt", str(copy), "--from", "Music", "--json")
    assert r.code == 0, r.err
    [s] = [x for x in r.json_lines() if x["type"] == "adopt.summary"]
    assert s["files_adopted"] >= 9 and s["files_changed"] == 0 and s["shares"] == 1
    m.via_proxy("b", proxy)
    assert m.as_("b", "index", str(copy)).code == 0
    before = proxy.commands_seen(b"POST")
    r = m.as_("b", "upload", str(copy), "--segment-size", SEG, "--no-backup")
    assert r.code == 0, r.err
    assert proxy.commands_seen(b"POST") == before  # not one segment posted again
    # One changed file: only its segments go out (100,000 bytes in 16 KiB segments: 7 articles).
    (copy / "large.bin").write_bytes(os.urandom(100_000))
    assert m.as_("b", "index", str(copy)).code == 0
    before = proxy.commands_seen(b"POST")
    r = m.as_("b", "upload", str(copy), "--segment-size", SEG, "--no-backup", "--redundancy", "0")
    assert r.code == 0, r.err
    assert proxy.commands_seen(b"POST") - before == 7
    # The old share goes on from the new machine: readers of its old ID get the new version.
    r = m.as_("b", "share", "update", "pub")
    assert r.code == 0, r.err
    dest = tmp_path / "reader"
    r = m.as_("c", "download", sid, str(dest))
    assert r.code == 0, r.err
    assert snapshot(dest) == snapshot(copy)


def _damage_largest_shard(home: Path) -> Path:
    """Truncate the fullest shard database to half (its WAL gone with it), as a failing disk would."""
    shard = sorted((home / "state" / "shards").glob("[0-9][0-9].db"), key=lambda p: p.stat().st_size)[-1]
    for extra in ("-wal", "-shm"):
        Path(str(shard) + extra).unlink(missing_ok=True)
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    return shard


def test_state_repair_rebuilds_a_truncated_shard_without_reposting(
    machines: Machines, tmp_path: Path, proxy: FaultProxy,
) -> None:
    m = machines
    src = tmp_path / "Work"
    make_folder(src)
    for i in range(40):
        (src / f"f{i:02d}.bin").write_bytes(os.urandom(20_000 + i))
    upload(m, "a", src)
    shard = _damage_largest_shard(m.home("a"))
    r = m.as_("a", "status")
    assert r.code == 28 and "state repair" in r.err  # the damage is named, with the way out
    r = m.as_("a", "state", "repair", "--dry-run")
    assert r.code == 0 and f"{shard.stem}" in r.out
    r = m.as_("a", "state", "repair", "--json")
    assert r.code == 0, r.err
    [s] = [x for x in r.json_lines() if x["type"] == "state.repair"]
    assert s["damaged"] == [int(shard.stem)] and s["folders"][0]["files_adopted"] > 0
    assert list(shard.parent.glob(f"{shard.name}.damaged-*"))  # the damaged file is kept, not deleted
    m.via_proxy("a", proxy)
    assert m.as_("a", "index", str(src)).code == 0
    before = proxy.commands_seen(b"POST")
    r = m.as_("a", "upload", str(src), "--segment-size", SEG, "--no-backup")
    assert r.code == 0, r.err
    assert proxy.commands_seen(b"POST") == before
    assert m.as_("a", "state", "repair").out.strip() == "every shard database is sound"


def test_forget_keeps_last_and_refuses_forgotten_versions(machines: Machines, tmp_path: Path) -> None:
    m = machines
    src = tmp_path / "Notes"
    make_folder(src)
    upload(m, "a", src)
    (src / "new.txt").write_bytes(b"v2")
    upload(m, "a", src)
    r = m.as_("a", "forget", "Notes")
    assert r.code == 2 and "--keep" in r.err
    r = m.as_("a", "forget", "Notes", "--keep-last", "1", "--dry-run", "--json")
    assert r.code == 0 and [x["version"] for x in r.json_lines() if x["type"] == "forget.remove"] == [1]
    assert [x["version"] for x in m.as_("a", "backups", "Notes", "--json").json_lines()] == [1, 2]
    r = m.as_("a", "forget", "Notes", "--keep-last", "1")
    assert r.code == 0, r.err
    r = m.as_("b", "ls", "Notes", "--version", "1")  # another machine, reading the server only
    assert r.code == 27 and "forgotten" in r.err
    assert [x["version"] for x in m.as_("b", "backups", "Notes", "--json").json_lines()] == [2]
    # The machine that made version 1 does not bring it back with its next catalog update.
    (src / "new.txt").write_bytes(b"v3")
    upload(m, "a", src)
    assert [x["version"] for x in m.as_("b", "backups", "Notes", "--json").json_lines()] == [2, 3]


def test_two_machines_one_phrase_back_up_at_once(machines: Machines, tmp_path: Path) -> None:
    m = machines
    srcs = {}
    for who in ("a", "b"):
        srcs[who] = tmp_path / f"folder-{who}"
        make_folder(srcs[who])
        assert m.as_(who, "index", str(srcs[who])).code == 0
    procs = [
        subprocess.Popen([sys.executable, "-m", "usenetsync_cli", "upload", str(srcs[who]), "--segment-size", SEG],
                         env={**os.environ, "USENETSYNC_HOME": str(m.home(who))}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
        for who in ("a", "b")
    ]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    r = m.as_("c", "backups", "--json")
    labels = {x["label"] for x in r.json_lines()}
    assert labels == {"folder-a", "folder-b"}


def test_a_lost_race_for_a_catalog_version_is_merged_not_lost(
    machines: Machines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Machine A reads catalog version v; B publishes v+1 before A posts: A must read again and keep B's entry."""
    from usenetsync_cli.pipeline import backup

    m = machines
    for who in ("a", "b"):
        src = tmp_path / f"race-{who}"
        make_folder(src)
        assert m.as_(who, "index", str(src)).code == 0
        r = m.as_(who, "upload", str(src), "--segment-size", SEG, "--no-backup")
        assert r.code == 0, r.err
    real = backup.read_catalog
    raced = []

    def read_then_lose_the_race(*a: object, **k: object):  # type: ignore[no-untyped-def]
        found = real(*a, **k)
        if not raced:
            raced.append(1)
            r = m.as_("b", "upload", str(tmp_path / "race-b"), "--segment-size", SEG)  # B wins version v+1
            assert r.code == 0, r.err
            monkeypatch.setenv("USENETSYNC_HOME", str(m.home("a")))
        return found

    monkeypatch.setattr(backup, "read_catalog", read_then_lose_the_race)
    r = m.as_("a", "upload", str(tmp_path / "race-a"), "--segment-size", SEG, "--json")
    assert r.code == 0, r.err
    assert raced
    [pub] = [x for x in r.json_lines() if x["type"] == "backup.published"]
    assert pub["catalog_version"] == 2  # B took 1 (A read 0 first), A's retry read B's and posted 2
    monkeypatch.setattr(backup, "read_catalog", real)
    assert {x["label"] for x in m.as_("c", "backups", "--json").json_lines()} == {"race-a", "race-b"}


def _spawn(home: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "usenetsync_cli", *args],
                            env={**os.environ, "USENETSYNC_HOME": str(home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


@pytest.mark.parametrize("posts_before_kill", [0, 3, 5])
def test_kill_9_during_backup_publication_then_rerun_completes(
    machines: Machines, tmp_path: Path, proxy: FaultProxy, posts_before_kill: int,
) -> None:
    """Killed while the backup's index (0), its root or the catalog (3, 5) is being posted: the rerun finishes it."""
    m = machines
    src = tmp_path / "Kill"
    make_folder(src)
    m.via_proxy("a", proxy)
    assert m.as_("a", "index", str(src)).code == 0
    r = m.as_("a", "upload", str(src), "--segment-size", SEG, "--no-backup")
    assert r.code == 0, r.err
    proxy.hold_replies(b"POST", after=posts_before_kill)
    proc = _spawn(m.home("a"), "upload", str(src), "--segment-size", SEG)
    proxy.wait_for(lambda: proxy.faults_fired.get("hold_replies", 0) >= 1 or proc.poll() is not None, timeout=60)
    assert proc.poll() is None, proc.communicate()[1].decode()  # it is waiting for a POST reply: mid-way
    proc.kill()
    proc.wait()
    proxy.clear_faults()
    listed = m.as_("b", "backups", "--json").json_lines()
    assert listed == []  # the catalog did not list it yet: the kill landed before the end
    r = m.as_("a", "upload", str(src), "--segment-size", SEG, "--json")
    assert r.code == 0, r.err
    [folder] = [x for x in m.as_("b", "backups", "--json").json_lines()]
    assert folder["label"] == "Kill" and folder["versions"] == 1
    dest = tmp_path / "back"
    assert m.as_("b", "restore", "Kill", str(dest)).code == 0
    assert snapshot(dest) == snapshot(src)


def test_kill_9_during_adopt_then_rerun_completes(machines: Machines, tmp_path: Path, proxy: FaultProxy) -> None:
    m = machines
    src = tmp_path / "Many"
    for d in range(30):
        (src / f"d{d:02d}").mkdir(parents=True)
        for i in range(400):
            (src / f"d{d:02d}" / f"f{i}.txt").write_bytes(b"%d-%d" % (d, i))
    upload(m, "a", src, "--redundancy", "0")
    m.lose("a")
    m.as_("b", "status")
    proc = _spawn(m.home("b"), "adopt", str(src), "--from", "Many")
    import apsw

    catalog_db = m.home("b") / "state" / "catalog.db"

    def adopted_rows() -> int:
        n = 0
        for shard in (m.home("b") / "state" / "shards").glob("[0-9][0-9].db"):
            try:
                n += apsw.Connection(str(shard), flags=apsw.SQLITE_OPEN_READONLY).execute(
                    "SELECT count(*) FROM files WHERE done_gen IS NOT NULL").fetchall()[0][0]
            except apsw.Error:
                pass
        return n

    proxy.wait_for(lambda: adopted_rows() > 0 or proc.poll() is not None, timeout=120)
    proc.kill()
    proc.wait()
    rows = apsw.Connection(str(catalog_db), flags=apsw.SQLITE_OPEN_READONLY).execute(
        "SELECT adopting FROM folders").fetchall()
    assert rows == [(1,)]  # killed mid-way: the folder is still being adopted
    assert 0 < adopted_rows() < 12_000
    r = m.as_("b", "adopt", str(src), "--from", "Many", "--json")
    assert r.code == 0, r.err
    assert adopted_rows() == 12_000
    m.via_proxy("b", proxy)
    assert m.as_("b", "index", str(src)).code == 0
    before = proxy.commands_seen(b"POST")
    assert m.as_("b", "upload", str(src), "--no-backup", "--redundancy", "0").code == 0
    assert proxy.commands_seen(b"POST") == before


def _version_ids(m: Machines, who: str, label: str, version: int) -> set[str]:
    """Message-IDs of the data articles one backup version references (read as any reader would)."""
    from usenetsync_cli.config import Config
    from usenetsync_cli.pipeline.backup_read import _version_articles, open_version, read_catalog
    from usenetsync_cli.pipeline.poster import open_connection
    from usenetsync_cli.store.home import Home
    from usenetsync_cli.store.keystore import load_identity

    m.as_(who, "status")
    home = Home.resolve()
    identity = load_identity(home)
    conn = open_connection(next(iter(Config.load(home).servers.values())).spec())
    try:
        _v, cat = read_catalog(conn, identity, m.tmp / "spool-cat")
        opened = open_version(conn, identity, cat.find(label), version, m.tmp / f"spool-{version}")
        return {item[1] for item in _version_articles(opened.records()) if isinstance(item, tuple)}
    finally:
        conn.close()


def test_backups_check_finds_kept_versions_that_cannot_be_restored(
    machines: Machines, tmp_path: Path, inn: InnServer,
) -> None:
    m = machines
    src = tmp_path / "Old"
    make_folder(src)
    (src / "changes.bin").write_bytes(os.urandom(100_000))
    upload(m, "a", src)
    (src / "changes.bin").write_bytes(os.urandom(100_000))
    upload(m, "a", src)
    r = m.as_("b", "backups", "Old", "--check", "--json")
    assert r.code == 0, r.err
    assert [(x["version"], x["missing"], x["restorable"]) for x in r.json_lines()] == [(1, 0, True), (2, 0, True)]
    only_v1 = sorted(_version_ids(m, "b", "Old", 1) - _version_ids(m, "b", "Old", 2))
    assert len(only_v1) == 7  # the old content of changes.bin: 100,000 bytes in 16 KiB segments
    inn.cancel(only_v1[0])
    r = m.as_("b", "backups", "Old", "--check", "--json")
    assert r.code == 0, r.err  # one article lost: its PAR2 group rebuilds it
    assert [(x["missing"], x["restorable"]) for x in r.json_lines()] == [(1, True), (0, True)]
    for mid in only_v1[1:]:
        inn.cancel(mid)
    r = m.as_("b", "backups", "Old", "--check", "--json")
    assert r.code == 18 and "version(s) of 'Old' can no longer be restored completely: 1" in r.err
    assert [x["restorable"] for x in r.json_lines() if x["type"] == "backup.check"] == [False, True]
    r = m.as_("b", "backups", "--check")
    assert r.code == 2  # --check without a NAME: a usage error


def test_an_unchanged_folder_posts_nothing_at_all(machines: Machines, tmp_path: Path, proxy: FaultProxy) -> None:
    m = machines
    src = tmp_path / "Still"
    make_folder(src)
    m.via_proxy("a", proxy)
    upload(m, "a", src)
    before = proxy.commands_seen(b"POST")
    r = upload(m, "a", src)
    assert "backup.unchanged" in types(r)
    assert proxy.commands_seen(b"POST") == before  # no segment, no backup index, no catalog version


def test_adopt_verify_content_catches_a_change_that_kept_size_and_mtime(machines: Machines, tmp_path: Path) -> None:
    m = machines
    src = tmp_path / "Sly"
    make_folder(src)
    upload(m, "a", src)
    m.lose("a")
    target = src / "big.bin"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF  # same size, and the mtime is put back: only the content tells
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    (src / "nested" / "small0.txt").write_bytes(b"another size")  # caught by size alone
    r = m.as_("b", "adopt", str(src), "--from", "Sly", "--verify-content", "--json")
    assert r.code == 0, r.err
    [s] = [x for x in r.json_lines() if x["type"] == "adopt.summary"]
    assert s["files_changed"] == 2 and s["files_adopted"] == 7  # 5 small, the latin-1 one, the empty one
    r = m.as_("b", "upload", str(src), "--segment-size", SEG, "--no-backup", "--json")
    assert r.code == 0, r.err
    # Without --verify-content the same change would be trusted away; with it, big.bin is posted again.
    [summary] = [x for x in r.json_lines() if x["type"] == "upload.summary"]
    assert summary["files_planned"] == 2 and summary["posted_now"] == 5  # big.bin: 4 segments; small0: 1 pack


def test_verify_repair_publishes_a_backup_version_naming_the_new_copies(
    machines: Machines, tmp_path: Path, inn: InnServer,
) -> None:
    m = machines
    src = tmp_path / "Mend"
    make_folder(src)
    upload(m, "a", src, "--redundancy", "0")
    lost = sorted(_version_ids(m, "a", "Mend", 1))[0]
    inn.cancel(lost)
    r = m.as_("a", "verify", "--repair", "--json")
    assert r.code == 0, r.err
    assert "backup.published" in types(r)
    r = m.as_("b", "backups", "Mend", "--check", "--json")
    assert r.code == 18  # version 1 names the lost article and has no PAR2: it is reported, version 2 is whole
    assert [(x["version"], x["restorable"]) for x in r.json_lines() if x["type"] == "backup.check"] == [
        (1, False), (2, True)]
    dest = tmp_path / "mended"
    assert m.as_("b", "restore", "Mend", str(dest)).code == 0
    assert snapshot(dest) == snapshot(src)


def test_no_command_shows_a_backup_secret(machines: Machines, tmp_path: Path) -> None:
    """The backup share ID, its key and the folder's keys are in the catalog, and nowhere in any output."""
    from usenetsync_cli.pipeline.backup_read import backup_share_text, fetch_catalog
    from usenetsync_cli.store.home import Home
    from usenetsync_cli.config import Config
    from usenetsync_cli.store.keystore import load_identity

    m = machines
    src = tmp_path / "Secret"
    make_folder(src)
    outputs = [upload(m, "a", src)]
    m.as_("b", "status")
    home = Home.resolve()
    identity = load_identity(home)
    _v, cat = fetch_catalog(next(iter(Config.load(home).servers.values())).spec(), identity, tmp_path / "spool")
    entry = cat.find("Secret")
    secrets = [backup_share_text(identity, entry), entry.folder_key.hex(), *(k.hex() for k in entry.epochs.values())]
    dest = tmp_path / "out"
    for args in (("backups", "--json"), ("backups", "Secret", "--check", "--json"), ("ls", "Secret", "--json"),
                 ("restore", "Secret", str(dest), "--json"), ("adopt", str(dest), "--from", "Secret", "--json"),
                 ("status", "--json"), ("backups",), ("status",)):
        outputs.append(m.as_("b", *args))
        assert outputs[-1].code == 0, outputs[-1].err
    text = "".join(r.out + r.err for r in outputs).lower()
    assert "secret" in text  # the label is there: the check reads the right output
    for s in secrets:
        assert s.lower() not in text


def test_two_folders_with_one_name_get_distinct_backup_names(machines: Machines, tmp_path: Path) -> None:
    m = machines
    first, second = tmp_path / "x" / "Same", tmp_path / "y" / "Same"
    for src in (first, second):
        make_folder(src)
        upload(m, "a", src)
    listed = {x["label"]: Path(x["path"]) for x in m.as_("b", "backups", "--json").json_lines()}
    labels = sorted(listed)
    assert labels[0] == "Same" and labels[1].startswith("Same-") and len(labels) == 2
    assert {listed[label] for label in labels} == {first, second}
    for label in labels:
        dest = tmp_path / "restored" / label
        assert m.as_("b", "restore", label, str(dest)).code == 0
        assert snapshot(dest) == snapshot(listed[label])


def test_a_command_on_a_terminal_offers_to_repair_a_damaged_shard(machines: Machines, tmp_path: Path) -> None:
    """`status` on a terminal, a truncated shard: it asks, `y` rebuilds it from the backup, then it runs."""
    import pty
    import select

    m = machines
    src = tmp_path / "Ask"
    make_folder(src)
    for i in range(20):
        (src / f"f{i}.bin").write_bytes(os.urandom(20_000))
    upload(m, "a", src)
    _damage_largest_shard(m.home("a"))
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "usenetsync_cli", "status"], stdin=slave, stdout=slave,
                            stderr=slave, env={**os.environ, "USENETSYNC_HOME": str(m.home("a"))})
    os.close(slave)
    seen = b""
    answered = False
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        assert ready, f"no output from the command: {seen[-500:]!r}"
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the command ended and closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        if not answered and b"[y/N]" in seen:
            os.write(master, b"y\n")
            answered = True
    os.close(master)
    assert proc.wait(timeout=60) == 0, seen.decode(errors="replace")[-2000:]
    assert answered and b"corrupt" in seen and b" taken from backup version 1" in seen
    assert m.as_("a", "state", "repair").out.strip() == "every shard database is sound"


def test_verify_repair_after_adopt_reposts_from_the_source(machines: Machines, tmp_path: Path, inn: InnServer) -> None:
    """Adopted segments carry no stored nonce: a repair seals them anew, and what is restored is still exact."""
    m = machines
    src = tmp_path / "Kept"
    make_folder(src)
    upload(m, "a", src, "--redundancy", "0")
    m.lose("a")
    r = m.as_("b", "adopt", str(src), "--from", "Kept")
    assert r.code == 0, r.err
    inn.cancel(sorted(_version_ids(m, "b", "Kept", 1))[0])
    r = m.as_("b", "verify", "--repair", "--json")
    assert r.code == 0, r.err
    [rep] = [x for x in r.json_lines() if x["type"] == "verify.repair"]
    assert rep["repaired"] == 1 and rep["unrepairable"] == 0
    dest = tmp_path / "after"
    assert m.as_("c", "restore", "Kept", str(dest)).code == 0
    assert snapshot(dest) == snapshot(src)


def test_an_upload_that_changed_nothing_decides_from_its_runs_and_a_folder_chmod_still_counts(
    machines: Machines, tmp_path: Path,
) -> None:
    """index + upload with nothing new: the backup is known current from the runs, no record stream is built;
    a change only to a folder's mode (no file changed) is still seen and published."""
    m = machines
    src = tmp_path / "Runs"
    make_folder(src)
    upload(m, "a", src)
    r = upload(m, "a", src)
    [same] = [x for x in r.json_lines() if x["type"] == "backup.unchanged"]
    assert same["checked_by"] == "runs" and same["version"] == 1
    os.chmod(src / "empty-dir", 0o700)
    r = m.as_("a", "index", str(src), "--json")
    assert [x for x in r.json_lines() if x["type"] == "index.summary"][0]["dirs_changed"] == 1
    r = m.as_("a", "upload", str(src), "--segment-size", SEG, "--json")
    [pub] = [x for x in r.json_lines() if x["type"] == "backup.published"]
    assert pub["version"] == 2 and pub["checked_by"] == "records"
    r = m.as_("b", "ls", "Runs", "empty-dir", "--json")
    assert [x["mode"] & 0o777 for x in r.json_lines()] == [0o700]
