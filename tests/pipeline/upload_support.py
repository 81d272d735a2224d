"""Shared tools for upload tests: trees, config, and reading an upload back from INN.

``read_back`` is an independent reader of what an upload left on the server:
it walks the state's layout, fetches each article with BODY from the real
INN, decodes the yEnc, authenticates and decrypts it, and rebuilds every
file, so a test can compare bytes with the source.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from usenetsync_cli.core.article import decode_yenc_article
from usenetsync_cli.nntp import Connection, ServerSpec
from usenetsync_cli.pipeline.index import index_folder
from usenetsync_cli.pipeline.upload import folder_context
from usenetsync_cli.store import catalog
from usenetsync_cli.store.state import State

SEG = 20_000  # small segments keep tests fast while exercising many articles


def make_tree(root: Path, *, large: int = 2, small: int = 30, seed: int = 1) -> dict[bytes, bytes]:
    """A mixed tree: large files (several segments), small packed files, an empty file, odd names."""
    rnd = random.Random(seed)
    files: dict[bytes, bytes] = {}
    for i in range(large):
        files[b"big/large%d.bin" % i] = rnd.randbytes(SEG * 2 + rnd.randint(1, SEG))
    for i in range(small):
        files[b"small/d%d/f%d.txt" % (i % 3, i)] = rnd.randbytes(rnd.randint(1, SEG // 4))
    files[b"empty.dat"] = b""
    files[b"caf\xe9 \xff.bin"] = rnd.randbytes(777)  # not UTF-8
    for rel, data in files.items():
        p = os.path.join(os.fsencode(root), rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    return files


def spec_for(host: str, port: int, *, connections: int = 2, timeout: float = 10.0, **kw: object) -> ServerSpec:
    return ServerSpec(name="test", host=host, port=port, connections=connections, timeout=timeout,
                      groups=("alt.binaries.test",), **kw)  # type: ignore[arg-type]


def indexed(state: State, root: Path) -> catalog.Folder:
    index_folder(state, root)
    folder = catalog.get_folder(state.catalog, os.fsencode(root.resolve()))
    assert folder is not None
    return folder


def message_ids(state: State, folder: catalog.Folder, states: tuple[int, ...] = (1, 2)) -> dict[tuple[int, int], str]:
    """(shard, seg_id) -> the Message-ID of every live segment in ``states``."""
    ctx = folder_context(folder, ("alt.binaries.test",))
    out = {}
    marks = ",".join(str(s) for s in states)
    for shard, conn in enumerate(state.shards):
        for seg_id, attempt, server_id, epoch in conn.execute(
            f"SELECT seg_id, attempt, server_msgid, epoch FROM segments WHERE folder_id=? AND state IN ({marks})",
            (folder.folder_id,),
        ):
            out[(shard, seg_id)] = server_id or ctx.message_id(shard, seg_id, attempt, epoch)
    return out


def read_back(state: State, folder: catalog.Folder, host: str = "127.0.0.1", port: int = 119) -> dict[bytes, bytes]:
    """relpath -> content of every present file, rebuilt from the articles on the server."""
    ctx = folder_context(folder, ("alt.binaries.test",))
    ids = message_ids(state, folder)
    dirs = dict(state.catalog.execute("SELECT dir_id, relpath FROM dirs WHERE folder_id=?", (folder.folder_id,)))
    out: dict[bytes, bytes] = {}
    with Connection(spec_for(host, port)) as conn:
        conn.connect()

        def payload(shard: int, seg_id: int) -> bytes:
            body = conn.body(ids[(shard, seg_id)])
            assert body is not None, f"article of segment {shard}:{seg_id} is missing"
            sealed, _name, crc_ok = decode_yenc_article(body)
            assert crc_ok
            (epoch,), = state.shards[shard].execute("SELECT epoch FROM segments WHERE seg_id=?", (seg_id,))
            return ctx.open(shard, seg_id, epoch, sealed)

        for shard, sconn in enumerate(state.shards):
            for file_id, dir_id, name, size in sconn.execute(
                "SELECT file_id, dir_id, name, size FROM files WHERE folder_id=? AND present=1 AND kind=0",
                (folder.folder_id,),
            ).fetchall():
                rel = dirs[dir_id] + b"/" + name if dirs[dir_id] else name
                segs = sconn.execute(
                    "SELECT seg_id FROM segments WHERE file_id=? AND state IN (1,2) ORDER BY idx", (file_id,)
                ).fetchall()
                if segs:
                    out[rel] = b"".join(payload(shard, s) for (s,) in segs)
                    continue
                member = sconn.execute(
                    "SELECT m.seg_id, m.pack_offset, m.length FROM pack_members m JOIN segments s USING(seg_id)"
                    " WHERE m.file_id=? AND s.state IN (1,2)", (file_id,)
                ).fetchall()
                if member:
                    seg_id, off, length = member[0]
                    out[rel] = payload(shard, seg_id)[off : off + length]
                elif size == 0:
                    out[rel] = b""
        conn.quit()
    return out


def fabricate_posted(state: State, folder: catalog.Folder, segment_size: int) -> int:
    """Mark every planned segment of an indexed folder of sparse (all-zero) files posted and verified.

    For tests that need a large published layout without posting it: the
    rows get exactly what a real upload writes (state 2, the BLAKE3 hash of
    the zero payload, a nonce, times), then the files are settled. The
    articles themselves are not on any server. Returns the segment count.
    """
    import time as _time

    from usenetsync_cli.core.hashing import piece_hash
    from usenetsync_cli.pipeline.plan import plan_folder
    from usenetsync_cli.pipeline.settle import settle_folder

    with state.catalog:
        state.catalog.execute("UPDATE folders SET segment_size=? WHERE folder_id=?", (segment_size, folder.folder_id))
    plan_folder(state, folder, segment_size)
    now = _time.time_ns()
    total = 0
    for conn in state.shards:
        rows = conn.execute("SELECT seg_id, length FROM segments WHERE folder_id=? AND state=0", (folder.folder_id,)).fetchall()
        hashes: dict[int, bytes] = {}
        for _s, n in rows:
            if n not in hashes:  # one hash per distinct length (setdefault would hash every row's zeros)
                hashes[n] = piece_hash(bytes(n))
        with conn:
            conn.executemany(
                "UPDATE segments SET state=2, hash=?, nonce=?, posted_ns=?, checked_ns=?, check_result=1, wire_bytes=?"
                " WHERE seg_id=?",
                [(hashes[n], os.urandom(12), now, now, n + 29, s) for s, n in rows],
            )
        total += len(rows)
        fabricate_pack_hashes(conn, folder.folder_id)
    settle_folder(state, folder, folder_context(folder, ("alt.binaries.test",)), None, after_upload=True)
    return total


def fabricate_pack_hashes(conn: Any, folder_id: int) -> None:
    """What an upload records for a posted pack of zeros: each member's piece hash and the pack's hash over them
    (core.hashing.pack_hash); without them no packed file settles."""
    from usenetsync_cli.core.hashing import pack_hash, piece_hash

    zeros: dict[int, bytes] = {}
    packs = conn.execute("SELECT seg_id, length FROM segments WHERE folder_id=? AND file_id IS NULL AND state IN (1,2)",
                         (folder_id,)).fetchall()
    with conn:
        for seg_id, length in packs:
            members = conn.execute("SELECT file_id, pack_offset, length FROM pack_members WHERE seg_id=?"
                                   " ORDER BY pack_offset", (seg_id,)).fetchall()
            for _f, _o, n in members:
                if n not in zeros:
                    zeros[n] = piece_hash(bytes(n))
            conn.executemany("UPDATE pack_members SET hash=? WHERE seg_id=? AND file_id=?",
                             [(zeros[n], seg_id, f) for f, _o, n in members])
            conn.execute("UPDATE segments SET hash=? WHERE seg_id=?",
                         (pack_hash(length, [(o, n, zeros[n]) for _f, o, n in members]), seg_id))
