"""Where usenetsync keeps its configuration and state.

Owns: resolving the home (``USENETSYNC_HOME``, else platformdirs' per-user
config and data directories), creating it private (0700), and checking that
it is writable before any command starts to work.

Invariants:
- With ``USENETSYNC_HOME`` set, everything (config, state, lock, keys) lives
  below that one folder; otherwise config goes to the config dir and state to
  the data dir, as platformdirs says for this OS.
- Directories we create are 0700: the state holds folder keys.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from usenetsync_cli.errors import DiskFullError, StateError

APP = "usenetsync"


@dataclass(frozen=True)
class Home:
    """The resolved locations; ``ensure()`` creates them."""

    config_dir: Path
    state_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def catalog_path(self) -> Path:
        return self.state_dir / "catalog.db"

    @property
    def shards_dir(self) -> Path:
        return self.state_dir / "shards"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "lock"

    @property
    def secrets_dir(self) -> Path:
        return self.config_dir / "secrets"

    @classmethod
    def resolve(cls, override: str | os.PathLike[str] | None = None) -> Home:
        root = override or os.environ.get("USENETSYNC_HOME")
        if root:
            base = Path(root).expanduser().absolute()
            return cls(config_dir=base, state_dir=base / "state")
        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP)),
            state_dir=Path(platformdirs.user_data_dir(APP)),
        )

    def ensure(self) -> Home:
        """Create the folders (0700) and prove they are writable."""
        for d in (self.config_dir, self.state_dir, self.shards_dir):
            try:
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as e:
                raise _state_error(e, d) from None
            if not os.access(d, os.W_OK | os.X_OK):
                raise StateError(f"home folder {d} is not writable")
        return self


def _state_error(e: OSError, where: Path) -> StateError:
    if e.errno == errno.ENOSPC:
        return DiskFullError(f"no space left on device while creating {where}")
    return StateError(f"cannot create home folder {where}: {e.strerror}")
