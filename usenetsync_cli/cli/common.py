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


class Output:
    """stdout carries data, stderr carries messages for people."""

    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.out = Console(highlight=False, soft_wrap=True)

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
    """Resolve the home, take the lock if the command writes, open the databases."""
    home = Home.resolve().ensure()
    if lock:
        with HomeLock(home.lock_path, wait=lock_wait):
            with State.open(home) as state:
                yield state
    else:
        with State.open(home) as state:
            yield state


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
