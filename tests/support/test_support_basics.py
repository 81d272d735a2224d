"""Tests of the support layer that need no server: env isolation and raw NNTP framing.

Owns: proof that the root conftest's autouse isolation holds for every test,
and that the raw client's dot-stuffing (used to judge the product) is right.

Invariants checked: USENETSYNC_HOME/HOME/XDG_* are fresh per-test temp dirs,
foreign USENETSYNC_* variables never leak in, and stuff/unstuff round-trip.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import isolate_environment
from tests.support.rawnntp import dot_stuff, dot_unstuff, fresh_message_id, make_article

_seen_homes: list[str] = []


@pytest.mark.parametrize("run", [1, 2])
def test_env_is_isolated_and_fresh(run: int, isolated_env: Path) -> None:
    home = Path(os.environ["HOME"])
    ush = Path(os.environ["USENETSYNC_HOME"])
    assert ush == isolated_env and ush.is_dir() and not any(ush.iterdir())
    assert home.is_dir() and ush != home
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        path = Path(os.environ[var])
        assert path.is_dir() and path.is_relative_to(home)
    assert Path("~").expanduser() == home
    assert os.environ["COLUMNS"] == "120" and os.environ["NO_COLOR"] == "1"
    assert sorted(k for k in os.environ if k.startswith("USENETSYNC_")) == [
        "USENETSYNC_HOME", "USENETSYNC_TESTONLY_WEAKEN_KDF"]
    assert str(ush) not in _seen_homes  # a new directory for every test
    _seen_homes.append(str(ush))


def test_foreign_usenetsync_vars_are_removed(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as outer:
        outer.setenv("USENETSYNC_PASSWORD", "leak")
        outer.setenv("USENETSYNC_HOME", "/should/not/leak")
        with pytest.MonkeyPatch.context() as mp:
            isolate_environment(mp, tmp_path / "ush", tmp_path / "home")
            assert "USENETSYNC_PASSWORD" not in os.environ
            assert os.environ["USENETSYNC_HOME"] == str(tmp_path / "ush")
            assert Path(os.environ["XDG_STATE_HOME"]) == tmp_path / "home" / ".local" / "state"
        assert os.environ["USENETSYNC_PASSWORD"] == "leak"  # undone on exit


@given(st.lists(st.sampled_from([b".", b"..", b"a", b".x", b"", b"\r", b" ."]), max_size=12))
def test_dot_stuffing_round_trips(lines: list[bytes]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    wire = dot_stuff(data)
    assert dot_unstuff(wire) == data
    for line in wire.split(b"\r\n")[:-1]:
        assert line != b"."  # no line may look like the terminator
        if line.startswith(b"."):
            assert line.startswith(b"..")


def test_fresh_message_id_and_article() -> None:
    a, b = fresh_message_id("x y/z"), fresh_message_id("x y/z")
    assert a != b and a.startswith("<x-y-z.") and a.endswith("@test.invalid>")
    art = make_article(a, b"body", group="alt.binaries.misc")
    head, _, body = art.partition(b"\r\n\r\n")
    assert b"Message-ID: " + a.encode() in head and b"Newsgroups: alt.binaries.misc" in head
    assert body == b"body\r\n"


def test_inn_fixture_fails_loudly_when_inn_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support import inn as inn_plugin

    script = tmp_path / "inn-up.sh"
    script.write_text("echo 'cannot install inn2' >&2\nexit 3\n")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    monkeypatch.setattr(inn_plugin, "INN_UP_SCRIPT", script)
    monkeypatch.setenv("INN_PORT", str(free_port))
    with pytest.raises(pytest.fail.Exception, match=r"(?s)rc=3.*cannot install inn2"):
        inn_plugin.ensure_inn()
