"""`usenetsync diff NAME V1 V2`: what changed between two backup versions, from their indexes alone.

Owns the rendering; the comparison is pipeline/backup_read.py ``diff``
(bounded memory: one version's entries go into a temporary SQLite file).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from usenetsync_cli.cli.backups import ServerOpt, owner
from usenetsync_cli.cli.common import JsonOpt, Output
from usenetsync_cli.cli.share import PassphraseOpt
from usenetsync_cli.pipeline.backup_read import diff as diff_versions
from usenetsync_cli.pipeline.backup_read import entries, open_version, pick_version
from usenetsync_cli.pipeline.poster import open_connection

_SIGN = {"added": "+", "removed": "-", "modified": "M"}


def diff(
    name: Annotated[str, typer.Argument(help="The backup's name.", show_default=False)],
    old: Annotated[int, typer.Argument(metavar="V1", min=1, help="The older version.", show_default=False)],
    new: Annotated[int, typer.Argument(metavar="V2", min=1, help="The newer version.", show_default=False)],
    server: ServerOpt = None,
    passphrase_file: PassphraseOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the paths added (+), removed (-) and modified (M) from version V1 to V2 of a backup.

    A file is modified when its content, kind, size or mode changed; only the
    two indexes are fetched.

    Examples:

      usenetsync diff Photos 3 4

      usenetsync diff Photos 1 4 --json | jq -r 'select(.change=="removed") | .path'
    """
    out = Output(json_out)
    who = owner(server, passphrase_file)
    _v, cat = who.catalog()
    entry = cat.find(name)
    v1, v2 = pick_version(entry, old, None), pick_version(entry, new, None)
    tmp = who.home.state_dir / "tmp"
    tmp.mkdir(mode=0o700, exist_ok=True)
    counts = {"added": 0, "removed": 0, "modified": 0}
    conn = open_connection(who.spec)
    try:
        with tempfile.TemporaryDirectory(dir=tmp) as d1, tempfile.TemporaryDirectory(dir=tmp) as d2:
            a = open_version(conn, who.identity, entry, v1.version, Path(d1))
            b = open_version(conn, who.identity, entry, v2.version, Path(d2))
            conn.quit()
            for change in diff_versions(entries(a.records()), entries(b.records()), tmp):
                counts[change.what] += 1
                if out.json:
                    out.emit("diff.change", **change.to_dict())
                else:
                    out.data(f"{_SIGN[change.what]}  {change.path}")
    finally:
        conn.close()
    out.emit("diff.summary", label=entry.label, old=v1.version, new=v2.version, **counts)
    out.say(f"{entry.label} {v1.version} -> {v2.version}: {counts['added']:,} added, {counts['removed']:,} removed,"
            f" {counts['modified']:,} modified")
