"""What every command shares: output channels, options, and opening the state.

Owns: the split of stdout (data; with ``--json`` one typed object per line)
from stderr (people), whether progress may be drawn (only on a terminal),
and ``open_state`` — the one place where a command takes the home-wide lock
and opens the databases.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from usenetsync_cli.errors import CorruptStateError
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.lock import HomeLock
from usenetsync_cli.store.state import State

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


_UNCUT = 1 << 16


def _console(*, stderr: bool) -> Console:
    """A console that, off a terminal (a pipe, a log, cron mail), never cuts data at a guessed 80 columns:
    a long path in a table stays whole instead of ending in an ellipsis."""
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, soft_wrap=True, width=_UNCUT)
    return console


class Output:
    """stdout carries data, stderr carries messages for people."""

    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode
        self.err = _console(stderr=True)
        self.out = _console(stderr=False)

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
        if self.json:
            self.err.print(renderable)
        else:
            self.out.print(renderable)


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
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(f"usenetsync: {e.message}")
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


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
