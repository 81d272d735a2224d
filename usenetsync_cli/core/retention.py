"""Retention policy: which backup versions a ``forget`` keeps, restic style.

Owns the decision only; the caller lists the versions, shows the reasons and
does the forgetting. The rules follow restic's ``forget`` ("Removing
snapshots according to a policy"):

- Versions are ordered newest first: ``created`` descending, ties broken by
  ``version`` descending, so the order is total and never depends on input
  order.
- ``last=n`` keeps the n newest versions.
- ``daily``/``weekly``/``monthly=n`` walk that order and keep the newest
  version of each of the n most recent buckets that hold a version: calendar
  day, ISO year-week (``date.isocalendar()[:2]``) and (year, month), all in
  UTC. A bucket without versions does not use up n; a gap of idle weeks still
  leaves n kept versions when there are n buckets to take them from.
- Each rule counts on its own: a version another rule already keeps still
  uses up one of this rule's n, and gets this rule as a reason too.
- A version is kept when any rule keeps it; ``Decision.reasons`` names every
  rule that did (in the order last, daily, weekly, monthly).

Invariants: ``keep`` and ``forget`` partition the input, both sorted
ascending; the newest version is kept by every policy; raising an n never
forgets a version kept before; applying the policy to its own ``keep`` keeps
all of it. A policy with every n zero is refused (``ValueError``) rather than
read as "forget everything", and so is a negative n.

Pure: no I/O and no clock; the creation times come in as Unix seconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

__all__ = ["RULES", "Decision", "decide"]

RULES: tuple[str, ...] = ("last", "daily", "weekly", "monthly")

_EPOCH = dt.date(1970, 1, 1)
_DAY = 86_400


@dataclass(frozen=True)
class Decision:
    """Outcome of a policy: ``keep``/``forget`` ascending, ``reasons`` for each kept version."""

    keep: list[int]
    forget: list[int]
    reasons: dict[int, list[str]]


def _utc_date(created: int) -> dt.date:
    # Unix time has no leap seconds, so a UTC day is exactly 86400 s; floor
    # division also places times before 1970 on the right day.
    return _EPOCH + dt.timedelta(days=created // _DAY)


def _day(d: dt.date) -> Hashable:
    return d


def _week(d: dt.date) -> Hashable:
    # The ISO year, not the calendar year: 2024-12-30 is in week 1 of 2025.
    return tuple(d.isocalendar()[:2])


def _month(d: dt.date) -> Hashable:
    return (d.year, d.month)


_BUCKETS: tuple[tuple[str, Callable[[dt.date], Hashable]], ...] = (
    ("daily", _day),
    ("weekly", _week),
    ("monthly", _month),
)


def _count(name: str, n: int | None) -> int:
    n = 0 if n is None else n
    if n < 0:
        raise ValueError(f"keep-{name} must be 0 or more, got {n}")
    return n


def decide(
    versions: Iterable[tuple[int, int]],
    *,
    last: int | None = 0,
    daily: int | None = 0,
    weekly: int | None = 0,
    monthly: int | None = 0,
) -> Decision:
    """Apply the policy to ``(version, created)`` pairs; see the module docstring.

    Raises ``ValueError`` when every n is zero/None, when an n is negative,
    or when a version number repeats.
    """
    counts = {
        "last": _count("last", last),
        "daily": _count("daily", daily),
        "weekly": _count("weekly", weekly),
        "monthly": _count("monthly", monthly),
    }
    if not any(counts.values()):
        raise ValueError("no retention rule given")

    items = list(versions)
    seen: set[int] = set()
    for version, _created in items:
        if version in seen:
            raise ValueError(f"version {version} is listed twice")
        seen.add(version)
    newest_first = sorted(items, key=lambda vc: (vc[1], vc[0]), reverse=True)

    reasons: dict[int, list[str]] = {}
    for version, _created in newest_first[: counts["last"]]:
        reasons.setdefault(version, []).append("last")

    for name, bucket_of in _BUCKETS:
        left = counts[name]
        previous: Hashable = None
        for version, created in newest_first:
            if left == 0:
                break
            bucket = bucket_of(_utc_date(created))
            # Buckets come in descending order, so the first version met in
            # a new bucket is that bucket's newest.
            if bucket != previous:
                reasons.setdefault(version, []).append(name)
                previous = bucket
                left -= 1

    # Rules were applied in RULES order, so each reasons list is already in it.
    keep = sorted(reasons)
    forget = sorted(seen - reasons.keys())
    return Decision(keep=keep, forget=forget, reasons={v: reasons[v] for v in keep})
