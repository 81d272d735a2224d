"""Layout generations under any sequence of changes: what a share publishes is always one whole, current content.

A hypothesis state machine changes a small folder (create, rewrite in place
with the mtime put back, append, shrink to empty, grow from packed to
segmented and back, chmod, delete, touch with identical bytes), and after
every change indexes and uploads it to the real INN (in-process, PAR2 off).
The invariant reads the share records the publisher would post
(``publish.iter_records``) and fetches every article they name from INN:
each file must come back byte-identical to the folder, with its mode, and
its content hash must be the one its pieces make — never an older
generation's bytes, never a mix, never a missing or extra path; and no
older generation stays live.

CI runs 15 examples of 10 steps; ``USENETSYNC_SOAK_EXAMPLES`` and
``USENETSYNC_SOAK_STEPS`` select a long soak (300 x 20 passed: ~3 min).
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.support.inn import server_from_env
from usenetsync_cli.core.article import decode_yenc_article
from usenetsync_cli.core.hashing import file_content_hash, piece_hash
from usenetsync_cli.core.manifest import path_bytes
from usenetsync_cli.nntp import Connection, ServerSpec
from usenetsync_cli.pipeline.index import index_folder
from usenetsync_cli.pipeline.publish import iter_records
from usenetsync_cli.pipeline.upload import UploadOptions, folder_context, upload_folder
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

SEG = 16_384
NAMES = ("a.bin", "b.bin", "sub/c.bin", "sub/d.txt")
SIZES = st.sampled_from([0, 1, 700, 5_000, 8_191, 8_192, 16_384, 20_000, 40_000])


class LayoutMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.inn = server_from_env()
        self.tmp = Path(tempfile.mkdtemp(prefix="layout-sm-"))
        self.root = self.tmp / "src"
        (self.root / "sub").mkdir(parents=True)
        self.state = State.open(Home.resolve(self.tmp / "home"))
        self.spec = ServerSpec(name="t", host=self.inn.host, port=self.inn.port, connections=2, timeout=20.0,
                               groups=(self.inn.group,))
        self.conn = Connection(self.spec)
        self.conn.connect()
        self.rnd = random.Random(0)
        self.bodies: dict[str, bytes] = {}
        self.folder: catalog.Folder | None = None

    def teardown(self) -> None:
        self.conn.close()
        self.state.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ changes

    def _path(self, name: str) -> Path:
        return self.root / name

    def _sync(self) -> None:
        index_folder(self.state, self.root)
        self.folder = catalog.get_folder(self.state.catalog, os.fsencode(self.root.resolve()))
        assert self.folder is not None
        s = upload_folder(self.state, self.folder, UploadOptions(servers=[self.spec], segment_size=SEG,
                                                                 recheck_delay=0.0))
        assert s.complete and not s.unstable_count, s.to_dict()

    @rule(name=st.sampled_from(NAMES), size=SIZES, seed=st.integers(0, 2**32))
    def write_new(self, name: str, size: int, seed: int) -> None:
        self._path(name).write_bytes(random.Random(seed).randbytes(size))
        self._sync()

    @rule(name=st.sampled_from(NAMES), seed=st.integers(0, 2**32))
    def rewrite_in_place_mtime_restored(self, name: str, seed: int) -> None:
        p = self._path(name)
        if not p.exists():
            return
        st_ = p.stat()
        with open(p, "r+b") as f:
            f.write(random.Random(seed).randbytes(st_.st_size))
        os.utime(p, ns=(st_.st_atime_ns, st_.st_mtime_ns))
        self._sync()

    @rule(name=st.sampled_from(NAMES))
    def touch_same_bytes_mtime_restored(self, name: str) -> None:
        p = self._path(name)
        if not p.exists():
            return
        st_ = p.stat()
        data = p.read_bytes()
        with open(p, "r+b") as f:
            f.write(data)
        os.utime(p, ns=(st_.st_atime_ns, st_.st_mtime_ns))
        self._sync()

    @rule(name=st.sampled_from(NAMES), more=st.integers(1, 30_000))
    def append(self, name: str, more: int) -> None:
        p = self._path(name)
        if not p.exists():
            return
        with open(p, "ab") as f:
            f.write(self.rnd.randbytes(more))
        self._sync()

    @rule(name=st.sampled_from(NAMES), mode=st.sampled_from([0o600, 0o640, 0o644, 0o755]))
    def chmod(self, name: str, mode: int) -> None:
        p = self._path(name)
        if not p.exists():
            return
        os.chmod(p, mode)
        self._sync()

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        p = self._path(name)
        if not p.exists():
            return
        p.unlink()
        self._sync()

    # ------------------------------------------------------------------ the invariant

    def _body(self, mid: str) -> bytes:
        if mid not in self.bodies:
            body = self.conn.body(mid)
            assert body is not None, f"article {mid} named by the share is not on the server"
            self.bodies[mid] = body
        return self.bodies[mid]

    def _payload(self, shard: int, seg_id: int, attempt: int, server_id: str | None) -> bytes:
        assert self.folder is not None
        ctx = folder_context(self.folder, (self.inn.group,))
        (epoch,), = self.state.shards[shard].execute("SELECT epoch FROM segments WHERE seg_id=?", (seg_id,))
        mid = server_id or ctx.message_id(shard, seg_id, attempt, epoch)
        sealed, _name, crc_ok = decode_yenc_article(self._body(mid))
        assert crc_ok
        return ctx.open(shard, seg_id, epoch, sealed)

    @invariant()
    def published_records_are_the_folder(self) -> None:
        if self.folder is None:
            return
        got: dict[bytes, tuple[bytes, int]] = {}
        pack: Any = None
        for rec in iter_records(self.state, self.folder):
            kind = rec[0]
            if kind == "F":
                _f, path, size, _mtime, mode, content, segs = rec
                data = b"".join(self._payload(s[0], s[1], s[2], s[5]) for s in segs)
                assert len(data) == size
                assert [piece_hash(self._payload(s[0], s[1], s[2], s[5])) for s in segs] == [bytes.fromhex(s[4]) for s in segs]
                assert file_content_hash(size, [bytes.fromhex(s[4]) for s in segs]) == bytes.fromhex(content)
                got[path_bytes(path)] = (data, mode)
            elif kind == "K":
                pack = self._payload(rec[1], rec[2], rec[3], rec[6])
            elif kind == "P":
                _p, path, size, _mtime, mode, off, h = rec
                data = pack[off : off + size]
                assert piece_hash(data) == bytes.fromhex(h)
                got[path_bytes(path)] = (data, mode)
            elif kind == "E":
                got[path_bytes(rec[1])] = (b"", rec[3])
        want = {
            os.fsencode(p.relative_to(self.root)): (p.read_bytes(), p.stat().st_mode)
            for p in self.root.rglob("*") if p.is_file()
        }
        assert set(got) == set(want)
        for path, (data, mode) in want.items():
            assert got[path][0] == data, f"{path!r}: the share does not hold the folder's current bytes"
            assert stat.S_IMODE(got[path][1]) == stat.S_IMODE(mode), f"{path!r}: mode not carried"


    @invariant()
    def no_stale_layout_stays_live(self) -> None:
        """After a complete upload only current generations are live: nothing old is verified or repaired for nothing."""
        if self.folder is None:
            return
        for conn in self.state.shards:
            stale = conn.execute(
                "SELECT count(*) FROM segments s JOIN files f ON f.file_id=s.file_id"
                " WHERE s.state<>4 AND f.present=1 AND f.kind=0 AND s.gen<>f.gen"
            ).fetchall()[0][0]
            assert stale == 0, "segments of an older generation are still live"
            orphan = conn.execute(
                "SELECT count(*) FROM segments s WHERE s.file_id IS NULL AND s.state<>4 AND NOT EXISTS ("
                " SELECT 1 FROM pack_members m JOIN files f ON f.file_id=m.file_id WHERE m.seg_id=s.seg_id"
                " AND (m.gen=f.gen OR m.gen IS f.done_gen))"
            ).fetchall()[0][0]
            assert orphan == 0, "a live pack holds no file's current or done generation"


LayoutMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("USENETSYNC_SOAK_EXAMPLES", "15")),
    stateful_step_count=int(os.environ.get("USENETSYNC_SOAK_STEPS", "10")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_layout_generations(inn: object) -> None:
    """(The ``inn`` fixture makes sure the server is up before the machine runs.)"""
    LayoutMachine.TestCase().runTest()
