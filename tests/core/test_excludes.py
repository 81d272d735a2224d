"""Exclude patterns (core/excludes.py): gitignore semantics, checked against an independent reference.

The reference matches pattern components against path components with
``fnmatch`` and recursion for ``**`` (no regular expressions), so it shares
no code with the module; hypothesis draws patterns and paths over a tiny
alphabet so that matches are frequent.
"""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usenetsync_cli.core.excludes import (
    CACHEDIR_SIGNATURE,
    Matcher,
    Selection,
    compile_pattern,
    compile_patterns,
    crosses_device,
    is_cachedir_tag,
    parse_lines,
)
from usenetsync_cli.errors import UsageError

# --- the reference -----------------------------------------------------------------------------------------


def _ref_parts(pat: list[str], path: list[str], whole_tail: bool) -> bool:
    if not pat:
        return not path
    head, rest = pat[0], pat[1:]
    if head == "**":
        if not rest:  # trailing '**': one or more components (everything inside)
            return len(path) >= 1 if whole_tail else True
        return any(_ref_parts(rest, path[i:], whole_tail) for i in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], head) and _ref_parts(rest, path[1:], whole_tail)


def _ref_rule(pattern: str, path: str, is_dir: bool) -> tuple[bool, bool]:
    """(matches, negated) for one pattern and one path, by the words of gitignore(5)."""
    negate = pattern.startswith("!")
    p = pattern[1:] if negate else pattern
    dir_only = p.endswith("/")
    p = p.rstrip("/")
    if dir_only and not is_dir:
        return False, negate
    parts = path.split("/")
    if "/" not in p:  # a name at any depth
        if p == "**":
            return True, negate
        return fnmatch.fnmatchcase(parts[-1], p.replace("**", "*")), negate
    pat = [c if c == "**" else c.replace("**", "*") for c in p.lstrip("/").split("/")]
    return _ref_parts(pat, parts, pat[0] != "**" or len(pat) > 1), negate


def _ref_excluded(patterns: list[str], path: str, is_dir: bool) -> bool:
    def own(p: str, d: bool) -> bool:
        verdict = False
        for pattern in patterns:
            hit, neg = _ref_rule(pattern, p, d)
            if hit:
                verdict = not neg
        return verdict

    parts = path.split("/")
    return any(own("/".join(parts[:i]), True) for i in range(1, len(parts))) or own(path, is_dir)


# --- strategies ------------------------------------------------------------------------------------------

_NAMES = st.sampled_from(["a", "b", "ab", "a.b", "b.a", "aa"])
_PATHS = st.lists(_NAMES, min_size=1, max_size=5).map("/".join)
_COMPONENTS = st.sampled_from(["a", "b", "*", "?", "*.b", "a*", "[ab]", "[!a]", "**", "a**", "?b"])


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    parts = draw(st.lists(_COMPONENTS, min_size=1, max_size=3))
    body = "/".join(parts)
    if draw(st.booleans()) and len(parts) == 1 and draw(st.booleans()):
        body = "/" + body
    if draw(st.integers(0, 3)) == 0:
        body += "/"
    if draw(st.integers(0, 3)) == 0:
        body = "!" + body
    return body


@settings(max_examples=400, deadline=None)
@given(st.lists(_patterns(), min_size=1, max_size=4), _PATHS, st.booleans())
def test_matches_the_reference(patterns: list[str], path: str, is_dir: bool) -> None:
    m = Matcher(compile_patterns(patterns))
    assert m.excluded(path.encode(), is_dir) == _ref_excluded(patterns, path, is_dir)


@settings(max_examples=300, deadline=None)
@given(st.lists(_patterns(), min_size=1, max_size=4), _PATHS, st.lists(_NAMES, min_size=1, max_size=3), st.booleans())
def test_an_excluded_directory_excludes_everything_under_it(patterns: list[str], d: str, below: list[str],
                                                            is_dir: bool) -> None:
    m = Matcher(compile_patterns(patterns))
    if m.excluded(d.encode(), True):
        assert m.excluded((d + "/" + "/".join(below)).encode(), is_dir)


@settings(max_examples=300, deadline=None)
@given(st.lists(_patterns(), min_size=0, max_size=4), _PATHS, st.booleans())
def test_scanner_verdict_equals_full_verdict_when_parents_are_in(patterns: list[str], path: str, is_dir: bool) -> None:
    """The scanner asks ``matches`` only below directories it entered: there it must agree with ``excluded``."""
    m = Matcher(compile_patterns(patterns))
    parts = path.split("/")
    if not any(m.excluded("/".join(parts[:i]).encode(), True) for i in range(1, len(parts))):
        assert m.matches(path.encode(), is_dir) == m.excluded(path.encode(), is_dir)


@pytest.mark.parametrize(("patterns", "path", "is_dir", "excluded"), [
    (["*.tmp"], "x.tmp", False, True),
    (["*.tmp"], "deep/er/x.tmp", False, True),
    (["*.tmp", "!keep.tmp"], "d/keep.tmp", False, False),
    (["*.tmp", "!keep.tmp", "*.tmp"], "d/keep.tmp", False, True),  # the last match decides
    (["/build"], "build", True, True),
    (["/build"], "src/build", True, False),  # anchored at the folder root
    (["cache/"], "cache", True, True),
    (["cache/"], "cache", False, False),  # directories only
    (["cache/"], "x/cache/f", False, True),  # everything under an excluded directory
    (["**/node_modules"], "a/b/node_modules", True, True),
    (["**/node_modules"], "node_modules", True, True),
    (["docs/**"], "docs", True, False),  # everything inside, not the directory itself
    (["docs/**"], "docs/a/b", False, True),
    (["a/**/z"], "a/z", False, True),
    (["a/**/z"], "a/b/c/z", False, True),
    (["a/*/z"], "a/b/c/z", False, False),  # '*' never crosses '/'
    (["f?o"], "f/o", False, False),
    (["x/", "!x/keep"], "x/keep", False, True),  # no re-include below an excluded directory
    (["\\!bang"], "!bang", False, True),
    (["\\#hash"], "#hash", False, True),
    (["trail  "], "trail", False, True),  # unescaped trailing spaces are dropped
    (["sp\\ "], "sp ", False, True),
    (["[ab]c"], "bc", False, True),
    (["[!ab]c"], "cc", False, True),
    (["[^ab]c"], "ac", False, False),
])
def test_gitignore_cases(patterns: list[str], path: str, is_dir: bool, excluded: bool) -> None:
    assert Matcher(compile_patterns(patterns)).excluded(path.encode(), is_dir) is excluded


def test_names_that_are_not_utf8_match_bytewise() -> None:
    m = Matcher(compile_patterns(["caf\udce9*"]))  # os.fsdecode(b"caf\xe9")
    assert m.excluded(b"d/caf\xe9-1", False) and not m.excluded(b"d/cafe-1", False)


@pytest.mark.parametrize(("bad", "why"), [
    ("", "the folder itself"), ("!", "the folder itself"), ("/", "the folder itself"), ("//", "the folder itself"),
    ("a//b", "empty path component"), ("[z-a]", "bad character range"), ("[abc", "unterminated"),
    ("x\\", "backslash"), ("[]", "unterminated"), ("[!]", "unterminated"), ("[[:alpha:]]", "not supported"),
    ("a\0b", "NUL"),
])
def test_bad_patterns_are_usage_errors(bad: str, why: str) -> None:
    with pytest.raises(UsageError) as e:
        compile_pattern(bad)
    assert e.value.exit_code == 2 and "bad exclude pattern" in str(e.value) and why in str(e.value)


def test_exclude_file_lines() -> None:
    text = "# comment\n\n*.tmp\n  \n\\#literal\n/build\r\n!keep.tmp\n"
    assert parse_lines(text) == ["*.tmp", "\\#literal", "/build", "!keep.tmp"]


def test_cachedir_signature_and_device() -> None:
    assert is_cachedir_tag(CACHEDIR_SIGNATURE + b"\n# This file is a cache directory tag.\n")
    assert not is_cachedir_tag(b"Signature: 8a477f597d28d172789f06886806bc56\n")
    assert not is_cachedir_tag(CACHEDIR_SIGNATURE[:-1])
    assert not is_cachedir_tag(b"")
    assert crosses_device(1, 2) and not crosses_device(7, 7)


def test_selection_round_trips_as_json() -> None:
    sel = Selection.make(["*.tmp", "caf\udce9"], exclude_caches=True, one_file_system=True)
    again = Selection.from_json(sel.to_json())
    assert again == sel and again.matcher.excluded(b"x.tmp", False)
    assert Selection().to_json() is None and Selection.from_json(None).empty
