"""Shares end to end against the real INN: every share kind, bad input, sync, resume, disk full.

Publisher and recipients are separate homes (USENETSYNC_HOME switched per
call), as two users on two machines would be.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.helpers import Result, run
from tests.support.inn import InnServer


class Users:
    def __init__(self, tmp: Path, inn: InnServer, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch) -> None:
        self.tmp, self.inn, self.capsys, self.mp = tmp, inn, capsys, mp
        self.homes: dict[str, Path] = {}

    def as_(self, user: str, *args: str) -> Result:
        home = self.homes.get(user)
        if home is None:
            home = self.homes[user] = self.tmp / f"home-{user}"
            self.mp.setenv("USENETSYNC_HOME", str(home))
            assert run(self.capsys, "server", "add", "local", "--host", self.inn.host, "--port", str(self.inn.port),
                       "--group", self.inn.group).code == 0
            assert run(self.capsys, "keys", "init", "--no-passphrase").code == 0
        self.mp.setenv("USENETSYNC_HOME", str(home))
        return run(self.capsys, *args)

    def pubkey(self, user: str) -> str:
        r = self.as_(user, "keys", "show", "--json")
        return [x for x in r.json_lines()][0]["public_key"]


@pytest.fixture
def users(tmp_path: Path, inn: InnServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Users:
    return Users(tmp_path, inn, capsys, monkeypatch)


def make_folder(root: Path) -> None:
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "big.bin").write_bytes(os.urandom(50_000))
    for i in range(6):
        (root / "nested" / f"small{i}.txt").write_bytes(os.urandom(100 + i * 37))
    (root / "nested" / "deeper" / "zero").write_bytes(b"")
    os.chmod(root / "nested" / "small1.txt", 0o640)
    with open(os.path.join(os.fsencode(root), b"caf\xe9-\xff.dat"), "wb") as f:
        f.write(b"latin-1 name")
    os.symlink("big.bin", root / "link-to-big")
    os.utime(root / "big.bin", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def snapshot(root: Path) -> dict[bytes, tuple]:
    out: dict[bytes, tuple] = {}
    base = os.fsencode(root)
    for dirpath, dirs, files in os.walk(base):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base)
            st = os.lstat(full)
            if os.path.islink(full):
                out[rel] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                out[rel] = ("dir",)
            else:
                with open(full, "rb") as f:
                    out[rel] = ("file", f.read(), st.st_mode & 0o777, st.st_mtime_ns)
    return out


def publish(users: Users, src: Path, *kind: str, upload_args: tuple[str, ...] = ()) -> str:
    assert users.as_("alice", "index", str(src)).code == 0
    r = users.as_("alice", "share", "create", str(src), *kind, "--name", "s")
    assert r.code == 0, r.err
    r = users.as_("alice", "upload", str(src), "--segment-size", "16384", *upload_args)
    assert r.code == 0, r.err
    assert "published share 's' version 1" in r.err
    r = users.as_("alice", "share", "show", "s", "--show-id")
    return r.out.strip().splitlines()[-1]


def id_file(tmp: Path, sid: str) -> str:
    """``sid`` in a 0600 file for ``download --id-file``: the way to pass it (an argument adds a warning line)."""
    path = tmp / "share.id"
    path.write_text(sid + "\n")
    path.chmod(0o600)
    return str(path)


def test_public_share_round_trip_and_sync(users: Users, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_folder(src)
    sid = publish(users, src, "--public")
    assert sid.startswith("us2p")
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, str(dest), "--json")
    assert r.code == 0, r.err
    assert snapshot(dest) == snapshot(src)
    # sync: add, modify, delete
    (src / "added.txt").write_bytes(b"new")
    (src / "nested" / "small0.txt").write_bytes(b"changed content")
    (src / "nested" / "small2.txt").unlink()
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "upload", str(src), "--segment-size", "16384").code == 0
    assert users.as_("alice", "share", "update", "s").code == 0
    r = users.as_("bob", "download", sid, str(dest), "--sync", "--json")
    assert r.code == 0, r.err
    summary = [x for x in r.json_lines() if x["type"] == "download.summary"][0]
    assert summary["version"] == 2 and summary["files_written"] == 2 and summary["files_deleted"] == 1
    assert snapshot(dest) == snapshot(src)


def test_password_share_and_wrong_password(users: Users, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_folder(src)
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    pw.chmod(0o600)
    sid = publish(users, src, "--password", "--password-file", str(pw))
    assert sid.startswith("us2w")
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    bad.chmod(0o600)
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", "--id-file", id_file(tmp_path, sid), str(dest), "--password-file", str(bad))
    assert r.code == 21 and "wrong password" in r.err and len(r.err.strip().splitlines()) == 1
    assert not dest.exists()  # nothing written: DEST is not even created
    r = users.as_("bob", "download", sid, str(dest), "--password-file", str(pw))
    assert r.code == 0, r.err
    assert snapshot(dest) == snapshot(src)


def test_private_share_recipients_and_revoke(users: Users, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_folder(src)
    bob, carol = users.pubkey("bob"), users.pubkey("carol")
    users.pubkey("mallory")
    sid = publish(users, src, "--to", bob, "--to", carol)
    assert sid.startswith("us2r")
    for who in ("bob", "carol"):
        r = users.as_(who, "download", sid, str(tmp_path / f"dest-{who}"))
        assert r.code == 0, r.err
        assert snapshot(tmp_path / f"dest-{who}") == snapshot(src)
    r = users.as_("mallory", "download", sid, str(tmp_path / "dest-m"))
    assert r.code == 20 and "not addressed to your key" in r.err
    assert users.as_("alice", "share", "revoke", "s", "--to", carol).code == 0
    r = users.as_("carol", "download", sid, str(tmp_path / "dest-c2"))
    assert r.code == 20 and "not addressed to your key" in r.err
    r = users.as_("bob", "download", sid, str(tmp_path / "dest-b2"))
    assert r.code == 0, r.err


def test_bad_share_ids(users: Users, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_folder(src)
    sid = publish(users, src, "--public")
    typo = sid[:10] + ("a" if sid[10] != "a" else "b") + sid[11:]
    r = users.as_("bob", "download", typo, str(tmp_path / "d1"))
    assert r.code == 8 and "typo" in r.err and sid not in r.err
    r = users.as_("bob", "download", "hello", str(tmp_path / "d2"))
    assert r.code == 8 and "not a usenetsync share ID" in r.err
    from usenetsync_cli.core.shareid import ShareId

    other = ShareId(kind="public", signer=ShareId.parse(sid).signer, secret=os.urandom(32)).to_text()
    r = users.as_("bob", "download", other, str(tmp_path / "d3"))
    assert r.code == 7 and "no share" in r.err


def test_dest_not_writable(users: Users, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_folder(src)
    sid = publish(users, src, "--public")
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    r = users.as_("bob", "download", "--id-file", id_file(tmp_path, sid), str(blocker / "sub"))
    assert r.code in (3, 5) and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1


def _index_ids(users: Users, name: str = "s") -> list[str]:
    """Message-IDs of the share's current root, its chunk packs, then its table pieces (found as a reader
    finds them, and from the publisher's chunk rows)."""
    from usenetsync_cli.core.share_root import part_message_id
    from usenetsync_cli.core.shareid import ShareId, locator_key
    from usenetsync_cli.nntp import Connection, ServerSpec
    from usenetsync_cli.pipeline.publish_index import known_layout
    from usenetsync_cli.pipeline.share_index import RootFinder
    from usenetsync_cli.store.home import Home
    from usenetsync_cli.store.state import State

    r = users.as_("alice", "share", "show", name, "--show-id", "--json")
    info = r.json_lines()[0]
    sid = ShareId.parse(info["share_id"])
    lk = locator_key(sid)
    with Connection(ServerSpec(name="t", host=users.inn.host, port=users.inn.port)) as c:
        c.connect()
        finder = RootFinder(c, lk, sid.signer, sid.kind)
        root = finder.exact(info["version"])
    with State.open(Home.resolve()) as st:
        pk = st.catalog.execute("SELECT share_pk FROM shares WHERE name=?", (name,)).fetchall()[0][0]
        packs = list(known_layout(st.catalog, pk)[1])
    return ([finder.root_ids[info["version"]]] + [part_message_id(lk, n, 0) for n in packs]
            + [part_message_id(lk, p.pack_nonce, 0) for p in root.index.table])


def test_tampered_index_article_is_refused(users: Users, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    make_folder(src)
    sid = publish(users, src, "--public")
    root, part = _index_ids(users)[:2]
    inn.corrupt(part, 300)
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, str(dest))
    assert r.code == 22 and ("CRC" in r.err or "signature" in r.err or "altered" in r.err)
    assert not dest.exists()


def test_damaged_segment_is_reported_and_the_rest_kept(users: Users, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    make_folder(src)
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))  # nothing to rebuild from
    # the big file's second segment: find it through the publisher's state
    from tests.pipeline.upload_support import message_ids
    from usenetsync_cli.store import catalog
    from usenetsync_cli.store.home import Home
    from usenetsync_cli.store.state import State

    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        ids = message_ids(st, folder)
        big = [
            (sh, seg) for sh, c in enumerate(st.shards)
            for (seg,) in c.execute("SELECT s.seg_id FROM segments s JOIN files f ON f.file_id=s.file_id WHERE f.name=?", (b"big.bin",))
        ]
    inn.cancel(ids[big[1]])
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, str(dest))
    assert r.code == 16 and "big.bin" in r.err
    got = snapshot(dest)
    want = snapshot(src)
    assert b"big.bin" not in got  # never visible under its name while incomplete
    assert got.pop(b".big.bin.uspart")[0] == "file"  # kept, hidden, for a later run
    assert {k: v for k, v in got.items() if k not in (b"link-to-big",)} == {
        k: v for k, v in want.items() if k not in (b"big.bin", b"link-to-big")
    }


def test_malicious_index_paths_are_refused(users: Users, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A validly signed index naming ../ paths writes nothing outside DEST."""
    from usenetsync_cli.pipeline import publish as pub

    src = tmp_path / "src"
    make_folder(src)
    real = pub.iter_records

    def evil(state, folder, *args):  # type: ignore[no-untyped-def]
        recs = list(real(state, folder, *args))
        recs.insert(1, ["E", "../escaped.txt", 0, 0o644])
        recs[-1] = ["T", len(recs)]
        yield from recs

    monkeypatch.setattr(pub, "iter_records", evil)
    # A malicious publisher does not run our publisher's own check: let it through, the reader must refuse.
    monkeypatch.setattr(pub.LayoutCheck, "finish", lambda self: None)
    monkeypatch.setattr(pub.LayoutCheck, "add", lambda self, rec: None)
    sid = publish(users, src, "--public")
    dest = tmp_path / "inner" / "dest"
    r = users.as_("bob", "download", sid, str(dest))
    assert r.code == 22 and "leaves the folder" in r.err
    assert not (tmp_path / "inner" / "escaped.txt").exists()


def test_kill_9_mid_download_resumes_without_refetching(users: Users, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.bin").write_bytes(os.urandom(6_000_000))
    sid = publish(users, src, "--public")
    dest = tmp_path / "dest"
    env = {**os.environ, "USENETSYNC_HOME": str(users.homes["bob"] if "bob" in users.homes else users.tmp / "home-bob")}
    users.as_("bob", "status")
    env["USENETSYNC_HOME"] = str(users.homes["bob"])
    proc = subprocess.Popen([sys.executable, "-m", "usenetsync_cli", "download", sid, str(dest), "--connections", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    from usenetsync_cli.pipeline.reader_state import dest_key

    db = users.homes["bob"] / "state" / "downloads" / dest_key(os.fsencode(os.path.abspath(dest))) / "reader.db"
    deadline = time.monotonic() + 60
    import apsw

    while time.monotonic() < deadline:
        assert proc.poll() is None, "download finished before it could be killed"
        if db.exists():
            try:
                n = apsw.Connection(str(db)).execute("SELECT count(*) FROM done").fetchall()[0][0]
            except apsw.Error:
                n = 0
            if n >= 300:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = users.as_("bob", "download", sid, str(dest), "--json")
    assert r.code == 0, r.err
    summary = [x for x in r.json_lines() if x["type"] == "download.summary"][0]
    total = 4 * (6_000_000 // 16384 + 1)
    assert summary["segments_fetched"] <= total - 300
    assert snapshot(dest) == snapshot(src)


def test_disk_full_keeps_state_and_resumes(users: Users, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.bin").write_bytes(os.urandom(1_500_000))
    sid = publish(users, src, "--public")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mnt)], check=True)
    try:
        r = users.as_("bob", "download", sid, str(mnt / "dest"))
        assert r.code == 6 and "no space left" in r.err and "Traceback" not in r.err
        subprocess.run(["mount", "-o", "remount,size=20M", str(mnt)], check=True)
        r = users.as_("bob", "download", sid, str(mnt / "dest"))
        assert r.code == 0, r.err
        assert snapshot(mnt / "dest") == snapshot(src)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_nzb_export_and_download_nzb(users: Users, tmp_path: Path) -> None:
    from usenetsync_cli.core.nzb import parse_nzb

    src = tmp_path / "src"
    make_folder(src)
    publish(users, src, "--public")
    out = tmp_path / "s.nzb.gz"
    assert users.as_("alice", "nzb", "export", "s", "-o", str(out)).code == 0
    files = parse_nzb(out)
    status = users.as_("alice", "status", "--json").json_lines()
    verified = sum(x["segments"]["verified"] for x in status if x["type"] == "status.shard")
    assert len(files) == verified > 0
    r = users.as_("bob", "download", "--nzb", str(out), str(tmp_path / "raw"), "--json")
    assert r.code == 0, r.err
    summary = [x for x in r.json_lines() if x["type"] == "nzb.summary"][0]
    assert summary["files_ok"] == len(files) and summary["files_damaged"] == []


def test_revoked_recipient_cannot_find_or_read_later_content(users: Users, tmp_path: Path, inn: InnServer) -> None:
    """Revocation holds: what a revoked reader ever held names and opens nothing posted after it.

    Carol keeps everything the share gave her (the index of version 1, read
    with the project's own code: its folder uid and epoch keys). After alice
    revokes her and adds a file, carol can neither derive the new segment's
    Message-ID nor decrypt the article when handed its ID; bob, still a
    recipient, reads the new file.
    """
    from usenetsync_cli.core.article import decode_yenc_article
    from usenetsync_cli.errors import TamperedError
    from usenetsync_cli.nntp import Connection, ServerSpec
    from usenetsync_cli.pipeline.download_write import folder_secrets
    from usenetsync_cli.pipeline.shares import open_share
    from usenetsync_cli.pipeline.upload import folder_context
    from usenetsync_cli.store import catalog
    from usenetsync_cli.store.home import Home
    from usenetsync_cli.store.keystore import load_identity
    from usenetsync_cli.store.state import State

    src = tmp_path / "src"
    make_folder(src)
    bob, carol = users.pubkey("bob"), users.pubkey("carol")
    sid = publish(users, src, "--to", bob, "--to", carol, upload_args=("--redundancy", "0"))
    assert users.as_("carol", "download", sid, str(tmp_path / "dest-c")).code == 0
    users.mp.setenv("USENETSYNC_HOME", str(users.homes["carol"]))
    carol_id = load_identity(Home.resolve())
    spec = ServerSpec(name="t", host=inn.host, port=inn.port)
    with Connection(spec) as c:
        c.connect()
        held = open_share(c, sid, tmp_path / "carol-spool", password=lambda: "", identity=lambda: carol_id)
        secrets = folder_secrets(next(held.records())[1])
    assert set(secrets.ctx.epochs) == {1}

    assert users.as_("alice", "share", "revoke", "s", "--to", carol).code == 0
    (src / "after-revoke.bin").write_bytes(os.urandom(30_000))
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "upload", str(src), "--segment-size", "16384", "--redundancy", "0").code == 0
    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None and folder.epoch == 2  # 1 at creation, 2 from the revocation
        new = [
            (sh, seg, att, ep) for sh, conn in enumerate(st.shards)
            for seg, att, ep in conn.execute(
                "SELECT s.seg_id, s.attempt, s.epoch FROM segments s JOIN files f ON f.file_id=s.file_id"
                " WHERE f.name=?", (b"after-revoke.bin",))
        ]
        real_ids = [folder_context(folder, (inn.group,)).message_id(*n) for n in new]
    assert new and all(ep == 2 for *_, ep in new)

    with Connection(spec) as c:
        c.connect()
        for (shard, seg, att, ep), real in zip(new, real_ids):
            with pytest.raises(TamperedError):
                secrets.ctx.message_id(shard, seg, att, ep)  # no key of epoch 1
            # What her epoch-1 keys would name at that place is not on the server...
            guess = secrets.ctx.message_id(shard, seg, att, 1)
            assert guess != real and c.stat(guess) is False
            # ...and the real article, handed to her, does not open with anything she holds.
            body = c.body(real)
            assert body is not None
            sealed, _name, crc_ok = decode_yenc_article(body)
            assert crc_ok
            with pytest.raises(TamperedError):
                secrets.ctx.open(shard, seg, 1, sealed)
    assert users.as_("alice", "share", "update", "s").code == 0
    r = users.as_("bob", "download", sid, str(tmp_path / "dest-b"))
    assert r.code == 0, r.err
    assert (tmp_path / "dest-b" / "after-revoke.bin").read_bytes() == (src / "after-revoke.bin").read_bytes()


def test_new_epoch_reposts_nothing_and_old_readers_keep_reading(users: Users, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_folder(src)
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))
    r = users.as_("alice", "upload", str(src), "--new-epoch", "--redundancy", "0", "--json")
    assert r.code == 0, r.err
    lines = r.json_lines()
    assert [x["epoch"] for x in lines if x["type"] == "upload.epoch"] == [2]
    summary = [x for x in lines if x["type"] == "upload.summary"][0]
    assert summary["posted_now"] == 0  # epoch 0 content stays where it is
    (src / "later.bin").write_bytes(os.urandom(20_000))
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "upload", str(src), "--redundancy", "0").code == 0
    assert users.as_("alice", "share", "update", "s").code == 0
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, str(dest))
    assert r.code == 0, r.err
    assert snapshot(dest) == snapshot(src)


def test_a_share_made_by_an_older_version_is_republished_under_a_new_id(users: Users, tmp_path: Path) -> None:
    """A catalog share row with a format-1 ID (us1…): its old ID is refused with a clear error; the next
    publication draws a new ID of this format, restarts at version 1, and readers of the new ID get the files."""
    import base64
    import hashlib

    from usenetsync_cli.store.home import Home
    from usenetsync_cli.store.state import State

    src = tmp_path / "src"
    make_folder(src)
    publish(users, src, "--public")
    fp, secret = os.urandom(8), os.urandom(32)
    check = hashlib.sha256(b"usenetsync/v1/shareid" + b"public" + fp + secret).digest()[:4]
    old = "us1p" + base64.b32encode(fp + secret + check).decode().rstrip("=").lower()
    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    with State.open(Home.resolve()) as st, st.catalog:
        st.catalog.execute("UPDATE shares SET share_id=?, version=3 WHERE name='s'", (old,))

    r = users.as_("bob", "download", old, str(tmp_path / "old"))
    assert r.code == 8 and "older version of usenetsync" in r.err and old not in r.err
    # The next upload (cron's run, nothing changed) republishes it under a new ID, and says so.
    r = users.as_("alice", "upload", str(src), "--json")
    assert r.code == 0, r.err
    assert [(x["version"], x["new_id"]) for x in r.json_lines() if x["type"] == "share.published"] == [(1, True)]
    assert "has a new ID" in r.err
    new = users.as_("alice", "share", "show", "s", "--show-id").out.strip().splitlines()[-1]
    assert new.startswith("us2p") and new != old
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", new, str(dest))
    assert r.code == 0, r.err
    assert snapshot(dest) == snapshot(src)


def test_an_identity_restored_from_its_phrase_keeps_publishing_the_same_share(users: Users, tmp_path: Path) -> None:
    """The share ID pins the signing key: after the identity is lost and restored from its recovery phrase,
    `share update` publishes under the same ID and readers accept the new version."""
    from usenetsync_cli.store.home import Home
    from usenetsync_cli.store.keystore import identity_path

    src = tmp_path / "src"
    make_folder(src)
    users.as_("alice", "server", "list")  # alice's home exists
    r = users.as_("alice", "keys", "init", "--no-passphrase", "--force", "--json")
    assert r.code == 0, r.err
    phrase = [x for x in r.json_lines() if x["type"] == "keys.phrase"][0]["phrase"]
    sid = publish(users, src, "--public")
    dest = tmp_path / "dest"
    assert users.as_("bob", "download", sid, str(dest)).code == 0

    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    identity_path(Home.resolve()).unlink()  # the disk with the keys is gone
    r = users.as_("alice", "share", "update", "s")
    assert r.code != 0
    phrase_file = tmp_path / "phrase.txt"
    phrase_file.write_text(phrase + "\n")
    phrase_file.chmod(0o600)
    r = users.as_("alice", "keys", "restore", "--phrase-file", str(phrase_file), "--no-passphrase")
    assert r.code == 0, r.err
    (src / "after-restore.txt").write_bytes(b"published by the restored identity")
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "upload", str(src)).code == 0
    assert users.as_("alice", "share", "update", "s").code == 0
    assert users.as_("alice", "share", "show", "s", "--show-id").out.strip().splitlines()[-1] == sid
    r = users.as_("bob", "download", sid, str(dest), "--sync")
    assert r.code == 0, r.err
    assert snapshot(dest) == snapshot(src)


def test_publishing_in_small_pages_gives_the_same_share(
    users: Users, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The publisher reads files and packs in keyset pages (bounded memory): pages of 2 rows lose nothing."""
    from usenetsync_cli.pipeline import publish as publish_mod

    monkeypatch.setattr(publish_mod, "_PAGE", 2)
    src = tmp_path / "src"
    make_folder(src)
    for i in range(9):
        (src / f"extra{i}.bin").write_bytes(os.urandom(20_000 + i))  # several files per shard, several packs
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, str(dest))
    assert r.code == 0, r.err
    assert snapshot(dest) == snapshot(src)
