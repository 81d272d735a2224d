"""`usenetsync index PATH`: scan a folder into the state, incrementally."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from usenetsync_cli import metrics
from usenetsync_cli.cli.common import JsonOpt, LockWaitOpt, MetricsFileOpt, Output, count, human_bytes, open_state
from usenetsync_cli.core.excludes import Selection, parse_lines
from usenetsync_cli.errors import InputPathError, UsageError
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
    exclude: Annotated[
        Optional[list[str]],
        typer.Option(
            "--exclude", metavar="PATTERN",
            help="Leave out paths matching a gitignore-style PATTERN (repeatable): '*.tmp' at any depth, '/build'"
            " only at the folder root, 'cache/' directories only, '**/node_modules', '!keep.tmp' to take back an"
            " earlier match. Kept with the folder for later runs; giving any selection option replaces the whole"
            " stored set.",
            show_default=False,
        ),
    ] = None,
    exclude_file: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--exclude-file", metavar="FILE",
            help="Read exclude patterns from FILE, one per line; blank lines and lines starting with '#' are"
            " skipped (repeatable). The patterns are stored, not the file name: give it again after editing it.",
            show_default=False,
        ),
    ] = None,
    exclude_caches: Annotated[
        bool,
        typer.Option(
            "--exclude-caches",
            help="Leave out every directory holding a CACHEDIR.TAG that starts with its signature"
            " (bford.info/cachedir), the tag file included.",
        ),
    ] = False,
    one_file_system: Annotated[
        bool,
        typer.Option(
            "--one-file-system",
            help="Do not cross mount points: a directory on another file system than the folder is kept as an"
            " empty directory.",
        ),
    ] = False,
    clear_excludes: Annotated[
        bool,
        typer.Option(
            "--clear-excludes",
            help="Forget the folder's stored --exclude, --exclude-file, --exclude-caches and --one-file-system"
            " rules and index everything.",
        ),
    ] = False,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
    metrics_file: MetricsFileOpt = None,
) -> None:
    """Scan a folder into the local state and report what changed.

    The first run records every file; later runs compare size, mtime, ctime,
    inode and mode and report only what is new, changed or deleted. Nothing
    is read beyond file metadata, so re-indexing a large tree is quick.

    Examples:

      usenetsync index ~/Photos

      usenetsync index /srv/archive --json --lock-wait 600

      usenetsync index ~ --exclude '*.tmp' --exclude '**/node_modules' --exclude-caches --one-file-system
    """
    out = Output(json_out)
    metrics.set_folder(path.resolve())
    # Read and checked before the state is opened: a bad pattern or an unreadable file changes nothing.
    selection = _selection(exclude or [], exclude_file or [], exclude_caches, one_file_system, clear_excludes)
    with open_state(lock=True, lock_wait=lock_wait) as state:
        if out.interactive and not json_out:
            summary = _with_progress(out, lambda cb: index_folder(state, path, follow_symlinks=follow_symlinks,
                                                                  xattrs=xattrs, selection=selection, progress=cb))
        else:
            summary = index_folder(state, path, follow_symlinks=follow_symlinks, xattrs=xattrs, selection=selection)
    render(out, summary)


def _selection(patterns: list[str], files: list[Path], caches: bool, one_fs: bool, clear: bool) -> Selection | None:
    """The rules this run stores with the folder; None keeps the stored ones (no selection option given)."""
    given = bool(patterns or files or caches or one_fs)
    if clear:
        if given:
            raise UsageError("--clear-excludes does not go with --exclude, --exclude-file, --exclude-caches or"
                             " --one-file-system", hint="giving those options alone already replaces the stored set")
        return Selection()
    if not given:
        return None
    from_files: list[str] = []
    for f in files:
        try:
            raw = f.read_bytes()
        except OSError as e:
            raise InputPathError(f"cannot read exclude file {f}: {e.strerror or e}") from None
        from_files += parse_lines(raw.decode("utf-8", "surrogateescape"))
    return Selection.make([*patterns, *from_files], exclude_caches=caches, one_file_system=one_fs)


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
        extra.append(count(s.symlinks, "symlink"))
    if s.special_skipped:
        extra.append(count(s.special_skipped, "special file") + " skipped")
    if s.excluded:
        extra.append(f"{s.excluded:,} excluded")
    if s.caches_skipped:
        extra.append(count(s.caches_skipped, "cache directory", "cache directories") + " left out")
    if s.mounts_skipped:
        extra.append(count(s.mounts_skipped, "mount point") + " not crossed")
    if s.warnings:
        extra.append(count(s.warnings, "warning"))
    out.data(
        f"{count(s.files, 'file')}, {human_bytes(s.bytes)} in {count(s.dirs, 'folder')}"
        + (f" ({', '.join(extra)})" if extra else "")
        + f"; {s.elapsed_s:.2f} s, {s.files_per_s:,.0f} files/s"
    )
