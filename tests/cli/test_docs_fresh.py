"""The generated man page, completion scripts and README tables match the code and work.

Owns: failing the suite when ``man/usenetsync.1``, ``completions/*`` or the
exit-code and configuration tables of ``README.md`` are stale (regenerate with ``python3
scripts/gen_docs.py``), when the man page does not render cleanly, and when a
completion script is not valid shell.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
MAN = REPO / "man" / "usenetsync.1"
README = REPO / "README.md"


def _load_generator() -> ModuleType:
    # scripts/ is not a package; load the file itself so the test checks the
    # very generator that writes the files.
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_docs", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return _load_generator()


def test_generated_files_are_fresh(gen: ModuleType) -> None:
    stale = gen.stale(REPO)
    assert not stale, f"stale generated files {[str(p) for p in stale]}: run `python3 scripts/gen_docs.py`"


def test_generation_is_deterministic(gen: ModuleType) -> None:
    assert gen.render_all() == gen.render_all()


def _exit_section(text: str) -> str:
    return text.split("<!-- exit-codes:begin", 1)[1].split("<!-- exit-codes:end -->", 1)[0]


def test_readme_exit_table_is_fresh_and_complete(gen: ModuleType) -> None:
    from usenetsync_cli.errors import EXIT_CODES, family

    text = README.read_text(encoding="utf-8")
    rows = [ln for ln in _exit_section(text).splitlines() if ln.startswith("| ") and not ln.startswith("| code")]
    assert [int(r.split("|")[1]) for r in rows] == sorted(EXIT_CODES), "run `python3 scripts/gen_docs.py`"
    for cls in family():
        assert f"| {cls.exit_code} | {cls.describes} | `{cls.__name__}` |" in rows, cls.__name__
    assert gen.render_readme(text) == text, "run `python3 scripts/gen_docs.py`"


def test_readme_staleness_is_detected(gen: ModuleType) -> None:
    text = README.read_text(encoding="utf-8")
    row_143 = next(ln for ln in _exit_section(text).splitlines() if ln.startswith("| 143 |"))
    stale = text.replace(row_143 + "\n", "")
    assert gen.render_readme(stale) == text  # the missing row comes back; nothing else changes
    hand = text.replace("## Exit codes", "## Exit codes (edited by hand)")
    assert gen.render_readme(hand) == hand  # text outside the markers is not the generator's


def _config_section(text: str) -> str:
    return text.split("<!-- config-reference:begin", 1)[1].split("<!-- config-reference:end -->", 1)[0]


def test_readme_config_table_is_fresh_and_complete(gen: ModuleType) -> None:
    from usenetsync_cli.config import CONFIG_KEYS, ENV_VARS

    text = README.read_text(encoding="utf-8")
    rows = [ln for ln in _config_section(text).splitlines() if ln.startswith("| `")]
    names = [r.split("|")[1].strip().strip("`") for r in rows]
    assert names == [k.name for k in (*CONFIG_KEYS, *ENV_VARS)], "run `python3 scripts/gen_docs.py`"
    for key in CONFIG_KEYS:
        assert any(r.startswith(f"| `{key.name}` | `config.toml` |") and key.doc.replace("|", "\\|") in r
                   for r in rows), key.name
    for var in ENV_VARS:
        assert any(r.startswith(f"| `{var.name}` | environment |") and var.doc.replace("|", "\\|") in r
                   for r in rows), var.name
    assert gen.render_readme(text) == text, "run `python3 scripts/gen_docs.py`"


def test_readme_config_staleness_is_detected(gen: ModuleType) -> None:
    text = README.read_text(encoding="utf-8")
    row = next(ln for ln in _config_section(text).splitlines() if ln.startswith("| `USENETSYNC_HOME` |"))
    stale = text.replace(row + "\n", "")
    assert gen.render_readme(stale) == text  # the missing row comes back; nothing else changes
    hand = text.replace("## Configuration reference", "## Configuration reference (edited by hand)")
    assert gen.render_readme(hand) == hand


def test_man_page_structure(gen: ModuleType) -> None:
    from usenetsync_cli import __version__
    from usenetsync_cli.cli.app import cli
    from usenetsync_cli.errors import EXIT_CODES

    text = MAN.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert any(ln.startswith(".TH USENETSYNC 1 ") for ln in lines)
    assert f"usenetsync {__version__}" in text
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES"):
        assert f".SH {section}" in lines, section
    for node in list(gen.walk(cli()))[1:]:
        assert f".SS {gen.esc(node.title)}" in lines, node.title
    exit_block = text.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    for code, describes in EXIT_CODES.items():
        assert f"\\fB{code}\\fR" in exit_block, code
        assert gen.esc(describes) in exit_block, code
    from usenetsync_cli.config import CONFIG_KEYS, ENV_VARS

    assert ".SH CONFIGURATION" in lines
    config_block = text.split(".SH CONFIGURATION", 1)[1].split(".SH ", 1)[0]
    for key in CONFIG_KEYS:
        assert f"{gen.bold(key.name)} (" in config_block, key.name
    env_block = text.split(".SH ENVIRONMENT", 1)[1].split(".SH ", 1)[0]
    for var in ENV_VARS:
        assert f"{gen.bold(var.name)} (" in env_block, var.name
    assert not any(ord(c) > 127 for c in text), "non-ASCII must be escaped for groff without preconv"


def test_man_page_renders_with_groff_without_warnings() -> None:
    proc = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_man_page_renders_with_man() -> None:
    from usenetsync_cli.cli.app import cli

    gen = _load_generator()
    env = {**os.environ, "MANWIDTH": "100", "MAN_KEEP_FORMATTING": "0", "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(["man", "-l", str(MAN)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # Overstrike (x BS x) can leak through when man thinks it may format.
    out = re.sub(r".\x08", "", proc.stdout)
    assert "NAME" in out and "EXIT STATUS" in out
    for node in list(gen.walk(cli()))[1:]:
        assert node.title in out, node.title


@pytest.mark.parametrize(
    ("shell", "args", "rel"),
    [
        ("bash", ["-n"], "completions/usenetsync.bash"),
        ("zsh", ["-n"], "completions/_usenetsync"),
        ("fish", ["--no-execute"], "completions/usenetsync.fish"),
    ],
)
def test_completion_script_is_valid_shell(shell: str, args: list[str], rel: str) -> None:
    exe = shutil.which(shell)
    assert exe is not None, f"{shell} is missing: scripts/setup.sh installs it"
    proc = subprocess.run([exe, *args, str(REPO / rel)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_completion_scripts_use_the_runtime_protocol() -> None:
    # The scripts and the runtime must agree on the variable and the
    # instruction words, or completion silently offers nothing.
    bash = (REPO / "completions/usenetsync.bash").read_text()
    zsh = (REPO / "completions/_usenetsync").read_text()
    fish = (REPO / "completions/usenetsync.fish").read_text()
    assert "_USENETSYNC_COMPLETE=complete_bash" in bash
    assert zsh.startswith("#compdef usenetsync\n"), "compinit needs #compdef on the first line"
    assert "_USENETSYNC_COMPLETE=complete_zsh" in zsh
    assert "_USENETSYNC_COMPLETE=complete_fish" in fish


def test_bash_completion_answers_through_main() -> None:
    env = {
        **os.environ,
        "_USENETSYNC_COMPLETE": "complete_bash",
        "COMP_WORDS": "usenetsync statu",
        "COMP_CWORD": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", "from usenetsync_cli.cli.app import main; main()"],
        capture_output=True, text=True, env=env, cwd=str(REPO), timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["status"], (proc.stdout, proc.stderr)
