"""`usenetsync download [SHARE_ID|-] DEST` (and `--nzb FILE DEST`): fetch, verify, decrypt, reassemble.

Owns: where the share ID comes from. A share ID is a secret (for a public
share it is the key), so it is read from ``--id-file FILE`` (0600, first
non-empty line), from ``$USENETSYNC_SHARE_ID``, or from stdin (``-``); the
argument still works but warns that other users see it (``ps``, shell
history). Exactly one source; the ID is never printed or put in a message.

``--check`` (share or ``--nzb``): the availability check of
pipeline/availability.py instead of a download; DEST is not needed, nothing
is written (no DEST, no reader state, not even the home's folders). Exit 0
complete, 17 (``VerifyRepairableError``) missing but PAR2 covers it, 18
(``DataLostError``) files that cannot be completed.
"""

from __future__ import annotations

import getpass
import os
import sys
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Optional, TextIO

import typer

from usenetsync_cli import metrics
from usenetsync_cli.cli.common import JsonOpt, MetricsFileOpt, Output, count, human_bytes
from usenetsync_cli.cli.share import PassphraseOpt, read_password
from usenetsync_cli.config import Config
from usenetsync_cli.core.identity import Identity
from usenetsync_cli.core.shareid import ShareId
from usenetsync_cli.errors import (
    ConfigError,
    DataLostError,
    DownloadIncompleteError,
    InterruptedByUser,
    SHARE_ID_RE,
    SyncConflictError,
    UsageError,
    VerifyRepairableError,
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
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only check: STAT every article of the newest version (and its PAR2 recovery articles) and say"
            " how much is there and whether PAR2 covers the rest; writes nothing, DEST is not needed. Exit 0:"
            " complete, 17: missing but PAR2 covers it, 18: files cannot be completed.",
        ),
    ] = False,
    json_out: JsonOpt = False,
    metrics_file: MetricsFileOpt = None,
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

      usenetsync download --id-file ~/.photos.id --check
    """
    out = Output(json_out)
    if nzb is not None:
        if id_file is not None:
            raise UsageError("--id-file names a share; --nzb downloads an NZB", hint="pick one")
        if check:
            check_nzb_file(out, nzb, server, connections)
            return
        if share_id is None:
            raise UsageError("give a destination folder", hint="usenetsync download --nzb FILE DEST")
        target = Path(share_id) if dest is None else dest
        metrics.set_folder(target.resolve())
        _download_nzb(out, nzb, target, server, connections)
        return
    if check:
        source, _dest = _pick_source(share_id, dest, id_file, os.environ, need_dest=False)
        if source == "argument":
            out.say(ARGV_WARNING)
        check_share(out, _read_share_id(source, share_id, id_file, os.environ, sys.stdin), server, connections,
                    password_file, passphrase_file)
        return
    source, dest = _pick_source(share_id, dest, id_file, os.environ)
    metrics.set_folder(dest.resolve())  # the destination labels the run, never the share ID
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
    readers = Config.load(home).reading_servers(server)  # role fill last: asked only for what the others lack
    spec = readers[0].spec()
    Destination(dest).check_root()  # before any server work: a bad DEST fails at once
    opts = DownloadOptions(connections=connections, sync=sync, overwrite=overwrite, keep_deleted=keep_deleted,
                           keep_special_modes=keep_special_modes, xattrs=xattrs,
                           fill=tuple(e.spec() for e in readers[1:] if e.role == "fill"))
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
    first: str | None, second: Path | None, id_file: Path | None, env: Mapping[str, str], *, need_dest: bool = True,
) -> tuple[str, Path]:
    """Where the share ID comes from (argument, -, --id-file or the variable) and DEST; ConfigError unless exactly one.

    ``need_dest=False`` (``--check``): DEST may be left out (then the returned one is ``.``, never used)."""
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
            if not need_dest:
                return ("file" if id_file is not None else "env"), Path(".")
            raise UsageError("give a destination folder", hint="usenetsync download --id-file FILE DEST")
        return ("file" if id_file is not None else "env"), Path(positional[0])
    if first is None:
        if not need_dest:
            raise UsageError("give the share ID", hint=f"usenetsync download --id-file FILE --check (or {SHARE_ID_ENV},"
                             " or - to read the ID from stdin)")
        raise UsageError(
            "give the share ID and a destination folder",
            hint=f"usenetsync download --id-file FILE DEST (or {SHARE_ID_ENV}, or - to read the ID from stdin)",
        )
    if second is None:
        if not need_dest:
            return ("stdin" if first == "-" else "argument"), Path(".")
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
    readers = cfg.reading_servers(server)  # role fill last: asked only for what the others lack
    files = parse_nzb(nzb)
    summary = download_nzb(files, dest, [readers[0].spec()], connections=connections,
                           fill=[e.spec() for e in readers[1:] if e.role == "fill"])
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


# ---------------------------------------------------------------- --check: availability, nothing written

_CHECK_LINES = 100  # per-file lines in human output; --json lists every file


def _check_servers(server: str | None) -> tuple[Home, ServerSpec, list[ServerSpec]]:
    home = Home.resolve()  # not ensure(): a check creates nothing in the home
    cfg = Config.load(home)
    if not cfg.servers:
        raise ConfigError("no server is configured to read from", hint="add one with `usenetsync server add NAME --host HOST`")
    readers = cfg.reading_servers(server)  # role fill last: asked only for what the others lack
    return home, readers[0].spec(), [e.spec() for e in readers[1:] if e.role == "fill"]


def check_share(
    out: Output, share_id: str, server: str | None, connections: int | None, password_file: Path | None,
    passphrase_file: Path | None,
) -> None:
    """``download --check``: open the newest version (index verified as a download does), STAT all its articles."""
    from usenetsync_cli.pipeline.availability import ShareCheck, scratch_dir
    from usenetsync_cli.pipeline.shares import open_share

    ShareId.parse(share_id)  # a mistyped ID fails here, before anything else
    home, spec, fill = _check_servers(server)
    try:
        with scratch_dir() as tmp:
            conn = open_connection(spec)
            try:
                opened = open_share(conn, share_id, Path(tmp), password=lambda: read_password(password_file),
                                    identity=lambda: load_identity(home, passphrase_file))
                conn.quit()
            finally:
                conn.close()
            with ShareCheck(Path(tmp), opened.index.version) as chk:
                report = chk.run(opened.records(), spec, connections=connections, fill=fill)
                render_check(out, report, chk.files(), chk.groups())
    except KeyboardInterrupt:
        raise InterruptedByUser("check interrupted; nothing was written") from None


def check_nzb_file(out: Output, nzb: Path, server: str | None, connections: int | None) -> None:
    """``download --nzb F --check``: STAT every segment of the NZB."""
    from usenetsync_cli.core.nzb import parse_nzb
    from usenetsync_cli.pipeline.availability import check_nzb

    _home, spec, fill = _check_servers(server)
    files = parse_nzb(nzb)
    try:
        report, missing = check_nzb(files, spec, connections=connections, fill=fill)
    except KeyboardInterrupt:
        raise InterruptedByUser("check interrupted; nothing was written") from None
    render_check(out, report, iter(missing), iter(()))


def render_check(out: Output, r: Any, files: Iterator[Any], groups: Iterator[Any]) -> None:
    """Summary, then the files (and PAR2 groups) missing something; the exit code says complete/repairable/lost.

    ``--json``: one ``download.check`` object, then a ``download.check.file`` per file and a
    ``download.check.group`` per PAR2 group with an article missing.
    """
    out.emit("download.check", **r.to_dict())
    what = f"share version {r.version}" if r.kind == "share" else "NZB"
    line = (f"{what}: {r.present:,} of {count(r.articles, 'article')} present, {r.missing:,} missing;"
            f" {human_bytes(r.bytes_present)} of {human_bytes(r.bytes)}")
    if r.kind == "share":
        line += (f"; PAR2: {r.recovery_present:,} of {count(r.recovery_articles, 'recovery article')} present"
                 f" in {count(r.groups, 'group')}")
    if not out.json:
        out.data(line)
    shown = 0
    for f in files:
        out.emit("download.check.file", **f.to_dict())
        if not out.json:
            shown += 1
            if shown <= _CHECK_LINES:
                cover = "PAR2 covers them" if f.repairable else "PAR2 cannot cover them"
                out.data(f"missing: {f.path}: {f.missing:,} of {count(f.articles, 'article')} ({cover})")
    if shown > _CHECK_LINES:
        out.data(f"missing: … and {count(shown - _CHECK_LINES, 'more file')} (--json lists all)")
    for g in groups:
        out.emit("download.check.group", **g.to_dict())
        if not out.json and not g.can_rebuild:
            out.data(f"PAR2 group {g.shard}:{g.group_id}: {g.missing:,} of {count(g.members, 'data article')} missing,"
                     f" {g.recovery_present:,} of {count(g.recovery, 'recovery block')} available: cannot rebuild")
    if r.complete:
        if not out.json:
            out.data(f"complete: every article is there ({count(r.files, 'file')})")
        return
    if not r.repairable:
        names = ", ".join(r.lost_sample[:3]) + (" …" if r.files_lost > 3 else "")
        hint = ("PAR2 cannot cover what is missing; the publisher can re-post it (`usenetsync verify --repair`)"
                if r.kind == "share" else
                "usenetsync does not judge an NZB's own PAR2 files; a client that reads them may still repair")
        raise DataLostError(
            f"{count(r.missing, 'article')} missing; {count(r.files_lost, 'file')} cannot be completed: {names}",
            hint=hint,
        )
    raise VerifyRepairableError(
        f"{count(r.missing, 'article')} missing in {count(r.files_missing, 'file')}; PAR2 covers them all",
        hint="a download rebuilds them from PAR2 as it goes",
    )
