"""core/backup.py: backup keys, the catalog's merge rules, and its parser of hostile input.

No server: every property here is of pure functions. The merge properties
(commutative, associative, idempotent, forgotten versions stay forgotten)
are what lets several machines with one recovery phrase read, merge and
retry without losing anything; they are checked with catalogs drawn from
small pools so that uids, version numbers, epochs and share IDs collide.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usenetsync_cli.core import backup
from usenetsync_cli.core.backup import (
    CATALOG_FORMAT,
    Catalog,
    FolderEntry,
    ShareEntry,
    Version,
    backup_share_id,
    backup_share_key,
    catalog_keys,
    merge,
    parse_records,
    unique_label,
)
from usenetsync_cli.core.manifest import loads_record
from usenetsync_cli.core.shareid import SECRET_SIZES, ShareId
from usenetsync_cli.errors import ConfigError, NotFoundError, TamperedError

BK = bytes(range(32))
UID = bytes(range(100, 116))
SIGNER = bytes(range(200, 216))

# Modest: the whole file stays well under 20 s on the shared 2-core machine.
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- key derivations


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    """RFC 5869 HKDF-SHA256, no salt, 32 bytes: written out here so the test does not share code with the module."""
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_keys_follow_the_documented_derivation_and_are_pinned() -> None:
    # A changed derivation would make every existing backup unfindable from its phrase: pin the bytes.
    sid = backup_share_id(BK, UID, SIGNER)
    assert sid.secret == _hkdf(BK, b"usenetsync/v2/backup/share-secret" + UID)[:16]
    assert sid.secret.hex() == "3309816ed9a26c08adf8ef343b64c353"
    key = backup_share_key(BK, UID)
    assert key == _hkdf(BK, b"usenetsync/v2/backup/share-key" + UID)
    assert key.hex() == "ab633b5860248dc0b1c3641a543bbec8053c941b96951ed05f18b44483f6e4f0"
    locator, cat_key = catalog_keys(BK)
    assert locator == _hkdf(BK, b"usenetsync/v2/backup/catalog-locator")
    assert locator.hex() == "6f5d1ac92f571e9aecb79ce114a7470f44958691ad36e79318acb60bd5355c64"
    assert cat_key == _hkdf(BK, b"usenetsync/v2/backup/catalog-key")
    assert cat_key.hex() == "53d34d5065fea9e03c628073873ef7332c0b49125499ba063068f190e02e59ca"


def test_backup_share_id_is_a_deterministic_private_share_id_that_parses_back() -> None:
    sid = backup_share_id(BK, UID, SIGNER)
    assert sid == backup_share_id(BK, UID, SIGNER)
    assert sid.kind == "private" and sid.signer == SIGNER and len(sid.secret) == SECRET_SIZES["private"]
    text = sid.to_text()
    assert text.startswith("us2r")
    assert ShareId.parse(text) == sid
    assert backup_share_key(BK, UID) == backup_share_key(BK, UID)
    assert catalog_keys(BK) == catalog_keys(BK)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32),
       st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_another_uid_or_backup_key_gives_another_share(bk1: bytes, bk2: bytes, u1: bytes, u2: bytes) -> None:
    if u1 != u2:
        assert backup_share_id(bk1, u1, SIGNER) != backup_share_id(bk1, u2, SIGNER)
        assert backup_share_key(bk1, u1) != backup_share_key(bk1, u2)
    if bk1 != bk2:
        assert backup_share_id(bk1, u1, SIGNER).secret != backup_share_id(bk2, u1, SIGNER).secret
        assert backup_share_key(bk1, u1) != backup_share_key(bk2, u1)
        assert catalog_keys(bk1) != catalog_keys(bk2)
    locator, cat_key = catalog_keys(bk1)
    assert len(locator) == 32 and len(cat_key) == 32 and locator != cat_key
    share_key = backup_share_key(bk1, u1)
    assert len(share_key) == 32 and share_key not in (locator, cat_key)
    # The share's secret is not a prefix of any key that is handed around.
    assert backup_share_id(bk1, u1, SIGNER).secret not in (share_key[:16], locator[:16], cat_key[:16])


# ---------------------------------------------------------------- strategies

# Small pools, so two catalogs drawn independently share uids, versions, epochs and share IDs.
UIDS = [bytes([i]) * 16 for i in (1, 2, 3)]
KEYS = [bytes([i]) * 32 for i in (0xA0, 0xA1)]
SIDS = [ShareId(kind=k, signer=SIGNER, secret=bytes([i]) * SECRET_SIZES[k]).to_text()
        for i, k in ((1, "private"), (2, "public"), (3, "password"))]


# Strategies are built once: building them per draw costs more than the merges under test.
_bit = st.integers(0, 1)
_vnums = st.sets(st.integers(1, 4), max_size=3)
_forgotten = st.sets(st.integers(1, 4), max_size=2)
_labels, _paths, _hosts = st.sampled_from(["a", "b"]), st.sampled_from(["/x", "/y"]), st.sampled_from(["h1", "h2"])
_seg_sizes, _keys = st.sampled_from([0, 1 << 20]), st.sampled_from(KEYS)
_epochs = st.dictionaries(st.integers(0, 3), _keys, max_size=3)
_updated = st.integers(0, 2)
_kinds = st.sampled_from(["public", "password", "private"])
_uid_pool, _names, _wraps = st.sampled_from(UIDS), st.sampled_from(["s", "t"]), st.sampled_from([b"", b"\x01\x02"])
_recipients = st.lists(st.sampled_from(["r1", "r2"]), max_size=2)
# Folders of two uids only: three catalogs drawn for one test then often hold the same folder.
_uid_sets, _sid_sets = st.sets(st.sampled_from(UIDS[:2])), st.sets(st.sampled_from(SIDS))


def _draw_folder(draw: st.DrawFn, uid: bytes, normalized: bool) -> FolderEntry:
    versions = {v: Version(v, draw(_bit), draw(_bit), draw(_bit)) for v in sorted(draw(_vnums))}
    forgotten = draw(_forgotten)
    if normalized:  # as the writer and ``forget`` leave an entry: no forgotten version is listed
        versions = {v: x for v, x in versions.items() if v not in forgotten}
    return FolderEntry(
        uid=uid, label=draw(_labels), path=draw(_paths), host=draw(_hosts), segment_size=draw(_seg_sizes),
        folder_key=draw(_keys), epochs=draw(_epochs), versions=versions, forgotten=forgotten,
        updated_ns=draw(_updated),
    )


def _draw_share(draw: st.DrawFn, sid: str) -> ShareEntry:
    return ShareEntry(
        share_id=sid, folder_uid=draw(_uid_pool), name=draw(_names), kind=draw(_kinds), share_key=draw(_keys),
        key_wrap=draw(_wraps), recipients=draw(_recipients), version=draw(_updated), created_ns=draw(_bit),
    )


@st.composite
def _catalogs(draw: st.DrawFn, normalized: bool) -> Catalog:
    cat = Catalog()
    for uid in sorted(draw(_uid_sets)):
        cat.folders[uid] = _draw_folder(draw, uid, normalized)
    for sid in sorted(draw(_sid_sets)):
        cat.shares[sid] = _draw_share(draw, sid)
    return cat


_CATALOGS = {False: _catalogs(False), True: _catalogs(True)}


def catalogs(*, normalized: bool = False) -> st.SearchStrategy[Catalog]:
    return _CATALOGS[normalized]


def _lines(c: Catalog) -> list[bytes]:
    return list(c.lines())


# ---------------------------------------------------------------- merging


@PROPS
@given(catalogs(), catalogs())
def test_merge_is_commutative(a: Catalog, b: Catalog) -> None:
    assert _lines(merge(a, b)) == _lines(merge(b, a))


@PROPS
@given(catalogs(), catalogs(), catalogs())
def test_merge_is_associative(a: Catalog, b: Catalog, c: Catalog) -> None:
    assert _lines(merge(merge(a, b), c)) == _lines(merge(a, merge(b, c)))


@PROPS
@given(catalogs(normalized=True))
def test_merge_is_idempotent(a: Catalog) -> None:
    before = _lines(a)
    assert _lines(merge(a, a)) == before
    assert _lines(merge(a, Catalog())) == before and _lines(merge(Catalog(), a)) == before
    assert _lines(a) == before  # merging never edits its inputs
    # ... nor shares its dicts and sets with them: ``forget`` edits the merged catalog in place.
    for out in (merge(a, a), merge(a, Catalog()), merge(Catalog(), a)):
        for f in out.folders.values():
            f.epochs[99] = KEYS[1]
            f.versions[99] = Version(99, 0, 0, 0)
            f.forgotten.add(98)
        assert _lines(a) == before


@PROPS
@given(catalogs())
def test_merge_drops_listed_versions_that_were_forgotten(a: Catalog) -> None:
    # A catalog read from a server may list a version it also forgot; merging keeps it forgotten.
    once = merge(a, a)
    assert _lines(merge(once, once)) == _lines(once)
    for uid, f in a.folders.items():
        assert set(once.folders[uid].versions) == set(f.versions) - f.forgotten


@PROPS
@given(catalogs(), catalogs())
def test_merge_rules_folders_and_shares(a: Catalog, b: Catalog) -> None:
    before = (_lines(a), _lines(b))
    m = merge(a, b)
    assert (_lines(a), _lines(b)) == before
    assert set(m.folders) == set(a.folders) | set(b.folders)
    for uid, f in m.folders.items():
        fa, fb = a.folders.get(uid), b.folders.get(uid)
        both = [x for x in (fa, fb) if x is not None]
        forgotten = set().union(*(x.forgotten for x in both))
        listed = set().union(*(x.versions for x in both))
        assert f.forgotten == forgotten
        assert set(f.versions) == listed - forgotten
        assert set(f.epochs) == set().union(*(x.epochs for x in both))
        for e, key in f.epochs.items():
            assert key in {x.epochs[e] for x in both if e in x.epochs}
        for v, ver in f.versions.items():
            assert ver.version == v and ver in {x.versions[v] for x in both if v in x.versions}
        if fa is not None and fb is not None and fa.updated_ns != fb.updated_ns:
            last = fa if fa.updated_ns > fb.updated_ns else fb
            assert (f.label, f.path, f.host, f.segment_size, f.folder_key, f.updated_ns) == (
                last.label, last.path, last.host, last.segment_size, last.folder_key, last.updated_ns)
    assert set(m.shares) == set(a.shares) | set(b.shares)
    for sid, s in m.shares.items():
        cands = [x for x in (a.shares.get(sid), b.shares.get(sid)) if x is not None]
        assert s.version == max(x.version for x in cands)
        assert s.doc() in [x.doc() for x in cands]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(catalogs(), min_size=2, max_size=3))
def test_every_merge_order_agrees_and_forgotten_versions_never_come_back(cats: list[Catalog]) -> None:
    forgotten: dict[bytes, set[int]] = {}
    for c in cats:
        for uid, f in c.folders.items():
            forgotten.setdefault(uid, set()).update(f.forgotten)
    results = []
    for order in itertools.permutations(cats):
        left = Catalog()
        for c in order:  # ((c1 + c2) + c3) + ...: how machines fold into the server's copy one by one
            left = merge(left, c)
        right = Catalog()
        for c in reversed(order):  # c1 + (c2 + (c3 + ...))
            right = merge(c, right)
        results += [_lines(left), _lines(right)]
        for uid, f in left.folders.items():
            assert not set(f.versions) & forgotten.get(uid, set())
            assert not {v.version for v in f.kept()} & forgotten.get(uid, set())
    assert all(r == results[0] for r in results)
    # A stale machine that still lists a forgotten version does not bring it back.
    final = merge(left, left)
    for c in cats:
        final = merge(final, c)
        for uid, f in final.folders.items():
            assert not set(f.versions) & forgotten.get(uid, set())


def _folder(uid: bytes = UID, **kw: Any) -> FolderEntry:
    fields: dict[str, Any] = {"uid": uid, "label": "docs", "path": "/home/u/docs", "host": "h1",
                              "segment_size": 1 << 20, "folder_key": KEYS[0], "epochs": {0: KEYS[0]},
                              "versions": {1: Version(1, 10, 2, 30)}, "forgotten": set(), "updated_ns": 5}
    fields.update(kw)
    return FolderEntry(**fields)


def _cat(*fs: FolderEntry, shares: tuple[ShareEntry, ...] = ()) -> Catalog:
    return Catalog(folders={f.uid: f for f in fs}, shares={s.share_id: s for s in shares})


def test_merge_ties_on_updated_label_and_path_do_not_depend_on_the_argument_order() -> None:
    # Two machines wrote the same folder in the same nanosecond with the same label and path.
    for kw in ({"host": "h2"}, {"segment_size": 1 << 16}, {"folder_key": KEYS[1]}):
        a, b = _cat(_folder()), _cat(_folder(**kw))
        assert _lines(merge(a, b)) == _lines(merge(b, a)), kw
    # The same version or epoch number with different contents (a race between two machines).
    a = _cat(_folder(versions={1: Version(1, 10, 2, 30)}, epochs={0: KEYS[0], 1: KEYS[0]}))
    b = _cat(_folder(versions={1: Version(1, 11, 2, 30)}, epochs={0: KEYS[0], 1: KEYS[1]}))
    assert _lines(merge(a, b)) == _lines(merge(b, a))


def test_merge_is_associative_when_two_machines_filled_one_version_or_epoch_differently() -> None:
    # Updated last to first: a, c, b. b and c hold version 2 and epoch 1 with different contents, a neither.
    # Taking the newer entry's value would give c's for a + (b + c) and b's for (a + b) + c.
    a = _cat(_folder(updated_ns=3, versions={1: Version(1, 1, 1, 1)}, epochs={0: KEYS[0]}))
    b = _cat(_folder(updated_ns=1, versions={2: Version(2, 5, 1, 1)}, epochs={0: KEYS[0], 1: KEYS[1]}))
    c = _cat(_folder(updated_ns=2, versions={2: Version(2, 4, 1, 1)}, epochs={0: KEYS[0], 1: KEYS[0]}))
    results = {tuple(_lines(merge(merge(x, y), z))) for x, y, z in itertools.permutations((a, b, c))}
    results |= {tuple(_lines(merge(x, merge(y, z)))) for x, y, z in itertools.permutations((a, b, c))}
    assert len(results) == 1
    m = merge(a, merge(b, c)).folders[UID]
    assert m.updated_ns == 3 and sorted(m.versions) == [1, 2] and sorted(m.epochs) == [0, 1]


def _share(sid: str = SIDS[0], **kw: Any) -> ShareEntry:
    fields: dict[str, Any] = {"share_id": sid, "folder_uid": UID, "name": "s", "kind": "private",
                              "share_key": KEYS[0], "key_wrap": b"", "recipients": ["r1"], "version": 3,
                              "created_ns": 7}
    fields.update(kw)
    return ShareEntry(**fields)


def test_merge_keeps_the_higher_share_version_and_breaks_ties_on_the_whole_entry() -> None:
    old, new = _share(version=2, created_ns=99), _share(version=3, created_ns=1)
    for a, b in ((old, new), (new, old)):
        assert merge(_cat(shares=(a,)), _cat(shares=(b,))).shares[SIDS[0]].version == 3
    a, b = _share(), _share(share_key=KEYS[1], recipients=["r2"])
    assert _lines(merge(_cat(shares=(a,)), _cat(shares=(b,)))) == _lines(merge(_cat(shares=(b,)), _cat(shares=(a,))))


def test_merge_takes_the_other_fields_from_the_entry_updated_last() -> None:
    a = _folder(label="old", path="/old", updated_ns=1, versions={1: Version(1, 1, 1, 1)}, forgotten={3})
    b = _folder(label="new", path="/new", updated_ns=2, versions={2: Version(2, 2, 2, 2), 3: Version(3, 3, 3, 3)},
                epochs={1: KEYS[1]})
    for x, y in ((a, b), (b, a)):
        m = merge(_cat(x), _cat(y)).folders[UID]
        assert (m.label, m.path, m.updated_ns) == ("new", "/new", 2)
        assert sorted(m.versions) == [1, 2] and m.forgotten == {3}
        assert m.epochs == {0: KEYS[0], 1: KEYS[1]}
        assert [v.version for v in m.kept()] == [1, 2] and m.newest() == Version(2, 2, 2, 2)


# ---------------------------------------------------------------- records round trip

_texts = st.text(max_size=20)
_key32 = st.binary(min_size=32, max_size=32)
_ints = st.integers(0, 1 << 62)


@st.composite
def wide_folders(draw: st.DrawFn) -> FolderEntry:
    vnums = draw(st.sets(st.integers(1, 1 << 62), max_size=4))
    return FolderEntry(
        uid=draw(st.binary(min_size=16, max_size=16)), label=draw(_texts), path=draw(_texts), host=draw(_texts),
        segment_size=draw(st.integers(0, 1 << 30)), folder_key=draw(_key32),
        epochs=draw(st.dictionaries(st.integers(0, 10**12 - 1), _key32, max_size=3)),
        versions={v: Version(v, draw(_ints), draw(_ints), draw(_ints)) for v in sorted(vnums)},
        forgotten=draw(st.sets(st.integers(1, 1 << 62), max_size=3)), updated_ns=draw(_ints),
    )


@st.composite
def wide_shares(draw: st.DrawFn) -> ShareEntry:
    kind = draw(st.sampled_from(["public", "password", "private"]))
    secret = draw(st.binary(min_size=SECRET_SIZES[kind], max_size=SECRET_SIZES[kind]))
    return ShareEntry(
        share_id=ShareId(kind=kind, signer=draw(st.binary(min_size=16, max_size=16)), secret=secret).to_text(),
        folder_uid=draw(st.binary(min_size=16, max_size=16)), name=draw(_texts),
        kind=draw(st.sampled_from(["public", "password", "private"])), share_key=draw(_key32),
        key_wrap=draw(st.binary(max_size=64)), recipients=draw(st.lists(_texts, max_size=3)),
        version=draw(_ints), created_ns=draw(_ints),
    )


@st.composite
def wide_catalogs(draw: st.DrawFn) -> Catalog:
    cat = Catalog()
    for f in draw(st.lists(wide_folders(), max_size=3)):
        cat.folders[f.uid] = f
    for s in draw(st.lists(wide_shares(), max_size=3)):
        cat.shares[s.share_id] = s
    return cat


@PROPS
@given(wide_catalogs())
def test_records_parse_back_to_the_same_catalog(cat: Catalog) -> None:
    assert parse_records(cat.records()).same_as(cat)
    # And through the bytes the index stream carries (JSON lines, as pipeline/share_index reads them).
    back = parse_records(loads_record(line.rstrip(b"\n")) for line in cat.lines())
    assert back.same_as(cat)
    for uid, f in cat.folders.items():
        g = back.folders[uid]
        assert (g.folder_key, g.epochs, g.versions, g.forgotten) == (f.folder_key, f.epochs, f.versions, f.forgotten)
    for sid, s in cat.shares.items():
        assert back.shares[sid] == s


def test_an_empty_catalog_is_a_header_and_a_trailer() -> None:
    assert list(Catalog().records()) == [["C", {"format": CATALOG_FORMAT}], ["T", 2]]
    assert parse_records(Catalog().records()).same_as(Catalog())


# ---------------------------------------------------------------- hostile input


def _id(value: Any) -> str:
    """Short test IDs for long parameters."""
    r = repr(value)
    return r if len(r) <= 40 else f"{r[:24]}...({len(r)} chars)"


def _valid() -> list[list[Any]]:
    """A catalog with one folder and one share, as records (fresh objects each call)."""
    f = _folder(epochs={0: KEYS[0], 2: KEYS[1]}, versions={1: Version(1, 10, 2, 30), 4: Version(4, 11, 3, 40)},
                forgotten={2})
    return json.loads(json.dumps(list(_cat(f, shares=(_share(),)).records())))


def _fdoc(recs: list[list[Any]]) -> dict[str, Any]:
    return recs[1][1]


def _sdoc(recs: list[list[Any]]) -> dict[str, Any]:
    return recs[2][1]


def _tampered(recs: Any, match: str | None = None) -> TamperedError:
    with pytest.raises(TamperedError, match=match) as exc:
        parse_records(recs)
    assert exc.value.exit_code == 22
    assert "malformed" in str(exc.value) and "\n" not in str(exc.value)
    return exc.value


def test_the_valid_fixture_parses() -> None:
    cat = parse_records(_valid())
    assert list(cat.folders) == [UID] and list(cat.shares) == [SIDS[0]]
    assert cat.folders[UID].epochs == {0: KEYS[0], 2: KEYS[1]}


def test_no_header_is_refused() -> None:
    _tampered([], "no header")
    _tampered(_valid()[1:], "no header")
    _tampered([["C"]] + _valid()[1:], "no header")
    _tampered([["C", [1]]] + _valid()[1:], "no header")
    _tampered([["X", {"format": 1}]] + _valid()[1:], "no header")


@pytest.mark.parametrize("head", [{"format": 2}, {"format": 99}, {}])
def test_another_header_format_is_a_newer_usenetsync(head: dict[str, Any]) -> None:
    recs = _valid()
    recs[0] = ["C", head]
    with pytest.raises(ConfigError) as exc:
        parse_records(recs)
    assert not isinstance(exc.value, TamperedError) and exc.value.exit_code == 4
    assert "newer usenetsync" in exc.value.hint


def test_a_catalog_without_its_trailer_is_truncated() -> None:
    _tampered(_valid()[:-1], "truncated")
    _tampered(_valid()[:1], "truncated")


@pytest.mark.parametrize("count", [0, 1, 2, 3, 5, -4, "4", None])
def test_a_wrong_trailer_count_is_refused(count: Any) -> None:
    recs = _valid()
    assert recs[-1] == ["T", 4]
    recs[-1] = ["T", count]
    _tampered(recs, "record count")


def test_a_dropped_record_is_caught_by_the_trailer() -> None:
    recs = _valid()
    del recs[2]  # the share record goes missing, the trailer still says 4
    _tampered(recs, "record count")


def test_nothing_after_the_trailer_is_read() -> None:
    def records() -> Any:
        yield from _valid()
        raise AssertionError("read past the trailer")

    assert list(parse_records(records()).shares) == [SIDS[0]]


@pytest.mark.parametrize("rec", [["X", {}], ["F"], ["F", {}, {}], ["S"], ["T"], ["T", 4, 4], ["C", {"format": 1}]], ids=_id)
def test_unknown_or_misshapen_records_are_refused(rec: list[Any]) -> None:
    recs = _valid()
    recs.insert(1, rec)
    recs[-1] = ["T", 5]
    _tampered(recs)


@pytest.mark.parametrize("rec", [[], {}, "F", 5, None, {"F": 1}], ids=_id)
def test_records_that_are_not_lists_are_refused(rec: Any) -> None:
    recs = _valid()
    recs.insert(1, rec)
    recs[-1] = ["T", 5]
    _tampered(recs)
    _tampered([rec] + _valid()[1:], "no header")


@pytest.mark.parametrize("doc", [[], "x", 5, None, True, ["uid"]], ids=_id)
def test_folder_and_share_docs_that_are_not_dicts_are_refused(doc: Any) -> None:
    recs = _valid()
    recs[1][1] = doc
    _tampered(recs, "folder")
    recs = _valid()
    recs[2][1] = doc
    _tampered(recs, "share")


@pytest.mark.parametrize("field", ["uid", "label", "path", "host", "segment_size", "folder_key", "epochs",
                                   "versions", "forgotten", "updated_ns"])
def test_a_folder_without_a_field_is_refused(field: str) -> None:
    recs = _valid()
    del _fdoc(recs)[field]
    _tampered(recs)


@pytest.mark.parametrize("field", ["share_id", "folder_uid", "name", "kind", "share_key", "key_wrap",
                                   "recipients", "version", "created_ns"])
def test_a_share_without_a_field_is_refused(field: str) -> None:
    recs = _valid()
    del _sdoc(recs)[field]
    _tampered(recs)


@pytest.mark.parametrize(("field", "value"), [
    ("folder_key", "zz" * 32), ("folder_key", "ab" * 31), ("folder_key", "ab" * 33), ("folder_key", "abc"),
    ("folder_key", 5), ("folder_key", None), ("folder_key", "é" * 64),
    ("uid", "00" * 15), ("uid", "00" * 17), ("uid", "g" * 32), ("uid", ["00"] * 16),
], ids=_id)
def test_folder_keys_and_uids_must_be_hex_of_their_size(field: str, value: Any) -> None:
    recs = _valid()
    _fdoc(recs)[field] = value
    _tampered(recs)


@pytest.mark.parametrize("epochs", [
    {"0": "ab" * 31}, {"0": "zz" * 32}, {"0": 5}, {"-1": "ab" * 32}, {"x": "ab" * 32}, {"1.0": "ab" * 32},
    {"1" * 13: "ab" * 32}, {"": "ab" * 32}, {"²": "ab" * 32}, {"١": "ab" * 32}, {" 1": "ab" * 32},
    [], "0", None,
], ids=_id)
def test_malformed_epochs_are_refused(epochs: Any) -> None:
    # "²" and "١" are str.isdigit() but not an ASCII epoch number ("²" is not even int()-able).
    recs = _valid()
    _fdoc(recs)["epochs"] = epochs
    _tampered(recs)


def test_epoch_count_is_bounded_before_the_epochs_are_read() -> None:
    class Huge(dict):  # type: ignore[type-arg]
        """Reports a length past the bound without allocating it; iterating it would be a test failure."""

        def __len__(self) -> int:
            return 1_000_001

        def items(self) -> Any:
            raise AssertionError("epochs were read before their count was checked")

    recs = _valid()
    _fdoc(recs)["epochs"] = Huge()
    _tampered(recs, "epochs")


@pytest.mark.parametrize("item", [
    [0, 1, 1, 1], [-1, 1, 1, 1], [True, 1, 1, 1], [1, -1, 1, 1], [1, 1, -1, 1], [1, 1, 1, -1], [1, False, 1, 1],
    [1, 1, True, 1], [1, 1, 1, 1.0], [1.0, 1, 1, 1], ["1", 1, 1, 1], [1, 1, 1], [1, 1, 1, 1, 1], {"1": 1}, 1,
    [(1 << 62) + 1, 1, 1, 1], [1, 1, 1, 1 << 63],
], ids=_id)
def test_malformed_versions_are_refused(item: Any) -> None:
    recs = _valid()
    _fdoc(recs)["versions"].append(item)
    _tampered(recs)


@pytest.mark.parametrize("value", [0, -1, True, False, 1.5, "3", None, [3]])
def test_malformed_forgotten_versions_are_refused(value: Any) -> None:
    recs = _valid()
    _fdoc(recs)["forgotten"].append(value)
    _tampered(recs)


@pytest.mark.parametrize(("field", "value"), [
    ("versions", {}), ("versions", None), ("forgotten", {}), ("forgotten", "1"),
    ("segment_size", -1), ("segment_size", (1 << 30) + 1), ("segment_size", True), ("segment_size", 1.0),
    ("updated_ns", -1), ("updated_ns", False), ("updated_ns", "5"), ("updated_ns", 1 << 63),
], ids=_id)
def test_malformed_folder_numbers_and_lists_are_refused(field: str, value: Any) -> None:
    recs = _valid()
    _fdoc(recs)[field] = value
    _tampered(recs)


def test_numbers_at_their_bounds_are_accepted() -> None:
    recs = _valid()
    _fdoc(recs).update(segment_size=1 << 30, updated_ns=1 << 62, versions=[[1 << 62, 0, 1 << 62, 0]],
                       forgotten=[1])
    _sdoc(recs).update(version=0, created_ns=1 << 62)
    cat = parse_records(recs)
    assert cat.folders[UID].segment_size == 1 << 30 and list(cat.folders[UID].versions) == [1 << 62]


def test_the_version_budget_covers_every_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup, "MAX_VERSIONS", 5)
    other = _folder(uid=UIDS[0], versions={7: Version(7, 1, 1, 1)}, forgotten=set())
    base = _cat(_folder(versions={1: Version(1, 1, 1, 1), 2: Version(2, 1, 1, 1)}, forgotten={3}), other)
    assert len(parse_records(base.records()).folders) == 2  # 3 + 1 listed: within 5
    base.folders[UIDS[0]].forgotten = {8}  # 3 + 2 = 5: exactly at the bound
    assert len(parse_records(base.records()).folders) == 2
    base.folders[UIDS[0]].forgotten = {8, 9}  # 6: over the bound, though no one folder is
    _tampered(base.records(), "more than 5 versions")
    one = _cat(_folder(versions={v: Version(v, 1, 1, 1) for v in range(1, 7)}))
    _tampered(one.records(), "more than 5 versions")


def test_the_version_budget_is_checked_before_the_versions_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup, "MAX_VERSIONS", 3)
    recs = _valid()
    # Junk items past the bound: the count is refused before any of them is looked at.
    _fdoc(recs)["versions"] = [object()] * 10
    _tampered(recs, "more than 3 versions")


def test_folder_and_share_counts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup, "MAX_FOLDERS", 2)
    monkeypatch.setattr(backup, "MAX_SHARES", 2)
    two = _cat(_folder(uid=UIDS[0]), _folder(uid=UIDS[1]), shares=(_share(SIDS[0]), _share(SIDS[1])))
    assert len(parse_records(two.records()).shares) == 2
    _tampered(_cat(*two.folders.values(), _folder(uid=UIDS[2])).records(), "more than 2 folders")
    _tampered(_cat(*two.folders.values(), shares=(*two.shares.values(), _share(SIDS[2]))).records(),
              "more than 2 shares")


@pytest.mark.parametrize("field", ["label", "path", "host"])
def test_folder_text_is_bounded(field: str) -> None:
    recs = _valid()
    _fdoc(recs)[field] = "é" * 4096
    assert getattr(parse_records(recs).folders[UID], field) == "é" * 4096
    _fdoc(recs)[field] = "x" * 4097
    _tampered(recs, field)
    for bad in (5, None, ["x"], b"x".hex().encode()):
        _fdoc(recs)[field] = bad
        _tampered(recs, field)


@pytest.mark.parametrize(("field", "value"), [
    ("name", "x" * 4097), ("name", 5), ("recipients", ["x" * 4097]), ("recipients", [5]), ("recipients", "r1"),
    ("recipients", ["r"] * 10_001), ("recipients", {"r1": 1}),
    ("kind", "secret"), ("kind", "Private"), ("kind", ""), ("kind", None), ("kind", ["private"]),
    ("share_key", "ab" * 31), ("share_key", "zz" * 32), ("folder_uid", "00" * 17), ("key_wrap", "abc"),
    ("key_wrap", "ab" * 65537), ("version", -1), ("version", True), ("created_ns", "1"), ("created_ns", -1),
], ids=_id)
def test_malformed_share_fields_are_refused(field: str, value: Any) -> None:
    recs = _valid()
    _sdoc(recs)[field] = value
    _tampered(recs)


def test_share_lists_and_wraps_at_their_bounds_are_accepted() -> None:
    recs = _valid()
    _sdoc(recs).update(recipients=["r"] * 10_000, key_wrap="ab" * 65536, name="n" * 4096)
    s = parse_records(recs).shares[SIDS[0]]
    assert len(s.recipients) == 10_000 and len(s.key_wrap) == 65536


@pytest.mark.parametrize("sid", [
    "", "us2r", "not a share id", SIDS[0][:-1], SIDS[0] + "a", SIDS[0][:-1] + ("a" if SIDS[0][-1] != "a" else "b"),
    "us1" + SIDS[0][3:], "us3" + SIDS[0][3:], "us2x" + SIDS[0][4:], 5, None, "x" * 5000,
], ids=_id)
def test_a_malformed_share_id_is_refused_as_tampering(sid: Any) -> None:
    # ShareId.parse raises ShareIdError (a ConfigError, exit 8): in a catalog that is tampering, not a typo.
    recs = _valid()
    _sdoc(recs)["share_id"] = sid
    _tampered(recs, "share")


def test_a_huge_key_is_refused_without_decoding_it() -> None:
    # The length is checked before bytes.fromhex: a 16 MB hex string must not become 8 MB of bytes.
    recs = _valid()
    _fdoc(recs)["folder_key"] = "ab" * (8 << 20)
    tracemalloc.start()
    try:
        _tampered(recs, "folder key")
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# Arbitrary JSON values: what a record's fields can hold after json.loads.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 64), 1 << 64) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_numbery = st.sampled_from(["0", "1", "²", "١", "-1", " 1", "1" * 13, "", "x"])


def _check_hostile(recs: Any) -> None:
    try:
        parse_records(recs)
    except TamperedError as e:
        assert e.exit_code == 22
    except ConfigError as e:  # only the header's format may say "a newer usenetsync"
        assert "newer usenetsync" in e.hint and type(e) is ConfigError


@FUZZ
@given(st.sampled_from([1, 2]), json_values)
def test_any_json_in_place_of_a_folder_or_share_doc_is_refused_cleanly(where: int, value: Any) -> None:
    recs = _valid()
    recs[where][1] = value
    _check_hostile(recs)


@FUZZ
@given(st.sampled_from([1, 2]), st.data())
def test_any_json_in_place_of_one_field_is_refused_or_accepted_cleanly(where: int, data: st.DataObject) -> None:
    recs = _valid()
    doc = recs[where][1]
    key = data.draw(st.sampled_from(sorted(doc)))
    action = data.draw(st.sampled_from(["replace", "delete", "append", "epoch"]))
    if action == "replace":
        doc[key] = data.draw(json_values)
    elif action == "delete":
        del doc[key]
    elif action == "append" and isinstance(doc[key], list):
        doc[key].append(data.draw(json_values))
    elif where == 1:
        doc["epochs"][data.draw(_numbery | st.text(max_size=4))] = data.draw(json_values | st.just("ab" * 32))
    _check_hostile(recs)


@FUZZ
@given(st.lists(json_values, max_size=5), st.booleans())
def test_any_json_records_are_refused_cleanly(records: list[Any], with_header: bool) -> None:
    _check_hostile(([["C", {"format": 1}]] if with_header else []) + records)


# ---------------------------------------------------------------- finding a folder


def test_find_by_label_or_uid_prefix() -> None:
    a = _folder(uid=bytes.fromhex("0123456789abcdef" * 2), label="docs")
    b = _folder(uid=bytes.fromhex("0123456799999999" * 2), label="photos")
    cat = _cat(a, b)
    assert cat.find("docs") is a and cat.find("photos") is b
    assert cat.find("0123456789") is a and cat.find("01234567999") is b
    assert cat.find("0123456789ABCDEF") is a  # hex is hex in either case
    with pytest.raises(NotFoundError, match="2 backups are named") as exc:
        cat.find("01234567")  # a prefix both uids share
    assert exc.value.exit_code == 7
    with pytest.raises(NotFoundError, match="no backup named"):
        cat.find("0123456")  # 7 digits: too short to be taken as a uid prefix
    with pytest.raises(NotFoundError, match="no backup named"):
        cat.find("fedcba98")
    with pytest.raises(NotFoundError, match="no backup named"):
        Catalog().find("docs")


def test_a_label_wins_over_a_uid_prefix_and_two_folders_with_one_label_are_ambiguous() -> None:
    a = _folder(uid=bytes.fromhex("aaaaaaaa" * 4), label="bbbbbbbb")
    b = _folder(uid=bytes.fromhex("bbbbbbbb" * 4), label="x")
    assert _cat(a, b).find("bbbbbbbb") is a
    c = _folder(uid=bytes.fromhex("cccccccc" * 4), label="x")
    with pytest.raises(NotFoundError, match="2 backups are named 'x'") as exc:
        _cat(a, b, c).find("x")
    assert "uid" in exc.value.hint and exc.value.exit_code == 7
    assert _cat(a, b, c).find("cccccccc") is c


def test_unique_label_appends_the_uid_prefix_only_on_a_collision_with_another_uid() -> None:
    mine, theirs = bytes.fromhex("12345678" * 4), bytes.fromhex("9abcdef0" * 4)
    assert unique_label("docs", mine, Catalog()) == "docs"
    assert unique_label("docs", mine, _cat(_folder(uid=mine, label="docs"))) == "docs"
    assert unique_label("docs", mine, _cat(_folder(uid=theirs, label="photos"))) == "docs"
    assert unique_label("docs", mine, _cat(_folder(uid=theirs, label="docs"))) == "docs-12345678"
    cat = _cat(_folder(uid=theirs, label="docs"), _folder(uid=mine, label="docs-12345678"))
    assert cat.find(unique_label("docs", mine, cat)).uid == mine
