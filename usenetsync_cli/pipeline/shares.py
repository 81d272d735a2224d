"""Shares of a folder: create, publish (new versions), revoke, and open for download.

Owns: the share rows in catalog.db and the choice of key material per share
kind (DESIGN.md §6):
- public: the share ID carries a 32-byte secret; locator and share key both
  derive from it;
- password: the share ID carries a 16-byte locator secret; a random share
  key is wrapped by the password (Argon2id) once, at creation;
- private: as password, but the key is wrapped anew at every publication for
  each recipient (ephemeral X25519), padded so the count is hidden.
Revoking a recipient draws a new share key (forgetting the chunks sealed
under the old one) and starts a new key epoch for the folder; the caller
publishes the new version. A share made by an older usenetsync gets a new ID
at its next publication (``upgrade_share_id``).

Commit point: a share row is written at creation; its ``version`` and chunk
rows only after ``publish_version`` has posted and confirmed a complete
version, in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usenetsync_cli.core.backup import BACKUP_SHARE_PREFIX
from usenetsync_cli.core.identity import Identity, PublicIdentity
from usenetsync_cli.core.keywrap import unwrap_for_recipient, unwrap_with_password, wrap_for_recipients, wrap_with_password
from usenetsync_cli.core.shareid import OLD_PREFIXES, ShareId, locator_key, new_share_id, public_share_key, signer_of
from usenetsync_cli.errors import ConfigError, NotFoundError
from usenetsync_cli.nntp import Connection, ServerSpec
from usenetsync_cli.pipeline.publish import Published, ShareSecrets, publish_version
from usenetsync_cli.pipeline.publish_index import forget_layout, save_layout
from usenetsync_cli.pipeline.reader_state import ReaderState
from usenetsync_cli.pipeline.share_index import OpenedIndex, find_root, iter_records, open_index
from usenetsync_cli.store import catalog
from usenetsync_cli.store.state import State

KINDS = ("public", "password", "private")


@dataclass
class Share:
    share_pk: int
    folder_id: int
    name: str
    kind: str
    share_id: str
    share_key: bytes
    key_wrap: bytes
    recipients: list[str]
    version: int
    created_ns: int
    published_ns: int | None
    files: int
    bytes: int
    index_parts: int

    def __repr__(self) -> str:  # the ID of a public share and the key are secrets
        return f"Share(name={self.name!r}, kind={self.kind}, version={self.version})"

    def to_public_dict(self, show_id: bool = False) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("share_key", "key_wrap", "share_id")}
        d["published"] = self.version > 0
        if show_id:
            d["share_id"] = self.share_id
        return d


_COLS = (
    "share_pk, folder_id, name, kind, share_id, share_key, key_wrap, recipients, version, created_ns,"
    " published_ns, files, bytes, index_parts"
)


def _row(r: tuple[Any, ...]) -> Share:
    vals = list(r)
    vals[7] = json.loads(vals[7])
    return Share(*vals)


def list_shares(state: State, folder_id: int | None = None, *, backups: bool = False) -> list[Share]:
    """The folder's (or every) share; ``backups``: the backup shares instead (pipeline/backup.py)."""
    q = f"SELECT {_COLS} FROM shares WHERE backup=?" + (" AND folder_id=?" if folder_id is not None else "")
    args = (int(backups), folder_id) if folder_id is not None else (int(backups),)
    return [_row(r) for r in state.catalog.execute(q + " ORDER BY share_pk", args)]


def get_share(state: State, name: str) -> Share:
    rows = state.catalog.execute(f"SELECT {_COLS} FROM shares WHERE name=?", (name,)).fetchall()
    if not rows:
        raise NotFoundError(f"no share named {name!r}", hint="list shares with `usenetsync share list`")
    return _row(rows[0])


def create_share(
    state: State,
    folder: catalog.Folder,
    identity: Identity,
    *,
    kind: str,
    name: str,
    password: str | None = None,
    recipients: list[PublicIdentity] | None = None,
) -> Share:
    if kind not in KINDS:
        raise ConfigError(f"unknown share kind {kind!r}")
    if state.catalog.execute("SELECT 1 FROM shares WHERE name=?", (name,)).fetchall():
        raise ConfigError(f"a share named {name!r} exists", hint="pick another --name")
    if name.startswith(BACKUP_SHARE_PREFIX):
        raise ConfigError(f"share names starting with {BACKUP_SHARE_PREFIX!r} are kept for backups", hint="pick another --name")
    sid = new_share_id(kind, signer_of(identity.public().sign_pub))  # type: ignore[arg-type]
    key_wrap = b""
    if kind == "public":
        share_key = public_share_key(sid)
    else:
        share_key = os.urandom(32)
        if kind == "password":
            if not password:
                raise ConfigError("a password share needs a password", hint="use --password-file F or type it")
            key_wrap = wrap_with_password(share_key, password)
        elif not recipients:
            raise ConfigError("a private share needs at least one --to PUBKEY")
    recips = [r.to_text() for r in recipients or []]
    with state.catalog:
        state.catalog.execute(
            "INSERT INTO shares(folder_id, name, kind, share_id, share_key, key_wrap, recipients, created_ns)"
            " VALUES(?,?,?,?,?,?,?,?)",
            (folder.folder_id, name, kind, sid.to_text(), share_key, key_wrap, json.dumps(recips), time.time_ns()),
        )
    return get_share(state, name)


def upgrade_share_id(state: State, share: Share, identity: Identity) -> Share:
    """A share created by an older usenetsync (``us1…``) gets a new ID of this format; others are returned as they are.

    Nothing of the old format can be read any more, so its version count
    restarts; a public share's key comes from its ID, so it changes with it,
    while password and private shares keep their key and its wrapping.
    Commit point: the new ID, key and version 0 in one transaction.
    """
    if not share.share_id.startswith(OLD_PREFIXES):
        return share
    sid = new_share_id(share.kind, signer_of(identity.public().sign_pub))  # type: ignore[arg-type]
    key = public_share_key(sid) if share.kind == "public" else share.share_key
    with state.catalog:
        state.catalog.execute("UPDATE shares SET share_id=?, share_key=?, version=0 WHERE share_pk=?",
                              (sid.to_text(), key, share.share_pk))
        forget_layout(state.catalog, share.share_pk)
    return get_share(state, share.name)


def publish(state: State, share: Share, identity: Identity, spec: ServerSpec, *, if_changed: bool = False) -> Published:
    """Publish the next version of ``share`` (the folder must be fully uploaded).

    A share made by an older usenetsync gets a new ID first (``upgrade_share_id``);
    ``Published.new_id`` says so. ``if_changed``: post nothing when the
    records equal the last version's (``Published.unchanged``).
    """
    old_format = share.share_id.startswith(OLD_PREFIXES)
    if old_format:
        share = upgrade_share_id(state, share, identity)
    if signer_of(identity.public().sign_pub) != ShareId.parse(share.share_id).signer:
        raise ConfigError(
            f"share {share.name!r} was created with another identity key",
            hint="import the key it was created with (`usenetsync keys import`)",
        )
    folder = catalog.get_folder_by_id(state.catalog, share.folder_id)
    if folder is None:
        raise NotFoundError(f"the folder of share {share.name!r} is gone from the state")
    sid = ShareId.parse(share.share_id)
    secrets = ShareSecrets(kind=share.kind, locator_key=locator_key(sid), share_key=share.share_key,
                           key_wrap=share.key_wrap, share_pk=share.share_pk)
    recipients = [PublicIdentity.from_text(t) for t in share.recipients]

    def key_wrap() -> bytes:
        if share.kind == "private":
            return wrap_for_recipients(share.share_key, recipients)
        return share.key_wrap

    pub = identity.public()
    result = publish_version(
        state, folder, secrets, version=share.version + 1, spec=spec, sign=identity.sign,
        sign_pub=pub.sign_pub, box_pub=pub.box_pub, key_wrap_for_version=key_wrap,
        unchanged=_digest(state, share) if if_changed else None,
    )
    if result.unchanged:
        return result
    check = {"version": result.version, "records": result.records, "files": result.files, "bytes": result.bytes,
             "symlinks": result.symlinks, "dirs": result.dirs, "resolved": True, "held": len(result.unstable), "skipped": len(result.skipped),
             "checked_ns": time.time_ns()}
    with state.catalog:
        state.catalog.execute(
            "UPDATE shares SET version=?, published_ns=?, files=?, bytes=?, index_parts=?, layout_check=?, digest=?"
            " WHERE share_pk=?",
            (result.version, time.time_ns(), result.files, result.bytes, result.parts, json.dumps(check),
             result.digest, share.share_pk),
        )
        if result.posting is not None:
            save_layout(state.catalog, share.share_pk, result.posting)
    result.new_id = old_format
    return result


def _digest(state: State, share: Share) -> bytes | None:
    rows = state.catalog.execute("SELECT digest FROM shares WHERE share_pk=?", (share.share_pk,)).fetchall()
    return rows[0][0] if rows and share.version else None


def layout_check(state: State, share: Share) -> dict[str, Any] | None:
    """What the publisher proved about the share's current version when it published it (None: never)."""
    rows = state.catalog.execute("SELECT layout_check FROM shares WHERE share_pk=?", (share.share_pk,)).fetchall()
    return json.loads(rows[0][0]) if rows and rows[0][0] else None


def needs_republish(state: State, share: Share) -> bool:
    """True if a repair re-posted one of the folder's articles (new Message-ID) after this share was published."""
    if not share.version or share.published_ns is None:
        return False
    return any(
        c.execute(
            "SELECT 1 FROM segments WHERE folder_id=? AND attempt>0 AND state IN (1,2) AND posted_ns>? LIMIT 1",
            (share.folder_id, share.published_ns),
        ).fetchall()
        for c in state.shards
    )


def revoke(state: State, share: Share, recipient: PublicIdentity) -> Share:
    """Drop a recipient and draw a new share key (the caller publishes the new version)."""
    if share.kind != "private":
        raise ConfigError("only private shares have recipients to revoke")
    text = recipient.to_text()
    if text not in share.recipients:
        raise NotFoundError(f"{text} is not a recipient of share {share.name!r}")
    remaining = [r for r in share.recipients if r != text]
    if not remaining:
        raise ConfigError("revoking the last recipient would leave nobody able to read the share")
    with state.catalog:
        state.catalog.execute(
            "UPDATE shares SET recipients=?, share_key=? WHERE share_pk=?",
            (json.dumps(remaining), os.urandom(32), share.share_pk),
        )
        # Chunks sealed under the old key are never referenced again: the next version posts all anew.
        forget_layout(state.catalog, share.share_pk)
    # Content posted from now on is sealed and named under keys the revoked recipient never gets.
    catalog.new_epoch(state.catalog, share.folder_id, "revoke")
    return get_share(state, share.name)


# ---------------------------------------------------------------- reading


@dataclass
class OpenedShare:
    index: OpenedIndex
    share_key: bytes
    locator_key: bytes
    tag: str  # names this share (not its secret) in a reader's pin: hex of SHA-256(locator)[:16]
    pinned: int = 0  # the highest version the destination had verified before (0: none, or not asked)

    @property
    def rolled_back(self) -> bool:
        """An older version than the destination had (only with ``allow_rollback``): delete nothing."""
        return self.index.version < self.pinned

    def records(self) -> Iterator[list[Any]]:
        return iter_records(self.index)


def share_tag(share_id_text: str) -> str:
    """A non-secret name of a share, for a reader's per-destination pin."""
    return hashlib.sha256(b"usenetsync/v2/share-tag" + locator_key(ShareId.parse(share_id_text))).hexdigest()[:32]


def open_share(
    conn: Connection,
    share_id_text: str,
    spool_dir: Path,
    *,
    password: Callable[[], str],
    identity: Callable[[], Identity],
    pinned: int = 0,
    allow_rollback: bool = False,
    version: int | None = None,
) -> OpenedShare:
    """Find, verify and unlock the newest version of a share (nothing is written to DEST).

    ``pinned``: the highest version this destination has seen; an older one
    is a RollbackError unless ``allow_rollback``.
    """
    sid = ShareId.parse(share_id_text)
    lk = locator_key(sid)
    root = find_root(conn, lk, sid.signer, sid.kind, pinned=pinned, allow_rollback=allow_rollback, version=version)
    if sid.kind == "public":
        key = public_share_key(sid)
    elif sid.kind == "password":
        key = unwrap_with_password(root.key_wrap, password())
    else:
        key = unwrap_for_recipient(root.key_wrap, identity())
    # The key is checked before the index is fetched: a wrong password costs no download.
    index = open_index(conn, lk, key, root, spool_dir)
    return OpenedShare(index=index, share_key=key, locator_key=lk, tag=share_tag(share_id_text), pinned=pinned)


def open_share_into(
    reader: ReaderState, conn: Connection, share_id_text: str, *, password: Callable[[], str],
    identity: Callable[[], Identity], allow_rollback: bool = False, version: int | None = None,
) -> OpenedShare:
    """``open_share`` for a destination: from the version it pinned; pins what verified (before any file is
    touched), keeps only this index and starts resume progress for it. ``version``: exactly that one (a
    restore of an older backup version: the pin keeps the highest seen)."""
    pinned = reader.pinned(share_tag(share_id_text))
    opened = open_share(conn, share_id_text, reader.spool_dir, password=password, identity=identity, pinned=pinned,
                        allow_rollback=allow_rollback, version=version)
    reader.pin(opened.tag, opened.index.version)
    reader.keep_only_spool(opened.index.spool)
    reader.start_version(opened.index.root.index.digest())
    return opened
