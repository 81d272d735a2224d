"""Choosing what to back up: gitignore-style exclude patterns and the folder's selection rules.

Owns: parsing patterns (``compile_patterns``), deciding whether one path is
excluded (``Matcher``), reading an exclude file's lines (``parse_lines``),
recognising a cache directory's tag (``is_cachedir_tag``), the mount-point
test of ``--one-file-system`` (``crosses_device``), and the JSON form in
which a folder's rules are stored (``Selection``).

Pattern rules (as gitignore(5)): paths are relative to the indexed folder,
``/``-separated bytes. A pattern without a ``/`` (a trailing one aside)
matches a name at any depth; one with a ``/`` at the start or in the middle
is anchored at the folder root. A trailing ``/`` matches directories only.
``*`` and ``?`` never match ``/``; ``[...]`` is a class (``!`` or ``^``
negates it); a leading ``**/`` matches any number of directories, a
trailing ``/**`` everything inside, ``/**/`` zero or more directories.
``!pattern`` re-includes what an earlier pattern excluded; the last pattern
that matches decides. A path below an excluded directory stays excluded
(the scanner never enters that directory, so it cannot see what to
re-include): ``Matcher.excluded`` says so by checking every parent.
``\\`` escapes the next character (``\\!``, ``\\#``, ``\\ ``).

Invariants: everything here is pure (no I/O); a pattern that cannot be
compiled raises ``UsageError`` (exit 2) when given, so a stored rule set
always compiles again.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from usenetsync_cli.errors import UsageError

# The first 43 bytes a valid CACHEDIR.TAG must start with (https://bford.info/cachedir/).
CACHEDIR_TAG = b"CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def is_cachedir_tag(head: bytes) -> bool:
    """Whether the first bytes of a ``CACHEDIR.TAG`` file carry the signature (a wrong one tags nothing)."""
    return head.startswith(CACHEDIR_SIGNATURE)


def crosses_device(root_dev: int, dev: int) -> bool:
    """``--one-file-system``: a directory on another device than the folder root is a mount point."""
    return dev != root_dev


@dataclass(frozen=True)
class Rule:
    pattern: str
    regex: re.Pattern[bytes]
    negate: bool
    dir_only: bool


def _bad(pattern: str, why: str) -> UsageError:
    return UsageError(f"bad exclude pattern {pattern!r}: {why}",
                      hint="patterns are gitignore-style, e.g. '*.tmp', '/build', 'cache/', '**/node_modules'")


def _class(body: str, pattern: str) -> str:
    """A ``[...]`` body (without brackets) as a regex class that never matches ``/``."""
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    if "[:" in body:
        raise _bad(pattern, "[:class:] names are not supported")
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(re.escape(body[i + 1]))
            i += 2
            continue
        # '-' is a range only between two other characters; elsewhere it is literal.
        is_range = c == "-" and 0 < i < len(body) - 1 and "-" not in (body[i - 1], body[i + 1])
        out.append(c if is_range else re.escape(c))
        i += 1
    return "[" + ("^/" if negate else "") + "".join(out) + "]"


def _component(part: str, pattern: str) -> str:
    """One ``/``-free piece of a pattern as a regex."""
    out = []
    i, n = 0, len(part)
    while i < n:
        c = part[i]
        if c == "\\":
            if i + 1 >= n:
                raise _bad(pattern, "ends with an unescaped backslash")
            out.append(re.escape(part[i + 1]))
            i += 2
        elif c == "*":
            while i < n and part[i] == "*":  # '**' inside a name is a plain '*'
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = i + 1
            if j < n and part[j] in "!^":
                j += 1
            if j < n and part[j] == "]":  # a ']' first in the class is literal
                j += 1
            while j < n and part[j] != "]":
                j += 2 if part[j] == "\\" else 1
            if j >= n:
                raise _bad(pattern, "unterminated [ class")
            out.append(_class(part[i + 1 : j], pattern))
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _strip_trailing_spaces(p: str) -> str:
    """Trailing spaces are dropped unless escaped with a backslash (gitignore)."""
    while p.endswith(" ") and not p.endswith("\\ "):
        p = p[:-1]
    return p


def compile_pattern(pattern: str) -> Rule:
    """One gitignore-style pattern as a ``Rule``; ``UsageError`` if it cannot match anything sensible."""
    if "\0" in pattern:
        raise _bad(pattern, "contains a NUL byte")
    p = _strip_trailing_spaces(pattern)
    negate = p.startswith("!")
    if negate:
        p = p[1:]
    dir_only = p.endswith("/") and not p.endswith("\\/")
    p = p.rstrip("/") if dir_only else p
    anchored = "/" in p
    p = p.lstrip("/")
    if not p:
        raise _bad(pattern, "empty (it would name the folder itself)")
    parts = p.split("/")
    if any(not part for part in parts):
        raise _bad(pattern, "empty path component ('//')")
    rx = "" if anchored else "(?:.*/)?"
    last = len(parts) - 1
    for i, part in enumerate(parts):
        if part == "**":
            if i == last:
                rx += ".*" if i == 0 else "[^/].*"  # 'a/**': everything inside a, not a itself
            else:
                rx += "(?:.*/)?"  # zero or more directories
            continue
        rx += _component(part, pattern)
        if i != last:
            rx += "/"
    try:
        regex = re.compile(os.fsencode(rx), re.DOTALL)
    except re.error as e:
        raise _bad(pattern, e.msg) from None
    return Rule(pattern, regex, negate, dir_only)


def compile_patterns(patterns: Iterable[str]) -> list[Rule]:
    return [compile_pattern(p) for p in patterns]


def parse_lines(text: str) -> list[str]:
    """An exclude file's patterns: one per line; blank lines and lines starting with ``#`` are skipped."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        out.append(line.rstrip("\r"))
    return out


class Matcher:
    """Decides exclusion for paths relative to the folder root (bytes, ``/``-separated, no leading ``/``)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def matches(self, rel: bytes, is_dir: bool) -> bool:
        """This path's own verdict, parents not considered: the last matching rule decides.

        The scanner asks this only for paths whose parents it entered, i.e.
        were not excluded, so there it equals ``excluded``."""
        verdict = False
        for rule in self.rules:
            if (is_dir or not rule.dir_only) and verdict == rule.negate and rule.regex.fullmatch(rel):
                verdict = not rule.negate
        return verdict

    def excluded(self, rel: bytes, is_dir: bool) -> bool:
        """Whether ``rel`` is left out: it, or any directory above it, is excluded."""
        parts = rel.split(b"/")
        for i in range(1, len(parts)):
            if self.matches(b"/".join(parts[:i]), True):
                return True
        return self.matches(rel, is_dir)


@dataclass(frozen=True)
class Selection:
    """A folder's stored rules: what ``index`` leaves out. Empty: everything is indexed."""

    exclude: tuple[str, ...] = ()
    exclude_caches: bool = False
    one_file_system: bool = False
    matcher: Matcher = field(default_factory=lambda: Matcher([]), compare=False, repr=False)

    @classmethod
    def make(cls, exclude: Sequence[str] = (), *, exclude_caches: bool = False,
             one_file_system: bool = False) -> Selection:
        """Validated rules (``UsageError`` for a bad pattern)."""
        return cls(tuple(exclude), exclude_caches, one_file_system, Matcher(compile_patterns(exclude)))

    @property
    def empty(self) -> bool:
        return not (self.exclude or self.exclude_caches or self.one_file_system)

    def to_dict(self) -> dict[str, Any]:
        return {"exclude": list(self.exclude), "exclude_caches": self.exclude_caches,
                "one_file_system": self.one_file_system}

    def to_json(self) -> str | None:
        return None if self.empty else json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | None) -> Selection:
        if not text:
            return cls()
        d = json.loads(text)
        return cls.make(d.get("exclude", ()), exclude_caches=bool(d.get("exclude_caches")),
                        one_file_system=bool(d.get("one_file_system")))

    def describe(self) -> str:
        """One line for ``status``."""
        if self.empty:
            return "-"
        parts = [f"--exclude {p!r}" for p in self.exclude]
        if self.exclude_caches:
            parts.append("--exclude-caches")
        if self.one_file_system:
            parts.append("--one-file-system")
        return " ".join(parts)
