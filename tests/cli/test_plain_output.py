"""Data printed off a terminal (a pipe, a log, cron mail) is never cut and never read as markup.

Owns: the listings drawn as tables on a terminal (`share list`, `backups`,
`backups NAME`, `forget --dry-run`) printing plain aligned lines when stdout is
not a terminal, with long paths whole (no ellipsis at a guessed 80 columns)
and a bracketed name like ``[2019] trip`` as it is (rich would eat it as markup).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import run
from tests.cli.test_backups import Machines, machines, upload  # noqa: F401 - fixture
from tests.cli.test_share_download import Users, make_folder, users  # noqa: F401 - fixture

LONG = "a-folder-name-that-is-long-enough-to-overflow-any-eighty-column-guess-" + "x" * 40


def _whole(text: str, *needles: str) -> None:
    assert "…" not in text, text
    for n in needles:
        assert n in text, (n, text)


def test_share_list_off_a_terminal_prints_whole_paths(users: Users, tmp_path: Path) -> None:
    src = tmp_path / LONG / "[2019] trip"
    make_folder(src)
    assert users.as_("alice", "index", str(src)).code == 0
    assert users.as_("alice", "share", "create", str(src), "--public", "--name", "[2019] trip").code == 0
    r = users.as_("alice", "share", "list")
    assert r.code == 0, r.err
    _whole(r.out, str(src), "[2019] trip", "pending upload")
    header, row = r.out.splitlines()[:2]
    assert header.split() == ["name", "kind", "folder", "version", "files", "size", "state"]
    # Aligned: each column starts where its header starts.
    assert row.index(str(src)) == header.index("folder")


def test_backups_and_forget_off_a_terminal_print_whole_lines(machines: Machines, tmp_path: Path) -> None:
    src = tmp_path / LONG / "[2019] trip"
    make_folder(src)
    upload(machines, "a", src)
    (src / "new.txt").write_bytes(b"v2")
    upload(machines, "a", src)
    r = machines.as_("a", "backups")
    assert r.code == 0, r.err
    _whole(r.out, str(src), "[2019] trip")
    r = machines.as_("a", "backups", "[2019] trip")
    assert r.code == 0, r.err
    _whole(r.out, str(src))
    assert [line.split()[0] for line in r.out.splitlines()[2:]] == ["1", "2"]
    r = machines.as_("a", "forget", "[2019] trip", "--keep-last", "1", "--dry-run")
    assert r.code == 0, r.err
    _whole(r.out, "[2019] trip")
    rows = {line.split()[0]: line for line in r.out.splitlines()[2:]}
    assert "forget" in rows["1"] and "keep" in rows["2"] and rows["2"].split()[-1] == "last", r.out


def _help_pages() -> list[list[str]]:
    from usenetsync_cli.cli.app import COMMANDS, load_command

    pages: list[list[str]] = [[]]
    for name in COMMANDS:
        cmd = load_command(name)
        subs = getattr(cmd, "commands", None)
        pages += [[name, sub] for sub in subs] if subs else [[name]]
    return pages


def test_help_off_a_terminal_never_cuts_a_word(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every --help at the 80 columns rich assumes off a terminal: no word ends in an ellipsis (a long
    one like USENETSYNC_PASSPHRASE_FILE=FILE is folded), only the ones our texts write themselves."""
    monkeypatch.delenv("COLUMNS")  # the suite's 120 would hide the cut
    ours = {"uspk1…", "uspk1q…", "uspk1z…", "us…", "…"}
    pages = _help_pages()
    assert ["keys", "init"] in pages and len(pages) > 20
    for page in pages:
        r = run(capsys, *page, "--help")
        assert r.code == 0, (page, r.err)
        cut = {w.strip("│()[]{},.;:'\"`") for w in r.out.split() if "…" in w} - ours
        assert not cut, (page, cut)
    assert "USENETSYNC_PASSPHRASE_FILE=FILE" in run(capsys, "keys", "init", "--help").out
