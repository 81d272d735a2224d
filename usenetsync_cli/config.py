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
- There is no default newsgroup: a server a provider does not carry a group
  for would refuse every article (441). A posting server names its groups.
- ``CONFIG_KEYS`` and ``ENV_VARS`` list every key of ``config.toml`` and every
  ``USENETSYNC_*`` variable with its meaning; README's and the man page's
  reference tables are generated from them (a test checks they cover the code).

Layout::

    metrics_file = "/var/lib/prometheus/node-exporter/usenetsync.prom"  # optional

    [servers.NAME]
    host = "news.example.com"
    ...
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

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ROLES = ("post", "read", "check", "fill")


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
    groups: list[str] = field(default_factory=list)
    post: bool = True
    ca_file: str | None = None
    insecure: bool = False
    timeout: float = 30.0
    # post: posted to and read from; read: read from only (``--no-post``); check: never posted to, the
    # post-check and `verify` STAT there instead (another provider confirms); fill: downloads ask it only
    # for articles the others lack. None (a config written before roles): from ``post``.
    role: str | None = None

    def __post_init__(self) -> None:
        if self.role is None:
            self.role = "post" if self.post else "read"
        if self.role not in ROLES:
            raise ConfigError(
                f"server {self.name!r}: unknown role {self.role!r}", hint=f"use one of {', '.join(ROLES)}"
            )
        self.post = self.role == "post"  # the old key stays consistent for older readers

    def to_toml(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "host": self.host, "port": self.port, "tls": self.tls, "connections": self.connections,
            "groups": list(self.groups), "post": self.post, "role": self.role, "insecure": self.insecure,
            "timeout": self.timeout,
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


@dataclass(frozen=True)
class Key:
    """One documented setting: a ``config.toml`` key or an environment variable."""

    name: str
    type: str
    default: str
    doc: str


CONFIG_KEYS: tuple[Key, ...] = (
    Key("metrics_file", "path", "unset",
        "Write a Prometheus text-format file here at the end of every run (node_exporter's textfile "
        "collector); `--metrics-file` overrides it."),
    Key("servers.NAME.host", "string", "required", "Host name or address of the news server."),
    Key("servers.NAME.port", "integer", "119 (563 with tls)", "TCP port."),
    Key("servers.NAME.tls", "boolean", "false", "Implicit TLS; the certificate is verified."),
    Key("servers.NAME.user", "string", "unset", "User name for AUTHINFO."),
    Key("servers.NAME.password_file", "path", "unset",
        "Read the password from this file (mode 0600) at each run."),
    Key("servers.NAME.password_env", "string", "unset",
        "Read the password from this environment variable at each run."),
    Key("servers.NAME.connections", "integer", "4", "Simultaneous connections."),
    Key("servers.NAME.groups", "list of strings", "required to post",
        "Newsgroups to post to; `server test` checks each exists and allows posting."),
    Key("servers.NAME.post", "boolean", "true", "Use this server for posting (kept equal to role = post)."),
    Key("servers.NAME.role", "string", "post (read if post = false)",
        "post: posted to and read from; read: read from only; check: never posted to, upload's post-check and"
        " `verify` STAT there instead of on the posting server; fill: downloads ask it only for articles the"
        " other servers lack."),
    Key("servers.NAME.ca_file", "path", "unset", "Trust this CA or self-signed certificate (PEM)."),
    Key("servers.NAME.insecure", "boolean", "false", "Do not verify the TLS certificate (not recommended)."),
    Key("servers.NAME.timeout", "seconds", "30", "Seconds to wait for any answer."),
)

ENV_VARS: tuple[Key, ...] = (
    Key("USENETSYNC_HOME", "path", "per-user config/data folders",
        "Keep everything (config, state, keys, lock) in this one folder."),
    Key("USENETSYNC_PASSPHRASE_FILE", "path", "unset",
        "Read the identity key's passphrase from this file (mode 0600) instead of prompting."),
    Key("USENETSYNC_SHARE_ID", "string", "unset", "The share ID for `download` (keeps it off the command line)."),
    Key("USENETSYNC_METRICS_FILE", "path", "unset", "Like `--metrics-file`; the option wins over it."),
    Key("USENETSYNC_DEBUG", "flag", "unset", "Print a traceback for an unexpected error."),
    Key("USENETSYNC_NO_NOGIL_GCM", "flag", "unset",
        "Seal with the cryptography package instead of OpenSSL called without the GIL (slower; a fallback)."),
)


@dataclass
class Config:
    servers: dict[str, ServerEntry] = field(default_factory=dict)
    metrics_file: str | None = None

    @classmethod
    def load(cls, home: Home) -> Config:
        path = home.config_file
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read {path}: {e}", hint="fix or remove the file") from None
        unknown = sorted(set(raw) - {"servers", "metrics_file"})
        if unknown:
            raise ConfigError(f"{path}: unknown key {unknown[0]!r}", hint="see CONFIGURATION in `man usenetsync`")
        metrics_file = raw.get("metrics_file")
        if metrics_file is not None and not isinstance(metrics_file, str):
            raise ConfigError(f"{path}: metrics_file must be a path string")
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
        return cls(servers=servers, metrics_file=metrics_file)

    def save(self, home: Home) -> None:
        home.ensure()
        top = {"metrics_file": self.metrics_file} if self.metrics_file is not None else {}
        text = dump_toml({"servers": {n: s.to_toml() for n, s in sorted(self.servers.items())}}, top=top)
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
        """The servers to post to; each names its groups (checked here, before anything is posted)."""
        if only:
            found = [self.get(only)]
            if found[0].role in ("check", "fill"):
                raise ConfigError(
                    f"server {only!r} is a {found[0].role} server and is never posted to",
                    hint="name a posting server with --server, or leave --server out",
                )
        else:
            found = [s for s in self.servers.values() if s.post]
        if not found:
            raise ConfigError(
                "no posting server is configured",
                hint="add one with `usenetsync server add NAME --host HOST --group alt.binaries.backup`",
            )
        for s in found:
            if not s.groups:  # a config from before there was no default group
                raise ConfigError(
                    f"server {s.name!r} names no newsgroup to post to",
                    hint=f"add one it carries: `usenetsync server add {s.name} --host {s.host} --group GROUP"
                    " --replace` (then `usenetsync server test`)",
                )
        return found

    def check_servers(self) -> list[ServerEntry]:
        """Servers with role ``check``: the post-check and `verify` STAT there (never posted to)."""
        return [s for s in self.servers.values() if s.role == "check"]

    def stat_server(self, only: str | None = None) -> ServerEntry:
        """Where `verify` STATs: ``only``, else the first check server, else the first reading server."""
        if only:
            return self.get(only)
        checks = self.check_servers()
        if checks:
            return checks[0]
        return self.reading_servers()[0]

    def reading_servers(self, only: str | None = None) -> list[ServerEntry]:
        """Servers to download from, in priority order: post and read servers (check servers when there
        is none), then fill servers, which the fetch engine asks only for articles the others lack."""
        if only:
            return [self.get(only)]
        if not self.servers:
            raise ConfigError(
                "no server is configured", hint="add one with `usenetsync server add NAME --host HOST`"
            )
        first = [s for s in self.servers.values() if s.role in ("post", "read")] or self.check_servers()
        return first + [s for s in self.servers.values() if s.role == "fill"]


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


def dump_toml(data: dict[str, Any], *, top: dict[str, Any] | None = None) -> str:
    """Enough TOML for our levels: top-level scalars, then [servers.NAME] tables of scalars and lists."""
    lines = ["# usenetsync configuration. Passwords are never stored here.", ""]
    if top:
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in top.items())
        lines.append("")
    for section, tables in data.items():
        for name, table in tables.items():
            key = name if re.match(r"^[A-Za-z0-9_-]+$", name) else _toml_value(name)
            lines.append(f"[{section}.{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
            lines.append("")
    return "\n".join(lines)
