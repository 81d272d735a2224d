"""`usenetsync adopt PATH --from NAME`: take over a backed-up folder on a new machine without posting it again.

Owns the rendering; the work is pipeline/adopt.py ``adopt_folder``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usenetsync_cli.cli.backups import ServerOpt, owner
from usenetsync_cli.cli.common import JsonOpt, LockWaitOpt, Output, count, open_state
from usenetsync_cli.cli.restore import VersionOpt
from usenetsync_cli.cli.share import PassphraseOpt
from usenetsync_cli.errors import InterruptedByUser
from usenetsync_cli.pipeline.adopt import adopt_folder


def adopt(
    path: Annotated[Path, typer.Argument(help="The folder on this machine (as restored, or your own copy).", show_default=False)],
    from_: Annotated[str, typer.Option("--from", metavar="NAME", help="The backup to adopt, as `usenetsync backups` lists it.")],
    version: VersionOpt = None,
    verify_content: Annotated[bool, typer.Option("--verify-content", help="Re-read every file and compare its hashes instead of trusting a matching size and mtime.")] = False,
    server: ServerOpt = None,
    passphrase_file: PassphraseOpt = None,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Rebuild this home's state of a folder from its backup, so the next upload posts only what changed.

    For a new machine (or a lost home): the folder's keys, segment layout,
    hashes and shares come from the backup; files whose size and mtime
    match it are taken as posted (their new ctime and inode are recorded),
    others are uploaded as new by the next `upload`. Content posted from now
    on is sealed in a new key epoch. Interrupted, run it again.

    Examples:

      usenetsync restore Photos ~/Photos && usenetsync adopt ~/Photos --from Photos

      usenetsync adopt ~/Photos --from Photos --verify-content
    """
    out = Output(json_out)
    who = owner(server, passphrase_file)
    with open_state(lock=True, lock_wait=lock_wait) as state:
        try:
            s = adopt_folder(state, path, who.identity, who.spec, from_, verify_content=verify_content, version=version)
        except KeyboardInterrupt:
            raise InterruptedByUser("adopt interrupted", hint="run the same command again to finish it") from None
    out.emit("adopt.summary", **s.to_dict())
    out.data(f"{s.folder}: adopted {s.label!r} version {s.version}: {count(s.files_adopted, 'file')} ({count(s.segments, 'segment')},"
             f" {s.packs:,} packs) taken as posted, {s.files_changed:,} changed, {s.files_missing:,} not here;"
             f" {s.shares:,} share(s); new content goes into key epoch {s.epoch}; {s.elapsed_s:.1f} s")
    for p in s.changed_samples[:10]:
        out.say(f"changed since the backup (uploaded by the next `upload`): {p}")
