"""The Typer application and ``main()``, the only place errors become messages.

Owns: registering one module per command, and turning every expected failure
(our ``UsenetSyncError`` family, SQLite/OS failures we can name, Click's
usage errors, Ctrl-C) into one line on stderr and a distinct exit code. An
unexpected exception is a bug: it gets one line too, with the traceback only
under ``USENETSYNC_DEBUG=1``.

Invariants:
- A command's module is imported only when that command runs or shows its
  help (``COMMANDS``, ``load_command``); ``preload`` does it from
  ``entry.main()`` while the starting-phase signal handler is in place. The
  root help lists commands from ``COMMANDS`` (tests/cli/test_startup.py
  checks each line against the command's own help).
- Start-up budget (benchmarks/bench_startup.py, from the wheel): ``--version``
  <= 150 ms, ``--help`` and ``status`` <= 250 ms. An eager import of a heavy
  module here (rich.progress, cryptography, a pipeline) breaks it.
"""

from __future__ import annotations

import ctypes
import importlib
import io
import json
import os
import sys
import time
import types
from collections.abc import Sequence
from typing import Annotated, Any

import typer

try:  # Typer >= 0.24 vendors its own copy of Click
    from typer._click import exceptions as click_exc
    from typer._click.core import Command
except ImportError:  # pragma: no cover - older Typer uses Click itself
    from click import exceptions as click_exc  # type: ignore[no-redef]
    from click.core import Command  # type: ignore[assignment]
from typer.core import TyperCommand, TyperGroup

from usenetsync_cli import __version__
from usenetsync_cli.entry import stop_signals
from usenetsync_cli.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    InterruptedByUser,
    TerminatedError,
    UsageError,
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

# Each command's module is imported only when that command runs (or its own
# --help is asked for): `usenetsync --help` and every command start without
# importing the others (rich.progress, cryptography, the upload pipeline ...).
# The root help lists each command by the first paragraph of its help; a test
# renders the root help both ways (from this table, and with every command
# loaded) and requires the same text.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "index": ("usenetsync_cli.cli.index", "index",
              "Scan a folder into the local state and report what changed."),
    "status": ("usenetsync_cli.cli.status", "status",
               "Show the home, each shard's size and rows, indexed folders and the last runs."),
    "upload": ("usenetsync_cli.cli.upload", "upload",
               "Segment, encrypt, post and check every not-yet-posted part of an indexed folder."),
    "download": ("usenetsync_cli.cli.download", "download",
                 "Fetch the newest version of a share into DEST, verified end to end; resumable;"
                 " never over your files."),
    "verify": ("usenetsync_cli.cli.verify", "verify",
               "STAT every article (pipelined), optionally read a sample, and repair what is missing."),
    "backups": ("usenetsync_cli.cli.backups", "backups",
                "List the folders your identity backed up (or one's versions), from the server alone."),
    "restore": ("usenetsync_cli.cli.restore", "restore",
                "Restore a backed-up folder, as of any version kept, into DEST."),
    "ls": ("usenetsync_cli.cli.ls", "ls",
           "List the files of a backup version (the newest by default); only its index is fetched."),
    "diff": ("usenetsync_cli.cli.diff", "diff",
             "Show the paths added (+), removed (-) and modified (M) from version V1 to V2 of a backup."),
    "forget": ("usenetsync_cli.cli.forget", "forget",
               "Drop backup versions from your catalog by a retention policy (restic's --keep-* rules)."),
    "adopt": ("usenetsync_cli.cli.adopt", "adopt",
              "Rebuild this home's state of a folder from its backup, so the next upload posts only what"
              " changed."),
    "server": ("usenetsync_cli.cli.server", "server_app",
               "Configure news servers (passwords never go into the config file)."),
    "keys": ("usenetsync_cli.cli.keys", "keys_app",
             "Your identity: the keys that sign your shares and open private shares addressed to you."),
    "share": ("usenetsync_cli.cli.share", "share_app",
              "Share indexed folders: public, password or private (to chosen public keys)."),
    "nzb": ("usenetsync_cli.cli.nzb", "nzb_app",
            "NZB files: export a share's articles for other clients (download --nzb reads any NZB)."),
    "state": ("usenetsync_cli.cli.state", "state_app",
              "The local state: check and repair its databases."),
}
_LOADED: dict[str, Command] = {}


def _typer_app(**settings: object) -> typer.Typer:
    """A Typer app with the root's settings (markup mode and help options reach the commands built from it)."""
    return typer.Typer(
        name="usenetsync",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="rich",
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
        pretty_exceptions_enable=False,
        **settings,  # type: ignore[arg-type]
    )


def load_command(name: str) -> Command:
    """The Click command (or group) ``name``, built exactly as an eagerly registered one would be."""
    cmd = _LOADED.get(name)
    if cmd is None:
        module, attr, _ = COMMANDS[name]
        obj = getattr(importlib.import_module(module), attr)
        one = _typer_app()
        one.callback()(_root)
        if isinstance(obj, typer.Typer):
            one.add_typer(obj, name=name)
        else:
            one.command(name)(obj)
        cmd = _LOADED[name] = typer.main.get_command(one).commands[name]  # type: ignore[attr-defined]
    return cmd


def rich_help_without_markdown() -> None:
    """Import Typer's help renderer without ``rich.markdown`` (markdown-it: ~0.1 s of every ``--help``).

    ``typer.rich_utils`` imports ``Markdown`` at its top for the "markdown"
    markup mode, which this app does not use. While it is imported, a stand-in
    module answers that import with a function that would load the real class
    if it were ever called; the stand-in is then dropped, so any later
    ``import rich.markdown`` gets the real module.
    """
    if "typer.rich_utils" in sys.modules or "rich.markdown" in sys.modules:
        _fold_long_words()
        return
    stand_in = types.ModuleType("rich.markdown")

    class Markdown:  # a class: typer.rich_utils uses it in annotations (``Markdown | Text``)
        def __new__(cls, *args: object, **kwargs: object) -> Any:
            sys.modules.pop("rich.markdown", None)
            from rich.markdown import Markdown as Real

            return Real(*args, **kwargs)  # type: ignore[arg-type]

    stand_in.Markdown = Markdown  # type: ignore[attr-defined]
    sys.modules["rich.markdown"] = stand_in
    try:
        import typer.rich_utils  # noqa: F401
    finally:
        if sys.modules.get("rich.markdown") is stand_in:
            del sys.modules["rich.markdown"]
    _fold_long_words()


def _fold_long_words() -> None:
    """Help text never loses a word: one longer than its column (``USENETSYNC_PASSPHRASE_FILE=FILE``)
    is folded onto the next line, where rich's default cut it to ``USENETSYNC_PASSPHRASE_F…`` — also at
    the 80 columns rich assumes off a terminal (``--help | less``, a man-page generator)."""
    import typer.rich_utils as rich_utils

    make_text = rich_utils._make_rich_text
    if getattr(make_text, "folds", False):
        return

    def folded(**kwargs: Any) -> Any:
        text = make_text(**kwargs)
        if hasattr(text, "overflow"):
            text.overflow = "fold"
        return text

    folded.folds = True  # type: ignore[attr-defined]
    rich_utils._make_rich_text = folded  # type: ignore[assignment]


def preload(args: Sequence[str]) -> None:
    """Import the module of the command ``args`` names (the first word that is one), if any."""
    name = next((a for a in args if not a.startswith("-")), None)
    if name in COMMANDS:
        load_command(name)
    if not args or "--help" in args or "-h" in args:
        rich_help_without_markdown()


class _LazyGroup(TyperGroup):
    """The root group: commands are imported on first use; the root help lists them from ``COMMANDS``."""

    _listing = False

    def list_commands(self, ctx: object) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: object, cmd_name: str) -> Command | None:
        if cmd_name not in COMMANDS:
            return None
        if self._listing:  # a name and a line for the help or a completion list: no import
            return TyperCommand(cmd_name, help=COMMANDS[cmd_name][2])
        return load_command(cmd_name)

    def format_help(self, ctx: typer.Context, formatter: object) -> None:  # type: ignore[override]
        self._listing = True
        try:
            super().format_help(ctx, formatter)  # type: ignore[arg-type]
        finally:
            self._listing = False


app = _typer_app(cls=_LazyGroup)


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


def cli() -> Command:
    """The Click command tree (for docs and completion generation); subcommands load on first lookup."""
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
        started = time.time()
        _metrics_reset()
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
        _metrics_finish(code, started)
        sys.stdout.flush()
    sys.exit(code)


def _metrics_reset() -> None:
    metrics = sys.modules.get("usenetsync_cli.metrics")
    if metrics is not None:  # an earlier in-process run's recorder never carries over
        metrics.reset()  # type: ignore[attr-defined]


def _metrics_finish(code: int, started: float) -> None:
    """The one place a run's start, end and final exit status are recorded (``--metrics-file``).

    Only a command that has the option imports ``usenetsync_cli.metrics`` (while its command line is
    read): for every other run, ``--version`` included, this costs a dict lookup. It runs after the
    exit code is final and while stop signals are remembered, not raised, so the write is never cut.
    """
    metrics = sys.modules.get("usenetsync_cli.metrics")
    if metrics is not None:
        metrics.finish(code, started)  # type: ignore[attr-defined]


INTERRUPTED = "interrupted at a safe point"
TERMINATED = "stopped by SIGTERM at a safe point"


def _run(args: list[str]) -> tuple[int, UsenetSyncError | str | None]:
    """Run the command tree: (exit code, the error to report or None when already reported)."""
    _tune_allocator()
    if "--help" in args or "-h" in args:
        rich_help_without_markdown()  # also for main() called in-process, which skips entry's preload
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
        if isinstance(e, click_exc.UsageError) and type(e).__name__ != "NoArgsIsHelpError":
            # One line like every other error, not Click's three (usage, "Try ...", "Error: ...").
            # Its words may quote an argument: a share ID given to the wrong option is a secret (redact).
            where = e.ctx.command_path if e.ctx is not None else "usenetsync"
            return EXIT_USAGE, UsageError(e.format_message(), hint=f"see `{where} --help`")
        shown = io.StringIO()
        e.show(file=shown)  # a bare command group: its help (Click's NoArgsIsHelpError)
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
