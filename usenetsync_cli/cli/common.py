"""What every command shares: output channels, options, and opening the state.

Owns: the split of stdout (data; with ``--json`` one typed object per line)
from stderr (people), whether progress may be drawn (only on a terminal),
and ``open_state`` — the one place where a command takes the home-wide lock
and opens the databases.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from usenetsync_cli.errors import CorruptStateError
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.lock import HomeLock
from usenetsync_cli.store.state import State

if TYPE_CHECKING:
    from rich.console import Console

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object per line on stdout (for scripts); text goes to stderr.")
]
LockWaitOpt = Annotated[
    float,
    typer.Option(
        "--lock-wait",
        metavar="SECONDS",
        min=0,
        help="If another usenetsync run holds the home, wait up to SECONDS for it instead of failing at once (exit 75).",
    ),
]


def _metrics_option(ctx: typer.Context, value: Optional[Path]) -> Optional[Path]:
    """Read with the command line: from here the run is recorded at its end (``app.main``), whatever the
    command does next (a busy lock, a refused server, Ctrl-C)."""
    if not ctx.resilient_parsing:  # not while a shell completes a word
        from usenetsync_cli import metrics

        metrics.begin(ctx.command_path.partition(" ")[2], os.fspath(value) if value else None)
    return value


MetricsFileOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--metrics-file",
        metavar="PATH",
        callback=_metrics_option,
        show_default=False,
        help="At the end of the run, success or failure, write Prometheus metrics (last run, exit status,"
        " posted bytes, verify results, backup age) to PATH atomically, for node_exporter's textfile"
        " collector. Default: $USENETSYNC_METRICS_FILE, else metrics_file in config.toml.",
    ),
]


_UNCUT = 1 << 16


def _console(*, stderr: bool) -> Console:
    """A console that, off a terminal (a pipe, a log, cron mail), never cuts data at a guessed 80 columns:
    a long path in a table stays whole instead of ending in an ellipsis."""
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, soft_wrap=True, width=_UNCUT)
    return console


class Output:
    """stdout carries data, stderr carries messages for people."""

    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode

    # Built on first use: a command that prints only plain lines never imports rich.console (~30 ms).
    @functools.cached_property
    def err(self) -> Console:
        return _console(stderr=True)

    @functools.cached_property
    def out(self) -> Console:
        return _console(stderr=False)

    @property
    def interactive(self) -> bool:
        """Progress bars only when stderr is a terminal."""
        return self.err.is_terminal

    def emit(self, type_: str, **fields: Any) -> None:
        """One typed JSON object on stdout (only in --json mode)."""
        if self.json:
            sys.stdout.write(json.dumps({"type": type_, **fields}, default=str) + "\n")
            sys.stdout.flush()

    def say(self, text: str) -> None:
        self.err.print(text)

    def data(self, renderable: Any) -> None:
        """Human-readable data: stdout, unless --json (then people's text stays off stdout)."""
        stream = sys.stderr if self.json else sys.stdout
        if isinstance(renderable, str) and not stream.isatty():
            stream.write(renderable + "\n")  # data is never markup: a path like "[2019] trip" prints as it is
        elif self.json:
            self.err.print(renderable)
        else:
            self.out.print(renderable)

    def table(self, title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], *, right: bool = False) -> None:
        """A table of data: drawn with rich on a terminal; off one, plain aligned lines (nothing cut,
        easy to ``grep``/``awk``, and rich's table code is never imported: ~0.1 s of a short command)."""
        stream = sys.stderr if self.json else sys.stdout
        if stream.isatty():
            from rich.table import Table
            from rich.text import Text

            console = self.err if self.json else self.out

            t = Table(title=title or None, title_justify="left")
            for col in columns:
                t.add_column(col, justify="right" if right else "left")
            for row in rows:
                t.add_row(*(Text(c) for c in row))  # data is never markup: "[2019] trip" stays as it is
            console.print(t)
            return
        body = [list(columns), *(list(r) for r in rows)]
        widths = [max(len(r[i]) for r in body) for i in range(len(columns))]
        lines = [title] if title else []
        for r in body:
            cells = [c.rjust(w) if right else c.ljust(w) for c, w in zip(r, widths)]
            lines.append("  ".join(cells).rstrip())
        stream.write("\n".join(lines) + "\n")


@contextmanager
def open_state(*, lock: bool, lock_wait: float = 0.0) -> Iterator[State]:
    """Resolve the home, take the lock if the command writes, open the databases.

    A damaged shard database is offered for repair on a terminal (``state
    repair``, from the folders' backups); elsewhere CorruptStateError names it.
    """
    home = Home.resolve().ensure()
    if lock:
        with HomeLock(home.lock_path, wait=lock_wait):
            with _open_or_repair(home, locked=True) as state:
                yield state
    else:
        with _open_or_repair(home, locked=False) as state:
            yield state


def _open_or_repair(home: Home, *, locked: bool) -> State:
    try:
        return State.open(home)
    except CorruptStateError as e:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise
        Output(False).say(f"usenetsync: {e.message}")
        answer = input("rebuild the damaged shard database(s) from your backups on the server now? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise
        from usenetsync_cli.cli.state import run_repair

        if locked:
            run_repair(Output(False), home, None, None)
        else:
            with HomeLock(home.lock_path):
                run_repair(Output(False), home, None, None)
        return State.open(home)


def count(n: int, word: str, plural: str | None = None) -> str:
    """ "1 file", "2,000 files": a number and its noun, in the right number."""
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
