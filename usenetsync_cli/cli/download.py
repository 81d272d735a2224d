"""`usenetsync download SHARE_ID DEST` (and `--nzb FILE DEST`): fetch, verify, decrypt, reassemble."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from usenetsync_cli.cli.common import JsonOpt, Output, human_bytes
from usenetsync_cli.cli.share import PassphraseOpt, read_password
from usenetsync_cli.config import Config
from usenetsync_cli.core.shareid import ShareId
from usenetsync_cli.errors import (
    ConfigError,
    DownloadIncompleteError,
    InterruptedByUser,
    SyncConflictError,
)
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.destination import Destination, replaced_folder
from usenetsync_cli.pipeline.download import DownloadOptions, DownloadSummary, download_records
from usenetsync_cli.pipeline.reader_state import ReaderState, dest_key
from usenetsync_cli.pipeline.poster import open_connection
from usenetsync_cli.pipeline.shares import open_share
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.keystore import load_identity
from usenetsync_cli.store.lock import HomeLock


def download(
    share_id: Annotated[str, typer.Argument(help="The share ID (us1…), or with --nzb the destination folder.")],
    dest: Annotated[Optional[Path], typer.Argument(help="Destination folder (created if missing).", show_default=False)] = None,
    nzb: Annotated[Optional[Path], typer.Option("--nzb", help="Download a standard NZB (.nzb or .nzb.gz) instead of a share.")] = None,
    password_file: Annotated[Optional[Path], typer.Option("--password-file", help="The share password, from a 0600 file (password shares).")] = None,
    passphrase_file: PassphraseOpt = None,
    connections: Annotated[Optional[int], typer.Option("--connections", "-n", min=1, max=200, help="Connections to use (default: the server's).")] = None,
    server: Annotated[Optional[str], typer.Option("--server", help="Read from this configured server (default: the first).")] = None,
    sync: Annotated[bool, typer.Option("--sync", help="Update a copy made by usenetsync: write new and changed files, remove the ones the share dropped; files you changed are kept and the share's version is written beside them.")] = False,
    keep_deleted: Annotated[bool, typer.Option("--keep-deleted", help="With --sync: remove nothing.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace local files the share also has; each is first moved into the home's replaced/ folder.")] = False,
    keep_special_modes: Annotated[bool, typer.Option("--keep-special-modes", help="Restore setuid, setgid and sticky bits and modes beyond your umask (off by default, also as root).")] = False,
    xattrs: Annotated[bool, typer.Option("--xattrs", help="Restore the user.* extended attributes the share carries (its folder was indexed with --xattrs).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Fetch the newest version of a share into DEST, verified end to end; resumable; never over your files.

    The publisher's signature, every article's CRC and AES-GCM tag, each
    piece's BLAKE3 hash and each file's content hash are checked before a
    file gets its name, mode and mtime. Into a new or empty folder it simply
    writes. A folder that already holds files the share would write is
    refused before anything is written, unless --sync (update a copy made by
    usenetsync; your own changes are kept, the share's version written beside
    them as NAME.usenetsync-conflict-vN) or --overwrite (your files are moved
    into the home's replaced/ folder first). Interrupted, the same command
    resumes without refetching what it has. Its own state lives in the home,
    nothing of usenetsync's is left in DEST.

    Examples:

      usenetsync download us1p… ~/Downloads/photos

      usenetsync download us1w… ./docs --password-file ~/.share-pw --connections 8

      usenetsync download us1p… ~/mirror --sync

      usenetsync download --nzb release.nzb ./out
    """
    out = Output(json_out)
    if nzb is not None:
        target = Path(share_id) if dest is None else dest
        _download_nzb(out, nzb, target, server, connections)
        return
    if dest is None:
        raise ConfigError("give a destination folder", hint="usenetsync download SHARE_ID DEST")
    if sync and overwrite:
        raise ConfigError("--sync and --overwrite do not go together", hint="pick one")
    if keep_deleted and not sync:
        raise ConfigError("--keep-deleted goes with --sync")
    ShareId.parse(share_id)  # a mistyped ID fails here, before anything else
    home = Home.resolve().ensure()
    entries = Config.load(home).servers
    if not entries:
        raise ConfigError("no server is configured to read from", hint="add one with `usenetsync server add NAME --host HOST`")
    spec = (Config.load(home).get(server) if server else next(iter(entries.values()))).spec()
    Destination(dest).check_root()  # before any server work: a bad DEST fails at once
    opts = DownloadOptions(connections=connections, sync=sync, overwrite=overwrite, keep_deleted=keep_deleted,
                           keep_special_modes=keep_special_modes, xattrs=xattrs)
    with HomeLock(ReaderState.lock_path(home, dest)):
        reader = ReaderState.open(home, dest)
        try:
            migrated = reader.migrate_legacy()
            if migrated:
                out.say(f"moved the state of an earlier usenetsync out of {dest} ({migrated:,} paths it wrote)")
            summary = _fetch_share(out, home, reader, spec, share_id, dest, opts, password_file, passphrase_file, json_out)
        finally:
            reader.close()
    _render(out, summary)
    if summary.damaged_count:
        raise DownloadIncompleteError(
            f"{summary.damaged_count:,} file(s) could not be completed: {summary.damaged[0]}"
            + (" …" if summary.damaged_count > 1 else "")
        )
    if summary.conflict_copies or summary.kept:
        first = (summary.conflict_copies + summary.kept)[0]
        raise SyncConflictError(
            f"{len(summary.conflict_copies) + len(summary.kept):,} local change(s) kept, e.g. {first}"
        )


def _fetch_share(
    out: Output, home: Home, reader: ReaderState, spec: ServerSpec, share_id: str, dest: Path, opts: DownloadOptions,
    password_file: Path | None, passphrase_file: Path | None, json_out: bool,
) -> DownloadSummary:
    conn = open_connection(spec)
    try:
        opened = open_share(
            conn, share_id, reader.spool_dir,
            password=lambda: read_password(password_file),
            identity=lambda: load_identity(home, passphrase_file),
        )
        conn.quit()
    finally:
        conn.close()
    reader.keep_only_spool(opened.index.spool)
    reader.start_version(opened.index.header.index_sha256)
    out.say(f"share version {opened.index.version}: index verified ({opened.index.header.parts} articles)")
    replaced = replaced_folder(home.state_dir, dest_key(reader.dest))
    try:
        run = lambda cb: download_records(  # noqa: E731 - the same call with or without a bar
            opened.records, dest, spec, reader, version=opened.index.version, replaced_root=replaced, opts=opts,
            progress=cb,
        )
        return _with_progress(out, run) if out.interactive and not json_out else run(None)
    except KeyboardInterrupt:
        raise InterruptedByUser(
            "download interrupted; what was fetched is kept",
            hint="run the same command again to continue where it stopped",
        ) from None


def _with_progress(out: Output, run):  # type: ignore[no-untyped-def]
    """A live line on a terminal: files and bytes written, segments fetched, rate."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=out.err,
                  transient=True) as bar:
        task = bar.add_task("downloading…")

        def update(s: DownloadSummary) -> None:
            bar.update(task, description=(
                f"{s.files_written:,} files ({human_bytes(s.bytes_written)}) written, {s.files_skipped:,} already"
                f" complete, {s.segments_fetched:,} articles fetched"
            ))

        return run(update)


def _render(out: Output, s: DownloadSummary) -> None:
    out.emit("download.summary", **s.to_dict())
    if out.json:
        return
    out.data(
        f"{s.dest}: {s.files_written:,} files written ({human_bytes(s.bytes_written)}), {s.files_skipped:,} already"
        f" complete, {s.files_deleted:,} removed; {s.elapsed_s:.1f} s, {s.mb_per_s:.1f} MB/s"
    )
    for d in s.damaged[:10]:
        out.say(f"[yellow]damaged:[/] {d}")
    for c in s.conflict_copies[:10]:
        out.say(f"[yellow]conflict:[/] changed locally; the share's version is in {c}")
    for k in s.kept[:10]:
        out.say(f"[yellow]kept:[/] {k}")
    for r in s.replaced[:10]:
        out.say(f"replaced: your file was moved to {r}")
    if len(s.replaced) > 10:
        out.say(f"replaced: … and {len(s.replaced) - 10:,} more, in {os.path.dirname(s.replaced[0])}")


def _download_nzb(out: Output, nzb: Path, dest: Path, server: str | None, connections: int | None) -> None:
    from usenetsync_cli.core.nzb import parse_nzb
    from usenetsync_cli.pipeline.nzb_download import download_nzb

    home = Home.resolve()
    cfg = Config.load(home)
    if not cfg.servers:
        raise ConfigError("no server is configured to read from", hint="add one with `usenetsync server add NAME --host HOST`")
    spec = (cfg.get(server) if server else next(iter(cfg.servers.values()))).spec()
    files = parse_nzb(nzb)
    summary = download_nzb(files, dest, [spec], connections=connections)
    out.emit(
        "nzb.summary", files_ok=len(summary.files_ok), files_damaged=[list(d) for d in summary.files_damaged],
        bytes=summary.bytes, articles=summary.articles, elapsed_s=round(summary.elapsed_s, 3),
        mb_per_s=round(summary.mb_per_s, 2), parts_resumed=summary.parts_resumed,
    )
    if not out.json:
        out.data(
            f"{dest}: {len(summary.files_ok):,} files complete, {len(summary.files_damaged):,} damaged;"
            f" {summary.bytes / 1e6:.1f} MB in {summary.elapsed_s:.1f} s"
        )
    if summary.files_damaged:
        name, missing = summary.files_damaged[0]
        raise DownloadIncompleteError(f"{len(summary.files_damaged)} file(s) damaged, e.g. {name} (parts {missing})")
