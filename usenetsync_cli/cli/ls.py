"""`usenetsync ls NAME [PATH] [--version N]`: the paths a backup version holds, without fetching data.

Owns the listing's rendering; the records come from the verified index
(pipeline/backup_read.py ``open_version``, ``entries``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from usenetsync_cli.cli.backups import ServerOpt, owner, when
from usenetsync_cli.cli.common import JsonOpt, Output, human_bytes
from usenetsync_cli.cli.restore import VersionOpt
from usenetsync_cli.cli.share import PassphraseOpt
from usenetsync_cli.pipeline.backup_read import entries, open_version, pick_version, under
from usenetsync_cli.pipeline.poster import open_connection


def ls(
    name: Annotated[str, typer.Argument(help="The backup's name, as `usenetsync backups` lists it.", show_default=False)],
    path: Annotated[Optional[str], typer.Argument(help="Only this path (a file, or a folder and what is inside).", show_default=False)] = None,
    version: VersionOpt = None,
    server: ServerOpt = None,
    passphrase_file: PassphraseOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the files of a backup version (the newest by default); only its index is fetched.

    Examples:

      usenetsync ls Photos

      usenetsync ls Photos 2024/summer --version 2

      usenetsync ls Photos --json | jq -r 'select(.kind=="file") | .path'
    """
    out = Output(json_out)
    who = owner(server, passphrase_file)
    _v, cat = who.catalog()
    entry = cat.find(name)
    chosen = pick_version(entry, version, None)
    tmp = who.home.state_dir / "tmp"
    tmp.mkdir(mode=0o700, exist_ok=True)
    conn = open_connection(who.spec)
    try:
        with tempfile.TemporaryDirectory(dir=tmp) as spool:
            opened = open_version(conn, who.identity, entry, chosen.version, Path(spool))
            conn.quit()
            shown = 0
            for e in entries(opened.records()):
                if not under(e.path, path):
                    continue
                shown += 1
                if out.json:
                    out.emit("ls.entry", **e.to_dict())
                    continue
                size = human_bytes(e.size) if e.kind in ("file", "hardlink") else ""
                suffix = "/" if e.kind == "dir" else (f" -> {e.content}" if e.kind == "symlink" else "")
                out.data(f"{oct(e.mode & 0o7777)[2:]:>4}  {size:>9}  {when(e.mtime_ns // 1_000_000_000)}  {e.path}{suffix}")
    finally:
        conn.close()
    out.say(f"{entry.label} version {chosen.version}: {shown:,} entries")
