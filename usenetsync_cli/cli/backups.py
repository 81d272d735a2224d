"""`usenetsync backups [NAME]`: the folders your identity backed up, and their versions, read from the server.

Owns: turning the owner's catalog (pipeline/backup_read.py) into a listing.
Needs only the identity (`keys restore` from the recovery phrase) and a
configured server: it works in a home that never saw the folders.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from usenetsync_cli.cli.common import JsonOpt, Output, count, human_bytes
from usenetsync_cli.cli.share import PassphraseOpt
from usenetsync_cli.config import Config
from usenetsync_cli.core.backup import Catalog, FolderEntry
from usenetsync_cli.core.identity import Identity
from usenetsync_cli.errors import ConfigError, DataLostError, UsageError
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.backup_read import check_versions, fetch_catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.keystore import load_identity

ServerOpt = Annotated[Optional[str], typer.Option("--server", help="Read from this configured server (default: the first).")]


@dataclass
class Owner:
    home: Home
    identity: Identity
    spec: ServerSpec

    def catalog(self) -> tuple[int, Catalog]:
        return fetch_catalog(self.spec, self.identity, self.home.state_dir / "tmp")


def owner(server: str | None, passphrase_file: Path | None) -> Owner:
    """The home, the identity (with its recovery phrase) and the server every backup command needs."""
    home = Home.resolve().ensure()
    cfg = Config.load(home)
    if not cfg.servers:
        raise ConfigError("no server is configured", hint="add one with `usenetsync server add NAME --host HOST`")
    spec = (cfg.get(server) if server else next(iter(cfg.servers.values()))).spec()
    identity = load_identity(home, passphrase_file)
    identity.backup_key()  # NoRecoveryPhraseError for an identity made before phrases
    return Owner(home, identity, spec)


def _check(out: Output, who: Owner, entry: FolderEntry) -> None:
    health = check_versions(who.spec, who.identity, entry, who.home.state_dir / "tmp")
    for h in health:
        out.emit("backup.check", label=entry.label, **h.to_dict())
        state = "restorable" if h.restorable else f"NOT restorable: {h.unrecoverable:,} article(s) lost"
        extra = f", {h.missing:,} missing (rebuilt from PAR2)" if h.missing and h.restorable else ""
        out.data(f"{entry.label} version {h.version}: {count(h.articles, 'article')}, {state}{extra}")
    lost = [h.version for h in health if not h.restorable]
    if lost:
        raise DataLostError(
            f"{len(lost)} kept version(s) of {entry.label!r} can no longer be restored completely: "
            + ", ".join(map(str, lost)),
            hint="their missing articles are past the server's retention or were removed; a restore of such a"
            " version writes every file it can and names the others",
        )


def when(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def backups(
    name: Annotated[Optional[str], typer.Argument(help="A backup's name: list its versions.", show_default=False)] = None,
    check: Annotated[bool, typer.Option("--check", help="With NAME: STAT every article of every kept version and say which can still be restored (PAR2 counted).")] = False,
    server: ServerOpt = None,
    passphrase_file: PassphraseOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the folders your identity backed up (or one's versions), from the server alone.

    Every complete upload that changed a folder publishes a backup version
    only your identity can find and read. With a fresh home, `keys restore`
    from your recovery phrase and `server add` are all this needs.

    Examples:

      usenetsync backups

      usenetsync backups Photos

      usenetsync backups Photos --check

      usenetsync backups --json | jq 'select(.type=="backup.folder") | .label'
    """
    out = Output(json_out)
    if check and name is None:
        raise UsageError("--check needs the backup's NAME", hint="usenetsync backups NAME --check")
    who = owner(server, passphrase_file)
    version, cat = who.catalog()
    if name is not None:
        entry = cat.find(name)
        if check:
            _check(out, who, entry)
            return
        for v in entry.kept():
            out.emit("backup.version", label=entry.label, version=v.version, created=v.created, files=v.files,
                     bytes=v.bytes)
        if out.json:
            return
        out.table(f"{entry.label}: {entry.path} (on {entry.host})", ("version", "date", "files", "size"),
                  [(str(v.version), when(v.created), f"{v.files:,}", human_bytes(v.bytes)) for v in entry.kept()])
        if entry.forgotten:
            out.say(f"{len(entry.forgotten):,} older version(s) forgotten")
        return
    for f in sorted(cat.folders.values(), key=lambda f: f.label):
        newest = f.newest()
        out.emit("backup.folder", label=f.label, uid=f.uid.hex(), path=f.path, host=f.host, versions=len(f.kept()),
                 newest=newest.version if newest else None, created=newest.created if newest else None,
                 files=newest.files if newest else 0, bytes=newest.bytes if newest else 0)
    if out.json:
        return
    if not cat.folders:
        out.data("no backups found for this identity on this server")
        return
    rows = []
    for f in sorted(cat.folders.values(), key=lambda f: f.label):
        newest = f.newest()
        rows.append((f.label, f.path, f.host, str(len(f.kept())),
                     f"{newest.version} ({when(newest.created)})" if newest else "-",
                     f"{newest.files:,}" if newest else "-", human_bytes(newest.bytes) if newest else "-"))
    out.table(f"backups (catalog version {version})",
              ("name", "path", "host", "versions", "newest", "files", "size"), rows)
