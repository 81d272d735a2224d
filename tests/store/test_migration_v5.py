"""A state made before shard schema v5 (xxh3 hashes, no generations) keeps working: nothing is posted again.

The old state is rebuilt faithfully from a real upload: every shard database
is recreated at schema v4 (``SHARD_MIGRATIONS[:4]``) with the rows an old
version wrote — its columns only, xxh3_128 hashes of the plaintexts. Opening
it migrates to v5; the next upload posts nothing, learns the BLAKE3 hashes
from the articles on the server, settles every file, and a share of it
downloads byte-identical.
"""

from __future__ import annotations

import os
from pathlib import Path

import apsw
import pytest
import xxhash

from tests.cli.helpers import run
from tests.support.inn import InnServer
from usenetsync_cli.store import db
from usenetsync_cli.store.schema import SHARD_MIGRATIONS
from usenetsync_cli.store.state import NSHARDS

SEG = 16_384

_V4_FILES = ("file_id, folder_id, dir_id, name, kind, size, mtime_ns, ctime_ns, inode, mode, target, present,"
             " changed_run, plan_size, plan_mtime_ns, plan_inode")
_V4_SEGMENTS = ("seg_id, folder_id, file_id, idx, offset, length, state, attempt, wire_bytes, hash, posted_ns,"
                " checked_ns, server_msgid, error, check_result, nonce")


def _downgrade_to_v4(home: Path, src: Path) -> None:
    """Rewrite every shard as an old version left it (schema v4, xxh3 hashes)."""
    root = os.fsencode(src.resolve())
    catalog = apsw.Connection(str(home / "state" / "catalog.db"))
    dirs = dict(catalog.execute("SELECT dir_id, relpath FROM dirs"))
    catalog.close()
    for n in range(NSHARDS):
        path = home / "state" / "shards" / f"{n:02d}.db"
        new = apsw.Connection(str(path))
        files = new.execute(f"SELECT {_V4_FILES} FROM files").fetchall()
        segs = new.execute(f"SELECT {_V4_SEGMENTS} FROM segments").fetchall()
        members = new.execute("SELECT seg_id, file_id, pack_offset, length, hash FROM pack_members").fetchall()
        new.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        old = db.connect(path)
        db.migrate(old, SHARD_MIGRATIONS[:4], name=path.name)
        content = {f[0]: open(os.path.join(root, dirs[f[2]], f[3]) if dirs[f[2]] else os.path.join(root, f[3]), "rb").read()
                   for f in files if f[4] == 0}
        legacy_segs = []
        for row in segs:
            row = list(row)
            seg_id, file_id, offset, length = row[0], row[2], row[4], row[5]
            if file_id is not None:
                payload = content[file_id][offset : offset + length]
            else:
                buf = bytearray(length)
                for m_seg, m_file, m_off, m_len, _h in members:
                    if m_seg == seg_id:
                        buf[m_off : m_off + m_len] = content[m_file]
                payload = bytes(buf)
            row[9] = xxhash.xxh3_128_digest(payload)
            legacy_segs.append(tuple(row))
        with old:
            old.executemany(f"INSERT INTO files({_V4_FILES}) VALUES({','.join('?' * 16)})", files)
            old.executemany(f"INSERT INTO segments({_V4_SEGMENTS}) VALUES({','.join('?' * 16)})", legacy_segs)
            old.executemany(
                "INSERT INTO pack_members(seg_id, file_id, pack_offset, length, hash) VALUES(?,?,?,?,?)",
                [(s, f, o, n, xxhash.xxh3_128_digest(content[f])) for s, f, o, n, _h in members],
            )
        assert db.user_version(old) == 4
        old.close()


def test_a_v4_state_migrates_without_posting_again(inn: InnServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(4 * SEG + 10))
    for i in range(5):
        (src / "d" / f"s{i}.txt").write_bytes(os.urandom(100 + i))
    alice = tmp_path / "alice"
    monkeypatch.setenv("USENETSYNC_HOME", str(alice))
    assert run(capsys, "server", "add", "local", "--host", inn.host, "--port", str(inn.port), "--group", inn.group).code == 0
    assert run(capsys, "keys", "init", "--no-passphrase").code == 0
    assert run(capsys, "index", str(src)).code == 0
    # A folder made before key epochs seals in epoch 0 (new folders start in epoch 1).
    cat = apsw.Connection(str(alice / "state" / "catalog.db"))
    with cat:
        cat.execute("UPDATE folders SET epoch=0")
        cat.execute("DELETE FROM epochs")
    cat.close()
    assert run(capsys, "upload", str(src), "--segment-size", str(SEG), "--redundancy", "0").code == 0
    _downgrade_to_v4(alice, src)

    r = run(capsys, "upload", str(src), "--json")
    assert r.code == 0, r.err
    s = [x for x in r.json_lines() if x["type"] == "upload.summary"][0]
    assert s["posted_now"] == 0 and s["files_planned"] == 0
    assert s["hashes_backfilled"] >= 5  # 5 segments of big.bin and at least one pack
    for n in range(NSHARDS):
        conn = apsw.Connection(str(alice / "state" / "shards" / f"{n:02d}.db"))
        assert db.user_version(conn) == len(SHARD_MIGRATIONS)
        assert not conn.execute("SELECT 1 FROM segments WHERE state=2 AND length(hash)<>32").fetchall()
        assert not conn.execute("SELECT 1 FROM files WHERE kind=0 AND present=1 AND done_gen IS NOT gen").fetchall()
        conn.close()
    assert run(capsys, "share", "create", str(src), "--public", "--name", "s").code == 0
    sid = run(capsys, "share", "show", "s", "--show-id").out.strip().splitlines()[-1]
    monkeypatch.setenv("USENETSYNC_HOME", str(tmp_path / "bob"))
    assert run(capsys, "server", "add", "local", "--host", inn.host, "--port", str(inn.port), "--group", inn.group).code == 0
    dest = tmp_path / "dest"
    r = run(capsys, "download", sid, str(dest))
    assert r.code == 0, r.err
    assert (dest / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert sorted(p.read_bytes() for p in (dest / "d").iterdir()) == sorted(p.read_bytes() for p in (src / "d").iterdir())
