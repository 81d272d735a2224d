"""Start-up: each command imports only its own module; the root help lists every command as it really is.

The time these buy is measured by ``benchmarks/bench_startup.py`` (never
timed here); what is tested is the mechanism: which modules a fresh process
has imported after a command, and that the root help's one-line summaries,
kept in ``cli.app.COMMANDS`` so the help needs no command module, are the
commands' own words.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import run
from usenetsync_cli.cli import app

_PROBE = """
import json, sys
sys.argv = ["usenetsync", *json.loads(sys.argv[1])]
from usenetsync_cli.entry import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


def _modules_after(args: list[str], home: Path) -> set[str]:
    r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], capture_output=True, text=True,
                       env={**os.environ, "USENETSYNC_HOME": str(home)}, timeout=60)
    line = next(x for x in r.stderr.splitlines() if x.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def test_root_help_summaries_are_the_commands_own(capsys: pytest.CaptureFixture[str]) -> None:
    for name, (_module, _attr, summary) in app.COMMANDS.items():
        cmd = app.load_command(name)
        assert cmd.name == name
        first = inspect.cleandoc(cmd.help or "").split("\n\n")[0].replace("\n", " ").strip()
        assert summary == first, f"cli/app.py COMMANDS[{name!r}] differs from the command's help"
    r = run(capsys, "--help")
    assert r.code == 0
    flat = " ".join(r.out.split())
    for name, (_m, _a, summary) in app.COMMANDS.items():
        assert name in r.out and " ".join(summary.split()[:4]) in flat


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "uplaod")
    assert r.code == 2 and "uplaod" in r.err


def test_version_imports_no_command_tree(tmp_path: Path) -> None:
    mods = _modules_after(["--version"], tmp_path)
    assert "typer" not in mods and "usenetsync_cli.cli.app" not in mods


def test_help_imports_no_command_module_and_no_markdown(tmp_path: Path) -> None:
    mods = _modules_after(["--help"], tmp_path)
    assert "typer.rich_utils" in mods  # it did render the rich help
    ours = {m for m in mods if m.startswith("usenetsync_cli.cli.") and m not in ("usenetsync_cli.cli.app",)}
    assert ours == set()
    assert "markdown_it" not in mods and "pydantic" not in mods


def test_status_imports_only_status(tmp_path: Path) -> None:
    mods = _modules_after(["status"], tmp_path)
    assert "usenetsync_cli.cli.status" in mods
    for heavy in ("usenetsync_cli.cli.upload", "usenetsync_cli.pipeline.upload", "usenetsync_cli.cli.download",
                  "rich.progress", "rich.table", "rich.console", "cryptography", "sabctools", "pydantic"):
        assert heavy not in mods, heavy  # off a terminal status prints plain lines


def test_upload_module_is_imported_while_starting(tmp_path: Path) -> None:
    # The command's module is loaded by entry.main() before the running phase (see test_signals).
    mods = _modules_after(["upload", "--help"], tmp_path)
    assert "usenetsync_cli.cli.upload" in mods and "usenetsync_cli.cli.download" not in mods
