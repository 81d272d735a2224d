"""Backups: the keys a recovery phrase derives for them, and the owner's catalog document.

Owns the rules both the writer (pipeline/backup.py) and the readers
(``backups``, ``restore``, ``ls``, ``diff``, ``adopt``) use; pure, no I/O.

Every folder is its own backup: after a complete upload its state is
published as a version of a *backup share*, a private share (kind
``private``, us2r) whose only recipient is the owner, with the same
format 4 roots, chunked index and sealing as any share
(core/share_root.py). Its ID and key are not stored anywhere: they derive
from the recovery phrase and the folder's random uid, so a machine that
never saw the home finds them again. Keys (HKDF-SHA256 of
``Identity.backup_key()``, no salt)::

    backup share secret(uid) = HKDF(bk, b"usenetsync/v2/backup/share-secret" || uid)[:16]
    backup share key(uid)    = HKDF(bk, b"usenetsync/v2/backup/share-key" || uid)
    catalog locator          = HKDF(bk, b"usenetsync/v2/backup/catalog-locator")
    catalog key              = HKDF(bk, b"usenetsync/v2/backup/catalog-key")

The *catalog* lists what the identity backed up. It is published like a
share version too (roots at keyed slots of the catalog locator, signed by
the owner, ``key_wrap`` empty: the key derives from the phrase), so its
article IDs are ones only the identity can derive and nothing on the wire
tells it from any other share. Its records (JSON lines, the index stream)::

    ["C", {"format": 1}]
    ["F", folder]   uid, label, path, host, segment_size, folder_key, epochs {n: key},
                    versions [[version, created_s, files, bytes], ...], forgotten [version, ...], updated_ns
    ["S", share]    share_id, folder_uid, name, kind, share_key, key_wrap, recipients, version, created_ns
    ["T", record_count]

Keys in the catalog are the folder's own (epoch keys, share keys): a
stolen phrase gives everything the owner has, which is the point of it.

Merging (several machines with one phrase): folders by uid, versions are
the union minus every version any machine forgot, epochs the union (an
epoch or version number two entries fill differently takes the larger
value), the other fields from the entry updated last (ties: the larger
fields); shares by ID, the higher version wins (ties: the larger entry).
``merge`` is commutative, associative and idempotent on the parts that
matter (tests/core/test_backup.py), so a machine that read, merged and
lost a race simply reads, merges and tries again.

Invariants: every field of a catalog read from the server is checked
(types, key sizes, bounds) before it is used; ``parse_records`` raises
TamperedError for anything else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from usenetsync_cli.core.shareid import ShareId
from usenetsync_cli.errors import ConfigError, TamperedError

CATALOG_FORMAT = 1
MAX_FOLDERS = 100_000
MAX_VERSIONS = 1_000_000  # versions listed over all folders
MAX_SHARES = 100_000
_MAX_TEXT = 4096
BACKUP_SHARE_PREFIX = "backup:"  # local share rows of backups are named backup:<uid hex>


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def backup_share_id(backup_key: bytes, uid: bytes, signer: bytes) -> ShareId:
    """The private share a folder's backups are versions of."""
    secret = _hkdf(backup_key, b"usenetsync/v2/backup/share-secret" + uid)[:16]
    return ShareId(kind="private", signer=signer, secret=secret)


def backup_share_key(backup_key: bytes, uid: bytes) -> bytes:
    return _hkdf(backup_key, b"usenetsync/v2/backup/share-key" + uid)


def catalog_keys(backup_key: bytes) -> tuple[bytes, bytes]:
    """(locator key, share key) of the owner's catalog."""
    return (_hkdf(backup_key, b"usenetsync/v2/backup/catalog-locator"),
            _hkdf(backup_key, b"usenetsync/v2/backup/catalog-key"))


@dataclass(frozen=True)
class Version:
    version: int
    created: int  # Unix seconds
    files: int
    bytes: int


@dataclass
class FolderEntry:
    uid: bytes
    label: str
    path: str
    host: str
    segment_size: int
    folder_key: bytes = field(repr=False)
    epochs: dict[int, bytes] = field(repr=False, default_factory=dict)
    versions: dict[int, Version] = field(default_factory=dict)
    forgotten: set[int] = field(default_factory=set)
    updated_ns: int = 0

    def kept(self) -> list[Version]:
        """Versions that can be restored, oldest first."""
        return [self.versions[v] for v in sorted(self.versions) if v not in self.forgotten]

    def newest(self) -> Version | None:
        kept = self.kept()
        return kept[-1] if kept else None

    def doc(self) -> dict[str, Any]:
        return {"uid": self.uid.hex(), "label": self.label, "path": self.path, "host": self.host,
                "segment_size": self.segment_size, "folder_key": self.folder_key.hex(),
                "epochs": {str(e): k.hex() for e, k in sorted(self.epochs.items())},
                "versions": [[v.version, v.created, v.files, v.bytes] for _, v in sorted(self.versions.items())],
                "forgotten": sorted(self.forgotten), "updated_ns": self.updated_ns}


@dataclass
class ShareEntry:
    share_id: str = field(repr=False)
    folder_uid: bytes
    name: str
    kind: str
    share_key: bytes = field(repr=False)
    key_wrap: bytes = field(repr=False)
    recipients: list[str]
    version: int
    created_ns: int

    def doc(self) -> dict[str, Any]:
        return {"share_id": self.share_id, "folder_uid": self.folder_uid.hex(), "name": self.name, "kind": self.kind,
                "share_key": self.share_key.hex(), "key_wrap": self.key_wrap.hex(), "recipients": self.recipients,
                "version": self.version, "created_ns": self.created_ns}


@dataclass
class Catalog:
    folders: dict[bytes, FolderEntry] = field(default_factory=dict)
    shares: dict[str, ShareEntry] = field(default_factory=dict, repr=False)

    def records(self) -> Iterator[list[Any]]:
        yield ["C", {"format": CATALOG_FORMAT}]
        n = 1
        for uid in sorted(self.folders):
            yield ["F", self.folders[uid].doc()]
            n += 1
        for sid in sorted(self.shares):
            yield ["S", self.shares[sid].doc()]
            n += 1
        yield ["T", n + 1]

    def lines(self) -> Iterator[bytes]:
        for rec in self.records():
            yield json.dumps(rec, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"

    def same_as(self, other: Catalog) -> bool:
        return list(self.lines()) == list(other.lines())

    def find(self, name: str) -> FolderEntry:
        """The folder a user names: its label, or a prefix (8+ hex digits) of its uid."""
        from usenetsync_cli.errors import NotFoundError

        hits = [f for f in self.folders.values() if f.label == name]
        if not hits and len(name) >= 8 and all(c in "0123456789abcdef" for c in name.lower()):
            hits = [f for f in self.folders.values() if f.uid.hex().startswith(name.lower())]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise NotFoundError(f"no backup named {name!r}", hint="list them with `usenetsync backups`")
        raise NotFoundError(f"{len(hits)} backups are named {name!r}",
                            hint="name one by the start of its uid, as `usenetsync backups --json` shows it")


# ---------------------------------------------------------------- merging


def merge(a: Catalog, b: Catalog) -> Catalog:
    """One catalog holding both; see the module docstring for the rules."""
    out = Catalog()
    for uid in set(a.folders) | set(b.folders):
        fa, fb = a.folders.get(uid), b.folders.get(uid)
        if fa is None or fb is None:
            src = fa or fb
            assert src is not None
            out.folders[uid] = _copy_folder(src)
            continue
        # Every field is in the order, and an epoch or version number two machines filled differently
        # takes the larger value rather than the newer entry's: so the result does not depend on the
        # argument order (commutative) nor on the grouping (associative).
        merged = _copy_folder(max(fa, fb, key=_folder_order))
        merged.epochs = {e: max(k for k in (fa.epochs.get(e), fb.epochs.get(e)) if k is not None)
                         for e in fa.epochs.keys() | fb.epochs.keys()}
        merged.forgotten = fa.forgotten | fb.forgotten
        merged.versions = {v: max((x for x in (fa.versions.get(v), fb.versions.get(v)) if x is not None),
                                  key=lambda x: (x.created, x.files, x.bytes))
                           for v in fa.versions.keys() | fb.versions.keys() if v not in merged.forgotten}
        out.folders[uid] = merged
    for sid in set(a.shares) | set(b.shares):
        sa, sb = a.shares.get(sid), b.shares.get(sid)
        cands = [s for s in (sa, sb) if s is not None]
        out.shares[sid] = max(cands, key=lambda s: (s.version, s.created_ns, s.name, _canonical(s.doc())))
    return out


def _folder_order(f: FolderEntry) -> tuple[int, str, str, str, int, bytes]:
    return (f.updated_ns, f.label, f.path, f.host, f.segment_size, f.folder_key)


def _canonical(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _copy_folder(f: FolderEntry) -> FolderEntry:
    return FolderEntry(uid=f.uid, label=f.label, path=f.path, host=f.host, segment_size=f.segment_size,
                       folder_key=f.folder_key, epochs=dict(f.epochs),
                       versions={v: x for v, x in f.versions.items() if v not in f.forgotten},
                       forgotten=set(f.forgotten), updated_ns=f.updated_ns)


def unique_label(wanted: str, uid: bytes, cat: Catalog) -> str:
    """``wanted``, or ``wanted-<uid prefix>`` when another folder of the catalog has that label."""
    taken = any(f.label == wanted and f.uid != uid for f in cat.folders.values())
    return f"{wanted}-{uid.hex()[:8]}" if taken else wanted


# ---------------------------------------------------------------- parsing (hostile input)


def _bad(what: str) -> TamperedError:
    return TamperedError(f"the backup catalog is malformed ({what})",
                         hint="the catalog on the server was altered or damaged; an older copy may be on another server")


def _int(v: Any, what: str, lo: int = 0, hi: int = 1 << 62) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _bad(what)
    return v


def _text(v: Any, what: str) -> str:
    if not isinstance(v, str) or len(v) > _MAX_TEXT:
        raise _bad(what)
    return v


def _hex(v: Any, what: str, size: int | None = None, max_size: int = 1 << 16) -> bytes:
    if not isinstance(v, str) or len(v) > 2 * max_size:
        raise _bad(what)
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        raise _bad(what) from None
    if size is not None and len(raw) != size:
        raise _bad(what)
    return raw


def _folder(doc: Any, budget: list[int]) -> FolderEntry:
    if not isinstance(doc, dict):
        raise _bad("folder")
    try:
        epochs_doc, versions_doc, forgotten_doc = doc["epochs"], doc["versions"], doc["forgotten"]
        if not isinstance(epochs_doc, dict) or len(epochs_doc) > 1_000_000:
            raise _bad("epochs")
        if not isinstance(versions_doc, list) or not isinstance(forgotten_doc, list):
            raise _bad("versions")
        budget[0] -= len(versions_doc) + len(forgotten_doc)
        if budget[0] < 0:
            raise _bad(f"more than {MAX_VERSIONS:,} versions")
        epochs: dict[int, bytes] = {}
        for k, v in epochs_doc.items():
            if not isinstance(k, str) or not k.isascii() or not k.isdigit() or len(k) > 12:
                raise _bad("epoch number")
            epochs[int(k)] = _hex(v, "epoch key", 32)
        versions: dict[int, Version] = {}
        for item in versions_doc:
            if not isinstance(item, list) or len(item) != 4:
                raise _bad("version")
            v = Version(_int(item[0], "version", 1), _int(item[1], "created"), _int(item[2], "files"),
                        _int(item[3], "bytes"))
            versions[v.version] = v
        return FolderEntry(
            uid=_hex(doc["uid"], "uid", 16), label=_text(doc["label"], "label"), path=_text(doc["path"], "path"),
            host=_text(doc["host"], "host"), segment_size=_int(doc["segment_size"], "segment size", 0, 1 << 30),
            folder_key=_hex(doc["folder_key"], "folder key", 32), epochs=epochs, versions=versions,
            forgotten={_int(v, "forgotten version", 1) for v in forgotten_doc},
            updated_ns=_int(doc["updated_ns"], "updated"),
        )
    except KeyError as e:
        raise _bad(f"folder without {e.args[0]!r}") from None


def _share(doc: Any) -> ShareEntry:
    if not isinstance(doc, dict):
        raise _bad("share")
    try:
        sid = _text(doc["share_id"], "share ID")
        ShareId.parse(sid)  # a well-formed ID, or it is refused here (ShareIdError is not a catalog problem)
        recips = doc["recipients"]
        if not isinstance(recips, list) or len(recips) > 10_000:
            raise _bad("recipients")
        kind = _text(doc["kind"], "kind")
        if kind not in ("public", "password", "private"):
            raise _bad("kind")
        return ShareEntry(
            share_id=sid, folder_uid=_hex(doc["folder_uid"], "folder uid", 16), name=_text(doc["name"], "name"),
            kind=kind, share_key=_hex(doc["share_key"], "share key", 32), key_wrap=_hex(doc["key_wrap"], "key wrap"),
            recipients=[_text(r, "recipient") for r in recips], version=_int(doc["version"], "share version"),
            created_ns=_int(doc["created_ns"], "created"),
        )
    except KeyError as e:
        raise _bad(f"share without {e.args[0]!r}") from None
    except ValueError:
        raise _bad("share") from None


def parse_records(records: Iterable[list[Any]]) -> Catalog:
    """The catalog the (already verified) index records describe; TamperedError for anything malformed."""
    from usenetsync_cli.errors import ShareIdError

    cat = Catalog()
    it = iter(records)
    head = next(it, None)
    if not isinstance(head, list) or len(head) != 2 or head[0] != "C" or not isinstance(head[1], dict):
        raise _bad("no header")
    fmt = head[1].get("format")
    if fmt != CATALOG_FORMAT:
        raise ConfigError(f"the backup catalog has format {fmt!r}, which this usenetsync does not read",
                          hint="it was written by a newer usenetsync: upgrade and retry")
    count = 1
    budget = [MAX_VERSIONS]
    for rec in it:
        count += 1
        if not isinstance(rec, list) or not rec:
            raise _bad("unknown record")
        kind = rec[0]
        if kind == "F" and len(rec) == 2:
            f = _folder(rec[1], budget)
            if len(cat.folders) >= MAX_FOLDERS:
                raise _bad(f"more than {MAX_FOLDERS:,} folders")
            cat.folders[f.uid] = f
        elif kind == "S" and len(rec) == 2:
            try:
                s = _share(rec[1])
            except ShareIdError:
                raise _bad("share ID") from None
            if len(cat.shares) >= MAX_SHARES:
                raise _bad(f"more than {MAX_SHARES:,} shares")
            cat.shares[s.share_id] = s
        elif kind == "T" and len(rec) == 2:
            if rec[1] != count:
                raise _bad("record count")
            return cat
        else:
            raise _bad("unknown record")
    raise _bad("truncated")
