"""Unit tests of core/manifest.py's path safety and record codec (no I/O, no server).

Owns: evidence for README's "a path in an index that would leave the
destination (``../``, absolute, NUL) is refused" at the function every
reader path goes through (``safe_relpath``), that any byte string survives
``path_str``/``path_bytes`` (paths are bytes, not text), and that
``loads_record`` refuses anything that is not a non-empty JSON array led by
a string.  The record *contents* are not tested here: that format is being
revised.
"""

from __future__ import annotations

import os
import posixpath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usenetsync_cli.core.manifest import (
    UnsafePathError,
    dumps_record,
    loads_record,
    path_bytes,
    path_str,
    safe_relpath,
)
from usenetsync_cli.errors import TamperedError

ROOT = b"/dest/root"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\0",
        b"a\0b",
        b"dir/file\0.txt",
        b"/etc/passwd",
        b"/",
        b"//server/share",
        b"\\evil",
        b"\\\\server\\share",
        b"..",
        b"../x",
        b"../../../../etc/passwd",
        b"a/../../x",
        b"a/b/..",
        b".",
        b"./a",
        b"a/./b",
        b"a//b",
        b"a/",
        b"a/b/",
    ],
)
def test_unsafe_paths_are_refused(raw: bytes) -> None:
    with pytest.raises(UnsafePathError) as ei:
        safe_relpath(raw)
    err = ei.value
    assert isinstance(err, TamperedError) and err.exit_code == 22
    assert "\n" not in str(err) and err.hint  # one line, with a hint


@pytest.mark.parametrize(
    "raw",
    [
        b"a",
        b"a/b/c.txt",
        b"...",
        b"..a",
        b"a..",
        b".hidden",
        b"dir/.hidden/..x",
        b" leading and trailing ",
        b"-rf",
        b"caf\xe9 \xff\xfe.bin",  # latin-1 / not UTF-8
        b"\x01\x1b[31m\x7f",  # control bytes are legal in POSIX names
        b"x" * 255,  # the longest name most file systems take
        b"/".join([b"d" * 200] * 20),  # 4,019 bytes: long paths are the file system's business
    ],
)
def test_harmless_paths_pass_unchanged(raw: bytes) -> None:
    assert safe_relpath(raw) == raw


def test_error_message_of_an_odd_path_stays_one_line() -> None:
    with pytest.raises(UnsafePathError) as ei:
        safe_relpath(b"../line\nbreak\r\x1b[2Jand-escape")
    assert "\n" not in str(ei.value) and "\r" not in str(ei.value) and "\x1b" not in str(ei.value)


_component = st.binary(min_size=1, max_size=40).filter(lambda c: b"/" not in c and b"\0" not in c)


@given(st.lists(_component, min_size=1, max_size=6))
def test_any_accepted_path_stays_inside_the_destination(parts: list[bytes]) -> None:
    raw = b"/".join(parts)
    try:
        ok = safe_relpath(raw)
    except UnsafePathError:
        assert any(p in (b".", b"..") for p in parts) or raw.startswith(b"\\")
        return
    assert ok == raw  # never silently rewritten
    joined = posixpath.normpath(posixpath.join(ROOT, ok))
    assert joined.startswith(ROOT + b"/")


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_every_byte_string_is_refused_or_returned_as_is(raw: bytes) -> None:
    try:
        ok = safe_relpath(raw)
    except UnsafePathError:
        return
    assert ok == raw and b"\0" not in ok and not ok.startswith((b"/", b"\\"))
    assert posixpath.normpath(posixpath.join(ROOT, ok)).startswith(ROOT + b"/")


@given(st.binary(max_size=300))
def test_path_bytes_round_trips_any_bytes(raw: bytes) -> None:
    text = path_str(raw)
    assert isinstance(text, str)
    assert path_bytes(text) == raw
    # ... also through a record line, as the index stores it (ASCII JSON).
    line = dumps_record(["D", text])
    assert line.isascii() and line.endswith(b"\n") and line.count(b"\n") == 1
    assert path_bytes(loads_record(line)[1]) == raw


@given(st.text(alphabet=st.characters(max_codepoint=255), max_size=100))
def test_path_str_round_trips_latin1_text(text: str) -> None:
    assert path_str(path_bytes(text)) == text


@pytest.mark.parametrize("text", ["caf\u00e9\u20ac", "\u0100", "snow\u2603", "\U0001f600"])
def test_path_bytes_refuses_text_that_is_not_bytes(text: str) -> None:
    with pytest.raises(TamperedError, match="not bytes-encoded"):
        path_bytes(text)


def test_path_bytes_matches_the_file_system_encoding_of_odd_names() -> None:
    # A name that is not UTF-8 comes back as the same bytes os.fsencode would give.
    name = b"caf\xe9-\xff.dat"
    assert path_bytes(path_str(name)) == os.fsencode(os.fsdecode(name))


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\n",
        b"not json",
        b"[1, 2",
        b"{\"F\": 1}",
        b"\"F\"",
        b"42",
        b"null",
        b"[]",
        b"[1, \"a\"]",
        b"[null]",
        b"[[\"F\"]]",
        b"[\"F\"" + b"\xff\xfe" + b"]",  # not UTF-8
    ],
)
def test_loads_record_refuses_anything_but_a_list_led_by_a_string(line: bytes) -> None:
    with pytest.raises(TamperedError) as ei:
        loads_record(line)
    assert ei.value.exit_code == 22 and "damaged" in str(ei.value)


@pytest.mark.parametrize("rec", [["T", 3], ["D", "a/b", 493, 1], ["X"], ["H", {"k": [1, 2]}]])
def test_loads_record_returns_well_shaped_records(rec: list[object]) -> None:
    assert loads_record(dumps_record(rec)) == rec
    assert loads_record(dumps_record(rec).rstrip(b"\n")) == rec
