"""core/retention.py: which versions a restic-style keep policy keeps and why."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usenetsync_cli.core.retention import RULES, Decision, decide

Versions = list[tuple[int, int]]
Policy = dict[str, int]


def _ts(y: int, m: int, d: int, hh: int = 12, mm: int = 0, ss: int = 0) -> int:
    return int(datetime(y, m, d, hh, mm, ss, tzinfo=UTC).timestamp())


# --- hand-picked cases ----------------------------------------------------------------------------------------


def test_keep_daily_keeps_the_newest_of_each_day() -> None:
    versions = [
        (1, _ts(2024, 5, 1, 8)),
        (2, _ts(2024, 5, 1, 20)),  # newest of May 1
        (3, _ts(2024, 5, 1, 12)),
        (4, _ts(2024, 5, 2, 9)),
        (5, _ts(2024, 5, 2, 9)),  # same second as 4: the higher version is the newer
        (6, _ts(2024, 5, 4, 7)),  # May 3 has no version and uses up nothing
    ]
    d = decide(versions, daily=3)
    assert d.keep == [2, 5, 6]
    assert d.forget == [1, 3, 4]
    assert d.reasons == {2: ["daily"], 5: ["daily"], 6: ["daily"]}
    assert decide(versions, daily=2).keep == [5, 6]
    assert decide(versions, daily=99).keep == [2, 5, 6]


def test_keep_last_one_keeps_exactly_the_newest() -> None:
    t = _ts(2024, 1, 1)
    assert decide([(7, t), (9, t), (8, t - 1)], last=1) == Decision(keep=[9], forget=[7, 8], reasons={9: ["last"]})
    # Order is by creation time, not by version number.
    assert decide([(10, t - 100), (3, t), (4, t - 50)], last=1).keep == [3]
    assert decide([(10, t - 100), (3, t), (4, t - 50)], last=2).keep == [3, 4]


def test_keep_weekly_uses_iso_weeks_across_the_year_boundary() -> None:
    versions = [
        (1, _ts(2020, 12, 27)),  # Sunday, 2020-W52
        (2, _ts(2020, 12, 31)),  # 2020-W53 (2020 has 53 ISO weeks)
        (3, _ts(2021, 1, 1)),  # still 2020-W53
        (4, _ts(2021, 1, 3)),  # Sunday, still 2020-W53: newest of that week
        (5, _ts(2021, 1, 4)),  # Monday, 2021-W01
    ]
    assert decide(versions, weekly=3).keep == [1, 4, 5]
    assert decide(versions, weekly=2).keep == [4, 5]
    # Monday 2024-12-30 is in 2025-W01, the week of 2025-01-02.
    later = [(1, _ts(2024, 12, 29)), (2, _ts(2024, 12, 30)), (3, _ts(2025, 1, 2))]
    assert decide(later, weekly=1).keep == [3]
    assert decide(later, weekly=2).keep == [1, 3]


def test_keep_monthly_skips_empty_months() -> None:
    versions = [
        (1, _ts(2023, 12, 31, 23, 59, 59)),
        (2, _ts(2024, 1, 3)),
        (3, _ts(2024, 1, 31, 23, 59, 59)),  # newest of January
        (4, _ts(2024, 3, 1, 0, 0, 0)),  # February has none
    ]
    assert decide(versions, monthly=2).keep == [3, 4]
    assert decide(versions, monthly=3).keep == [1, 3, 4]


def test_days_are_utc_calendar_days() -> None:
    midnight = _ts(2024, 6, 2, 0, 0, 0)
    versions = [(1, midnight - 1), (2, midnight), (3, -1), (4, 0)]  # 3 is 1969-12-31, 4 is 1970-01-01
    assert decide(versions, daily=4).keep == [1, 2, 3, 4]
    assert decide([(1, midnight), (2, midnight + 86_399)], daily=2).keep == [2]


def test_each_rule_counts_on_its_own_and_names_itself() -> None:
    versions = [(1, _ts(2024, 4, 30)), (2, _ts(2024, 5, 1, 8)), (3, _ts(2024, 5, 1, 9))]
    # 3 is kept by "last" and also uses up the single daily: restic keeps nothing more.
    assert decide(versions, last=1, daily=1).keep == [3]
    d = decide(versions, last=1, daily=2, monthly=2)
    assert d.keep == [1, 3]
    assert d.reasons == {3: ["last", "daily", "monthly"], 1: ["daily", "monthly"]}


def test_empty_input_keeps_and_forgets_nothing() -> None:
    assert decide([], last=3) == Decision(keep=[], forget=[], reasons={})
    assert decide(iter(()), daily=1, weekly=1, monthly=1) == Decision(keep=[], forget=[], reasons={})


@pytest.mark.parametrize(
    "policy",
    [{}, {"last": 0, "daily": 0, "weekly": 0, "monthly": 0}, {"last": None, "daily": None}],
)
def test_a_policy_without_rules_is_refused(policy: dict[str, int | None]) -> None:
    with pytest.raises(ValueError, match="no retention rule"):
        decide([(1, 0)], **policy)
    with pytest.raises(ValueError, match="no retention rule"):
        decide([], **policy)


@pytest.mark.parametrize("rule", RULES)
def test_a_negative_count_is_refused(rule: str) -> None:
    with pytest.raises(ValueError, match=f"keep-{rule} must be 0 or more"):
        decide([(1, 0)], **{"last": 1, rule: -1})


def test_a_repeated_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version 4 is listed twice"):
        decide([(4, 10), (5, 20), (4, 30)], last=5)


def test_none_counts_as_zero() -> None:
    versions = [(1, _ts(2024, 1, 1)), (2, _ts(2024, 1, 2))]
    assert decide(versions, last=1, daily=None, weekly=None, monthly=None).keep == [2]


# --- properties -----------------------------------------------------------------------------------------------

# From 2020-12-20: the span covers ISO 2020-W53, year and month turns. Days and seconds are drawn from small sets
# too, so several versions share a day, a week or even the exact second (the tie-break must decide).
_BASE = _ts(2020, 12, 20, 0)
_created = st.builds(
    lambda day, sec: _BASE + day * 86_400 + sec,
    st.one_of(st.integers(0, 14), st.integers(0, 1200)),
    st.one_of(st.sampled_from([0, 1, 43_200, 86_399]), st.integers(0, 86_399)),
)
_versions = st.lists(st.tuples(st.integers(0, 10_000), _created), max_size=30, unique_by=lambda vc: vc[0])
_n = st.integers(0, 8)
_policies = st.fixed_dictionaries({rule: _n for rule in RULES}).filter(lambda p: any(p.values()))


def _newest_first(versions: Versions) -> Versions:
    return sorted(versions, key=lambda vc: (-vc[1], -vc[0]))


def _utc_day(created: int) -> date:
    return datetime.fromtimestamp(created, tz=UTC).date()


_MODEL_KEYS: dict[str, Callable[[date], Hashable]] = {
    "daily": lambda d: d,
    "weekly": lambda d: d.isocalendar()[:2],
    "monthly": lambda d: (d.year, d.month),
}


def _model(versions: Versions, rule: str, n: int) -> set[int]:
    """What one rule keeps, computed without walking: group, rank groups by their newest member, take n."""
    if rule == "last":
        return {v for v, _ in _newest_first(versions)[:n]}
    groups: dict[Hashable, list[tuple[int, int]]] = defaultdict(list)
    for v, c in versions:
        groups[_MODEL_KEYS[rule](_utc_day(c))].append((c, v))
    newest_of_each = sorted((max(members) for members in groups.values()), reverse=True)
    return {v for _, v in newest_of_each[:n]}


@settings(max_examples=200)
@given(_versions, _policies)
def test_every_rule_keeps_what_the_model_says(versions: Versions, policy: Policy) -> None:
    d = decide(versions, **policy)
    for rule in RULES:
        assert {v for v, why in d.reasons.items() if rule in why} == _model(versions, rule, policy[rule]), rule
    assert set(d.keep) == set().union(*(_model(versions, r, policy[r]) for r in RULES))


@settings(max_examples=200)
@given(_versions, _policies)
def test_keep_and_forget_partition_the_input(versions: Versions, policy: Policy) -> None:
    d = decide(versions, **policy)
    assert set(d.keep) | set(d.forget) == {v for v, _ in versions}
    assert len(d.keep) + len(d.forget) == len(versions)  # disjoint, no repeats
    assert d.keep == sorted(d.keep) and d.forget == sorted(d.forget)
    assert list(d.reasons) == d.keep
    for why in d.reasons.values():
        assert why and why == [r for r in RULES if r in why]  # non-empty, no repeats, in RULES order


@settings(max_examples=200)
@given(_versions, st.integers(1, 40))
def test_keep_last_keeps_the_n_newest(versions: Versions, n: int) -> None:
    d = decide(versions, last=n)
    assert len(d.keep) == min(n, len(versions))
    assert d.keep == sorted(v for v, _ in _newest_first(versions)[:n])


@settings(max_examples=200)
@given(_versions.filter(bool), _policies)
def test_the_newest_version_is_always_kept(versions: Versions, policy: Policy) -> None:
    newest = _newest_first(versions)[0][0]
    assert newest in decide(versions, **policy).keep


@settings(max_examples=200)
@given(_versions, _policies, st.sampled_from(RULES), st.integers(1, 5))
def test_raising_a_count_never_forgets_a_kept_version(versions: Versions, policy: Policy, rule: str, more: int) -> None:
    before = decide(versions, **policy)
    after = decide(versions, **{**policy, rule: policy[rule] + more})
    assert set(before.keep) <= set(after.keep)


@settings(max_examples=200)
@given(_versions, _policies)
def test_applying_the_policy_to_what_it_kept_keeps_all_of_it(versions: Versions, policy: Policy) -> None:
    first = decide(versions, **policy)
    kept = [vc for vc in versions if vc[0] in set(first.keep)]
    again = decide(kept, **policy)
    assert again.keep == first.keep and again.forget == []
    for v in first.keep:  # every reason survives (a version may gain "last" once older ones are gone)
        assert set(first.reasons[v]) <= set(again.reasons[v])


@settings(max_examples=200)
@given(_versions.flatmap(lambda vs: st.tuples(st.just(vs), st.permutations(vs))), _policies)
def test_input_order_does_not_matter(pair: tuple[Versions, Versions], policy: Policy) -> None:
    versions, shuffled = pair
    assert decide(shuffled, **policy) == decide(versions, **policy)
