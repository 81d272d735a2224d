"""`usenetsync keys init|show|export|import`: the user's identity (signing + encryption keys).

Owns: parsing these commands, calling ``store.keystore``, and rendering.
Nothing secret is ever printed: ``show`` prints only the public key and its
fingerprint, and passphrases come from files or a no-echo prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from usenetsync_cli.cli.common import JsonOpt, LockWaitOpt, Output
from usenetsync_cli.core.identity import Identity, IdentityFileInfo, identity_file_info
from usenetsync_cli.errors import ConfigError, InputPathError, UsenetSyncError
from usenetsync_cli.store import keystore
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.keystore import PassphraseSource
from usenetsync_cli.store.lock import HomeLock

keys_app = typer.Typer(
    help="Your identity: the keys that sign your shares and open private shares addressed to you.",
    no_args_is_help=True,
)

PassphraseFileOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--passphrase-file",
        metavar="FILE",
        help="Read the passphrase from FILE (mode 0600) instead of prompting;"
        " USENETSYNC_PASSPHRASE_FILE=FILE does the same.",
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing identity.")]


def _describe(out: Output, event: str, info: IdentityFileInfo, path: Path, **extra: object) -> None:
    pub = info.public
    out.emit(
        event,
        public_key=pub.to_text(),
        fingerprint=pub.fingerprint().hex(),
        protected=info.protected,
        path=str(path),
        **extra,
    )


@keys_app.command("init")
def init(
    no_passphrase: Annotated[
        bool,
        typer.Option(
            "--no-passphrase",
            help="Store the private keys unprotected (mode 0600), for cron and other unattended runs.",
        ),
    ] = False,
    passphrase_file: PassphraseFileOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Create your identity and print your public key.

    The private keys are protected by a passphrase (asked twice, or read from
    --passphrase-file). Give the printed public key (uspk1…) to people who
    want to share privately with you. An existing identity is kept unless
    --force is given: export it first, or it is lost.

    Examples:

      usenetsync keys init

      usenetsync keys init --passphrase-file ~/.usenetsync-pass

      usenetsync keys init --no-passphrase      # for cron
    """
    out = Output(json_out)
    if no_passphrase and passphrase_file is not None:
        raise ConfigError("give only one of --no-passphrase and --passphrase-file")
    home = Home.resolve().ensure()
    path = keystore.identity_path(home)
    if path.exists() and not force:
        # Checked before asking for a passphrase, so nobody types one for nothing;
        # save_identity checks again, atomically, under the lock.
        raise ConfigError(
            f"an identity already exists at {path}",
            hint="pass --force to replace it; save the old one first with `usenetsync keys export FILE`",
        )
    # Prompt before taking the lock: a person typing must not block cron runs.
    passphrase = None if no_passphrase else PassphraseSource(file=passphrase_file).new("your new identity")
    identity = Identity.generate()
    with HomeLock(home.lock_path, wait=lock_wait):
        keystore.save_identity(home, identity, passphrase, force=force)
    info = identity_file_info(path.read_bytes())
    _describe(out, "keys.created", info, path)
    if no_passphrase:
        out.say(f"[yellow]warning:[/] the private keys in {escape(str(path))} are not passphrase-protected")
    out.say(f"created identity {identity.fingerprint().hex()} in {escape(str(path))}")
    if not out.json:
        out.say("your public key (give it to people who share privately with you):")
        out.data(identity.public().to_text())


@keys_app.command("show")
def show(json_out: JsonOpt = False) -> None:
    """Print your public key (uspk1…) and its fingerprint; nothing secret, no passphrase needed.

    Examples:

      usenetsync keys show

      usenetsync keys show --json
    """
    out = Output(json_out)
    home = Home.resolve()
    info = keystore.load_identity_info(home)
    _describe(out, "keys.public", info, keystore.identity_path(home))
    if out.json:
        return
    out.data(info.public.to_text())
    out.data(f"fingerprint: {info.public.fingerprint().hex()}")


@keys_app.command("export")
def export(
    file: Annotated[Path, typer.Argument(help="Where to write the identity file.", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE if it exists.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write your identity file, exactly as stored (mode 0600), for a backup or another machine.

    A passphrase-protected identity stays protected by the same passphrase.

    Examples:

      usenetsync keys export /media/usb/usenetsync-identity.json

      usenetsync keys import /media/usb/usenetsync-identity.json   # on the other machine
    """
    out = Output(json_out)
    home = Home.resolve()
    data = keystore.read_identity_bytes(home)
    info = identity_file_info(data)
    target = file.expanduser()
    try:
        keystore.write_private_file(target, data, force=force)
    except FileExistsError:
        raise ConfigError(f"{target} exists", hint="pass --force to overwrite it") from None
    _describe(out, "keys.exported", info, target)
    if not info.protected:
        out.say(f"[yellow]warning:[/] {escape(str(target))} holds the private keys without a passphrase; keep it safe")
    out.say(f"exported identity {info.public.fingerprint().hex()} to {escape(str(target))}")


@keys_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="An identity file written by `keys export`.", show_default=False)],
    passphrase_file: PassphraseFileOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Install an exported identity file as your identity.

    The file is opened first (asking for its passphrase if it has one), so a
    damaged file or a forgotten passphrase never replaces a working identity.
    An existing, different identity is kept unless --force is given.

    Examples:

      usenetsync keys import /media/usb/usenetsync-identity.json

      usenetsync keys import identity.json --passphrase-file ~/.usenetsync-pass --force
    """
    out = Output(json_out)
    src = file.expanduser()
    try:
        data = src.read_bytes()
    except OSError as e:
        raise InputPathError(f"cannot read {src}: {e.strerror}") from None
    info = identity_file_info(data)
    if info.protected:
        source = PassphraseSource(file=passphrase_file)
        Identity.from_file_bytes(data, source.get(f"identity {info.public.fingerprint().hex()}"))
    else:
        Identity.from_file_bytes(data, None)
    home = Home.resolve().ensure()
    with HomeLock(home.lock_path, wait=lock_wait):
        path = keystore.identity_path(home)
        try:
            current = keystore.load_identity_info(home).public if path.exists() else None
        except UsenetSyncError:
            current = None  # the stored one is unreadable: only --force may replace it, as below
        if current == info.public and not force:
            _describe(out, "keys.imported", info, path, changed=False)
            out.say(f"identity {info.public.fingerprint().hex()} is already installed")
            return
        keystore.write_identity_bytes(home, data, force=force)
    _describe(out, "keys.imported", info, path, changed=True)
    out.say(f"imported identity {info.public.fingerprint().hex()} to {escape(str(path))}")
