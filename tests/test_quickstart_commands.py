"""README's quick-start commands, .ci/run and scripts/setup.sh agree, and setup never touches the system Python.

Owns: failing the suite when CI would run something other than what README
tells a newcomer to run, or when setup.sh goes back to installing into the
system interpreter. (That the commands work is proved by CI running .ci/run
on a fresh machine.)
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETUP = "bash scripts/setup.sh"


def _quickstart_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)\n```", section, flags=re.S)
    return [b.strip() for b in blocks if b.strip().startswith(SETUP + " && ")]


def _ci_commands() -> list[str]:
    lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    demo, tests = _quickstart_commands()
    assert "examples/demo.sh" in demo
    ci = _ci_commands()
    assert ci[-1] == tests.removeprefix(SETUP + " && "), "the last line of .ci/run must be README's test command"
    assert SETUP in ci[:-1], ".ci/run must set the machine up first, as README's command does"


def test_the_commands_use_the_project_venv() -> None:
    demo, tests = _quickstart_commands()
    assert tests == f"{SETUP} && .venv/bin/python -m pytest -q"
    assert ".venv/bin" in demo  # demo.sh calls `usenetsync` by name: the venv's


def test_setup_installs_into_the_venv_not_the_system_python() -> None:
    script = (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")
    code = "\n".join(ln for ln in script.splitlines() if not ln.lstrip().startswith("#"))
    assert "--break-system-packages" not in code
    assert re.search(r'-m venv "\$VENV"', code)
    assert re.search(r'"\$VENV/bin/python" -m pip install .*-e "\$ROOT\[test\]"', code)
    assert not re.search(r"(^|[\s;&|])python3 -m pip install", code), "pip must run from the venv's python"


def test_usenetsync_by_name_is_the_console_script_under_test() -> None:
    # conftest puts the interpreter's bin folder first on PATH: with `.venv/bin/python -m pytest`
    # and no venv activated, `usenetsync` would otherwise be whatever else PATH finds, or nothing.
    import shutil
    import sys

    script = Path(sys.executable).parent / "usenetsync"
    assert script.exists(), f"the package is not installed for {sys.executable}"
    found = shutil.which("usenetsync")
    assert found is not None and Path(found) == script, found
