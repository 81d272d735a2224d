"""A token bucket shared by all posting connections (``--limit-rate``).

Owns: pacing bytes per second across threads. ``acquire(n)`` blocks until
``n`` bytes may be sent; the bucket holds at most one second of tokens (at
least one article), so a pause never turns into a burst above the cap.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from usenetsync_cli.errors import UsageError

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?)[bB]?(?:/s)?\s*$")


def parse_rate(text: str) -> int:
    """'20M' -> 20,000,000 bytes/s; '512K', '1.5M', '10MiB/s', '0' (= unlimited)."""
    m = _RATE_RE.match(text)
    if not m:
        raise UsageError(f"cannot read rate {text!r}", hint="use e.g. 20M, 512K or 1.5G (bytes per second)")
    value, unit, binary = float(m.group(1)), m.group(2).upper(), m.group(3)
    base = 1024 if binary else 1000
    return int(value * {"": 1, "K": base, "M": base**2, "G": base**3}[unit])


class TokenBucket:
    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate, 1_000_000))
        self.clock = clock
        self.sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self, n: int) -> None:
        """Take ``n`` tokens, sleeping while the bucket is in debt."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n  # may go negative: later callers wait off the debt
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self.sleep(wait)
