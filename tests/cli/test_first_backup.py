"""README's "Your first backup" walkthrough, run exactly as written.

Owns: the promise that a newcomer who types the README block in an empty home
(HOME and the per-user folders fresh, no USENETSYNC_HOME) ends with a restored,
byte-identical copy. The block is taken from between the README markers, so a
change to the text is a change to the test; the commands run in bash with
``set -euo pipefail`` against the local INN on 127.0.0.1:119.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.inn import InnServer
from usenetsync_cli.core.phrase import find_phrases

ROOT = Path(__file__).resolve().parents[2]


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- first-backup:begin -->\n```sh\n(.*?)```\n<!-- first-backup:end -->", text, re.S)
    assert m, "README lost its first-backup block"
    return m.group(1)


def test_first_backup_walkthrough_runs_as_written(inn: InnServer, tmp_path: Path) -> None:
    block = walkthrough()
    assert "usenetsync server add local --host 127.0.0.1 " in block and inn.port == 119
    home = tmp_path / "newcomer"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USENETSYNC_", "XDG_"))}
    # The `usenetsync` next to the interpreter running the tests (a venv's or the system's).
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=home, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "restored, byte for byte" in r.stdout
    # The 24 words were shown to the person (stderr), and they are the identity's: `keys restore` takes them.
    shown = [r.stderr[a:b] for a, b in find_phrases(r.stderr)]
    assert len(shown) == 1, r.stderr[-2000:]  # drawn as a numbered grid: compare the words
    again = subprocess.run(["usenetsync", "keys", "phrase"], env=env | {
        "USENETSYNC_PASSPHRASE_FILE": str(home / ".usenetsync-pass")}, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and sorted(again.stdout.split()) == sorted(re.findall(r"[a-z]+", shown[0])), (
        again.stderr, shown)
    assert (home / "Documents-restored" / "notes" / "a.txt").read_text() == "first note\n"
    assert (home / ".config" / "usenetsync" / "config.toml").is_file() or (home / ".local" / "share").is_dir()
    assert "posting allowed" in r.stdout and "alt.binaries.test" in r.stdout
