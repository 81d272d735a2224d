"""pipeline/share_index.py: root discovery and the record stream hold against a hostile server or share holder.

The server here is a dict of article bodies (built with the real article
encoder): discovery is pure logic over BODY answers, and what it must
survive — forged roots at every slot, a server claiming every root exists, a
hidden newer version, an endless record — is easier to set up exactly here
than on INN. The same behaviour against INN is in tests/cli/test_tamper.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from usenetsync_cli.core.article import build_article, format_date
from usenetsync_cli.core.identity import Identity
from usenetsync_cli.core.manifest import dumps_record
from usenetsync_cli.core.index_chunks import TableEntry, chunk_stream
from usenetsync_cli.core.share_root import ROOT_SLOTS, IndexRef, Root, TablePiece, root_key, root_message_id, seal_root
from usenetsync_cli.core.shareid import signer_of
from usenetsync_cli.errors import RollbackError, TamperedError
from usenetsync_cli.pipeline import share_index
from usenetsync_cli.pipeline.share_index import ForgedRootsError, OpenedIndex, RootFinder, find_root, iter_records

LOCATOR = os.urandom(32)
ME = Identity.generate()
MALLORY = Identity.generate()
SIGNER = signer_of(ME.public().sign_pub)


class _Server:
    """BODY answers from stored payloads (or, with ``everything``, junk for any ID), counting requests."""

    def __init__(self, everything: bool = False) -> None:
        self.bodies: dict[str, bytes] = {}
        self.everything = everything
        self.fetches = 0
        self.stats = 0

    def put(self, mid: str, payload: bytes) -> None:
        _header, body = build_article(message_id=mid, subject="s", poster="A B <a@b.example>", newsgroups=("alt.test",),
                                      date=format_date(0), payload=payload, yenc_name="x")
        # What Connection.body returns: dot-unstuffed, without the terminating line.
        self.bodies[mid] = body.replace(b"\r\n..", b"\r\n.")

    def body(self, mid: str, *, max_bytes: int = 0) -> bytes | None:
        self.fetches += 1
        if self.everything and mid not in self.bodies:
            self.put(mid, os.urandom(20_000))
        return self.bodies.get(mid)

    def stat_many(self, ids: list[str], window: int = 64) -> Iterator[tuple[str, bool]]:
        self.stats += 1
        for mid in ids:
            yield mid, self.everything or mid in self.bodies


def _root(version: int, signer: Identity = ME, named: Identity = ME) -> bytes:
    ref = IndexRef(table=(TablePiece(os.urandom(16), 100, bytes(32)),), table_bytes=100, chunks=1, plain_bytes=10)
    pub = named.public()
    return seal_root(LOCATOR, Root("public", version, 0, pub.sign_pub, pub.box_pub, b"", ref), signer.sign)


def _publish(server: _Server, versions: list[int], junk: dict[int, int] | None = None) -> None:
    """Each version's root at the first slot after ``junk[v]`` junk articles (as the publisher would do)."""
    junk = junk or {}
    for v in versions:
        for slot in range(junk.get(v, 0)):
            server.put(root_message_id(LOCATOR, v, slot), _root(v, MALLORY))
        if junk.get(v, 0) < ROOT_SLOTS:
            server.put(root_message_id(LOCATOR, v, junk.get(v, 0)), _root(v))


@pytest.mark.parametrize("newest", [1, 2, 3, 7, 8, 100, 1000])
def test_finds_the_newest_version_in_logarithmic_fetches(newest: int) -> None:
    server = _Server()
    _publish(server, list(range(1, newest + 1)))
    root = RootFinder(server, LOCATOR, SIGNER, "public").newest()  # type: ignore[arg-type]
    assert root is not None and root.version == newest
    assert server.fetches <= 2 * (newest.bit_length() + 1) + 1  # BODYs: present versions only
    assert server.stats <= 2 * (newest.bit_length() + 1) + 2  # one pipelined STAT per version probed


def test_junk_at_root_slots_is_skipped_and_a_fully_squatted_version_passed_over() -> None:
    server = _Server()
    # v2: junk at slots 0-1, the publisher's root at slot 2; v3: every slot junk (the publisher skipped it)
    _publish(server, [1, 2, 4], junk={2: 2, 4: 1})
    server.put(root_message_id(LOCATOR, 5, 1), _root(5))
    for slot in range(ROOT_SLOTS):
        server.put(root_message_id(LOCATOR, 3, slot), _root(3, MALLORY))
    # v6: junk at slot 0 only, nothing else: not a version
    server.put(root_message_id(LOCATOR, 6, 0), _root(6, MALLORY))
    # v5's slot 0 is free here but was taken on the publisher's side (a cancelled ID the server remembers):
    # the publisher's root is at slot 1 (see _publish below, with junk={5: ...}).
    finder = RootFinder(server, LOCATOR, SIGNER, "public")  # type: ignore[arg-type]
    assert finder.exact(2).version == 2
    root = finder.newest()
    assert root is not None and root.version == 5


def test_a_root_signed_by_another_key_or_for_another_version_never_verifies() -> None:
    server = _Server()
    server.put(root_message_id(LOCATOR, 1, 0), _root(1, MALLORY))  # claims ME's key, signed by MALLORY
    server.put(root_message_id(LOCATOR, 1, 1), _root(2))  # ME's root of version 2, replayed at version 1
    server.put(root_message_id(LOCATOR, 1, 2), _root(1, MALLORY, MALLORY))  # sound, but not the ID's signer
    # Anyone with the ID can re-seal ME's signed root of version 2 for version 1: only the signed body tells.
    v2 = _root(2)
    aes = AESGCM(root_key(LOCATOR))
    plain = aes.decrypt(v2[:12], v2[12:], b"usenetsync/v2/root\x00" + (2).to_bytes(8, "big"))
    server.put(root_message_id(LOCATOR, 1, 3), v2[:12] + aes.encrypt(v2[:12], plain, b"usenetsync/v2/root\x00" + (1).to_bytes(8, "big")))
    assert RootFinder(server, LOCATOR, SIGNER, "public").newest() is None  # type: ignore[arg-type]


def test_a_server_answering_every_root_with_junk_is_stopped_in_bounded_fetches() -> None:
    server = _Server(everything=True)
    _publish(server, [1])
    with pytest.raises(ForgedRootsError):
        RootFinder(server, LOCATOR, SIGNER, "public").newest()  # type: ignore[arg-type]
    assert server.fetches <= share_index.MAX_ROOT_FETCHES


def test_a_hidden_newer_version_is_a_rollback_unless_allowed() -> None:
    server = _Server()
    _publish(server, [1, 2])  # the server hides 3, which this reader saw
    with pytest.raises(RollbackError) as exc:
        find_root(server, LOCATOR, SIGNER, "public", pinned=3)  # type: ignore[arg-type]
    assert exc.value.exit_code == 24
    assert find_root(server, LOCATOR, SIGNER, "public", pinned=3, allow_rollback=True).version == 2  # type: ignore[arg-type]
    assert find_root(server, LOCATOR, SIGNER, "public", pinned=2).version == 2  # type: ignore[arg-type]


def _index(tmp: Path, stream: bytes) -> OpenedIndex:
    """An opened index whose cache holds ``stream``'s chunks, as open_index leaves it."""
    cache = tmp / "chunks"
    cache.mkdir()
    entries = []
    for c in chunk_stream([stream]):
        (cache / c.chunk_id.hex()).write_bytes(c.plain)
        entries.append(TableEntry(c.chunk_id, len(c.plain), bytes(16), 0, 100))
    root = Root("public", 1, 0, bytes(32), bytes(32), b"", IndexRef((), 0, len(entries), len(stream)))
    return OpenedIndex(root=root, version=1, spool=tmp / "t", entries=entries, cache=cache)


def test_records_round_trip_across_chunks(tmp_path: Path) -> None:
    recs = [["H", {"format": 4}]] + [["D", f"dir{i:06d}" * 20, 0o755, i] for i in range(3000)] + [["T", 3002]]
    index = _index(tmp_path, b"".join(dumps_record(r) for r in recs))
    assert len(index.entries) >= 2  # one "line" in: cuts fall inside records, which span chunks
    assert list(iter_records(index)) == recs


def test_an_endless_record_is_refused_at_the_record_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(share_index, "MAX_RECORD_BYTES", 1 << 20)
    index = _index(tmp_path, b"[" + b"1," * (1 << 20))  # 2 MiB, no newline, ever
    with pytest.raises(TamperedError, match="longer than"):
        list(iter_records(index))


def test_a_cached_chunk_changed_on_disk_is_refused(tmp_path: Path) -> None:
    index = _index(tmp_path, b"".join(dumps_record(["D", f"d{i}", 0, 0]) for i in range(100)))
    path = index.cache / index.entries[0].chunk_id.hex()
    data = bytearray(path.read_bytes())
    data[5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(TamperedError, match="cache"):
        list(iter_records(index))
