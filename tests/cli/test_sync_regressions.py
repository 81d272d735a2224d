"""`download --sync` after each kind of change, as each was seen to fail (real INN, through the CLI).

1. a small file replaced by a symlink broke every file of its pack;
2. chmod was never carried;
3. folders deleted or renamed in the source stayed in the copy;
4. a folder that became a file made every later sync fail;
5. a file that became a folder failed the sync;
6. a same-size rewrite with the mtime put back never reached readers.
Also: hard links come back as links, sparse files sparse, extended
attributes with --xattrs, special files are skipped with a notice, and
verify reports what the publisher proved about each version.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.cli.test_share_download import Users, publish, snapshot, users  # noqa: F401 - fixture

SEG = 16_384


def _update(users: Users, src: Path) -> None:
    assert users.as_("alice", "index", str(src)).code == 0
    r = users.as_("alice", "upload", str(src))
    assert r.code == 0, r.err
    r = users.as_("alice", "share", "update", "s")
    assert r.code == 0, r.err


def _sync(users: Users, sid: str, dest: Path) -> None:
    r = users.as_("bob", "download", sid, str(dest), "--sync")
    assert r.code == 0, r.err


def _tree(tmp: Path) -> Path:
    src = tmp / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "small1.txt").write_bytes(b"one")
    (src / "small2.txt").write_bytes(b"two")
    (src / "small3.txt").write_bytes(b"three")
    (src / "dir" / "sub" / "deep.txt").write_bytes(b"deep")
    (src / "big.bin").write_bytes(os.urandom(3 * SEG))
    return src


def test_small_file_replaced_by_symlink_keeps_its_pack_whole(users: Users, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    sid = publish(users, src, "--public")
    dest = tmp_path / "copy"
    _sync(users, sid, dest)
    (src / "small2.txt").unlink()
    os.symlink("small1.txt", src / "small2.txt")
    _update(users, src)
    _sync(users, sid, dest)
    assert snapshot(dest) == snapshot(src)
    fresh = tmp_path / "fresh"
    assert users.as_("carol", "download", sid, str(fresh)).code == 0
    assert snapshot(fresh) == snapshot(src)


def test_chmod_is_carried_by_sync(users: Users, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    sid = publish(users, src, "--public")
    dest = tmp_path / "copy"
    _sync(users, sid, dest)
    os.chmod(src / "small1.txt", 0o600)
    os.chmod(src / "big.bin", 0o640)
    _update(users, src)
    _sync(users, sid, dest)
    assert stat.S_IMODE((dest / "small1.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((dest / "big.bin").stat().st_mode) == 0o640
    assert snapshot(dest) == snapshot(src)


def test_deleted_and_renamed_folders_leave_the_copy(users: Users, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    (src / "empty").mkdir()
    sid = publish(users, src, "--public")
    dest = tmp_path / "copy"
    _sync(users, sid, dest)
    os.rename(src / "dir", src / "renamed")
    os.rmdir(src / "empty")
    _update(users, src)
    _sync(users, sid, dest)
    assert not (dest / "dir").exists() and not (dest / "empty").exists()
    assert snapshot(dest) == snapshot(src)


def test_a_removed_folder_holding_the_users_file_is_kept_and_reported(users: Users, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    sid = publish(users, src, "--public")
    dest = tmp_path / "copy"
    _sync(users, sid, dest)
    (dest / "dir" / "sub" / "mine.txt").write_bytes(b"the user's own file")
    shutil.rmtree(src / "dir")
    _update(users, src)
    r = users.as_("bob", "download", sid, str(dest), "--sync", "--json")
    assert r.code == 23, r.err
    s = [x for x in r.json_lines() if x["type"] == "download.summary"][0]
    assert (dest / "dir" / "sub" / "mine.txt").read_bytes() == b"the user's own file"
    assert not (dest / "dir" / "sub" / "deep.txt").exists()
    assert any("dir/sub/" in k for k in s["kept"])


def test_folder_becomes_file_and_file_becomes_folder(users: Users, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    sid = publish(users, src, "--public")
    dest = tmp_path / "copy"
    _sync(users, sid, dest)
    shutil.rmtree(src / "dir")
    (src / "dir").write_bytes(b"now a file")  # 4: folder -> file
    (src / "small3.txt").unlink()
    (src / "small3.txt").mkdir()  # 5: file -> folder
    (src / "small3.txt" / "inside").write_bytes(b"x")
    _update(users, src)
    _sync(users, sid, dest)
    assert snapshot(dest) == snapshot(src)
    (src / "dir").unlink()
    os.symlink("big.bin", src / "dir")  # file -> symlink, and a later sync still works
    shutil.rmtree(src / "small3.txt")
    os.symlink("nowhere", src / "small3.txt")  # folder -> symlink
    _update(users, src)
    _sync(users, sid, dest)
    assert snapshot(dest) == snapshot(src)
    assert not list(dest.rglob("*.uspart"))


def test_same_size_rewrite_with_mtime_restored_reaches_a_synced_copy(users: Users, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    sid = publish(users, src, "--public")
    dest = tmp_path / "copy"
    _sync(users, sid, dest)
    for name in ("big.bin", "small1.txt"):
        p = src / name
        st = p.stat()
        p.write_bytes(os.urandom(st.st_size))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    _update(users, src)
    _sync(users, sid, dest)
    assert snapshot(dest) == snapshot(src)


def test_hard_links_sparse_files_and_specials(users: Users, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    os.link(src / "big.bin", src / "dir" / "big-again.bin")
    os.link(src / "small1.txt", src / "small1-link.txt")
    with open(src / "sparse.img", "wb") as f:
        f.write(b"head")
        f.seek(1 << 20)
        f.write(b"tail")
    os.mkfifo(src / "a-fifo")
    assert users.as_("alice", "index", str(src)).code == 0
    r = users.as_("alice", "index", str(src))
    assert "skipped 1 special file(s)" in r.err and "a-fifo" in r.err
    sid = publish(users, src, "--public")
    dest = tmp_path / "copy"
    _sync(users, sid, dest)
    assert (dest / "big.bin").stat().st_ino == (dest / "dir" / "big-again.bin").stat().st_ino
    assert (dest / "small1.txt").stat().st_ino == (dest / "small1-link.txt").stat().st_ino
    sp = (dest / "sparse.img").stat()
    assert sp.st_size == (1 << 20) + 4 and sp.st_blocks * 512 < 256 * 1024  # the hole stayed a hole
    assert not (dest / "a-fifo").exists()
    (src / "a-fifo").unlink()
    assert snapshot(dest) == snapshot(src)


def test_xattrs_are_carried_with_the_flag_only(users: Users, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    os.setxattr(src / "small1.txt", "user.tag", b"red")
    os.setxattr(src / "big.bin", "user.origin", b"camera")
    assert users.as_("alice", "index", str(src), "--xattrs").code == 0
    sid = publish(users, src, "--public")  # later index runs keep --xattrs (stored with the folder)
    plain = tmp_path / "plain"
    assert users.as_("bob", "download", sid, str(plain)).code == 0
    assert os.listxattr(plain / "small1.txt") == []
    dest = tmp_path / "copy"
    assert users.as_("carol", "download", sid, str(dest), "--xattrs").code == 0
    assert os.getxattr(dest / "small1.txt", "user.tag") == b"red"
    assert os.getxattr(dest / "big.bin", "user.origin") == b"camera"
    os.setxattr(src / "small1.txt", "user.tag", b"green")
    os.removexattr(src / "big.bin", "user.origin")
    _update(users, src)
    r = users.as_("carol", "download", sid, str(dest), "--sync", "--xattrs")
    assert r.code == 0, r.err
    assert os.getxattr(dest / "small1.txt", "user.tag") == b"green"
    assert os.listxattr(dest / "big.bin") == []


def test_verify_reports_what_was_proven_at_publication(users: Users, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    publish(users, src, "--public")
    r = users.as_("alice", "verify", "--json")
    assert r.code == 0, r.err
    idx = [x for x in r.json_lines() if x["type"] == "verify.share_index"][0]
    check = idx["layout_check"]
    assert check["version"] == 1 and check["files"] == 5 and check["resolved"] is True
    assert check["bytes"] == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())


@pytest.mark.parametrize("name", ["security.evil", "trusted.x", "user." + "n" * 300])
def test_a_hostile_xattr_in_an_index_is_refused(users: Users, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                name: str) -> None:
    from usenetsync_cli.pipeline import publish as pub

    src = _tree(tmp_path)
    real = pub.iter_records

    def evil(state, folder, *args):  # type: ignore[no-untyped-def]
        recs = list(real(state, folder, *args))
        recs.insert(2, ["X", "small1.txt", [[name, "eA=="]]])
        recs[-1] = ["T", len(recs)]
        yield from recs

    monkeypatch.setattr(pub, "iter_records", evil)
    monkeypatch.setattr(pub.LayoutCheck, "add", lambda self, rec: None)
    monkeypatch.setattr(pub.LayoutCheck, "finish", lambda self: None)
    sid = publish(users, src, "--public")
    r = users.as_("bob", "download", sid, str(tmp_path / "d"), "--xattrs")
    assert r.code == 22 and "extended attribute" in r.err


def test_index_keeps_no_recovery_groups_that_cover_nothing_live(users: Users, tmp_path: Path) -> None:
    """Item 7: after every file changed, the old PAR2 groups (they cover only superseded segments) leave the index."""
    from usenetsync_cli.pipeline.publish import iter_records
    from usenetsync_cli.store import catalog
    from usenetsync_cli.store.home import Home
    from usenetsync_cli.store.state import State

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.bin").write_bytes(os.urandom(2 * SEG))
    publish(users, src, "--public", upload_args=("--redundancy", "20"))

    def groups() -> int:
        users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
        with State.open(Home.resolve()) as st:
            folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
            assert folder is not None
            return sum(1 for r in iter_records(st, folder) if r[0] == "R")

    before = groups()
    assert before > 0
    for i in range(3):
        (src / f"f{i}.bin").write_bytes(os.urandom(2 * SEG))
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "upload", str(src), "--redundancy", "20").code == 0
    assert groups() == before  # the new groups only; the old ones cover nothing live


def test_a_hard_link_broken_in_the_source_is_broken_in_the_copy(users: Users, tmp_path: Path) -> None:
    """The same bytes under two names, no longer one file: the copy must not stay linked (found by the machine)."""
    src = _tree(tmp_path)
    os.link(src / "big.bin", src / "twin.bin")
    sid = publish(users, src, "--public")
    dest = tmp_path / "copy"
    _sync(users, sid, dest)
    assert (dest / "big.bin").stat().st_ino == (dest / "twin.bin").stat().st_ino
    data = (src / "twin.bin").read_bytes()
    (src / "twin.bin").unlink()
    (src / "twin.bin").write_bytes(data)  # identical content, its own inode now
    _update(users, src)
    _sync(users, sid, dest)
    assert (dest / "big.bin").stat().st_ino != (dest / "twin.bin").stat().st_ino
    assert snapshot(dest) == snapshot(src)
