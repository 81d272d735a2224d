"""The Typer application and ``main()``, the only place errors become messages.

Owns: registering one module per command, and turning every expected failure
(our ``UsenetSyncError`` family, SQLite/OS failures we can name, Ctrl-C)
into one line on stderr and a distinct exit code. An unexpected exception is
a bug: it gets one line too, with the traceback only under
``USENETSYNC_DEBUG=1``.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

try:  # Typer >= 0.24 vendors its own copy of Click
    from typer._click import exceptions as click_exc
    from typer._click.core import Command
except ImportError:  # pragma: no cover - older Typer uses Click itself
    from click import exceptions as click_exc  # type: ignore[no-redef]
    from click.core import Command  # type: ignore[assignment]

from usenetsync_cli import __version__
from usenetsync_cli.cli import index as index_cmd
from usenetsync_cli.cli import status as status_cmd
from usenetsync_cli.cli import upload as upload_cmd
from usenetsync_cli.cli.server import server_app
from usenetsync_cli.cli import download as download_cmd
from usenetsync_cli.cli.keys import keys_app
from usenetsync_cli.cli.share import share_app
from usenetsync_cli.cli.nzb import nzb_app
from usenetsync_cli.cli import verify as verify_cmd
from usenetsync_cli.cli import adopt as adopt_cmd
from usenetsync_cli.cli import backups as backups_cmd
from usenetsync_cli.cli import diff as diff_cmd
from usenetsync_cli.cli import forget as forget_cmd
from usenetsync_cli.cli import ls as ls_cmd
from usenetsync_cli.cli import restore as restore_cmd
from usenetsync_cli.cli.state import state_app
from usenetsync_cli.entry import stop_signals
from usenetsync_cli.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    InterruptedByUser,
    TerminatedError,
    UsenetSyncError,
    redact,
)
from usenetsync_cli.store.db import translate

HELP = """Back up and share folders of any size through Usenet.

usenetsync indexes a folder, cuts files into encrypted segments, posts them
over many NNTP connections with headers that reveal nothing, checks they
arrived, and resumes exactly where an interrupted run stopped.

State lives in $USENETSYNC_HOME (or the per-user config/data folders).
"""

app = typer.Typer(
    name="usenetsync",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"usenetsync {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


app.command("index")(index_cmd.index)
app.command("status")(status_cmd.status)
app.command("upload")(upload_cmd.upload)
app.command("download")(download_cmd.download)
app.command("verify")(verify_cmd.verify)
app.command("backups")(backups_cmd.backups)
app.command("restore")(restore_cmd.restore)
app.command("ls")(ls_cmd.ls)
app.command("diff")(diff_cmd.diff)
app.command("forget")(forget_cmd.forget)
app.command("adopt")(adopt_cmd.adopt)
app.add_typer(server_app, name="server")
app.add_typer(keys_app, name="keys")
app.add_typer(share_app, name="share")
app.add_typer(nzb_app, name="nzb")
app.add_typer(state_app, name="state")


def cli() -> Command:
    """The Click command tree (for docs and completion generation)."""
    return typer.main.get_command(app)


def _fail(err: UsenetSyncError, json_mode: bool) -> int:
    message = redact(err.message)
    hint = redact(err.hint) if err.hint else ""
    if json_mode:
        sys.stdout.write(
            json.dumps({"type": "error", "exit_code": err.exit_code, "error": type(err).__name__,
                        "message": message, "hint": hint}) + "\n"
        )
    line = f"usenetsync: error: {message}"
    if hint:
        line += f" (hint: {hint})"
    sys.stderr.write(line + "\n")
    return err.exit_code


def _tune_allocator() -> None:
    """Keep glibc from returning (and page-faulting back) the ~2 MB of buffers each segment churns.

    Measured: seal + yEnc of a 768 KB segment drops from 1.7-8 ms to ~0.3 ms.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def main(argv: Sequence[str] | None = None) -> None:
    """Run one command and exit: 0, or one line on stderr and the failure's exit code.

    SIGINT and SIGTERM raise ``KeyboardInterrupt`` for the whole run (see
    ``entry``), so every safe-stop path runs whichever stage they land in. A
    run a stop signal ended exits 130 (``InterruptedByUser``), or 143
    (``TerminatedError``) for SIGTERM, whatever error the interruption became.
    """
    with stop_signals() as stop:
        args = list(sys.argv[1:] if argv is None else argv)
        json_mode = "--json" in args
        try:
            code, err = _run(args)
        except KeyboardInterrupt:  # landed after the command, before the line below
            code, err = EXIT_INTERRUPTED, InterruptedByUser(INTERRUPTED)
        stop.quiet()  # from here a signal is remembered, not raised: the line we print is the only one
        if err is not None and (stop.terminated or stop.interrupted):
            err = _as_stopped(err, terminated=stop.terminated)
        if isinstance(err, UsenetSyncError):
            code = _fail(err, json_mode)
        elif err is not None:
            sys.stderr.write(err)
        sys.stdout.flush()
    sys.exit(code)


INTERRUPTED = "interrupted at a safe point"
TERMINATED = "stopped by SIGTERM at a safe point"


def _run(args: list[str]) -> tuple[int, UsenetSyncError | str | None]:
    """Run the command tree: (exit code, the error to report or None when already reported)."""
    _tune_allocator()
    if os.environ.get("_USENETSYNC_COMPLETE"):
        # add_completion=False keeps Typer's install options out of --help, and
        # with them its registration of the bash/zsh/fish completion classes.
        from typer.completion import completion_init

        completion_init()
    try:
        rv = cli().main(args=args, prog_name="usenetsync", standalone_mode=False)
    except UsenetSyncError as e:
        return e.exit_code, e
    except (KeyboardInterrupt, typer.Abort):
        return EXIT_INTERRUPTED, InterruptedByUser(INTERRUPTED)
    except typer.Exit as e:
        return e.exit_code, None
    except click_exc.ClickException as e:
        shown = io.StringIO()
        e.show(file=shown)  # it may quote an argument: a share ID given to the wrong option is a secret
        sys.stderr.write(redact(shown.getvalue()))
        return e.exit_code, None
    except BaseException as e:  # noqa: BLE001 - the one place that names unexpected failures
        if isinstance(e, SystemExit):
            raise
        if _caused_by_interrupt(e):  # e.g. Python wraps one raised in __set_name__ in a RuntimeError
            return EXIT_INTERRUPTED, InterruptedByUser(INTERRUPTED)
        known = translate(e)
        if known is not None:
            return known.exit_code, known
        if isinstance(e, OSError):
            return EXIT_INTERNAL, UsenetSyncError(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        if os.environ.get("USENETSYNC_DEBUG"):
            raise
        return EXIT_INTERNAL, (
            f"usenetsync: internal error: {type(e).__name__}: {redact(str(e))}"
            " (hint: a bug; rerun with USENETSYNC_DEBUG=1 for a traceback and report it)\n"
        )
    if rv == EXIT_INTERRUPTED:
        # Typer turns a KeyboardInterrupt escaping a command into Exit(130) and,
        # outside standalone mode, returns the code: that is Ctrl-C or SIGTERM.
        return EXIT_INTERRUPTED, InterruptedByUser(INTERRUPTED)
    return (rv if isinstance(rv, int) else 0), None


def _caused_by_interrupt(e: BaseException) -> bool:
    """Did ``e`` come out of a KeyboardInterrupt (its cause or context chain holds one)?"""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _as_stopped(err: UsenetSyncError | str, *, terminated: bool) -> InterruptedByUser:
    """The report of a run a stop signal ended, keeping what the command said about where it stopped.

    Whatever the command raised after the signal, the run ended because of it:
    scripts get 130 (143 for SIGTERM) and the words of the error it became.
    """
    cls = TerminatedError if terminated else InterruptedByUser
    plain = TERMINATED if terminated else INTERRUPTED
    if isinstance(err, cls):
        return err
    if isinstance(err, InterruptedByUser):  # SIGTERM, told as an interruption by the command
        if err.message == INTERRUPTED:
            return cls(plain, hint=err.hint)
        return cls(f"stopped by SIGTERM: {err.message}", hint=err.hint)
    if isinstance(err, UsenetSyncError):
        return cls(f"{plain}; then: {err.message}")
    return cls(f"{plain}; then: " + err.strip().removeprefix("usenetsync: "))
