"""`download --check` against the real INN: STAT every article, judge PAR2 coverage, write nothing.

Articles are removed with ``ctlinnd cancel``; PAR2 victims are chosen per
recovery group (never more in a group than its recovery blocks) for the
repairable case, and piled into one file (more than its group's blocks) for
the lost case. "Nothing written" is judged on DEST (absent) and on the
reader's state folder in the home (``state/downloads``, absent).
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli.test_share_download import Users, id_file, make_folder, publish, snapshot, users  # noqa: F401 - fixture
from tests.cli.test_tamper import _flip_ciphertext
from tests.cli.test_share_download import _index_ids
from tests.cli.test_verify import _victims_per_group
from tests.pipeline.upload_support import message_ids
from tests.support.inn import InnServer
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State


def _summary(r):  # type: ignore[no-untyped-def]
    return [x for x in r.json_lines() if x["type"] == "download.check"][0]


def _of(r, type_: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return [x for x in r.json_lines() if x["type"] == type_]


def _nothing_written(users: Users, dest: Path) -> None:
    assert not dest.exists()
    assert not (users.homes["bob"] / "state" / "downloads").exists()


def _three_files(src: Path) -> None:
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.bin").write_bytes(os.urandom(400_000))


def _file_ids(users: Users, src: Path, name: bytes) -> list[str]:
    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        ids = message_ids(st, folder)
        return [ids[(sh, seg)] for sh, c in enumerate(st.shards)
                for (seg,) in c.execute("SELECT s.seg_id FROM segments s JOIN files f USING(file_id) WHERE f.name=?"
                                        " ORDER BY s.idx", (name,))]


def _recovery_ids(users: Users, src: Path, group_id: int) -> list[str]:
    from usenetsync_cli.pipeline.recovery import iter_layouts
    from usenetsync_cli.pipeline.upload import folder_context

    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        ctx = folder_context(folder, ())
        return [mid for lay in iter_layouts(st, folder, ctx) if lay.group_id == group_id
                for _i, mid in lay.recovery_ids(ctx)]


def test_complete_share_exits_0_and_writes_nothing(users: Users, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_folder(src)
    sid = publish(users, src, "--public")
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", "--id-file", id_file(tmp_path, sid), str(dest), "--check", "--json")
    assert r.code == 0, r.err
    s = _summary(r)
    assert s["complete"] and s["missing"] == 0 and s["articles"] == s["present"] > 0
    assert s["recovery_articles"] == s["recovery_present"] > 0  # PAR2 articles are STATted too
    assert s["bytes"] == s["bytes_present"] == 50_000 + sum(100 + i * 37 for i in range(6)) + len(b"latin-1 name")
    assert s["files"] == 9 and _of(r, "download.check.file") == []
    _nothing_written(users, dest)
    # DEST may be left out; human output is plain lines, nothing cut.
    r = users.as_("bob", "download", "--id-file", id_file(tmp_path, sid), "--check")
    assert r.code == 0, r.err
    assert r.out.startswith(f"share version 1: {s['present']:,} of {s['articles']:,} articles present, 0 missing")
    assert "complete: every article is there (9 files)" in r.out
    _nothing_written(users, dest)
    users.mp.setenv("USENETSYNC_SHARE_ID", sid)  # the ID from the environment: no argument at all
    r = users.as_("bob", "download", "--check", "--json")
    assert r.code == 0 and _summary(r)["present"] == s["present"], r.err
    users.mp.delenv("USENETSYNC_SHARE_ID")
    r = users.as_("bob", "download", "--check")
    assert r.code == 2 and r.err.startswith("usenetsync: error: give the share ID (hint:"), r.err
    _nothing_written(users, dest)


def test_missing_articles_par2_covers_exit_17(users: Users, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    _three_files(src)
    sid = publish(users, src, "--public")
    victims = _victims_per_group(users, src, 4)  # each group within its recovery blocks
    for mid in victims:
        inn.cancel(mid)
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, "--check", "--json")
    assert r.code == 17, r.err
    assert "4 articles missing" in r.err and "PAR2 covers them all" in r.err and "Traceback" not in r.err
    s = _summary(r)
    assert s["missing"] == 4 and s["repairable"] and s["files_lost"] == 0 and s["groups_short"] == 0
    files = _of(r, "download.check.file")
    assert sum(f["missing"] for f in files) == 4 and all(f["repairable"] for f in files)
    groups = _of(r, "download.check.group")
    assert sum(g["missing"] for g in groups) == 4
    assert all(g["can_rebuild"] and g["missing"] <= g["recovery_present"] for g in groups)
    _nothing_written(users, dest)
    # The prediction holds: the download rebuilds them.
    r = users.as_("bob", "download", sid, str(dest))
    assert r.code == 0, r.err
    assert snapshot(dest) == snapshot(src)
    # Recovery articles count only when the server has them: without its PAR2 articles a group cannot rebuild.
    for mid in _recovery_ids(users, src, groups[0]["group_id"]):
        inn.cancel(mid)
    r = users.as_("bob", "download", sid, "--check", "--json")
    assert r.code == 18, r.err
    short = [g for g in _of(r, "download.check.group") if not g["can_rebuild"]]
    assert [(g["group_id"], g["recovery_present"]) for g in short] == [(groups[0]["group_id"], 0)]


def test_more_missing_than_par2_covers_exit_18_naming_the_file(users: Users, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "lost.bin").write_bytes(os.urandom(400_000))
    (src / "fine.txt").write_bytes(b"small and fine")
    sid = publish(users, src, "--public")
    for mid in _file_ids(users, src, b"lost.bin")[:8]:  # more than the group's recovery blocks
        inn.cancel(mid)
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", "--id-file", id_file(tmp_path, sid), "--check")
    assert r.code == 18, r.err
    assert "lost.bin" in r.err and "fine.txt" not in r.err and len(r.err.strip().splitlines()) == 1
    assert "missing: lost.bin: 8 of " in r.out and "(PAR2 cannot cover them)" in r.out
    assert "cannot rebuild" in r.out
    _nothing_written(users, dest)
    r = users.as_("bob", "download", "--id-file", id_file(tmp_path, sid), "--check", "--json")
    assert r.code == 18
    s = _summary(r)
    assert s["missing"] == 8 and not s["repairable"] and s["files_lost"] == 1 and s["groups_short"] >= 1
    (f,) = _of(r, "download.check.file")
    assert f["path"] == "lost.bin" and f["missing"] == 8 and not f["repairable"]
    assert any(not g["can_rebuild"] and g["missing"] > g["recovery_present"] for g in _of(r, "download.check.group"))


def test_without_par2_any_missing_article_is_lost(users: Users, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    _three_files(src)
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))
    inn.cancel(_file_ids(users, src, b"f2.bin")[3])
    r = users.as_("bob", "download", sid, "--check", "--json")
    assert r.code == 18, r.err
    s = _summary(r)
    assert s["groups"] == 0 and s["recovery_articles"] == 0 and s["missing"] == 1 and s["files_lost"] == 1
    assert [(f["path"], f["missing"], f["repairable"]) for f in _of(r, "download.check.file")] == [("f2.bin", 1, False)]


def test_nzb_check_counts_what_is_missing(users: Users, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    _three_files(src)
    publish(users, src, "--public")
    nzb = tmp_path / "s.nzb"
    assert users.as_("alice", "nzb", "export", "s", "--output", str(nzb)).code == 0
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", "--nzb", str(nzb), "--check", "--json")
    assert r.code == 0, r.err
    total = _summary(r)["articles"]
    assert _summary(r)["present"] == total > 0
    for mid in _file_ids(users, src, b"f1.bin")[:2]:
        inn.cancel(mid)
    r = users.as_("bob", "download", "--nzb", str(nzb), "--check", "--json")
    assert r.code == 18, r.err
    s = _summary(r)
    assert s["kind"] == "nzb" and s["articles"] == total and s["missing"] == 2 and not s["repairable"]
    assert sorted(f["missing"] for f in _of(r, "download.check.file")) == [1, 1]  # one article per NZB file
    _nothing_written(users, dest)
    assert not dest.exists()


def test_bad_share_id_and_tampered_index_fail_as_the_download_does(users: Users, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    make_folder(src)
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid[:-3] + "zzz", "--check")  # mistyped: fails its checksum
    want = users.as_("bob", "download", sid[:-3] + "zzz", str(dest))
    assert r.code == want.code != 0 and len(r.err.strip().splitlines()) == len(want.err.strip().splitlines())
    other = publish_other(users, tmp_path)
    inn.cancel(_index_ids(users, "other")[0])  # its root gone: the share cannot be found
    r = users.as_("bob", "download", other, "--check")
    want = users.as_("bob", "download", other, str(dest))
    assert r.code == want.code != 0, (r.err, want.err)
    inn.reencode_yenc(_index_ids(users)[1], _flip_ciphertext)  # a chunk pack no longer opens
    r = users.as_("bob", "download", sid, "--check")
    assert r.code == 22, r.err
    assert "Traceback" not in r.err
    assert not dest.exists()


def publish_other(users: Users, tmp_path: Path) -> str:
    src = tmp_path / "other"
    src.mkdir()
    (src / "a.txt").write_bytes(b"another share")
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "share", "create", str(src), "--public", "--name", "other").code == 0
    assert users.as_("alice", "upload", str(src)).code == 0
    return users.as_("alice", "share", "show", "other", "--show-id").out.strip().splitlines()[-1]


def test_share_show_counts_as_the_download_does(users: Users, tmp_path: Path) -> None:
    """Files (hard links too), symlinks, folders (empty ones too) and bytes: `share show` and the download agree."""
    src = tmp_path / "src"
    make_folder(src)  # 9 files, a symlink, 3 folders (one empty)
    os.link(src / "big.bin", src / "second-name")  # a hard link: one more file, no more bytes
    (src / "empty2" / "inner").mkdir(parents=True)
    os.symlink("nested", src / "link-to-dir")
    sid = publish(users, src, "--public")
    show = users.as_("alice", "share", "show", "s", "--json").json_lines()[0]
    r = users.as_("bob", "download", sid, str(tmp_path / "dest"), "--json")
    assert r.code == 0, r.err
    got = [x for x in r.json_lines() if x["type"] == "download.summary"][0]
    assert (show["files"], show["symlinks"], show["dirs"], show["bytes"]) == \
        (got["files"], got["symlinks"], got["dirs"], got["bytes_written"]) == (10, 2, 5, 51_167)
    r = users.as_("alice", "share", "show", "s")
    assert r.code == 0 and "version 1, 10 files, 2 symlinks, 5 folders, " in r.out
