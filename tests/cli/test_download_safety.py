"""A download never destroys local data (real INN, black box through the CLI).

New or empty DEST: written as usual. A DEST holding files the share would
write: refused before anything is written (exit 19), unless ``--sync``
(update what usenetsync wrote; the user's changes are kept and the share's
version written beside them, exit 23) or ``--overwrite`` (the user's files
moved into the home's ``replaced/`` folder first). Nothing of ours is left
in DEST; the reader's state lives in the home.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import apsw
import pytest

from tests.cli.test_share_download import Users, publish, snapshot, users  # noqa: F401 - fixture

SEG = 16_384


def _src(tmp: Path) -> Path:
    src = tmp / "src"
    (src / "docs").mkdir(parents=True)
    (src / "notes.txt").write_bytes(b"the share's notes\n")
    (src / "docs" / "big.bin").write_bytes(os.urandom(3 * SEG + 100))
    (src / "docs" / "a.txt").write_bytes(b"alpha")
    (src / "docs" / "b.txt").write_bytes(b"beta")
    return src


def _listing(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns,
                                         p.read_bytes() if p.is_file() else None)
    return out


def _summary(r) -> dict:  # type: ignore[no-untyped-def]
    return [x for x in r.json_lines() if x["type"] == "download.summary"][0]


def test_refuses_before_writing_anything_when_local_files_are_in_the_way(users: Users, tmp_path: Path) -> None:
    src = _src(tmp_path)
    for i in range(25):
        (src / f"n{i:02d}.txt").write_bytes(b"share %d" % i)
    sid = publish(users, src, "--public")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "notes.txt").write_bytes(b"my own notes, not in any backup\n")
    for i in range(25):
        (dest / f"n{i:02d}.txt").write_bytes(b"mine %d" % i)
    (dest / "unrelated.txt").write_bytes(b"untouched")
    before = _listing(dest)
    r = users.as_("bob", "download", sid, str(dest))
    assert r.code == 19, r.err
    line = r.err.strip().splitlines()[-1]
    assert line.startswith("usenetsync: error:") and "26 path(s)" in line
    listed = re.findall(r"([\w.]+) \(not written by usenetsync\)", line)
    assert len(listed) == 20 and set(listed) <= {"notes.txt"} | {f"n{i:02d}.txt" for i in range(25)}
    assert "and 6 more" in line and "--sync" in line and "--overwrite" in line
    assert _listing(dest) == before  # not one byte, not one new name
    assert not (dest / ".usenetsync").exists()


def test_a_failed_download_leaves_dest_as_it_found_it(users: Users, tmp_path: Path) -> None:
    from usenetsync_cli.core.shareid import ShareId

    src = _src(tmp_path)
    sid = publish(users, src, "--public")
    unknown = ShareId(kind="public", signer=ShareId.parse(sid).signer, secret=os.urandom(32)).to_text()
    missing = tmp_path / "never-created"
    r = users.as_("bob", "download", unknown, str(missing))
    assert r.code == 7 and not missing.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_bytes(b"x")
    before = _listing(existing)
    r = users.as_("bob", "download", unknown, str(existing))
    assert r.code == 7 and _listing(existing) == before


def test_identical_local_copy_is_adopted_not_refused(users: Users, tmp_path: Path) -> None:
    src = _src(tmp_path)
    sid = publish(users, src, "--public")
    r = users.as_("bob", "download", sid, str(tmp_path / "fresh"), "--json")
    assert r.code == 0, r.err
    every = _summary(r)["segments_fetched"]
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "docs").mkdir()
    (dest / "docs" / "big.bin").write_bytes((src / "docs" / "big.bin").read_bytes())  # the user already has it
    r = users.as_("bob", "download", sid, str(dest), "--json")
    assert r.code == 0, r.err
    s = _summary(r)
    # big.bin's 4 segments are not fetched again: the user's copy is adopted.
    assert s["files_adopted"] == 1 and s["files_skipped"] == 1 and s["segments_fetched"] == every - 4
    assert snapshot(dest) == snapshot(src)


def test_sync_keeps_local_changes_and_writes_the_share_version_beside(users: Users, tmp_path: Path) -> None:
    src = _src(tmp_path)
    sid = publish(users, src, "--public")
    dest = tmp_path / "dest"
    assert users.as_("bob", "download", sid, str(dest)).code == 0
    # Publisher changes three files and drops two; the reader edited two of them meanwhile.
    (src / "notes.txt").write_bytes(b"the share's notes, version 2\n")
    (src / "docs" / "a.txt").write_bytes(b"ALPHA v2")
    (src / "docs" / "big.bin").write_bytes(os.urandom(2 * SEG))
    (src / "docs" / "b.txt").unlink()
    (src / "added.txt").write_bytes(b"new in v2")
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "upload", str(src)).code == 0
    assert users.as_("alice", "share", "update", "s").code == 0
    (dest / "notes.txt").write_bytes(b"my local edit of the notes\n")  # changed locally AND by the share
    (dest / "docs" / "b.txt").write_bytes(b"my edit of b")  # changed locally, dropped by the share
    (dest / "mine.txt").write_bytes(b"a file of my own")
    r = users.as_("bob", "download", sid, str(dest), "--sync", "--json")
    assert r.code == 23, r.err
    s = _summary(r)
    assert (dest / "notes.txt").read_bytes() == b"my local edit of the notes\n"  # kept
    assert (dest / "notes.txt.usenetsync-conflict-v2").read_bytes() == b"the share's notes, version 2\n"
    assert s["conflict_copies"] == ["notes.txt.usenetsync-conflict-v2"]
    assert (dest / "docs" / "b.txt").read_bytes() == b"my edit of b"  # dropped by the share, but changed: kept
    assert any("docs/b.txt" in k for k in s["kept"])
    assert (dest / "docs" / "a.txt").read_bytes() == b"ALPHA v2"  # ours and unchanged: updated
    assert (dest / "docs" / "big.bin").read_bytes() == (src / "docs" / "big.bin").read_bytes()
    assert (dest / "added.txt").read_bytes() == b"new in v2"
    assert (dest / "mine.txt").read_bytes() == b"a file of my own"  # never ours: never touched
    # A second sync: the conflict stays the user's; nothing else changes; the same conflict is reported.
    r = users.as_("bob", "download", sid, str(dest), "--sync", "--json")
    assert r.code == 23 and (dest / "notes.txt").read_bytes() == b"my local edit of the notes\n"


def test_sync_removes_only_unchanged_files_ours_and_keep_deleted_removes_none(users: Users, tmp_path: Path) -> None:
    src = _src(tmp_path)
    sid = publish(users, src, "--public")
    dest = tmp_path / "dest"
    assert users.as_("bob", "download", sid, str(dest)).code == 0
    (src / "docs" / "a.txt").unlink()
    (src / "docs" / "b.txt").unlink()
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "upload", str(src)).code == 0
    assert users.as_("alice", "share", "update", "s").code == 0
    r = users.as_("bob", "download", sid, str(dest), "--sync", "--keep-deleted", "--json")
    assert r.code == 0 and _summary(r)["files_deleted"] == 0
    assert (dest / "docs" / "a.txt").exists() and (dest / "docs" / "b.txt").exists()
    os.utime(dest / "docs" / "b.txt", ns=(1, 1))  # touched, content unchanged: still ours
    r = users.as_("bob", "download", sid, str(dest), "--sync", "--json")
    assert r.code == 0, r.err
    assert _summary(r)["files_deleted"] == 2
    assert not (dest / "docs" / "a.txt").exists() and not (dest / "docs" / "b.txt").exists()


def test_overwrite_moves_local_files_into_the_home(users: Users, tmp_path: Path) -> None:
    src = _src(tmp_path)
    sid = publish(users, src, "--public")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "notes.txt").write_bytes(b"my own notes\n")
    (dest / "docs").write_bytes(b"a file where the share has a folder")
    r = users.as_("bob", "download", sid, str(dest), "--overwrite", "--json")
    assert r.code == 0, r.err
    s = _summary(r)
    assert snapshot(dest) == snapshot(src)
    moved = {Path(p).name: Path(p) for p in s["replaced"]}
    assert set(moved) == {"notes.txt", "docs"}
    assert moved["notes.txt"].read_bytes() == b"my own notes\n"
    assert moved["docs"].read_bytes() == b"a file where the share has a folder"
    assert str(moved["notes.txt"]).startswith(str(users.homes["bob"] / "state" / "replaced"))


def test_restored_modes_drop_special_bits_unless_asked(users: Users, tmp_path: Path) -> None:
    src = _src(tmp_path)
    os.chmod(src / "docs" / "a.txt", 0o4755)  # setuid
    os.chmod(src / "docs" / "b.txt", 0o666)  # beyond a 022 umask
    os.chmod(src / "docs", 0o1777)  # sticky, world-writable folder
    sid = publish(users, src, "--public")
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain"
        assert users.as_("bob", "download", sid, str(plain)).code == 0
        assert stat.S_IMODE((plain / "docs" / "a.txt").stat().st_mode) == 0o755
        assert stat.S_IMODE((plain / "docs" / "b.txt").stat().st_mode) == 0o644
        assert stat.S_IMODE((plain / "docs").stat().st_mode) == 0o755
        special = tmp_path / "special"
        assert users.as_("bob", "download", sid, str(special), "--keep-special-modes").code == 0
        assert stat.S_IMODE((special / "docs" / "a.txt").stat().st_mode) == 0o4755
        assert stat.S_IMODE((special / "docs" / "b.txt").stat().st_mode) == 0o666
        assert stat.S_IMODE((special / "docs").stat().st_mode) == 0o1777
    finally:
        os.umask(old)


def test_legacy_state_in_dest_is_migrated_and_removed(users: Users, tmp_path: Path) -> None:
    src = _src(tmp_path)
    sid = publish(users, src, "--public")
    dest = tmp_path / "dest"
    (dest / "docs").mkdir(parents=True)
    (dest / "docs" / "a.txt").write_bytes(b"alpha")  # recorded by the old version, still the share's content
    (dest / "notes.txt").write_bytes(b"edited after the old download")  # recorded, but changed since
    legacy = dest / ".usenetsync"
    legacy.mkdir()
    old = apsw.Connection(str(legacy / "download.db"))
    old.execute("CREATE TABLE files(path BLOB PRIMARY KEY) WITHOUT ROWID")
    old.execute("INSERT INTO files VALUES(?), (?)", (b"docs/a.txt", b"notes.txt"))
    old.close()
    r = users.as_("bob", "download", sid, str(dest), "--sync", "--json")
    assert r.code == 23, r.err
    assert not legacy.exists()
    assert "moved the state of an earlier usenetsync" in r.err
    assert (dest / "notes.txt").read_bytes() == b"edited after the old download"  # not trusted as ours: kept
    assert (dest / "notes.txt.usenetsync-conflict-v1").read_bytes() == (src / "notes.txt").read_bytes()
    assert (dest / "docs" / "a.txt").read_bytes() == b"alpha"


def test_index_whose_content_hash_disagrees_with_its_pieces_is_refused(
    users: Users, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A validly signed index whose file content hash does not match its segment hashes: nothing is written."""
    from usenetsync_cli.pipeline import publish as pub

    src = _src(tmp_path)
    real = pub.iter_records

    def lying(state, folder, *args):  # type: ignore[no-untyped-def]
        for rec in real(state, folder, *args):
            if rec[0] == "F":
                rec = list(rec)
                rec[5] = os.urandom(32).hex()
            yield rec

    monkeypatch.setattr(pub, "iter_records", lying)
    # A malicious publisher does not run our publisher's own check: let it through, the reader must refuse.
    monkeypatch.setattr(pub.LayoutCheck, "finish", lambda self: None)
    monkeypatch.setattr(pub.LayoutCheck, "add", lambda self, rec: None)
    sid = publish(users, src, "--public")
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, str(dest))
    assert r.code == 22 and "do not add up" in r.err, r.err
    assert not (dest / "docs" / "big.bin").exists() and not (dest / "docs" / ".big.bin.uspart").exists()


def test_reader_state_lives_in_the_home(users: Users, tmp_path: Path) -> None:
    src = _src(tmp_path)
    sid = publish(users, src, "--public")
    dest = tmp_path / "dest"
    assert users.as_("bob", "download", sid, str(dest)).code == 0
    assert snapshot(dest) == snapshot(src)  # nothing else in DEST
    state = list((users.homes["bob"] / "state" / "downloads").iterdir())
    assert len(state) == 1 and (state[0] / "reader.db").exists()
    spools = list(state[0].glob("index-*.bin"))
    assert [p.name for p in spools] == ["index-v1.bin"]
    meta = apsw.Connection(str(state[0] / "reader.db")).execute("SELECT v FROM meta WHERE k='dest'").fetchall()
    assert bytes(meta[0][0]) == os.fsencode(os.path.abspath(dest))


def test_publisher_refuses_a_layout_that_does_not_resolve(
    users: Users, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that would publish a broken version is caught before the first article is posted (exit 1)."""
    from usenetsync_cli.pipeline import publish as pub

    src = _src(tmp_path)
    real = pub.iter_records

    def broken(state, folder, *args):  # type: ignore[no-untyped-def]
        for rec in real(state, folder, *args):
            if rec[0] == "P":
                rec = list(rec)
                rec[5] = 10**9  # a member outside its pack
            yield rec

    monkeypatch.setattr(pub, "iter_records", broken)
    posted: list[str] = []
    real_post = pub.post_article
    monkeypatch.setattr(pub, "post_article", lambda *a: posted.append("index") or real_post(*a))
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "share", "create", str(src), "--public", "--name", "s").code == 0
    r = users.as_("alice", "upload", str(src), "--segment-size", "16384")
    assert "refusing to publish a share version whose layout does not resolve" in r.err
    assert "does not lie inside its pack" in r.err and posted == []
    r = users.as_("alice", "share", "update", "s")
    assert r.code == 1 and posted == [] and len(r.err.strip().splitlines()) == 1
    r = users.as_("alice", "share", "show", "s", "--json")
    assert r.json_lines()[0]["version"] == 0
