"""`usenetsync download SHARE_ID DEST` (and `--nzb FILE DEST`): fetch, verify, decrypt, reassemble."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from usenetsync_cli.cli.common import JsonOpt, Output, human_bytes
from usenetsync_cli.cli.share import PassphraseOpt, read_password
from usenetsync_cli.config import Config
from usenetsync_cli.errors import ConfigError, InputPathError, InterruptedByUser
from usenetsync_cli.pipeline.download import STATE_DIR, DownloadIncompleteError, DownloadSummary, download_records
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
    sync: Annotated[bool, typer.Option("--sync", help="Update an existing copy: fetch only new/changed files, remove files the share dropped.")] = False,
    keep_deleted: Annotated[bool, typer.Option("--keep-deleted", help="With --sync: keep files the share no longer has.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Fetch the newest version of a share into DEST, verified end to end; resumable.

    The publisher's signature, every article's CRC and AES-GCM tag, and each
    segment's hash are checked before a byte is written; files appear under
    their names only when complete, with their sizes, mtimes and modes.
    Interrupted, the same command resumes without refetching what it has.

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
    home = Home.resolve()
    entries = Config.load(home).servers
    if not entries:
        raise ConfigError("no server is configured to read from", hint="add one with `usenetsync server add NAME --host HOST`")
    spec = (Config.load(home).get(server) if server else next(iter(entries.values()))).spec()
    state_dir = dest / STATE_DIR
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise InputPathError(
            f"cannot use {dest} as the destination: {e.strerror}", hint="choose a folder you can write to"
        ) from None
    with HomeLock(state_dir / "lock"):
        conn = open_connection(spec)
        try:
            opened = open_share(
                conn, share_id, state_dir,
                password=lambda: read_password(password_file),
                identity=lambda: load_identity(home, passphrase_file),
            )
            conn.quit()
        finally:
            conn.close()
        out.say(f"share version {opened.index.version}: index verified ({opened.index.header.parts} articles)")
        try:
            run = lambda cb: download_records(  # noqa: E731 - the same call with or without a bar
                opened.records(), dest, spec, version=opened.index.version,
                index_sha256=opened.index.header.index_sha256, connections=connections, sync=sync,
                keep_deleted=keep_deleted, progress=cb,
            )
            summary = _with_progress(out, run) if out.interactive and not json_out else run(None)
        except KeyboardInterrupt:
            raise InterruptedByUser(
                "download interrupted; what was fetched is kept",
                hint="run the same command again to continue where it stopped",
            ) from None
    _render(out, summary)
    if summary.damaged:
        raise DownloadIncompleteError(
            f"{len(summary.damaged)} file(s) could not be completed: {summary.damaged[0]}"
            + (" …" if len(summary.damaged) > 1 else "")
        )


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


def _download_nzb(out: Output, nzb: Path, dest: Path, server: str | None, connections: int | None) -> None:
    from usenetsync_cli.core.nzb import parse_nzb
    from usenetsync_cli.pipeline.nzbget import download_nzb

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
