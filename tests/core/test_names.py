"""Properties of obfuscated wire names (usenetsync_cli.core.names)."""

from __future__ import annotations

import inspect
import random
import re

from hypothesis import given
from hypothesis import strategies as st

from usenetsync_cli.core.names import WireNames

# RFC 5322 name-addr with an unquoted atom phrase and a dot-atom addr-spec.
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
NAME_ADDR = re.compile(rf"{_ATEXT}+(?: {_ATEXT}+)* <{_DOT_ATOM}@{_DOT_ATOM}>")
PRINTABLE = re.compile(r"[\x20-\x7e]+")
YENC_NAME = re.compile(r"[a-z0-9]{16,32}")

seeds = st.integers(0, 2**64)


@given(seeds)
def test_values_are_well_formed(seed: int) -> None:
    names = WireNames(random.Random(seed))
    for _ in range(5):
        subject, poster, yname = names.subject(), names.poster(), names.yenc_name()
        assert PRINTABLE.fullmatch(subject) and subject == subject.strip()
        assert 5 <= len(subject) <= 80
        assert NAME_ADDR.fullmatch(poster), poster
        assert len(poster) < 120
        assert YENC_NAME.fullmatch(yname), yname


@given(seeds)
def test_deterministic_for_an_injected_source(seed: int) -> None:
    a, b = WireNames(random.Random(seed)), WireNames(random.Random(seed))
    assert [a.subject(), a.poster(), a.yenc_name()] == [b.subject(), b.poster(), b.yenc_name()]


def test_values_are_unrelated_to_each_other() -> None:
    names = WireNames(random.Random(1))
    for _ in range(500):
        subject, poster, yname = names.subject(), names.poster(), names.yenc_name()
        local = poster.split("<")[1].split("@")[0]
        for a, b in ((subject, yname), (subject, local), (yname, local), (subject, poster)):
            assert a.lower() not in b.lower() and b.lower() not in a.lower()


def test_no_input_can_leak_a_real_name() -> None:
    # The generators take no arguments (poster only the article's own Message-ID
    # domain, itself keyed random): nothing about the real file can reach the
    # wire through them.
    for method in (WireNames.subject, WireNames.yenc_name):
        assert list(inspect.signature(method).parameters) == ["self"]
    assert list(inspect.signature(WireNames.poster).parameters) == ["self", "domain"]


def test_poster_uses_the_message_id_domain() -> None:
    names = WireNames(random.Random(3))
    assert names.poster("velorak.net").endswith("@velorak.net>")
    assert "@" in names.poster() and names.poster().endswith(">")


def test_all_shapes_occur_and_repeat_rarely() -> None:
    names = WireNames(random.Random(7))
    subjects = [names.subject() for _ in range(600)]
    assert len(set(subjects)) == 600
    assert any(re.fullmatch(r"[0-9a-f]{32}|[0-9a-f]{40}", s) for s in subjects)
    assert any(" " in s or "." in s or "_" in s for s in subjects)
    assert any(re.fullmatch(r"[A-Za-z0-9]{24,40}", s) and not s.islower() for s in subjects)
    posters = {names.poster() for _ in range(300)}
    assert len(posters) == 300
    assert len({names.yenc_name() for _ in range(300)}) == 300


def test_edge_sources_work_and_differ() -> None:
    system = WireNames()
    assert YENC_NAME.fullmatch(system.yenc_name())
    a, b = WireNames.fresh(), WireNames.fresh()
    assert (a.subject(), a.poster(), a.yenc_name()) != (b.subject(), b.poster(), b.yenc_name())
