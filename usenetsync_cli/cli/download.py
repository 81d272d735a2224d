"""`usenetsync download [SHARE_ID|-] DEST` (and `--nzb FILE DEST`): fetch, verify, decrypt, reassemble.

Owns: where the share ID comes from. A share ID is a secret (for a public
share it is the key), so it is read from ``--id-file FILE`` (0600, first
non-empty line), from ``$USENETSYNC_SHARE_ID``, or from stdin (``-``); the
argument still works but warns that other users see it (``ps``, shell
history). Exactly one source; the ID is never printed or put in a message.
"""

from __future__ import annotations

import getpass
import os
import sys
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Optional, TextIO

import typer

from usenetsync_cli.cli.common import JsonOpt, Output, count, human_bytes
from usenetsync_cli.cli.share import PassphraseOpt, read_password
from usenetsync_cli.config import Config
from usenetsync_cli.core.identity import Identity
from usenetsync_cli.core.shareid import ShareId
from usenetsync_cli.errors import (
    ConfigError,
    DownloadIncompleteError,
    InterruptedByUser,
    SHARE_ID_RE,
    SyncConflictError,
    UsageError,
)
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.destination import Destination, replaced_folder
from usenetsync_cli.pipeline.backup_read import filter_records
from usenetsync_cli.pipeline.download import DownloadOptions, DownloadSummary, download_records
from usenetsync_cli.pipeline.reader_state import ReaderState, dest_key
from usenetsync_cli.pipeline.poster import open_connection
from usenetsync_cli.pipeline.shares import open_share_into
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.keystore import load_identity, read_private_text
from usenetsync_cli.store.lock import HomeLock

SHARE_ID_ENV = "USENETSYNC_SHARE_ID"
# A share ID is under 100 characters; a longer first line is not one.
_MAX_ID_CHARS = 4096
ARGV_WARNING = (
    "usenetsync: warning: a share ID on the command line is visible to other users of this machine (ps, shell"
    f" history); prefer --id-file, {SHARE_ID_ENV} or -"
)
_ONE_SOURCE_HINT = (
    f"give the ID one way only: --id-file FILE, {SHARE_ID_ENV}, - (stdin) or the first argument;"
    " with --id-file or the variable the only argument is DEST"
)


def download(
    share_id: Annotated[
        Optional[str],
        typer.Argument(
            metavar="SHARE_ID|-",
            help="The share ID, or - to read it from stdin. Left out with --id-file or"
            f" ${SHARE_ID_ENV} (then the one argument is DEST); with --nzb the destination folder.",
            show_default=False,
        ),
    ] = None,
    dest: Annotated[Optional[Path], typer.Argument(metavar="DEST", help="Destination folder (created if missing).", show_default=False)] = None,
    id_file: Annotated[Optional[Path], typer.Option("--id-file", help="Read the share ID from the first non-empty line of this file (mode 0600): unlike an argument, no other user sees it.")] = None,
    nzb: Annotated[Optional[Path], typer.Option("--nzb", help="Download a standard NZB (.nzb or .nzb.gz) instead of a share.")] = None,
    password_file: Annotated[Optional[Path], typer.Option("--password-file", help="The share password, from a 0600 file (password shares).")] = None,
    passphrase_file: PassphraseOpt = None,
    connections: Annotated[Optional[int], typer.Option("--connections", "-n", min=1, max=200, help="Connections to use (default: the server's).")] = None,
    server: Annotated[Optional[str], typer.Option("--server", help="Read from this configured server (default: the first).")] = None,
    sync: Annotated[bool, typer.Option("--sync", help="Update a copy made by usenetsync: write new and changed files, remove the ones the share dropped; files you changed are kept and the share's version is written beside them.")] = False,
    keep_deleted: Annotated[bool, typer.Option("--keep-deleted", help="With --sync: remove nothing.")] = False,
    allow_rollback: Annotated[
        bool,
        typer.Option(
            "--allow-rollback",
            help="Accept a share version older than one this destination already had (a server may be hiding"
            " newer ones); --sync then deletes nothing.",
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace local files the share also has; each is first moved into the home's replaced/ folder.")] = False,
    keep_special_modes: Annotated[bool, typer.Option("--keep-special-modes", help="Restore setuid, setgid and sticky bits and modes beyond your umask (off by default, also as root).")] = False,
    xattrs: Annotated[bool, typer.Option("--xattrs", help="Restore the user.* extended attributes the share carries (its folder was indexed with --xattrs).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Fetch the newest version of a share into DEST, verified end to end; resumable; never over your files.

    The share ID is a secret (for a public share it is the key): give it
    with --id-file FILE (a 0600 file), the USENETSYNC_SHARE_ID environment
    variable, or - to read one line from stdin; then DEST is the one
    argument. As the first argument it still works, with a warning: other
    users of the machine see a command line (ps, shell history).

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

      usenetsync download --id-file ~/.photos.id ~/Downloads/photos

      usenetsync share show Photos --show-id | usenetsync download - ~/photos

      usenetsync download --id-file ~/.docs.id ./docs --password-file ~/.docs-pw

      USENETSYNC_SHARE_ID="$(pass photos-id)" usenetsync download ~/mirror --sync

      usenetsync download --nzb release.nzb ./out
    """
    out = Output(json_out)
    if nzb is not None:
        if id_file is not None:
            raise UsageError("--id-file names a share; --nzb downloads an NZB", hint="pick one")
        if share_id is None:
            raise UsageError("give a destination folder", hint="usenetsync download --nzb FILE DEST")
        target = Path(share_id) if dest is None else dest
        _download_nzb(out, nzb, target, server, connections)
        return
    source, dest = _pick_source(share_id, dest, id_file, os.environ)
    if source == "argument":
        out.say(ARGV_WARNING)
    if sync and overwrite:
        raise UsageError("--sync and --overwrite do not go together", hint="pick one")
    if keep_deleted and not sync:
        raise UsageError("--keep-deleted goes with --sync")
    share_id = _read_share_id(source, share_id, id_file, os.environ, sys.stdin)
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
            summary = fetch_share(out, home, reader, spec, share_id, dest, opts, password_file, passphrase_file, json_out,
                                   allow_rollback)
        finally:
            reader.close()
    render(out, summary)
    if summary.conflict_copies or summary.kept:
        first = (summary.conflict_copies + summary.kept)[0]
        raise SyncConflictError(
            f"{len(summary.conflict_copies) + len(summary.kept):,} local change(s) kept, e.g. {first}"
        )


def _pick_source(
    first: str | None, second: Path | None, id_file: Path | None, env: Mapping[str, str],
) -> tuple[str, Path]:
    """Where the share ID comes from (argument, -, --id-file or the variable) and DEST; ConfigError unless exactly one."""
    named = [what for what, on in (("--id-file", id_file is not None), (f"${SHARE_ID_ENV}", bool(env.get(SHARE_ID_ENV))))
             if on]
    positional = [a for a in (first, second) if a is not None]
    if named:
        # The one argument is DEST: a second one, or a lone "-", gives the ID again.
        if len(positional) == 2 or positional == ["-"]:
            named.append("standard input (-)" if first == "-" else "the SHARE_ID argument")
        if len(named) > 1:
            raise UsageError(f"the share ID is given twice: by {' and by '.join(named)}", hint=_ONE_SOURCE_HINT)
        if not positional:
            raise UsageError("give a destination folder", hint="usenetsync download --id-file FILE DEST")
        return ("file" if id_file is not None else "env"), Path(positional[0])
    if first is None:
        raise UsageError(
            "give the share ID and a destination folder",
            hint=f"usenetsync download --id-file FILE DEST (or {SHARE_ID_ENV}, or - to read the ID from stdin)",
        )
    if second is None:
        raise UsageError("give a destination folder", hint="usenetsync download --id-file FILE DEST")
    return ("stdin" if first == "-" else "argument"), second


def _read_share_id(source: str, arg: str | None, id_file: Path | None, env: Mapping[str, str], stdin: TextIO) -> str:
    """The share ID as given (parse it with ``ShareId.parse``); no message ever quotes it."""
    if source == "argument":
        assert arg is not None
        return arg
    if source == "env":
        return env[SHARE_ID_ENV].strip()
    if source == "file":
        assert id_file is not None
        if SHARE_ID_RE.search(str(id_file)):
            # The option got the ID itself; never echo it back in an error.
            raise UsageError(
                "--id-file takes the name of a file holding the share ID, not the ID itself",
                hint="the ID is now in your shell history: delete it from there; then write it to a 0600 file",
            )
        text = read_private_text(id_file, "share ID file", limit=_MAX_ID_CHARS)
        line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        if not line:
            raise ConfigError(f"share ID file {id_file} is empty")
        return line
    # stdin: one line. On a terminal it is asked for without echo, so it is not left on the screen.
    if stdin.isatty():
        line = getpass.getpass("share ID (not shown): ")
    else:
        line = stdin.readline(_MAX_ID_CHARS + 1)
        if len(line) > _MAX_ID_CHARS:
            raise ConfigError(f"the first line of standard input is longer than {_MAX_ID_CHARS} characters",
                              hint="send only the share ID, e.g. `usenetsync share show NAME --show-id | usenetsync download - DEST`")
    if not line.strip():
        raise ConfigError("no share ID on standard input", hint="send it on the first line, or use --id-file FILE")
    return line.strip()


def fetch_share(
    out: Output, home: Home, reader: ReaderState, spec: ServerSpec, share_id: str, dest: Path, opts: DownloadOptions,
    password_file: Path | None, passphrase_file: Path | None, json_out: bool, allow_rollback: bool = False, *,
    version: int | None = None, include: list[str] | None = None, identity: Callable[[], Identity] | None = None,
) -> DownloadSummary:
    """Open the share (``version``: exactly that one) and write it into ``dest``; ``include``: only those paths."""
    conn = open_connection(spec)
    try:
        opened = open_share_into(
            reader, conn, share_id,
            password=lambda: read_password(password_file),
            identity=identity or (lambda: load_identity(home, passphrase_file)),
            allow_rollback=allow_rollback or version is not None, version=version,
        )
        conn.quit()
    finally:
        conn.close()
    if opened.rolled_back:
        # --allow-rollback: an older version is written, but nothing newer is taken away.
        opts = dataclasses.replace(opts, keep_deleted=True)
        out.say(f"[yellow]reading version {opened.index.version}, older than version {opened.pinned} seen here"
                " before; --sync deletes nothing in this run[/]")
    ix = opened.index
    out.say(f"share version {ix.version}: index verified ({ix.root.index.chunks:,} chunks, {ix.chunks_fetched:,}"
            f" fetched in {count(ix.articles_fetched, 'article')})")
    replaced = replaced_folder(home.state_dir, dest_key(reader.dest))
    records = opened.records if not include else filter_records(opened.records, include)
    try:
        run = lambda cb: download_records(  # noqa: E731 - the same call with or without a bar
            records, dest, spec, reader, version=opened.index.version, replaced_root=replaced, opts=opts,
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
                f"{count(s.files_written, 'file')} ({human_bytes(s.bytes_written)}) written, {s.files_skipped:,} already"
                f" complete, {count(s.segments_fetched, 'article')} fetched"
            ))

        return run(update)


def render(out: Output, s: DownloadSummary) -> None:
    """The summary (stdout), then DownloadIncompleteError if a file could not be completed."""
    _render_summary(out, s)
    if s.damaged_count:
        raise DownloadIncompleteError(
            f"{s.damaged_count:,} file(s) could not be completed: {s.damaged[0]}" + (" …" if s.damaged_count > 1 else "")
        )


def _render_summary(out: Output, s: DownloadSummary) -> None:
    out.emit("download.summary", **s.to_dict())
    if out.json:
        return
    out.data(
        f"{s.dest}: {count(s.files_written, 'file')} written ({human_bytes(s.bytes_written)}), {s.files_skipped:,} already"
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
            f"{dest}: {count(len(summary.files_ok), 'file')} complete, {len(summary.files_damaged):,} damaged;"
            f" {summary.bytes / 1e6:.1f} MB in {summary.elapsed_s:.1f} s"
        )
    if summary.files_damaged:
        name, missing = summary.files_damaged[0]
        raise DownloadIncompleteError(f"{len(summary.files_damaged)} file(s) damaged, e.g. {name} (parts {missing})")
