"""The configuration reference (``config.CONFIG_KEYS`` and ``config.ENV_VARS``) covers the code, both ways.

Owns: failing the suite when README's and the man page's reference (generated
from those two tuples by scripts/gen_docs.py) would leave out, or list without
a reader, a ``config.toml`` key or a ``USENETSYNC_*`` environment variable:

- every ``USENETSYNC_*`` name written in a string of ``usenetsync_cli/`` is in
  ``ENV_VARS``, and every entry of ``ENV_VARS`` is such a name outside the
  reference itself (``USENETSYNC_TESTONLY_*`` is test instrumentation and
  ``_USENETSYNC_COMPLETE`` the shell completion protocol; both are excluded;
  docstrings only talk about the code, so a name there is no use of it);
- every ``ServerEntry`` field but ``name`` is a ``servers.NAME.<field>`` key,
  and every such key is a field;
- every top-level key ``Config.load`` accepts is a key, and each documented
  top-level key is accepted by ``Config.load``.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from usenetsync_cli import config
from usenetsync_cli.config import CONFIG_KEYS, ENV_VARS, Config, ServerEntry
from usenetsync_cli.errors import ConfigError
from usenetsync_cli.store.home import Home

PACKAGE = Path(config.__file__).resolve().parent
# A name starts at a word boundary: `_USENETSYNC_COMPLETE` is not `USENETSYNC_COMPLETE`.
_ENV_RE = re.compile(r"(?<![A-Za-z0-9_])USENETSYNC_[A-Z0-9_]*[A-Z0-9]")
SERVER_PREFIX = "servers.NAME."
_REFERENCE = {"CONFIG_KEYS", "ENV_VARS"}


def _strings(tree: ast.AST) -> list[str]:
    """Every string constant of a module, leaving out docstrings and the reference tuples themselves."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id in _REFERENCE for t in targets):
            skip.update(id(n) for n in ast.walk(node))
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def env_names_in_code() -> set[str]:
    found: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for s in _strings(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            found.update(_ENV_RE.findall(s))
    return {n for n in found if not n.startswith("USENETSYNC_TESTONLY_")}


def test_every_environment_variable_the_code_names_is_documented_and_back() -> None:
    documented = {v.name for v in ENV_VARS}
    used = env_names_in_code()
    assert used, "the scan found no USENETSYNC_* name at all: it is broken"
    assert "USENETSYNC_HOME" in used
    assert used - documented == set(), "add them to config.ENV_VARS (then run scripts/gen_docs.py)"
    assert documented - used == set(), "ENV_VARS documents variables no code reads"
    assert len(documented) == len(ENV_VARS), "an environment variable is listed twice"


def test_the_scan_sees_names_and_ignores_the_reference_and_the_completion_variable() -> None:
    tree = ast.parse(
        '"""USENETSYNC_IN_DOCSTRING"""\nimport os\nENV_VARS = (Key("USENETSYNC_ONLY_DOCUMENTED", "", "", ""),)\n'
        'os.environ.get("USENETSYNC_READ_HERE")\nX = f"set _USENETSYNC_COMPLETE or USENETSYNC_IN_HELP=1"\n'
        'def f() -> None:\n    """USENETSYNC_IN_DOCSTRING_TOO"""\n    return "USENETSYNC_RETURNED"\n'
    )
    names = {m for s in _strings(tree) for m in _ENV_RE.findall(s)}
    assert names == {"USENETSYNC_READ_HERE", "USENETSYNC_IN_HELP", "USENETSYNC_RETURNED"}


def test_every_server_field_is_a_servers_key_and_back() -> None:
    fields = {f.name for f in dataclasses.fields(ServerEntry)} - {"name"}
    keys = [k.name.removeprefix(SERVER_PREFIX) for k in CONFIG_KEYS if k.name.startswith(SERVER_PREFIX)]
    assert fields - set(keys) == set(), "add them to config.CONFIG_KEYS (then run scripts/gen_docs.py)"
    assert set(keys) - fields == set(), "CONFIG_KEYS documents server keys ServerEntry does not take"
    assert len(keys) == len(set(keys)), "a server key is listed twice"


def _accepted_top_level_keys() -> set[str]:
    """The set literal ``Config.load`` checks the file's top-level keys against."""
    source = Path(config.__file__).read_text(encoding="utf-8")
    cls = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == "Config")
    load = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "load")
    sets = [n for n in ast.walk(load) if isinstance(n, ast.Set)
            and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in n.elts)]
    assert len(sets) == 1, "Config.load no longer checks top-level keys against one set literal: update this test"
    return {e.value for e in sets[0].elts}  # type: ignore[attr-defined]


def _top_level_keys() -> list[str]:
    return [k.name for k in CONFIG_KEYS if "." not in k.name]


def test_every_top_level_key_config_load_accepts_is_documented_and_back() -> None:
    accepted = _accepted_top_level_keys()
    assert "servers" in accepted
    assert accepted - {"servers"} == set(_top_level_keys())
    # Every non-table field of Config is a top-level key of the file.
    assert {f.name for f in dataclasses.fields(Config)} - {"servers"} == set(_top_level_keys())


_SAMPLE = {"path": "/tmp/x", "string": "x", "integer": 1, "boolean": True, "seconds": 1.0}


@pytest.mark.parametrize("name", _top_level_keys())
def test_documented_top_level_key_loads(tmp_path: Path, name: str) -> None:
    home = Home(config_dir=tmp_path, state_dir=tmp_path / "state")
    key = next(k for k in CONFIG_KEYS if k.name == name)
    value = _SAMPLE[key.type]
    home.config_file.write_text(f"{name} = {value!r}\n".replace("True", "true").replace("'", '"'), encoding="utf-8")
    Config.load(home)  # raises ConfigError for a key it does not accept


def test_an_undocumented_top_level_key_is_refused(tmp_path: Path) -> None:
    home = Home(config_dir=tmp_path, state_dir=tmp_path / "state")
    home.config_file.write_text('not_a_key = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'not_a_key'"):
        Config.load(home)
