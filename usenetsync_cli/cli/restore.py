"""`usenetsync restore NAME DEST [--version N | --at DATE] [--include PATTERN]`: a backup version into DEST.

Owns: choosing the version (pipeline/backup_read.py ``pick_version``) and
handing it to the download engine, so a restore has every guarantee of
`download`: signature, whole-file hashes, PAR2 repair, resume, and never
overwriting local files (``--overwrite`` moves them into the home first).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Optional

import typer

from usenetsync_cli.cli.backups import ServerOpt, owner
from usenetsync_cli.cli.common import JsonOpt, Output, count
from usenetsync_cli.cli.download import fetch_share, render
from usenetsync_cli.cli.share import PassphraseOpt
from usenetsync_cli.errors import UsageError
from usenetsync_cli.pipeline.backup_read import backup_share_text, pick_version
from usenetsync_cli.pipeline.destination import Destination
from usenetsync_cli.pipeline.download import DownloadOptions
from usenetsync_cli.pipeline.reader_state import ReaderState
from usenetsync_cli.store.lock import HomeLock

VersionOpt = Annotated[Optional[int], typer.Option("--version", min=1, help="This version (see `usenetsync backups NAME`).")]


def parse_when(text: str) -> int:
    """Unix seconds of a date or date and time (ISO 8601, local time unless it carries an offset)."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"not a date: {text!r}", hint="use 2026-11-30 or 2026-11-30T18:00") from None
    if moment.tzinfo is None and len(text.strip()) == 10:
        moment = moment.replace(hour=23, minute=59, second=59)  # a day means: as of the end of it
    return int(moment.timestamp())


def restore(
    name: Annotated[str, typer.Argument(help="The backup's name, as `usenetsync backups` lists it.", show_default=False)],
    dest: Annotated[Path, typer.Argument(help="Destination folder (created if missing).", show_default=False)],
    version: VersionOpt = None,
    at: Annotated[Optional[str], typer.Option("--at", metavar="DATE", help="The newest version made at or before DATE (2026-11-30 or 2026-11-30T18:00).")] = None,
    include: Annotated[Optional[list[str]], typer.Option("--include", metavar="PATTERN", help="Only paths matching PATTERN (shell wildcards, relative to the folder; a folder includes what is inside). Repeatable.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace local files the backup also has; each is first moved into the home's replaced/ folder.")] = False,
    connections: Annotated[Optional[int], typer.Option("--connections", "-n", min=1, max=200, help="Connections to use (default: the server's).")] = None,
    server: ServerOpt = None,
    passphrase_file: PassphraseOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Restore a backed-up folder, as of any version kept, into DEST.

    Works on a machine that never saw the folder: `keys restore` from the
    recovery phrase and `server add` are enough. Every file is verified
    (signature, CRC, AES-GCM, piece and whole-file hashes) before it gets
    its name; an interrupted restore resumes; files already in DEST are
    never overwritten unless --overwrite (they are moved into the home's
    replaced/ folder first).

    Examples:

      usenetsync restore Photos ~/restored/photos

      usenetsync restore Photos ./photos-then --version 3

      usenetsync restore Photos ./photos-then --at 2026-11-01

      usenetsync restore Photos ./some --include '2024/*' --include 'album.json'
    """
    out = Output(json_out)
    if version is not None and at is not None:
        raise UsageError("--version and --at do not go together", hint="pick one")
    at_s = parse_when(at) if at is not None else None
    who = owner(server, passphrase_file)
    _catalog_version, cat = who.catalog()
    entry = cat.find(name)
    chosen = pick_version(entry, version, at_s)
    Destination(dest).check_root()
    out.say(f"restoring {entry.label!r} version {chosen.version} ({count(chosen.files, 'file')}) into {dest}")
    opts = DownloadOptions(connections=connections, overwrite=overwrite)
    with HomeLock(ReaderState.lock_path(who.home, dest)):
        reader = ReaderState.open(who.home, dest)
        try:
            summary = fetch_share(out, who.home, reader, who.spec, backup_share_text(who.identity, entry), dest, opts,
                                  None, None, json_out, version=chosen.version, include=list(include or []),
                                  identity=lambda: who.identity)
        finally:
            reader.close()
    render(out, summary)
