"""`usenetsync state repair`: rebuild damaged shard databases from the folders' backups.

Owns the rendering; the work is pipeline/state_repair.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usenetsync_cli.cli.backups import ServerOpt, owner
from usenetsync_cli.cli.common import JsonOpt, LockWaitOpt, Output, count
from usenetsync_cli.cli.share import PassphraseOpt
from usenetsync_cli.pipeline.state_repair import damaged_shards, repair_state
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.lock import HomeLock

state_app = typer.Typer(help="The local state: check and repair its databases.", no_args_is_help=True)


@state_app.command("repair")
def repair(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say which shard databases are damaged.")] = False,
    server: ServerOpt = None,
    passphrase_file: PassphraseOpt = None,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Find damaged shard databases and rebuild them from your folders' newest backups.

    A damaged shard is moved aside (NN.db.damaged-DATE), a new one is
    filled by indexing each folder again and adopting its newest backup's
    rows for that shard, so the next upload posts only what changed since
    that backup, not the whole folder again. Needs your identity (with its
    recovery phrase) and a server. Interrupted, run it again.

    Examples:

      usenetsync state repair --dry-run

      usenetsync state repair
    """
    out = Output(json_out)
    home = Home.resolve().ensure()
    with HomeLock(home.lock_path, wait=lock_wait):
        if dry_run:
            found = damaged_shards(home)
            out.emit("state.check", damaged=found)
            out.data("every shard database is sound" if not found
                     else f"damaged shard database(s): {', '.join(f'{n:02d}' for n in found)}")
            return
        run_repair(out, home, server, passphrase_file)


def run_repair(out: Output, home: Home, server: str | None, passphrase_file: Path | None) -> None:
    """Repair what is damaged and say what was done (the caller holds the home lock)."""
    found = damaged_shards(home)
    if not found:
        out.emit("state.check", damaged=found)
        out.data("every shard database is sound")
        return
    who = owner(server, passphrase_file)
    s = repair_state(home, who.identity, who.spec, found)
    out.emit("state.repair", **s.to_dict())
    for f in s.folders:
        out.data(f"shard {f['shard']:02d}: {f['folder']}: {count(f['files_adopted'], 'file')} taken from backup version"
                 f" {f['version']} ({count(f['segments'], 'segment')}), {f['files_changed']:,} changed since")
    for p in s.not_backed_up:
        out.say(f"[yellow]no backup of {p}: its files in the rebuilt shard(s) are uploaded again by the next upload[/]")
    for m in s.moved_to:
        out.say(f"the damaged database was kept as {m}")
