"""The user's configuration file (TOML) and the servers it names.

Owns: reading and writing ``config.toml`` and resolving a server entry into
an ``nntp.ServerSpec``, including where its password comes from.

Invariants:
- A password never lands in ``config.toml``. An entry names where to read it:
  ``password_file`` (a path, which must not be readable by group or others)
  or ``password_env`` (the name of an environment variable). A password typed
  at a prompt is stored in ``CONFIG/secrets/NAME`` with mode 0600 and
  referenced as a ``password_file``.
- The file is written atomically (temp file + rename) with mode 0600.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usenetsync_cli.errors import ConfigError, NotFoundError
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.store.home import Home

DEFAULT_GROUP = "alt.binaries.backup"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class ServerEntry:
    name: str
    host: str
    port: int = 119
    tls: bool = False
    user: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    connections: int = 4
    groups: list[str] = field(default_factory=lambda: [DEFAULT_GROUP])
    post: bool = True
    ca_file: str | None = None
    insecure: bool = False
    timeout: float = 30.0

    def to_toml(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "host": self.host, "port": self.port, "tls": self.tls, "connections": self.connections,
            "groups": list(self.groups), "post": self.post, "insecure": self.insecure, "timeout": self.timeout,
        }
        for k in ("user", "password_file", "password_env", "ca_file"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d

    def password(self) -> str | None:
        """Read the password from where the entry says; never from the config itself."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    f"server {self.name!r}: environment variable {self.password_env} is not set",
                    hint=f"export {self.password_env}=… before running, or use --password-file",
                )
            return value
        if self.password_file:
            return read_secret_file(Path(self.password_file), what=f"server {self.name!r} password file")
        return None

    def spec(self, *, with_password: bool = True) -> ServerSpec:
        """The connection settings, validated; ``with_password=False`` checks them without reading the
        password (``server add --password-env VAR``: VAR is read at each run and may be unset now)."""
        return ServerSpec(
            name=self.name, host=self.host, port=self.port, tls=self.tls, user=self.user,
            password=self.password() if self.user and with_password else None, ca_file=self.ca_file,
            insecure=self.insecure,
            connections=self.connections, timeout=self.timeout, groups=tuple(self.groups),
        )


def read_secret_file(path: Path, *, what: str) -> str:
    try:
        st = path.stat()
        data = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{what} {path} is readable by other users", hint=f"run `chmod 600 {path}`"
        )
    return data.rstrip("\r\n")


@dataclass
class Config:
    servers: dict[str, ServerEntry] = field(default_factory=dict)

    @classmethod
    def load(cls, home: Home) -> Config:
        path = home.config_file
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read {path}: {e}", hint="fix or remove the file") from None
        servers = {}
        for name, entry in (raw.get("servers") or {}).items():
            if "password" in entry:
                raise ConfigError(
                    f"{path}: server {name!r} has a plain 'password' key",
                    hint="remove it and use password_file or password_env",
                )
            try:
                servers[name] = ServerEntry(name=name, **entry)
            except TypeError as e:
                raise ConfigError(f"{path}: server {name!r}: {e}") from None
        return cls(servers=servers)

    def save(self, home: Home) -> None:
        home.ensure()
        text = dump_toml({"servers": {n: s.to_toml() for n, s in sorted(self.servers.items())}})
        tmp = home.config_file.with_suffix(".toml.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, home.config_file)

    def get(self, name: str) -> ServerEntry:
        try:
            return self.servers[name]
        except KeyError:
            raise NotFoundError(
                f"no server named {name!r}", hint="list servers with `usenetsync server list`"
            ) from None

    def posting_servers(self, only: str | None = None) -> list[ServerEntry]:
        if only:
            return [self.get(only)]
        found = [s for s in self.servers.values() if s.post]
        if not found:
            raise ConfigError(
                "no posting server is configured",
                hint="add one with `usenetsync server add NAME --host HOST`",
            )
        return found


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ConfigError(f"invalid server name {name!r}", hint="use letters, digits, '.', '_' or '-'")
    return name


def store_prompted_password(home: Home, name: str, password: str) -> Path:
    home.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home.secrets_dir / f"{name}.password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(password + "\n")
    return path


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """Enough TOML for our two levels: [servers.NAME] tables of scalars and lists."""
    lines = ["# usenetsync configuration. Passwords are never stored here.", ""]
    for section, tables in data.items():
        for name, table in tables.items():
            key = name if re.match(r"^[A-Za-z0-9_-]+$", name) else _toml_value(name)
            lines.append(f"[{section}.{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
            lines.append("")
    return "\n".join(lines)
