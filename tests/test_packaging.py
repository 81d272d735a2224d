"""The wheel and the sdist carry what users and packagers need, and the installed wheel runs.

Owns: building both from a copy of the checkout (so ``build/`` and
``*.egg-info`` never land in the checkout) and checking that

- the wheel holds the man page and the three completion scripts as data files
  under ``share/`` (pyproject.toml ``[tool.setuptools.data-files]``), byte for
  byte the generated files, and installing it puts them under ``share/`` of
  the install root (where pipx links ``share/man/man1`` pages from) next to a
  console script that answers ``--version``; it is installed with
  ``--target`` into a temporary folder, so the environment running the tests
  is never touched;
- the sdist holds the tests, README, CHANGELOG and the generated docs
  (MANIFEST.in), so the suite runs from an unpacked sdist.

Both are built by calling the backend's PEP 517 hooks (what ``python -m
build`` calls), offline when the installed setuptools meets pyproject.toml's
floor (>= 77); otherwise that setuptools is first fetched from the package
index into a folder of its own, as pip's build isolation would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from usenetsync_cli import __version__

REPO = Path(__file__).resolve().parent.parent
DATA_FILES = {  # where the wheel installs it, under the prefix -> the generated file
    "share/man/man1/usenetsync.1": "man/usenetsync.1",
    "share/bash-completion/completions/usenetsync.bash": "completions/usenetsync.bash",
    "share/zsh/site-functions/_usenetsync": "completions/_usenetsync",
    "share/fish/vendor_completions.d/usenetsync.fish": "completions/usenetsync.fish",
}
SDIST_FILES = [
    "README.md", "CHANGELOG.md", "pyproject.toml", "MANIFEST.in", "tests/conftest.py", "tests/test_packaging.py",
    "tests/support/inn.py", "scripts/setup.sh", "scripts/inn-up.sh", "scripts/gen_docs.py", ".ci/run",
    *DATA_FILES.values(),
]
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                     ".hypothesis")


def _backend_builds_offline() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    major_minor = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
    return major_minor >= (77, 0)  # pyproject.toml's build-system floor (which builds wheels without `wheel`)


def _run(cmd: list[str], *, extra_env: dict[str, str] | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore", **(extra_env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, (cmd, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, sdist) built from a copy of the checkout through the backend's PEP 517 hooks."""
    work = tmp_path_factory.mktemp("packaging")
    src, out = work / "src", work / "dist"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)
    env: dict[str, str] = {}
    if not _backend_builds_offline():
        # What pip's build isolation would do, once for both hooks: the backend pyproject.toml asks for.
        backend = work / "backend"
        _run([sys.executable, "-m", "pip", "install", "-q", "--target", str(backend), "setuptools>=77"])
        env["PYTHONPATH"] = str(backend)
    # The hooks python -m build calls, without needing the build package.
    # (The hooks rewrite sys.argv: read the folder first.)
    _run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; out = sys.argv[1]; "
          "b.build_wheel(out); b.build_sdist(out)", str(out)], cwd=src, extra_env=env)
    (wheel,) = out.glob("usenetsync-*.whl")
    (sdist,) = out.glob("usenetsync-*.tar.gz")
    return wheel, sdist


def test_wheel_holds_the_man_page_and_completions(dist: tuple[Path, Path]) -> None:
    wheel, _ = dist
    data = f"usenetsync-{__version__}.data/data/"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for dest, rel in DATA_FILES.items():
            assert data + dest in names, f"{rel} is not in the wheel (pyproject.toml [tool.setuptools.data-files])"
            assert zf.read(data + dest) == (REPO / rel).read_bytes(), rel
        assert "usenetsync_cli/entry.py" in names
        entry_points = zf.read(f"usenetsync-{__version__}.dist-info/entry_points.txt").decode()
    assert "usenetsync = usenetsync_cli.entry:main" in entry_points


def test_sdist_holds_tests_and_docs(dist: tuple[Path, Path]) -> None:
    _, sdist = dist
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    missing = [f for f in SDIST_FILES if f not in names]
    assert not missing, f"not in the sdist (MANIFEST.in): {missing}"
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_installed_wheel_runs_and_places_the_docs(dist: tuple[Path, Path], tmp_path: Path) -> None:
    wheel, _ = dist
    target = tmp_path / "target"
    # --target, never --prefix: pip would first uninstall the package from the environment running the
    # tests (the developer's editable install). --no-deps: the dependencies are that environment's.
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-warn-script-location", "--target",
          str(target), str(wheel)])
    for dest, rel in DATA_FILES.items():
        assert (target / dest).read_bytes() == (REPO / rel).read_bytes(), dest
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([str(target / "bin" / "usenetsync"), "--version"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"usenetsync {__version__}"
    # It ran the installed copy, not the checkout.
    proc = subprocess.run([sys.executable, "-c", "import usenetsync_cli; print(usenetsync_cli.__file__)"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.stdout.strip().startswith(str(target)), proc.stdout
