"""Exponential backoff with jitter for reconnects and retries.

Owns: the delay schedule used after retryable NNTP failures (400, 499, 503,
timeouts, resets, too many connections).

Invariants:
- Pure: no sleeping and no clock. The caller sleeps ``next_delay()`` seconds;
  randomness comes from an injected source so tests are deterministic.
- Never zero: "equal jitter" draws from [d/2, d] with d = min(cap, base *
  factor**n), so even the first retry after a 400 waits at least base/2. That
  is the DESIGN.md §7 rule "never reconnect at once", while the jitter keeps
  many connections from reconnecting in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays of 1, 2, 4 … s (each jittered down to at most half), capped at 60 s."""

    __slots__ = ("base", "cap", "factor", "_rand", "_attempts", "_ceiling")

    def __init__(
        self,
        base: float = 1.0,
        cap: float = 60.0,
        *,
        factor: float = 2.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if base <= 0 or cap < base or factor < 1:
            raise ValueError("Backoff needs 0 < base <= cap and factor >= 1")
        self.base = base
        self.cap = cap
        self.factor = factor
        self._rand = rand
        self._attempts = 0
        self._ceiling = base

    @property
    def attempts(self) -> int:
        """How many delays were handed out since the last ``reset()``."""
        return self._attempts

    def next_delay(self) -> float:
        """The delay before the next attempt, in seconds; grows each call."""
        ceiling = self._ceiling
        # Grow the ceiling by multiplication, not factor**n, so a long outage
        # (thousands of attempts) cannot overflow a float.
        self._ceiling = min(self.cap, ceiling * self.factor)
        self._attempts += 1
        r = min(max(self._rand(), 0.0), 1.0)
        return ceiling / 2 + r * ceiling / 2

    def reset(self) -> None:
        """Start over after a success."""
        self._attempts = 0
        self._ceiling = self.base
