"""`usenetsync keys init|show|phrase|restore|export|import`: the user's identity and its recovery phrase.

Owns: parsing these commands, calling ``store.keystore``, and rendering.

Invariants:
- The only secret ever printed is the recovery phrase: once by ``init``
  (stderr, or a ``keys.phrase`` JSON line with ``--json``) and by ``phrase``
  on request. ``show`` prints only the public key and its fingerprint.
- The phrase never travels on the command line: ``restore`` reads it from a
  no-echo prompt, a 0600 file or stdin, and refuses (without echoing them)
  words given as arguments. Passphrases come from files or a no-echo prompt.
- Nothing is asked before the cheap refusals (an existing identity without
  --force), and no prompt is shown while the home lock is held.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from usenetsync_cli.cli.common import JsonOpt, LockWaitOpt, Output
from usenetsync_cli.core.identity import Identity, IdentityFileInfo, NoRecoveryPhraseError, identity_file_info
from usenetsync_cli.errors import ConfigError, InputPathError, UsageError, UsenetSyncError
from usenetsync_cli.store import keystore
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.keystore import PassphraseSource, PhraseSource
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
NoPassphraseOpt = Annotated[
    bool,
    typer.Option(
        "--no-passphrase",
        help="Store the private keys unprotected (mode 0600), for cron and other unattended runs.",
    ),
]
_ROWS = 6


def _already_exists(path: Path) -> ConfigError:
    return ConfigError(
        f"an identity already exists at {path}",
        hint="pass --force to replace it; save the old one first with `usenetsync keys export FILE`",
    )


def _show_new_phrase(out: Output, phrase: str) -> None:
    """The one time a new phrase is shown unasked: for people on stderr, numbered for copying onto paper."""
    if out.json:
        out.emit("keys.phrase", phrase=phrase)
        out.say(
            "your recovery phrase is in the keys.phrase line: store it safely and privately;"
            " `usenetsync keys phrase` shows it again"
        )
        return
    words = phrase.split()
    cols = -(-len(words) // _ROWS)
    lines = [
        "   ".join(f"{c * _ROWS + r + 1:>2}. {words[c * _ROWS + r]:<8}" for c in range(cols)).rstrip()
        for r in range(_ROWS)
    ]
    out.say(
        f"\n[bold]Your recovery phrase: write these {len(words)} words down, in order, on paper.[/]\n"
        "With them you can rebuild this identity on any machine (`usenetsync keys restore`);\n"
        "anyone who has them can act as you, so keep them private and offline.\n"
        "They are not shown again unasked (`usenetsync keys phrase` shows them).\n"
    )
    for line in lines:
        out.say("    " + line)
    out.say("")


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
    no_passphrase: NoPassphraseOpt = False,
    passphrase_file: PassphraseFileOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Create your identity from a new 24-word recovery phrase; print your public key and, once, the phrase.

    Write the phrase down: it is the one thing that brings this identity back
    (`usenetsync keys restore`) if this machine is lost. The private keys are
    protected by a passphrase of at least 12 characters (asked twice, or read
    from --passphrase-file). Give the printed public key (uspk1…) to people
    who want to share privately with you. An existing identity is kept unless
    --force is given: export it first, or it is lost.

    Examples:

      usenetsync keys init

      usenetsync keys init --passphrase-file ~/.usenetsync-pass

      usenetsync keys init --no-passphrase      # for cron
    """
    out = Output(json_out)
    if no_passphrase and passphrase_file is not None:
        raise UsageError("give only one of --no-passphrase and --passphrase-file")
    home = Home.resolve().ensure()
    path = keystore.identity_path(home)
    if path.exists() and not force:
        # Checked before asking for a passphrase, so nobody types one for nothing;
        # save_identity checks again, atomically, under the lock.
        raise _already_exists(path)
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
    _show_new_phrase(out, identity.phrase())


@keys_app.command("phrase")
def phrase(passphrase_file: PassphraseFileOpt = None, json_out: JsonOpt = False) -> None:
    """Print your recovery phrase again (asking for the passphrase if the identity has one).

    The 24 words go to stdout on one line (with --json: {"type": "keys.phrase",
    "phrase": "…"}). Anyone who has them can act as you: print them only
    where nobody else can read them. Identities made before recovery phrases
    have none; this says so.

    Examples:

      usenetsync keys phrase

      usenetsync keys phrase --passphrase-file ~/.usenetsync-pass --json
    """
    out = Output(json_out)
    home = Home.resolve()
    info = keystore.load_identity_info(home)
    if not info.has_phrase:
        raise NoRecoveryPhraseError()  # said before any passphrase is asked for
    words = keystore.load_identity(home, passphrase_file).phrase()
    if out.json:
        out.emit("keys.phrase", phrase=words)
        return
    out.data(words)
    out.say("keep these words private: anyone who has them can act as you")


@keys_app.command("restore")
def restore(
    phrase_file: Annotated[
        Optional[Path],
        typer.Option(
            "--phrase-file",
            metavar="FILE",
            help="Read the recovery phrase from FILE (mode 0600), or from stdin with `-`;"
            " without it the phrase is asked for (not shown as you type).",
        ),
    ] = None,
    no_passphrase: NoPassphraseOpt = False,
    passphrase_file: PassphraseFileOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
    words: Annotated[Optional[list[str]], typer.Argument(hidden=True, show_default=False)] = None,
) -> None:
    """Rebuild your identity from its 24-word recovery phrase (same public key, same shares).

    The phrase is typed at a prompt (not shown), or read from --phrase-file
    FILE (mode 0600) or from stdin (--phrase-file -); never give it as an
    argument. Case, extra spaces and the numbers written next to the words
    do not matter. A wrong word or checksum is reported with its position.
    The restored keys are protected by a new passphrase, as for `keys init`.
    An existing, different identity is kept unless --force is given.

    Examples:

      usenetsync keys restore

      usenetsync keys restore --phrase-file ~/phrase.txt --passphrase-file ~/.usenetsync-pass

      usenetsync keys restore --phrase-file - --no-passphrase < phrase.txt
    """
    out = Output(json_out)
    if words:
        # Already in the process list and shell history; at least never echo it.
        raise UsageError(
            "the recovery phrase must not be given on the command line (other users see it in the process list)",
            hint="delete it from your shell history; then type it at the prompt, or use --phrase-file FILE (mode 0600)",
        )
    if no_passphrase and passphrase_file is not None:
        raise UsageError("give only one of --no-passphrase and --passphrase-file")
    identity = Identity.from_phrase(PhraseSource(file=phrase_file).get())
    home = Home.resolve().ensure()
    path = keystore.identity_path(home)
    if path.exists() and not force:
        try:
            current = keystore.load_identity_info(home).public
        except UsenetSyncError:
            current = None  # unreadable: only --force may replace it
        if current != identity.public():
            raise _already_exists(path)
        info = keystore.load_identity_info(home)
        _describe(out, "keys.restored", info, path, changed=False)
        out.say(
            f"identity {identity.fingerprint().hex()} is already installed"
            " (pass --force to store it again, e.g. under a new passphrase)"
        )
        return
    # Prompt before taking the lock: a person typing must not block cron runs.
    passphrase = None if no_passphrase else PassphraseSource(file=passphrase_file).new("your restored identity")
    with HomeLock(home.lock_path, wait=lock_wait):
        keystore.save_identity(home, identity, passphrase, force=force)
    info = identity_file_info(path.read_bytes())
    _describe(out, "keys.restored", info, path, changed=True)
    if no_passphrase:
        out.say(f"[yellow]warning:[/] the private keys in {escape(str(path))} are not passphrase-protected")
    out.say(f"restored identity {identity.fingerprint().hex()} in {escape(str(path))}")
    if not out.json:
        out.say("your public key:")
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
