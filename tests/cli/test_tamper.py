"""A reader never writes a byte the publisher did not seal and sign (README "Shares", DESIGN §5-§6).

Each test alters what INN serves *behind* the yEnc CRC — the article is
re-encoded with a fresh, valid CRC (``InnServer.reencode_yenc``), so only the
checks inside the payload can notice — and drives ``download`` as a user
would:

- a segment whose AES-GCM tag (or ciphertext) was altered: that file is
  refused (exit 16, named, never under its name), the rest is kept;
- a root signed by another key, at the next version's root: refused before
  anything is written (exit 22);
- an index part that still opens under the share key (re-sealed) but is not
  the one the root signed: refused before anything is written (exit 22).

"Nothing written" is judged on DEST itself: no file of the share appears in
it (the reader's own state may or may not live there).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.test_share_download import Users, _index_ids, id_file, publish, snapshot, users  # noqa: F401 - fixture
from tests.pipeline.upload_support import message_ids
from tests.support.inn import InnServer
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

STATE_DIR = ".usenetsync"


def _share_files_in(dest: Path) -> set[str]:
    """Names in DEST other than the reader's state folder."""
    return set() if not dest.exists() else {p.name for p in dest.iterdir()} - {STATE_DIR}


def _folder(users: Users, src: Path) -> tuple[dict[str, str], dict[tuple[int, int], str]]:
    """(file name -> Message-ID of its second segment, all Message-IDs) from the publisher's state."""
    users.mp.setenv("USENETSYNC_HOME", str(users.homes["alice"]))
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        ids = message_ids(st, folder)
        second: dict[str, str] = {}
        for shard, conn in enumerate(st.shards):
            for name, seg_id in conn.execute(
                "SELECT f.name, s.seg_id FROM segments s JOIN files f ON f.file_id=s.file_id WHERE s.idx=1"
            ):
                second[os.fsdecode(name)] = ids[(shard, seg_id)]
    return second, ids


def _two_files(src: Path) -> None:
    src.mkdir()
    (src / "victim.bin").write_bytes(os.urandom(60_000))  # 4 segments of 16 KiB
    (src / "other.bin").write_bytes(os.urandom(40_000))
    (src / "note.txt").write_bytes(b"small, packed")


def _flip_tag(payload: bytes) -> bytes:
    return payload[:-1] + bytes([payload[-1] ^ 0x01])  # the last byte of the 16-byte GCM tag


def _flip_ciphertext(payload: bytes) -> bytes:
    i = 1 + 12 + 100  # past the version byte and the nonce: the 101st byte of ciphertext
    return payload[:i] + bytes([payload[i] ^ 0x80]) + payload[i + 1 :]


@pytest.mark.parametrize("alter", [_flip_tag, _flip_ciphertext], ids=["tag", "ciphertext"])
def test_segment_failing_its_gcm_tag_is_refused_behind_a_valid_crc(
    users: Users, tmp_path: Path, inn: InnServer, alter: Callable[[bytes], bytes]
) -> None:
    src = tmp_path / "src"
    _two_files(src)
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))  # no PAR2 to rebuild it from
    second, _ids = _folder(users, src)
    inn.reencode_yenc(second["victim.bin"], alter)
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", sid, str(dest))
    assert r.code == 16, r.err
    assert "victim.bin" in r.err and "Traceback" not in r.err
    got, want = snapshot(dest), snapshot(src)
    assert b"victim.bin" not in got  # never under its name
    hidden = [k for k in got if b"victim.bin" in k]
    assert all(k.startswith(b".") for k in hidden)
    for name in (b"other.bin", b"note.txt"):  # everything else is kept, byte-exact
        assert got[name] == want[name]


def _sign_with_another_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the publisher's signatures come from a key that is not theirs (a forger's root)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from usenetsync_cli.core import identity

    forger = Ed25519PrivateKey.generate()
    monkeypatch.setattr(identity.Identity, "sign", lambda self, data: forger.sign(data))


def test_forged_root_at_the_next_version_is_skipped_and_never_written(
    users: Users, tmp_path: Path, inn: InnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A complete, well-formed version 2 whose root claims the publisher's key but is signed by another.

    Anyone holding the share ID can post at its root slots; a root that does
    not verify is junk: readers skip it and keep reading the last verified
    version, with nothing of the forger's written.
    """
    from usenetsync_cli.core.share_root import root_message_id
    from usenetsync_cli.core.shareid import ShareId, locator_key

    src = tmp_path / "src"
    _two_files(src)
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))
    synced = tmp_path / "synced"
    assert users.as_("bob", "download", sid, str(synced)).code == 0  # a reader already holding version 1
    before = snapshot(synced)
    (src / "other.bin").write_bytes(b"the forger's content")  # what version 2 would bring
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "upload", str(src), "--redundancy", "0").code == 0
    with monkeypatch.context() as m:
        _sign_with_another_key(m)
        r = users.as_("alice", "share", "update", "s")
    assert r.code == 0, r.err
    assert inn.stat(root_message_id(locator_key(ShareId.parse(sid)), 2, 0)) == 223  # the forged root is there

    fresh = tmp_path / "fresh"
    r = users.as_("bob", "download", sid, str(fresh), "--json")
    assert r.code == 0, r.err
    assert [x["version"] for x in r.json_lines() if x["type"] == "download.summary"] == [1]
    assert snapshot(fresh) == before  # version 1, byte for byte: nothing of the forger's
    r = users.as_("bob", "download", sid, str(synced), "--sync")
    assert r.code == 0, r.err
    assert snapshot(synced) == before  # version 1 stays exactly as it was


@pytest.mark.parametrize("which", ["chunk pack", "table"])
def test_index_article_altered_is_refused_before_writing(
    users: Users, tmp_path: Path, inn: InnServer, which: str
) -> None:
    src = tmp_path / "src"
    _two_files(src)
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))
    ids = _index_ids(users)  # root, chunk packs, table pieces
    inn.reencode_yenc(ids[1] if which == "chunk pack" else ids[-1], _flip_ciphertext)
    dest = tmp_path / "dest"
    r = users.as_("bob", "download", "--id-file", id_file(tmp_path, sid), str(dest))
    assert r.code == 22, r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert _share_files_in(dest) == set()
