"""`usenetsync index PATH`: scan a folder into the state, incrementally."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from usenetsync_cli.cli.common import JsonOpt, LockWaitOpt, Output, count, human_bytes, open_state
from usenetsync_cli.pipeline.index import IndexProgress, IndexSummary, index_folder


def index(
    path: Annotated[Path, typer.Argument(help="The folder to index.", show_default=False)],
    follow_symlinks: Annotated[
        bool,
        typer.Option(
            "--follow-symlinks",
            help="Follow symbolic links to files and folders (loops are detected and visited once)."
            " By default links are recorded as links and not followed.",
        ),
    ] = False,
    xattrs: Annotated[
        Optional[bool],
        typer.Option(
            "--xattrs/--no-xattrs",
            help="Carry the files' user.* extended attributes (off by default). The choice is kept with the folder"
            " for later runs (cron).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Scan a folder into the local state and report what changed.

    The first run records every file; later runs compare size, mtime, ctime,
    inode and mode and report only what is new, changed or deleted. Nothing
    is read beyond file metadata, so re-indexing a large tree is quick.

    Examples:

      usenetsync index ~/Photos

      usenetsync index /srv/archive --json --lock-wait 600
    """
    out = Output(json_out)
    with open_state(lock=True, lock_wait=lock_wait) as state:
        if out.interactive and not json_out:
            summary = _with_progress(out, lambda cb: index_folder(state, path, follow_symlinks=follow_symlinks,
                                                                  xattrs=xattrs, progress=cb))
        else:
            summary = index_folder(state, path, follow_symlinks=follow_symlinks, xattrs=xattrs)
    render(out, summary)


def _with_progress(out: Output, run: Callable[[Callable[[IndexProgress], None]], IndexSummary]) -> IndexSummary:
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=out.err, transient=True
    ) as bar:
        task = bar.add_task("indexing…")

        def update(p: IndexProgress) -> None:
            rate = p.files / p.elapsed_s if p.elapsed_s > 0 else 0
            bar.update(task, description=f"{count(p.files, 'file')}, {human_bytes(p.bytes)}, {count(p.dirs, 'dir')}, {rate:,.0f} files/s")

        return run(update)


def render(out: Output, s: IndexSummary) -> None:
    out.emit("index.summary", **s.to_dict())
    for w in s.warning_samples:
        out.say(f"[yellow]warning:[/] {w}")
    if s.warnings > len(s.warning_samples):
        out.say(f"[yellow]warning:[/] … and {s.warnings - len(s.warning_samples)} more")
    if s.special_skipped:
        out.say(f"skipped {s.special_skipped:,} special file(s) (sockets, FIFOs, devices are not backed up),"
                f" e.g. {s.special_samples[0] if s.special_samples else '?'}")
    if out.json:
        return
    out.data(
        f"{s.folder}: {s.new:,} new, {s.changed:,} changed, {s.deleted:,} deleted, {s.unchanged:,} unchanged"
    )
    extra = []
    if s.symlinks:
        extra.append(f"{s.symlinks:,} symlinks")
    if s.special_skipped:
        extra.append(f"{s.special_skipped:,} special files skipped")
    if s.warnings:
        extra.append(f"{s.warnings:,} warnings")
    out.data(
        f"{count(s.files, 'file')}, {human_bytes(s.bytes)} in {count(s.dirs, 'folder')}"
        + (f" ({', '.join(extra)})" if extra else "")
        + f"; {s.elapsed_s:.2f} s, {s.files_per_s:,.0f} files/s"
    )
