"""`usenetsync upload [PATH] [--resume]`: post an indexed folder, check it, resume."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn


from usenetsync_cli import metrics
from usenetsync_cli.cli.common import JsonOpt, LockWaitOpt, MetricsFileOpt, Output, count, human_bytes, open_state
from usenetsync_cli.config import Config
from usenetsync_cli.errors import ConfigError, NotFoundError, SourceChangedError, UploadIncompleteError, UsageError, UsenetSyncError
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.pipeline.index import resolve_folder
from usenetsync_cli.pipeline.poster import GROUP_REFUSED
from usenetsync_cli.pipeline.ratelimit import parse_rate
from usenetsync_cli.pipeline.upload import UploadOptions, UploadProgress, UploadSummary, upload_folder
from usenetsync_cli.store import catalog, jobs
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State


def upload(
    path: Annotated[
        Optional[Path],
        typer.Argument(help="The indexed folder to upload. With --resume it may be left out.", show_default=False),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the last interrupted upload (PATH may be left out)."),
    ] = False,
    server: Annotated[
        Optional[str], typer.Option("--server", help="Post only to this configured server (default: all posting servers).")
    ] = None,
    connections: Annotated[
        Optional[int], typer.Option("--connections", "-n", min=1, max=200, help="Connections per server (overrides the server's setting).")
    ] = None,
    limit_rate: Annotated[
        Optional[str], typer.Option("--limit-rate", metavar="RATE", help="Cap the upload at RATE bytes/s, e.g. 20M, 512K, 1.5G.")
    ] = None,
    segment_size: Annotated[
        Optional[int],
        typer.Option("--segment-size", min=16_384, max=768_000, help="Segment payload in bytes (a folder's first upload only; default 768000)."),
    ] = None,
    redundancy: Annotated[
        int, typer.Option("--redundancy", min=0, max=100, metavar="PCT", help="PAR2 recovery data, in % of the posted bytes (0 disables).")
    ] = 10,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Skip the STAT post-check (not recommended: 240 alone proves little).")
    ] = False,
    new_epoch: Annotated[
        bool,
        typer.Option(
            "--new-epoch",
            help="Seal new content under fresh folder keys first: whoever held an earlier share of this folder"
            " cannot find or read it (share revoke does this too).",
        ),
    ] = False,
    backup: Annotated[
        bool,
        typer.Option("--backup/--no-backup", help="After a complete upload, publish the folder's state as a backup"
                     " version for your identity (nothing is posted when it did not change)."),
    ] = True,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
    metrics_file: MetricsFileOpt = None,
) -> None:
    """Segment, encrypt, post and check every not-yet-posted part of an indexed folder.

    Each segment is read, sealed with AES-256-GCM, yEnc-encoded and posted
    with random Subject/From/name and a Message-ID derived from a secret key,
    over all connections of the posting servers. Every posted article is
    then confirmed with STAT; missing ones are posted again. Progress is
    checkpointed continuously: after Ctrl-C, a crash or `kill -9`, run the
    same command (or `upload --resume`) and it continues where it stopped.
    Running it on a finished folder posts nothing.

    With an identity made from a recovery phrase (`usenetsync keys init`),
    a complete upload that changed the folder also publishes it as a backup
    version that only that identity can find and read: `usenetsync backups`,
    `restore` and `adopt` then work from the phrase alone.

    Examples:

      usenetsync index ~/Archive && usenetsync upload ~/Archive

      usenetsync upload --resume

      usenetsync upload ~/Archive --connections 8 --limit-rate 20M --json

      usenetsync upload ~/Archive --new-epoch
    """
    out = Output(json_out)
    rate = parse_rate(limit_rate) if limit_rate else None
    if path is not None:
        metrics.set_folder(path.resolve())  # a run that fails before the folder is found counts for it too
    with open_state(lock=True, lock_wait=lock_wait) as state:
        folder = _pick_folder(state, path, resume)
        metrics.set_folder(folder.display_path)
        if new_epoch:
            epoch = catalog.new_epoch(state.catalog, folder.folder_id, "requested")
            out.emit("upload.epoch", epoch=epoch)
            out.say(f"new content is sealed under key epoch {epoch}")
            folder = catalog.get_folder_by_id(state.catalog, folder.folder_id) or folder
        cfg = Config.load(state.home)
        entries = cfg.posting_servers(server)
        specs = []
        for e in entries:
            if connections:
                e.connections = connections
            specs.append(e.spec())
        opts = UploadOptions(servers=specs, limit_rate=rate or None, segment_size=segment_size, check=not no_check,
                             check_servers=[e.spec() for e in cfg.check_servers()])
        overlap = RecoveryOverlap(state.home, folder, specs[0], redundancy) if redundancy else None
        try:
            # SIGTERM raises KeyboardInterrupt here as anywhere in the run (entry.stop_signals).
            if out.interactive and not json_out:
                summary = _with_progress(out, lambda cb: upload_folder(state, folder, opts, progress=cb))
            else:
                summary = upload_folder(state, folder, opts, progress=_json_progress(out) if json_out else None)
        finally:
            if overlap is not None:
                overlap.stop()
        metrics.uploaded(folder.display_path, bytes_posted=summary.bytes_posted, articles=summary.posted_now,
                         complete=summary.complete)
        render(out, summary)
        groups = 0
        if summary.complete and redundancy:
            groups = _recovery(out, state, folder, specs[0], redundancy, overlap)
        if summary.complete:
            _publish_pending(out, state, folder, server)
            if backup:
                run_backup(out, state, folder, server, quiet_without_identity=True, trust_runs=not groups)
    if summary.complete and summary.unstable_count:
        first = summary.unstable[0] if summary.unstable else "?"
        raise SourceChangedError(
            f"{summary.unstable_count:,} file(s) kept changing (or could not be read) through every round, e.g."
            f" {first}; shares keep their last consistent content",
            hint=f"run `usenetsync upload {summary.folder}` again once they are no longer being written",
        )
    # The posters stop at the first such 441 (pipeline/upload.py raises ConfigError); this catches one that
    # reached the summary by another path (a post-check re-post, recovery articles).
    refused = next((e for e in summary.errors if GROUP_REFUSED.search(e)), None)
    if not summary.complete and refused is not None:
        # Every article is refused the same way: retrying (--resume) cannot help, the configuration can.
        groups = ", ".join(specs[0].groups) if specs else "?"
        raise ConfigError(
            f"the server refuses the newsgroup(s) {groups}: {refused}",
            hint=f"give a group this server carries: `usenetsync server add {entries[0].name if entries else 'NAME'}"
            " --host HOST --group GROUP --replace` (then `usenetsync server test`)",
        )
    if not summary.complete:
        raise UploadIncompleteError(
            f"{summary.failed + summary.pending + summary.posted_unverified:,} of {count(summary.segments, 'segment')}"
            " are not posted and verified yet"
            + (f" ({summary.errors[0]})" if summary.errors else ""),
            hint=f"run `usenetsync upload {summary.folder} --resume` to retry them",
        )


class RecoveryOverlap:
    """Makes complete PAR2 groups from what is already posted while the upload goes on.

    Runs in its own thread with its own State (connections are per thread); it
    reads the shards and writes only recovery.db. The final, tail-including
    pass runs after the upload (``_recovery``).
    """

    def __init__(self, home: Home, folder: catalog.Folder, spec: ServerSpec, redundancy: int) -> None:
        self.home, self.folder, self.spec, self.redundancy = home, folder, spec, redundancy
        self.groups = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recovery-overlap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from usenetsync_cli.pipeline.recovery import create_recovery

        work = self.home.state_dir / "tmp"
        work.mkdir(mode=0o700, exist_ok=True)
        try:
            with State.open(self.home) as st:
                while not self._stop.wait(2.0):
                    r = create_recovery(st, self.folder, self.spec, redundancy=self.redundancy, workdir=work,
                                        full_only=True)
                    self.groups += r.groups_created
        except UsenetSyncError as e:  # the final pass retries; the upload itself is unaffected
            self.error = e

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _recovery(
    out: Output, state: State, folder: catalog.Folder, spec: ServerSpec, redundancy: int,
    overlap: RecoveryOverlap | None = None,
) -> int:
    """PAR2 over the bytes just posted, for segments not yet in a recovery group; how many groups were made."""
    from usenetsync_cli.pipeline.recovery import create_recovery

    work = state.home.state_dir / "tmp"
    work.mkdir(mode=0o700, exist_ok=True)
    r = create_recovery(state, folder, spec, redundancy=redundancy, workdir=work)
    if overlap is not None:
        r.groups_created += overlap.groups
    out.emit("upload.recovery", **{k: v for k, v in r.__dict__.items() if isinstance(v, (int, float, str))})
    if r.groups_created:
        out.say(
            f"recovery: {count(r.groups_created, 'PAR2 group')}, {count(r.recovery_articles, 'article')}"
            f" ({r.recovery_bytes / 1e6:.1f} MB, {redundancy}%) in {r.elapsed_s:.1f} s"
        )
    if r.groups_created:  # a new version carries them: the newest backup no longer covers the state
        with state.catalog:
            state.catalog.execute("UPDATE folders SET backup_covered_ns=NULL WHERE folder_id=?", (folder.folder_id,))
    return r.groups_created


def _publish_pending(out: Output, state: State, folder: catalog.Folder, server: str | None) -> None:
    """Shares created before the folder was fully up, or by an older usenetsync, are published now."""
    from usenetsync_cli.cli.share import try_publish
    from usenetsync_cli.core.shareid import OLD_PREFIXES
    from usenetsync_cli.pipeline.shares import list_shares

    for share in list_shares(state, folder.folder_id):
        # A share made by an older usenetsync is republished under a new ID (readers cannot use the old one).
        if share.version == 0 or share.share_id.startswith(OLD_PREFIXES):
            try_publish(out, state, share, None, server)


def run_backup(out: Output, state: State, folder: catalog.Folder, server: str | None, *,
               quiet_without_identity: bool = False, trust_runs: bool = False) -> None:
    """Publish the folder's backup version; a missing identity or phrase is said, not raised (upload's case)."""
    from usenetsync_cli.core.identity import NoRecoveryPhraseError
    from usenetsync_cli.errors import CryptoError
    from usenetsync_cli.pipeline.backup import publish_backup
    from usenetsync_cli.pipeline.publish import NotUploadedError
    from usenetsync_cli.store.keystore import load_identity

    try:
        identity = load_identity(state.home, None)
        identity.backup_key()
    except NotFoundError:
        if not quiet_without_identity:
            raise
        out.emit("backup.skipped", reason="no identity")
        out.say("not backed up: there is no identity (make one from a recovery phrase with `usenetsync keys init`)")
        return
    except (NoRecoveryPhraseError, ConfigError, CryptoError) as e:
        if not quiet_without_identity:
            raise
        out.emit("backup.skipped", reason=e.message)
        out.say(f"not backed up: {e.message}" + (f" (hint: {e.hint})" if e.hint else ""))
        return
    spec = Config.load(state.home).posting_servers(server)[0].spec()
    try:
        r = publish_backup(state, folder, identity, spec, trust_runs=trust_runs)
    except NotUploadedError as e:
        out.emit("backup.pending", reason=e.message)
        out.say(f"not backed up yet: {e.message}")
        return
    out.emit("backup.published" if r.published else "backup.unchanged", **r.to_dict())
    if r.published:
        out.say(f"backup {r.label!r} version {r.version} published ({count(r.articles, 'article')},"
                f" {r.index_bytes / 1e3:,.0f} KB of index)")
    else:
        out.say(f"backup {r.label!r} is up to date (version {r.version}); nothing posted")


def _pick_folder(state: State, path: Path | None, resume: bool) -> catalog.Folder:
    if path is None:
        if not resume:
            raise UsageError("give the folder to upload", hint="usenetsync upload PATH (or --resume)")
        folder_id = jobs.last_unfinished(state.catalog, "upload")
        if folder_id is None:
            raise NotFoundError("there is no interrupted upload to resume", hint="start one with `usenetsync upload PATH`")
        found = catalog.get_folder_by_id(state.catalog, folder_id)
    else:
        found = catalog.get_folder(state.catalog, os.fsencode(resolve_folder(path)))
    if found is None:
        raise NotFoundError(f"{path} has not been indexed", hint=f"run `usenetsync index {path}` first")
    return found


def _json_progress(out: Output):  # type: ignore[no-untyped-def]
    last = [0.0]

    def cb(p: UploadProgress) -> None:
        if p.elapsed_s - last[0] >= 1.0 or p.segments_done == p.segments_total:
            last[0] = p.elapsed_s
            out.emit("upload.progress", **p.__dict__)

    return cb


def _with_progress(out: Output, run):  # type: ignore[no-untyped-def]
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"), console=out.err, transient=True,
    ) as bar:
        task = bar.add_task("planning", total=None, info="")

        def update(p: UploadProgress) -> None:
            bar.update(
                task, description=f"{p.phase} (round {p.round})", total=p.bytes_total or None, completed=p.bytes_done,
                info=f"{p.segments_done:,}/{count(p.segments_total, 'article')}, {p.connections} conns, {p.retries} retries",
            )

        return run(update)


def render(out: Output, s: UploadSummary) -> None:
    out.emit("upload.summary", **s.to_dict())
    for e in s.errors[:5]:
        out.say(f"[yellow]warning:[/] {e}")
    for path in s.unstable[:10]:
        out.say(f"[yellow]warning:[/] {path}: kept changing (or unreadable) while it was read; not posted this run")
    if out.json:
        return
    if s.files_rehashed_same:
        out.say(f"{s.files_rehashed_same:,} file(s) changed only in metadata: re-read, content unchanged, not posted again")
    if s.posted_now == 0 and s.complete:
        out.data(f"{s.folder}: nothing to upload; every segment ({s.segments:,}) is posted and verified")
        return
    out.data(
        f"{s.folder}: posted {count(s.posted_now, 'article')} ({human_bytes(s.bytes_posted)}) in {s.elapsed_s:.1f} s,"
        f" {s.mb_per_s:.1f} MB/s; packing efficiency {s.efficiency:.3f}"
    )
    out.data(
        f"verified {s.verified:,}/{count(s.segments, 'segment')}; re-posted {s.reposted:,}; duplicates confirmed"
        f" {s.duplicates_confirmed:,}; failed {s.failed:,}; retries {s.retries:,}"
    )
