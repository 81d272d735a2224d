"""`usenetsync nzb export SHARE`: an NZB 1.1 of a share's articles, for other Usenet clients."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from usenetsync_cli.cli.common import JsonOpt, Output, count, open_state
from usenetsync_cli.config import Config
from usenetsync_cli.core.nzb import NzbWriter, open_nzb_for_write
from usenetsync_cli.pipeline.shares import get_share
from usenetsync_cli.pipeline.upload import folder_context
from usenetsync_cli.store import catalog
from usenetsync_cli.store.segments import PAGE
from usenetsync_cli.store.state import State

nzb_app = typer.Typer(help="NZB files: export a share's articles for other clients (download --nzb reads any NZB).", no_args_is_help=True)


def _segments(state: State, folder: catalog.Folder) -> Iterator[tuple[str, int, int]]:
    """(message_id, wire bytes, posted unix time) of every live posted segment, streamed by keyset."""
    ctx = folder_context(folder, ())
    for shard, conn in enumerate(state.shards):
        after = 0
        while True:
            rows = conn.execute(
                "SELECT seg_id, attempt, server_msgid, wire_bytes, posted_ns, epoch FROM segments"
                " WHERE folder_id=? AND state IN (1,2) AND seg_id>? ORDER BY seg_id LIMIT ?",
                (folder.folder_id, after, PAGE),
            ).fetchall()
            if not rows:
                break
            after = rows[-1][0]
            for seg_id, attempt, server_id, wire, posted, epoch in rows:
                mid = server_id or ctx.message_id(shard, seg_id, attempt, epoch)
                yield mid, wire or 0, (posted or 0) // 1_000_000_000


@nzb_app.command("export")
def export(
    share: Annotated[str, typer.Argument(help="The share (its local name).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here (gzip if it ends in .gz); default stdout.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a standard NZB 1.1 listing every article of a share's folder.

    Each article is one NZB file entry. What the NZB is for: any client
    (SABnzbd, NZBGet, a mirror script) can check that the articles are
    there and fetch or re-post them; their contents stay encrypted, with
    random names. Only `usenetsync download` of the share, with its share ID,
    reads the files; `download --nzb` of this NZB fetches the encrypted
    articles as they are.

    Examples:

      usenetsync nzb export Photos > photos.nzb

      usenetsync nzb export Photos -o photos.nzb.gz
    """
    out = Output(json_out)
    with open_state(lock=False) as state:
        sh = get_share(state, share)
        folder = catalog.get_folder_by_id(state.catalog, sh.folder_id)
        assert folder is not None
        servers = Config.load(state.home).servers
        # An NZB names the groups its articles were posted to; without a server that says, a neutral one.
        groups = next((s.groups for s in servers.values() if s.groups), None) or ["alt.binaries.misc"]
        writer = open_nzb_for_write(output, title=sh.name) if output else NzbWriter(sys.stdout.buffer, title=sh.name)
        with writer:
            n = 0
            for mid, size, posted in _segments(state, folder):
                n += 1
                writer.add_file(f"segment {n}", "poster <poster@example.invalid>", posted, groups, [(1, size, mid)])
    out.say(f"wrote an NZB of {count(n, 'article')}" + (f" to {output}" if output else ""))
