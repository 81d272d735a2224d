"""Versioned sync keeps an exact copy through any sequence of changes (hypothesis state machine, real INN).

Each step changes the publisher's folder — create, delete, rewrite in place
(with or without the mtime put back), append, truncate, rename and move
files, rename and delete folders, chmod, touch, file <-> symlink, file <->
folder, folder <-> symlink, two files made identical, hard links, sparse
files, empty files and folders — then the publisher indexes, uploads and
publishes a new share version, and a reader runs ``download --sync`` into
its copy. The invariant compares source and copy exactly: the set of paths,
each one's type, bytes, permission bits, mtime (ns), symlink target, which
paths are one file (hard links), and that sparse files come back sparse.
Every few steps a fresh download into a new destination must equal both.

It runs the pipeline in-process (``index_folder``, ``upload_folder``,
``publish``, ``open_share_into`` + ``download_records``: what the commands call),
PAR2 off, no post-check delay. CI runs a bounded profile;
``USENETSYNC_SOAK_EXAMPLES`` / ``USENETSYNC_SOAK_STEPS`` select a long soak.
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
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.support.inn import server_from_env
from usenetsync_cli.core.identity import Identity
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.download import DownloadOptions, download_records
from usenetsync_cli.pipeline.index import index_folder
from usenetsync_cli.pipeline.poster import open_connection
from usenetsync_cli.pipeline.reader_state import ReaderState
from usenetsync_cli.pipeline.shares import create_share, get_share, open_share_into, publish
from usenetsync_cli.pipeline.upload import UploadOptions, upload_folder
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

SEG = 16_384
FILES = ("a", "b", "d1/a", "d1/b", "d1/d2/c", "d2/a", "d3/e")
DIRS = ("d1", "d2", "d3", "d1/d2")
SIZES = st.sampled_from([0, 1, 300, 5_000, 8_192, 20_000, 40_000])
MODES = st.sampled_from([0o600, 0o640, 0o644, 0o755])
TARGETS = st.sampled_from(["a", "d1", "../outside", "d1/b", "missing"])
SPARSE_HOLE = 3 * (1 << 16)


def _snapshot(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st_ = os.lstat(full)
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("link", os.readlink(full), st_.st_mtime_ns)
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode), st_.st_mtime_ns)
            else:
                with open(full, "rb") as f:
                    out[rel] = ("file", f.read(), stat.S_IMODE(st_.st_mode), st_.st_mtime_ns)
                inodes.setdefault(st_.st_ino, []).append(rel)
    out["<links>"] = sorted(sorted(v) for v in inodes.values() if len(v) > 1)
    return out


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        inn = server_from_env()
        self.tmp = Path(tempfile.mkdtemp(prefix="sync-sm-"))
        self.src = self.tmp / "src"
        self.src.mkdir()
        self.spec = ServerSpec(name="t", host=inn.host, port=inn.port, connections=2, timeout=20.0,
                               groups=(inn.group,))
        self.pub = State.open(Home.resolve(self.tmp / "publisher"))
        self.identity = Identity.generate()
        self.reader_home = Home.resolve(self.tmp / "reader").ensure()
        self.dest = self.tmp / "copy"
        self.share: Any = None
        self.steps = 0
        self.old_umask = os.umask(0o022)

    def teardown(self) -> None:
        os.umask(self.old_umask)
        self.pub.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ publisher, reader

    def _publish_and_sync(self) -> None:
        self.steps += 1
        index_folder(self.pub, self.src)
        folder = catalog.get_folder(self.pub.catalog, os.fsencode(self.src.resolve()))
        assert folder is not None
        s = upload_folder(self.pub, folder, UploadOptions(servers=[self.spec], segment_size=SEG, recheck_delay=0.0))
        assert s.complete and not s.unstable_count, s.to_dict()
        if self.share is None:
            self.share = create_share(self.pub, folder, self.identity, kind="public", name="s")
        publish(self.pub, self.share, self.identity, self.spec)
        self.share = get_share(self.pub, "s")  # its version moved on
        self._download(self.dest, self.reader_home, sync=True)

    def _download(self, dest: Path, home: Home, *, sync: bool) -> Any:
        reader = ReaderState.open(home, dest)
        try:
            conn = open_connection(self.spec)
            try:
                opened = open_share_into(reader, conn, self.share.share_id, password=lambda: "",
                                         identity=lambda: self.identity)
            finally:
                conn.close()
            s = download_records(opened.records, dest, self.spec, reader, version=opened.index.version,
                                 replaced_root=self.tmp / "replaced", opts=DownloadOptions(connections=2, sync=sync))
        finally:
            reader.close()
        assert not s.damaged_count and not s.conflict_copies and not s.kept, s.to_dict()
        return s

    # ------------------------------------------------------------------ changes

    @initialize(seed=st.integers(0, 2**16))
    def first_version(self, seed: int) -> None:
        """A starting tree with something at most names, so the rules have things to change."""
        rnd = random.Random(seed)
        for rel in FILES[: 2 + seed % (len(FILES) - 1)]:
            if self._free_parent(rel):
                self._p(rel).write_bytes(rnd.randbytes(rnd.choice([0, 300, 5_000, 20_000])))
        self._publish_and_sync()

    def _p(self, rel: str) -> Path:
        return self.src / rel

    def _free_parent(self, rel: str) -> bool:
        """Make the parents of ``rel`` folders if nothing else is in the way."""
        parent = self._p(rel).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError:  # a file in the way, or a symlink loop
            return False
        return parent.is_dir() and not parent.is_symlink() and not any(
            (self.src / a).is_symlink() for a in Path(rel).parents if str(a) != "."
        )

    def _file(self, rel: str) -> bool:
        p = self._p(rel)
        return p.is_file() and not p.is_symlink()

    def _gone(self, rel: str) -> None:
        p = self._p(rel)
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)

    @rule(rel=st.sampled_from(FILES), size=SIZES, seed=st.integers(0, 2**16), mode=MODES)
    def create_file(self, rel: str, size: int, seed: int, mode: int) -> None:
        if not self._free_parent(rel):
            return
        self._gone(rel)
        self._p(rel).write_bytes(random.Random(seed).randbytes(size))
        os.chmod(self._p(rel), mode)
        self._publish_and_sync()

    @rule(rel=st.sampled_from(FILES))
    def delete(self, rel: str) -> None:
        if not self._file(rel) and not self._p(rel).is_symlink():
            return
        self._gone(rel)
        self._publish_and_sync()

    @rule(rel=st.sampled_from(FILES), seed=st.integers(0, 2**16), keep_mtime=st.booleans())
    def rewrite_in_place(self, rel: str, seed: int, keep_mtime: bool) -> None:
        if not self._file(rel):
            return
        p = self._p(rel)
        st_ = p.stat()
        with open(p, "r+b") as f:
            f.write(random.Random(seed).randbytes(st_.st_size))
        if keep_mtime:
            os.utime(p, ns=(st_.st_atime_ns, st_.st_mtime_ns))
        self._publish_and_sync()

    @rule(rel=st.sampled_from(FILES), n=st.integers(1, 30_000))
    def append(self, rel: str, n: int) -> None:
        if not self._file(rel):
            return
        with open(self._p(rel), "ab") as f:
            f.write(os.urandom(n))
        self._publish_and_sync()

    @rule(rel=st.sampled_from(FILES), frac=st.floats(0, 1))
    def truncate(self, rel: str, frac: float) -> None:
        if not self._file(rel):
            return
        p = self._p(rel)
        os.truncate(p, int(p.stat().st_size * frac))
        self._publish_and_sync()

    @rule(a=st.sampled_from(FILES), b=st.sampled_from(FILES))
    def move_file(self, a: str, b: str) -> None:
        if a == b or not self._file(a) or not self._free_parent(b) or self._p(b).is_dir():
            return
        if b.startswith(a + "/"):
            return
        os.replace(self._p(a), self._p(b))
        self._publish_and_sync()

    @rule(a=st.sampled_from(DIRS), b=st.sampled_from(DIRS))
    def move_dir(self, a: str, b: str) -> None:
        pa, pb = self._p(a), self._p(b)
        if a == b or b.startswith(a + "/") or not pa.is_dir() or pa.is_symlink() or os.path.lexists(pb):
            return
        if not self._free_parent(b):
            return
        os.rename(pa, pb)
        self._publish_and_sync()

    @rule(d=st.sampled_from(DIRS))
    def delete_dir(self, d: str) -> None:
        if not self._p(d).is_dir() or self._p(d).is_symlink():
            return
        self._gone(d)
        self._publish_and_sync()

    @rule(d=st.sampled_from(DIRS))
    def empty_dir(self, d: str) -> None:
        if os.path.lexists(self._p(d)) or not self._free_parent(d):
            return
        self._p(d).mkdir()
        self._publish_and_sync()

    @rule(rel=st.sampled_from(FILES + DIRS), mode=MODES)
    def chmod(self, rel: str, mode: int) -> None:
        p = self._p(rel)
        if not os.path.lexists(p) or p.is_symlink():
            return
        os.chmod(p, mode | (0o700 if p.is_dir() else 0))
        self._publish_and_sync()

    @rule(rel=st.sampled_from(FILES), t=st.integers(10**18, 2 * 10**18))
    def touch(self, rel: str, t: int) -> None:
        if not self._file(rel):
            return
        os.utime(self._p(rel), ns=(t, t))
        self._publish_and_sync()

    @rule(rel=st.sampled_from(FILES + DIRS), link_to=TARGETS)
    def becomes_symlink(self, rel: str, link_to: str) -> None:
        if not os.path.lexists(self._p(rel)) or not self._free_parent(rel):
            return
        self._gone(rel)
        os.symlink(link_to, self._p(rel))
        self._publish_and_sync()

    @rule(rel=st.sampled_from(FILES + DIRS))
    def becomes_dir(self, rel: str) -> None:
        p = self._p(rel)
        if not os.path.lexists(p) or p.is_dir() and not p.is_symlink():
            return
        self._gone(rel)
        p.mkdir()
        (p / "inner").write_bytes(b"inside " + rel.encode())
        self._publish_and_sync()

    @rule(rel=st.sampled_from(DIRS + FILES), size=SIZES)
    def becomes_file(self, rel: str, size: int) -> None:
        p = self._p(rel)
        if not os.path.lexists(p) or self._file(rel):
            return
        self._gone(rel)
        p.write_bytes(os.urandom(size))
        self._publish_and_sync()

    @rule(a=st.sampled_from(FILES), b=st.sampled_from(FILES))
    def make_identical(self, a: str, b: str) -> None:
        if a == b or not self._file(a) or not self._file(b):
            return
        self._p(b).write_bytes(self._p(a).read_bytes())
        self._publish_and_sync()

    @rule(a=st.sampled_from(FILES), b=st.sampled_from(FILES))
    def hard_link(self, a: str, b: str) -> None:
        if a == b or not self._file(a) or os.path.lexists(self._p(b)) or not self._free_parent(b):
            return
        os.link(self._p(a), self._p(b))
        self._publish_and_sync()

    @rule(rel=st.sampled_from(FILES))
    def sparse_file(self, rel: str) -> None:
        if not self._free_parent(rel):
            return
        self._gone(rel)
        with open(self._p(rel), "wb") as f:
            f.write(b"head")
            f.seek(SPARSE_HOLE)
            f.write(b"tail")
        self._publish_and_sync()

    # ------------------------------------------------------------------ invariants

    @precondition(lambda self: self.share is not None)
    @invariant()
    def copy_equals_source(self) -> None:
        assert _snapshot(self.dest) == _snapshot(self.src)
        spools = list((self.tmp / "reader" / "state" / "downloads").glob("*/index-*.bin"))
        assert len(spools) == 1, "the reader keeps more than the last index"
        for p in self.src.rglob("*"):
            st_ = p.lstat()
            if stat.S_ISREG(st_.st_mode) and st_.st_blocks * 512 + 2 * (1 << 16) < st_.st_size:
                copy = (self.dest / p.relative_to(self.src)).lstat()
                assert copy.st_blocks * 512 < copy.st_size, f"{p.relative_to(self.src)} did not come back sparse"

    @precondition(lambda self: self.share is not None and self.steps % 4 == 0)
    @invariant()
    def fresh_download_equals_both(self) -> None:
        fresh = self.tmp / f"fresh-{self.steps}"
        self._download(fresh, Home.resolve(self.tmp / f"fresh-home-{self.steps}").ensure(), sync=False)
        assert _snapshot(fresh) == _snapshot(self.src)
        shutil.rmtree(fresh)  # a successful download leaves DEST, even of an empty version


SyncMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("USENETSYNC_SOAK_EXAMPLES", "20")),
    stateful_step_count=int(os.environ.get("USENETSYNC_SOAK_STEPS", "20")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_sync_keeps_an_exact_copy(inn: object) -> None:
    """(The ``inn`` fixture makes sure the server is up before the machine runs.)"""
    SyncMachine.TestCase().runTest()
