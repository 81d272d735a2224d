"""Peak resident memory of this test process over a block (psutil, sampled in a thread)."""

from __future__ import annotations

import threading

import psutil


class RssPeak:
    """The highest RSS of this process while the block runs, sampled every 2 ms."""

    def __enter__(self) -> RssPeak:
        self._proc = psutil.Process()
        self.start = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start
