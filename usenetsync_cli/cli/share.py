"""`usenetsync share create|list|show|update|revoke`: who can read a folder, and its published index.

Invariant: a share ID is a secret (for a public share it is the key). Only
an explicit ``--show-id`` prints it (stdout, with a reminder on stderr);
publishing says the share's name and version, never its ID, in text and
in ``--json`` events, so cron logs never hold it.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from usenetsync_cli import metrics
from usenetsync_cli.cli.common import JsonOpt, LockWaitOpt, MetricsFileOpt, Output, count, human_bytes, open_state
from usenetsync_cli.config import Config, read_secret_file
from usenetsync_cli.core.identity import Identity, PublicIdentity
from usenetsync_cli.errors import ConfigError, CryptoError, NotFoundError, SourceChangedError, UsageError
from usenetsync_cli.pipeline.index import resolve_folder
from usenetsync_cli.pipeline.publish import NotUploadedError, Published
from usenetsync_cli.pipeline.shares import Share, create_share, get_share, layout_check, list_shares, publish, revoke
from usenetsync_cli.store import catalog
from usenetsync_cli.store.keystore import load_identity
from usenetsync_cli.store.state import State

share_app = typer.Typer(help="Share indexed folders: public, password or private (to chosen public keys).", no_args_is_help=True)

PassphraseOpt = Annotated[
    Optional[Path],
    typer.Option("--passphrase-file", help="File holding the passphrase of your identity key (else USENETSYNC_PASSPHRASE_FILE or a prompt)."),
]
ServerOpt = Annotated[Optional[str], typer.Option("--server", help="Post the index to this configured server (default: the first posting server).")]
SECRET_REMINDER = (
    "usenetsync: note: a share ID is a secret (for a public share it is the key); hand it over privately, and"
    " pass it to `download` with --id-file, USENETSYNC_SHARE_ID or - rather than on the command line"
)


def read_password(password_file: Path | None, *, confirm: bool = False) -> str:
    """A share password from a 0600 file, else a prompt on a terminal; never from the command line."""
    if password_file is not None:
        return read_secret_file(password_file, what="password file")
    if not sys.stdin.isatty():
        raise ConfigError("a password is needed", hint="pass --password-file FILE (mode 0600)")
    pw = getpass.getpass("share password: ")
    if confirm and getpass.getpass("again: ") != pw:
        raise ConfigError("the two passwords differ")
    if not pw:
        raise ConfigError("the password is empty")
    return pw


def try_publish(
    out: Output, state: State, share: Share, passphrase_file: Path | None, server: str | None,
    identity: Identity | None = None,
) -> None:
    try:
        identity = identity or load_identity(state.home, passphrase_file)
        spec = Config.load(state.home).posting_servers(server)[0].spec()
        result = publish(state, share, identity, spec)
    except (NotUploadedError, ConfigError, CryptoError) as e:
        out.say(f"share {share.name!r} not published yet: {e.message} (it will be at the end of the next complete upload, or run `usenetsync share update {share.name}`)")
        out.emit("share.pending", name=share.name, reason=e.message)
        return
    share = get_share(state, share.name)
    say_published(out, share.name, result, kind=share.kind)
    say_held(out, result)


def say_published(out: Output, name: str, result: Published, **extra: object) -> None:
    """The publication, without the share ID: this runs in `upload` and `verify --repair`, whose output
    goes to cron logs."""
    posting = result.posting
    out.emit("share.published", name=name, version=result.version, index_parts=result.parts,
             index_bytes=result.index_bytes, chunks_new=posting.chunks_new if posting else 0,
             chunks_reused=posting.chunks_reused if posting else 0, records=result.records,
             held=result.unstable, skipped=result.skipped, new_id=result.new_id, **extra)
    out.say(f"published share {name!r} version {result.version} ({result.records:,} index records,"
            f" {result.index_bytes / 1e3:,.0f} KB of index posted)")
    if result.new_id:
        out.say(f"[yellow]share {name!r} was made by an older usenetsync: it has a new ID now, and readers need it[/]")
    if result.version == 1:
        out.say(f"show its ID with `usenetsync share show {name} --show-id`")


def say_held(out: Output, result: Published) -> bool:
    """Warn about files a version holds at older content or leaves out; True if there were any."""
    for path in result.unstable[:10]:
        out.say(f"[yellow]warning:[/] {path}: kept changing while it was read; this version keeps its last"
                " consistent content")
    for path in result.skipped[:10]:
        out.say(f"[yellow]warning:[/] {path}: kept changing and was never read consistently; not in this version")
    more = len(result.unstable) + len(result.skipped) - min(10, len(result.unstable)) - min(10, len(result.skipped))
    if more > 0:
        out.say(f"[yellow]warning:[/] … and {more:,} more")
    return bool(result.unstable or result.skipped)


def held_error(result: Published) -> SourceChangedError:
    first = (result.unstable + result.skipped)[0]
    n = len(result.unstable) + len(result.skipped)
    return SourceChangedError(
        f"{n:,} file(s) kept changing while they were read, e.g. {first}; the version keeps their last"
        " consistent content (or leaves them out)",
        hint="run `usenetsync upload PATH` again once they are no longer being written, then `share update`",
    )


@share_app.command("create")
def create(
    path: Annotated[Path, typer.Argument(help="The indexed folder to share.")],
    public: Annotated[bool, typer.Option("--public", help="Anyone with the share ID can read it (the ID carries the key).")] = False,
    password: Annotated[bool, typer.Option("--password", help="Readers need the share ID and a password.")] = False,
    password_file: Annotated[Optional[Path], typer.Option("--password-file", help="Read the share password from this 0600 file.")] = None,
    to: Annotated[Optional[list[str]], typer.Option("--to", metavar="PUBKEY", help="A recipient's public key (uspk1…); repeatable. Makes a private share.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="A local name for the share (default: the folder's name).")] = None,
    passphrase_file: PassphraseOpt = None,
    server: ServerOpt = None,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
    metrics_file: MetricsFileOpt = None,
) -> None:
    """Define a share of an indexed folder and publish its index once the folder is uploaded.

    Exactly one of --public, --password, --to. The index is published now if
    the folder is fully uploaded, else at the end of the next complete
    `upload`. The share ID is a secret and is never printed here: `share show
    NAME --show-id` prints it when you hand it over.

    Examples:

      usenetsync share create ~/Photos --public

      usenetsync share create ~/Docs --password --password-file ~/.share-pw

      usenetsync share create ~/Work --to uspk1q… --to uspk1z…
    """
    out = Output(json_out)
    metrics.set_folder(path.resolve())
    kinds = [k for k, on in (("public", public), ("password", password or password_file is not None), ("private", bool(to))) if on]
    if len(kinds) != 1:
        raise UsageError("choose exactly one of --public, --password, --to PUBKEY")
    kind = kinds[0]
    recipients = [PublicIdentity.from_text(t) for t in to or []]
    pw = read_password(password_file, confirm=True) if kind == "password" else None
    with open_state(lock=True, lock_wait=lock_wait) as state:
        folder = catalog.get_folder(state.catalog, os.fsencode(resolve_folder(path)))
        if folder is None:
            raise NotFoundError(f"{path} has not been indexed", hint=f"run `usenetsync index {path}` first")
        identity = load_identity(state.home, passphrase_file)
        share = create_share(state, folder, identity, kind=kind, name=name or Path(folder.display_path).name,
                             password=pw, recipients=recipients)
        # The one time the ID is shown unasked: its creator is at the keyboard. Publishing (often from
        # cron) never shows it; `share show NAME --show-id` does, on request.
        out.emit("share.created", name=share.name, kind=kind, folder=folder.display_path, share_id=share.share_id)
        out.say(f"created {kind} share {share.name!r} of {folder.display_path}; its ID (a secret: give it only to"
                " its readers; `share show NAME --show-id` shows it again):")
        if not out.json:
            out.data(share.share_id)
        try_publish(out, state, share, passphrase_file, server, identity)


@share_app.command("list")
def list_(
    show_id: Annotated[bool, typer.Option("--show-id", help="Also print share IDs (secret for public shares).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List shares: kind, version, size, files, publication state.

    Example:

      usenetsync share list --json
    """
    out = Output(json_out)
    with open_state(lock=False) as state:
        shares = list_shares(state)
        paths = {f.folder_id: f.display_path for f in catalog.list_folders(state.catalog)}
    for sh in shares:
        out.emit("share", folder=paths.get(sh.folder_id, "?"), **sh.to_public_dict(show_id))
    if show_id and shares:
        out.say(SECRET_REMINDER)
    if out.json:
        return
    if not shares:
        out.data("no shares yet: `usenetsync share create PATH --public|--password|--to PUBKEY`")
        return
    out.table("", ("name", "kind", "folder", "version", "files", "size", "state") + (("share ID",) if show_id else ()),
              [(sh.name, sh.kind, paths.get(sh.folder_id, "?"), str(sh.version), f"{sh.files:,}",
                human_bytes(sh.bytes), "published" if sh.version else "pending upload",
                *((sh.share_id,) if show_id else ())) for sh in shares])


@share_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The share's name.")],
    show_id: Annotated[bool, typer.Option("--show-id", help="Print the share ID (secret for public shares).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show one share (recipients' public keys, version, size); the ID only with --show-id.

    With --show-id stdout holds the ID alone (the description goes to
    stderr), so it can go straight into a 0600 file or a pipe to `download -`;
    the ID is a secret: keep it out of logs and command lines.

    Examples:

      usenetsync share show Photos

      (umask 077; usenetsync share show Photos --show-id > ~/photos.id)
    """
    out = Output(json_out)
    with open_state(lock=False) as state:
        sh = get_share(state, name)
        check = layout_check(state, sh) or {}
    # Counted as the download's summary counts them: files (hard links too), symlinks, folders (None: published
    # by a usenetsync that did not record them).
    symlinks, dirs = check.get("symlinks"), check.get("dirs")
    out.emit("share", **sh.to_public_dict(show_id), symlinks=symlinks, dirs=dirs)
    if show_id:
        out.say(SECRET_REMINDER)
    if out.json:
        return
    # With --show-id, stdout is the ID alone: `> FILE` and `| usenetsync download -` take it as it is.
    put = out.say if show_id else out.data
    tree = "" if symlinks is None or dirs is None else f" {count(symlinks, 'symlink')}, {count(dirs, 'folder')},"
    put(f"{sh.name}: {sh.kind} share, version {sh.version or '(not yet published)'}, {count(sh.files, 'file')},{tree}"
        f" {human_bytes(sh.bytes)}")
    for r in sh.recipients:
        put(f"  recipient {r}")
    if show_id:
        out.data(sh.share_id)


@share_app.command("update")
def update(
    name: Annotated[str, typer.Argument(help="The share to publish anew.")],
    passphrase_file: PassphraseOpt = None,
    server: ServerOpt = None,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
    force: Annotated[bool, typer.Option("--force", help="Publish a new version even if nothing changed.")] = False,
    metrics_file: MetricsFileOpt = None,
) -> None:
    """Publish a new version after the folder was re-indexed and uploaded; the share ID stays the same.

    Nothing is published when the share's content is what its last version holds (--force to publish anyway).

    Example:

      usenetsync index ~/Photos && usenetsync upload ~/Photos && usenetsync share update Photos
    """
    out = Output(json_out)
    with open_state(lock=True, lock_wait=lock_wait) as state:
        sh = get_share(state, name)
        shared = catalog.get_folder_by_id(state.catalog, sh.folder_id)
        if shared is not None:  # the folder, never the share's ID, labels the run
            metrics.set_folder(shared.display_path)
        identity = load_identity(state.home, passphrase_file)
        spec = Config.load(state.home).posting_servers(server)[0].spec()
        result = publish(state, sh, identity, spec, if_changed=not force and sh.version > 0)
    if result.unchanged:
        out.emit("share.unchanged", name=name, version=sh.version)
        out.say(f"share {name!r}: nothing changed since version {sh.version}; nothing published"
                " (pass --force to publish a new version anyway)")
        return
    say_published(out, name, result)
    if say_held(out, result):
        raise held_error(result)


@share_app.command("revoke")
def revoke_cmd(
    name: Annotated[str, typer.Argument(help="The private share.")],
    to: Annotated[str, typer.Option("--to", metavar="PUBKEY", help="The recipient to remove.")],
    passphrase_file: PassphraseOpt = None,
    server: ServerOpt = None,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Remove a recipient: publishes a new version under a new share key they cannot open.

    What they already downloaded stays theirs.

    Example:

      usenetsync share revoke Work --to uspk1q…
    """
    out = Output(json_out)
    with open_state(lock=True, lock_wait=lock_wait) as state:
        sh = revoke(state, get_share(state, name), PublicIdentity.from_text(to))
        identity = load_identity(state.home, passphrase_file)
        spec = Config.load(state.home).posting_servers(server)[0].spec()
        result = publish(state, sh, identity, spec)
    out.emit("share.revoked", name=name, version=result.version)
    out.say(f"revoked; published share {name!r} version {result.version} under a new key")
