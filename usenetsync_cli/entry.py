"""The process entry point (console script and ``python -m``): Ctrl-C and SIGTERM at any moment.

Owns: the signal policy of a usenetsync process, in three phases.

1. Starting (``main()`` until the command tree is imported, ~0.4 s of
   importing typer, rich, cryptography and our modules): nothing is written
   yet, so SIGINT and SIGTERM end the process at once with one line and 130
   or 143. A handler that exits is used rather than catching
   ``KeyboardInterrupt``: an exception raised inside an import can be
   swallowed or re-raised as another error by the module being imported.
2. Running (inside ``cli.app.main()``, installed by ``stop_signals()``): both
   raise ``KeyboardInterrupt`` in the main thread, so every safe-stop path of
   the commands runs (batches committed, jobs marked, connections closed);
   SIGTERM is remembered so ``main()`` reports ``TerminatedError`` (143)
   rather than ``InterruptedByUser`` (130).
3. Reporting (after the command, while the result is printed): a signal is
   remembered but no longer raises, so the one line being written is the
   only one.

Invariants:
- This module imports nothing heavy and installs nothing on import: the
  in-process test harness imports ``cli.app``, which imports this module, and
  must keep pytest's own handlers outside ``main()``.
- A handler is never installed over ``SIG_IGN``: a run started with SIGINT
  ignored (``nohup``, ``cmd &`` in a script) keeps ignoring it.
- ``KeyboardInterrupt`` is never raised inside a weakref callback or a
  ``__del__``: Python prints such an exception as "Exception ignored" and
  carries on, so the stop would be lost. There the stop is re-delivered by a
  10 ms SIGALRM timer instead, when SIGALRM is free (always in the CLI
  process; not when pytest-timeout holds it for the in-process tests).
- The exit codes and the line's words are the family's (``errors.py``, a
  small module imported only after the starting handlers are in place).
- A traceback (only under ``USENETSYNC_DEBUG=1``) is printed through
  ``errors.redact``, like every other line: no password or share ID in it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_RETRY_S = 0.01
# Before errors.py is imported (a few microseconds) the words are these; a
# test checks they match the family.
_FALLBACK = {
    signal.SIGINT: (130, "interrupted while starting; nothing was done", "run the command again"),
    signal.SIGTERM: (143, "stopped by SIGTERM while starting; nothing was done", "run the command again"),
}


def starting_line(signum: int) -> tuple[int, str]:
    """Exit code and stderr line for a stop signal that arrives while the process starts."""
    code, message, hint = _FALLBACK[signal.Signals(signum)]
    # errors.py may be half-imported right now: look, never assume.
    errors = sys.modules.get("usenetsync_cli.errors")
    cls = getattr(errors, "TerminatedError" if signum == signal.SIGTERM else "InterruptedByUser", None)
    code = getattr(cls, "exit_code", code)
    return code, f"usenetsync: error: {message} (hint: {hint})\n"


def _exit_at_once(signum: int, frame: FrameType | None) -> None:
    code, line = starting_line(signum)
    try:
        os.write(2, line.encode())
    except OSError:
        pass  # stderr closed: the exit code still says it
    os._exit(code)


def _install(handler: Any) -> dict[int, Any]:
    """Install ``handler`` for SIGINT and SIGTERM (not over SIG_IGN); returns what was there."""
    old: dict[int, Any] = {}
    for sig in _STOP_SIGNALS:
        current = signal.getsignal(sig)
        old[sig] = current
        if current is not signal.SIG_IGN:
            signal.signal(sig, handler)
    return old


def _restore(old: dict[int, Any]) -> None:
    for sig, handler in old.items():
        if handler is not None:  # None: set from C, cannot be put back from Python
            signal.signal(sig, handler)


def _in_unraisable_callback(frame: FrameType | None) -> bool:
    """Is Python running a weakref callback or a finalizer, where an exception is printed and dropped?"""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__":
            return True
        name = code.co_filename
        if name.endswith(("weakref.py", "_weakrefset.py")):
            return True
        if name == "<frozen importlib._bootstrap>" and code.co_name == "cb":  # module-lock weakref callback
            return True
        frame = frame.f_back
    return False


class StopSignals:
    """What the running phase saw: whether SIGTERM (or SIGINT) asked the process to stop."""

    def __init__(self) -> None:
        self.terminated = False
        self.interrupted = False
        self.raising = True
        self.can_defer = False  # SIGALRM is ours: a stop can be put off out of a callback

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGTERM:
            self.terminated = True
        elif signum == signal.SIGINT:
            self.interrupted = True
        # else SIGALRM: a stop deferred out of a callback, due again
        if not self.raising or not (self.terminated or self.interrupted):
            return
        if self.can_defer and _in_unraisable_callback(frame):
            signal.setitimer(signal.ITIMER_REAL, _RETRY_S)
            return
        raise KeyboardInterrupt

    def quiet(self) -> None:
        """Reporting phase: remember further signals, raise no more."""
        self.raising = False


@contextmanager
def stop_signals() -> Iterator[StopSignals]:
    """The running phase: SIGINT and SIGTERM raise ``KeyboardInterrupt``; restored on exit."""
    global _current
    stop = _current = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal.signal works only in the main thread; signals go there anyway
        return
    old = _install(stop.handle)
    if signal.getsignal(signal.SIGALRM) is signal.SIG_DFL and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0):
        old[signal.SIGALRM] = signal.signal(signal.SIGALRM, stop.handle)
        stop.can_defer = True
    try:
        yield stop
    finally:
        if stop.can_defer:
            signal.setitimer(signal.ITIMER_REAL, 0)
        _restore(old)


_current: StopSignals | None = None  # the run of this process, for main()'s last-resort report


def main() -> None:
    """Console-script entry: one line and 130/143 for a stop signal at any moment."""
    if sys.argv[1:] == ["--version"]:  # scripts ask this often: answered before Typer is imported (~0.1 s)
        from usenetsync_cli import __version__

        sys.stdout.write(f"usenetsync {__version__}\n")
        sys.exit(0)
    try:
        if threading.current_thread() is threading.main_thread():
            _install(_exit_at_once)
        from usenetsync_cli import errors  # tiny; gives starting_line the family's codes
        from usenetsync_cli.cli import app

        app.preload(sys.argv[1:])  # the command's own module, imported under the starting handler too
    except KeyboardInterrupt:  # SIGINT in the few bytecodes before the handler was in place
        code, line = starting_line(signal.SIGINT)
        sys.stderr.write(line)
        sys.exit(code)
    try:
        app.main()
    except KeyboardInterrupt:
        # Only in the few bytecodes between the command's end and app.main()
        # turning signals quiet: the command's outcome is unknown, so report the stop.
        terminated = _current is not None and _current.terminated
        cls = errors.TerminatedError if terminated else errors.InterruptedByUser
        sys.stderr.write(f"usenetsync: error: {'stopped by SIGTERM' if terminated else 'interrupted'}"
                         f" (hint: {cls.hint})\n")
        sys.exit(cls.exit_code)
    except Exception:  # noqa: BLE001 - only USENETSYNC_DEBUG=1 lets a bug out of app.main(): its traceback
        # Python's own printer would show the exception's words as they are; they may hold a secret.
        import traceback

        sys.stderr.write(errors.redact(traceback.format_exc()))
        sys.exit(errors.EXIT_INTERNAL)
    finally:
        # CPython 3.8-3.12 remembers a KeyboardInterrupt that ended any string
        # exec (dataclass and namedtuple creation) even when it was caught, and
        # under `python -m` then exits by SIGINT instead of with our code. A
        # string exec that completes clears that flag.
        exec("pass")  # noqa: S102 - a constant; see above
        # Reported: a signal now must not replace the exit code by a death by signal.
        if threading.current_thread() is threading.main_thread():
            signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


if __name__ == "__main__":  # pragma: no cover - `python -m usenetsync_cli` goes through __main__
    main()
