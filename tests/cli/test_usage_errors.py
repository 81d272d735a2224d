"""Every usage mistake exits 2 with one line and a hint — our own checks and Click's parser alike (issue 14).

README's exit-code table says 2 is "command-line usage error"; before, most of
these exited 4 ("configuration error"), and Click's own errors printed three
lines (usage, "Try ...", "Error: ...").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import run
from usenetsync_cli.errors import EXIT_CODES, UsageError


def _mistakes(tmp: Path) -> list[tuple[str, ...]]:
    pw = tmp / "pw"
    pw.write_text("secret\n")
    pw.chmod(0o600)
    return [
        ("upload",),  # no path
        ("download", "us1pABCDEFGHIJKLMNOPQRSTUVWXYZ234567ABCDEFGHIJ"),  # an ID but no DEST
        ("share", "create", str(tmp)),  # no kind
        ("share", "create", str(tmp), "--public", "--to", "abc"),  # two kinds
        ("upload", str(tmp), "--limit-rate", "fast"),
        ("verify", "--max-duration", "soon"),
        ("server", "add", "x", "--host", "127.0.0.1", "--password-file", str(pw)),  # a password, no --user
        ("forget", "Notes"),  # no --keep-* rule
        ("restore", "Notes", str(tmp / "out"), "--version", "2", "--at", "2026-11-30"),
        ("uplaod", str(tmp)),  # Click: no such command
        ("upload", str(tmp), "--bogus"),  # Click: no such option
        ("upload", str(tmp), "--connections", "zero"),  # Click: bad value
        ("status", "extra"),  # Click: unexpected argument
    ]


def test_every_usage_mistake_is_exit_2_one_line_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in _mistakes(tmp_path):
        r = run(capsys, *argv)
        lines = r.err.strip().splitlines()
        assert r.code == 2, (argv, r.code, r.err)
        assert len(lines) == 1 and lines[0].startswith("usenetsync: error: ") and "(hint: " in lines[0], (argv, r.err)
        assert r.out == "", argv


def test_click_usage_error_in_json_mode_is_a_typed_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "upload", str(tmp_path), "--bogus", "--json")
    (obj,) = r.json_lines()
    assert r.code == 2 and obj["type"] == "error" and obj["exit_code"] == 2 and obj["error"] == "UsageError"
    assert "--bogus" in obj["message"] and "usenetsync upload --help" in obj["hint"]


def test_a_share_id_in_a_usage_error_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "us1pABCDEFGHIJKLMNOPQRSTUVWXYZ234567ABCDEFGHIJKLMNOPQRSTUV"
    r = run(capsys, "status", secret)  # a share ID given where none is taken: Click quotes it
    assert r.code == 2 and secret not in r.err


def test_bare_group_still_shows_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "server")
    assert r.code == 2 and "add" in r.err + r.out and "Usage" in r.err + r.out


def test_exit_code_2_is_owned_by_usage_error() -> None:
    assert UsageError.exit_code == 2 and EXIT_CODES[2].startswith("command-line usage error")
