"""`usenetsync server add|list|test|remove`: the servers to post to and read from.

Owns: the server entries of ``config.toml`` as the user edits them. Invariants:
- A posting server names its groups (there is no default newsgroup), and
  ``server add`` asks the server whether each exists and allows posting when
  it can log in now; a group it lacks is refused and nothing is saved. When it
  cannot log in now (a password variable unset here, the server down) the
  entry is saved and the user told to run ``server test``.
- Roles (``--role``; ``config.ServerEntry.role``): ``post`` is posted to and
  read from; ``read`` (``--no-post``) only read from; ``check`` is never posted
  to and takes the upload's post-check and ``verify`` STATs; ``fill`` is asked
  by downloads only for articles the other servers lack (pipeline/fetch.py).
- ``server remove`` deletes the password file ``--ask-password`` stored in the
  home's secrets folder, never a user's own ``--password-file``.
"""

from __future__ import annotations

import getpass
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from usenetsync_cli.cli.common import JsonOpt, LockWaitOpt, Output
from usenetsync_cli.config import Config, ServerEntry, check_name, read_secret_file, store_prompted_password
from usenetsync_cli.errors import AuthError, ConfigError, NetworkError, UsageError
from usenetsync_cli.nntp.probe import ProbeResult, probe
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.lock import HomeLock

server_app = typer.Typer(help="Configure news servers (passwords never go into the config file).", no_args_is_help=True)


class Role(str, Enum):
    post = "post"
    read = "read"
    check = "check"
    fill = "fill"


@server_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A short name for the server, e.g. 'main'.")],
    host: Annotated[str, typer.Option("--host", help="Host name or address.")],
    port: Annotated[Optional[int], typer.Option("--port", min=1, max=65535, help="TCP port (default 563 with --tls, else 119).")] = None,
    tls: Annotated[bool, typer.Option("--tls/--no-tls", help="Implicit TLS (usually port 563); certificates are verified.")] = False,
    user: Annotated[Optional[str], typer.Option("--user", help="User name for AUTHINFO.")] = None,
    password_file: Annotated[
        Optional[Path], typer.Option("--password-file", help="Read the password from this file (mode 0600) at each run.")
    ] = None,
    password_env: Annotated[
        Optional[str], typer.Option("--password-env", metavar="VAR", help="Read the password from this environment variable at each run.")
    ] = None,
    ask_password: Annotated[
        bool, typer.Option("--ask-password", help="Prompt for the password and keep it in a 0600 file in the home.")
    ] = False,
    connections: Annotated[int, typer.Option("--connections", min=1, max=200, help="Simultaneous connections.")] = 4,
    group: Annotated[
        Optional[list[str]],
        typer.Option("--group", help="Newsgroup to post to, e.g. alt.binaries.backup (repeatable; required for a posting"
                     " server: there is no default, a server refuses every article for a group it does not carry)."),
    ] = None,
    role: Annotated[
        Optional[Role],
        typer.Option("--role", help="post: posted to and read from (the default); read: read from only (= --no-post);"
                     " check: never posted to, the upload's post-check and `verify` STAT here instead (an article is"
                     " confirmed by another provider); fill: downloads ask it only for articles the others lack."),
    ] = None,
    post: Annotated[Optional[bool], typer.Option("--post/--no-post", help="--no-post is --role read.", show_default=False)] = None,
    ca_file: Annotated[Optional[Path], typer.Option("--ca-file", help="Trust this CA/self-signed certificate (PEM).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Do not verify the TLS certificate (not recommended).")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for any answer.")] = 30.0,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite an existing server of that name.")] = False,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Do not connect now to check the groups (offline setup; run `server test` later).")
    ] = False,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Add a server. The password is read from a file or the environment at run time, never stored in config.

    When it can log in now, the server is asked whether each --group exists and allows posting; a group it
    lacks is refused and nothing is saved.

    Examples:

      usenetsync server add main --host news.example.com --tls --user me --password-file ~/.nntp-pass --group alt.binaries.backup

      usenetsync server add local --host 127.0.0.1 --port 119 --group alt.binaries.test

      usenetsync server add other --host news.other.example --tls --user me --password-env OTHER_PW --role check
    """
    out = Output(json_out)
    check_name(name)
    sources = sum(x is not None and x is not False for x in (password_file, password_env, ask_password or None))
    if sources > 1:
        raise UsageError("give only one of --password-file, --password-env, --ask-password")
    if sources and not user:
        raise UsageError("a password needs a --user")
    if role is not None and post is not None and post != (role is Role.post):
        raise UsageError(f"--role {role.value} and --{'post' if post else 'no-post'} disagree",
                         hint="give only --role (--no-post is --role read)")
    the_role = role.value if role is not None else "read" if post is False else "post"
    if the_role == "post" and not group:
        raise UsageError(
            "a posting server needs --group NEWSGROUP (there is no default)",
            hint="name a group it carries, e.g. `--group alt.binaries.backup`, or add a server only read from"
            " with `--no-post`",
        )
    home = Home.resolve().ensure()
    with HomeLock(home.lock_path, wait=lock_wait):
        cfg = Config.load(home)
        if name in cfg.servers and not replace:
            raise ConfigError(f"a server named {name!r} exists", hint="pass --replace to overwrite it")
        pw_file: str | None = None
        if password_file is not None:
            read_secret_file(password_file, what="password file")  # fail now, not at the first upload
            pw_file = str(password_file.expanduser().absolute())
        elif ask_password:
            pw_file = str(store_prompted_password(home, name, getpass.getpass(f"password for {user}@{host}: ")))
        entry = ServerEntry(
            name=name, host=host, port=port or (563 if tls else 119), tls=tls, user=user, password_file=pw_file,
            password_env=password_env, connections=connections, groups=list(group or []),
            role=the_role, ca_file=str(ca_file.absolute()) if ca_file else None, insecure=insecure, timeout=timeout,
        )
        # Every field is validated now; a password file is read now (above), an environment variable at each run.
        entry.spec(with_password=password_env is None)
        try:
            checked = None if no_check or entry.role != "post" else _check_groups(entry)
        except ConfigError:
            if ask_password and pw_file:  # nothing is saved: not the typed secret either
                Path(pw_file).unlink(missing_ok=True)
            raise
        cfg.servers[name] = entry
        cfg.save(home)
    out.emit("server.added", name=name, groups_checked=checked is not None, **entry.to_toml())
    where = f"{entry.host}:{entry.port}{', TLS' if tls else ''}"
    if checked is not None:
        out.say(f"added server {name} ({where}, role {entry.role}); {checked}")
    else:
        out.say(f"added server {name} ({where}, role {entry.role}); try `usenetsync server test {name}`")


def _check_groups(entry: ServerEntry) -> str | None:
    """Ask the server now whether each group exists and allows posting; ConfigError (nothing saved) if not.

    Returns what was found, or None (after a note on stderr) when it cannot log in now: a password variable
    that is unset here (cron sets it), a server that is down or refuses the login. The entry's own timeout
    bounds every wait.
    """
    if entry.user and entry.password_env and os.environ.get(entry.password_env) is None:
        _note(f"${entry.password_env} is not set now, so the groups were not checked:"
              f" run `usenetsync server test {entry.name}` where it is set")
        return None
    try:
        r = probe(entry.spec(), samples=1)
    except NetworkError as e:  # auth, TLS, refused, timeout: the entry may still be right for later
        _note(f"could not check the groups now ({str(e).splitlines()[0] if str(e) else type(e).__name__}):"
              f" run `usenetsync server test {entry.name}` once the server is reachable")
        return None
    problem = group_problem(entry.name, r)
    if problem is not None:
        raise problem
    return f"{'group' if len(r.groups) == 1 else 'groups'} {', '.join(r.groups)}: posting allowed"


def _note(text: str) -> None:
    sys.stderr.write(f"usenetsync: note: {text}\n")


def group_problem(name: str, r: ProbeResult) -> ConfigError | None:
    """The first configured group the server lacks or does not allow posting to, as `server test` says it."""
    bad = {g: st for g, st in r.groups.items() if st != "posting allowed" and not st.startswith("unknown")}
    if not bad:
        return None
    g, st = next(iter(bad.items()))
    return ConfigError(
        f"server {name}: group {g} is {'not carried' if st == 'MISSING' else st.lower()}"
        + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""),
        hint=f"post to a group it carries: `usenetsync server add {name} --host HOST --group GROUP --replace`",
    )


@server_app.command("list")
def list_(json_out: JsonOpt = False) -> None:
    """List configured servers (no secrets).

    Example:

      usenetsync server list --json
    """
    out = Output(json_out)
    cfg = Config.load(Home.resolve())
    for e in cfg.servers.values():
        out.emit("server", name=e.name, **e.to_toml())
    if out.json:
        return
    if not cfg.servers:
        out.data("no servers configured: add one with `usenetsync server add NAME --host HOST --group GROUP`")
        return
    rows = []
    for e in cfg.servers.values():
        src = f"file {e.password_file}" if e.password_file else f"${e.password_env}" if e.password_env else "-"
        rows.append((e.name, e.role or "post", f"{e.host}:{e.port}", "yes" if e.tls else "no", e.user or "-", src,
                     str(e.connections), ", ".join(e.groups) or "-"))
    # Off a terminal: plain aligned lines, nothing cut (a long host or password path is printed whole).
    out.table("", ("name", "role", "address", "tls", "user", "password from", "conns", "groups"), rows)


@server_app.command("test")
def test(
    name: Annotated[str, typer.Argument(help="The server to test.")],
    json_out: JsonOpt = False,
) -> None:
    """Connect, log in, and report capabilities, whether posting is allowed, and round-trip time.

    Example:

      usenetsync server test main
    """
    out = Output(json_out)
    entry = Config.load(Home.resolve()).get(name)
    spec = entry.spec()
    try:
        r = probe(spec)
    except AuthError as e:  # the default hint sends the user to this very command
        e.hint = (f"check the user name and the password file, then `usenetsync server add {name} --host HOST"
                  " --user USER --password-file FILE --replace`")
        raise
    except NetworkError as e:  # the default hint speaks of --resume, which means nothing here
        e.hint = f"check the host, the port and --tls (implicit TLS is usually port 563) of server {name}, and that it is up"
        raise
    out.emit("server.test", role=entry.role, **r.__dict__)
    if not out.json:
        out.data(f"{r.server} ({r.address}{', TLS' if r.tls else ''}, role {entry.role}): {r.greeting}")
        out.data(f"login: {'ok' if r.authenticated else 'not needed'};"
                 f" posting: {'allowed' if r.posting_allowed else 'NOT allowed'}")
        for g, status in r.groups.items():
            out.data(f"group {g}: {status}")
        out.data(f"connect {r.connect_ms:.1f} ms, round trip {r.rtt_ms:.2f} ms;"
                 f" capabilities: {', '.join(r.capabilities) or '-'}")
    problem = group_problem(name, r)
    if problem is not None:
        raise problem


@server_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The server to remove.")],
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Remove a server from the configuration.

    Example:

      usenetsync server remove old
    """
    home = Home.resolve().ensure()
    with HomeLock(home.lock_path, wait=lock_wait):
        cfg = Config.load(home)
        entry = cfg.get(name)
        del cfg.servers[name]
        cfg.save(home)
        # The secret `--ask-password` stored in the home goes with it; a user's own --password-file stays.
        if entry.password_file and Path(entry.password_file).resolve().parent == home.secrets_dir.resolve():
            Path(entry.password_file).unlink(missing_ok=True)
    out = Output(json_out)
    out.emit("server.removed", name=name)
    out.say(f"removed server {name}")
