"""Tests of the token bucket and rate parsing."""

from __future__ import annotations

import pytest

from usenetsync_cli.errors import UsageError
from usenetsync_cli.pipeline.ratelimit import TokenBucket, parse_rate


@pytest.mark.parametrize(
    ("text", "rate"),
    [("20M", 20_000_000), ("512K", 512_000), ("1.5G", 1_500_000_000), ("10MiB/s", 10 * 1024**2), ("800", 800),
     ("2mb", 2_000_000)],
)
def test_parse_rate(text: str, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("bad", ["", "fast", "-1M", "1T", "M"])
def test_parse_rate_rejects(bad: str) -> None:
    with pytest.raises(UsageError, match="cannot read rate"):
        parse_rate(bad)


def test_bucket_paces_to_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(d: float) -> None:
        slept.append(d)
        now[0] += d

    b = TokenBucket(1_000_000, burst=1_000_000, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        b.acquire(800_000)  # 8 MB at 1 MB/s, starting with a full 1 MB bucket
    assert now[0] == pytest.approx(7.0, rel=0.01)


def test_bucket_does_not_burst_after_idle() -> None:
    now = [0.0]
    b = TokenBucket(1_000_000, burst=1_000_000, clock=lambda: now[0], sleep=lambda d: now.__setitem__(0, now[0] + d))
    now[0] = 100.0  # long idle: the bucket holds at most one burst
    start = now[0]
    for _ in range(5):
        b.acquire(1_000_000)
    assert now[0] - start == pytest.approx(4.0, rel=0.01)
