"""`usenetsync server add|list|test|remove`: the servers to post to and read from."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from usenetsync_cli.cli.common import JsonOpt, LockWaitOpt, Output
from usenetsync_cli.config import Config, ServerEntry, check_name, read_secret_file, store_prompted_password
from usenetsync_cli.errors import AuthError, ConfigError, NetworkError, UsageError
from usenetsync_cli.nntp.probe import probe
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.lock import HomeLock

server_app = typer.Typer(help="Configure news servers (passwords never go into the config file).", no_args_is_help=True)


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
        Optional[list[str]], typer.Option("--group", help="Newsgroup to post to (repeatable; default alt.binaries.backup).")
    ] = None,
    post: Annotated[bool, typer.Option("--post/--no-post", help="Use this server for posting.")] = True,
    ca_file: Annotated[Optional[Path], typer.Option("--ca-file", help="Trust this CA/self-signed certificate (PEM).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Do not verify the TLS certificate (not recommended).")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for any answer.")] = 30.0,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite an existing server of that name.")] = False,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Add a server. The password is read from a file or the environment at run time, never stored in config.

    Examples:

      usenetsync server add main --host news.example.com --tls --user me --password-file ~/.nntp-pass

      usenetsync server add local --host 127.0.0.1 --port 119 --group alt.binaries.test
    """
    out = Output(json_out)
    check_name(name)
    sources = sum(x is not None and x is not False for x in (password_file, password_env, ask_password or None))
    if sources > 1:
        raise UsageError("give only one of --password-file, --password-env, --ask-password")
    if sources and not user:
        raise UsageError("a password needs a --user")
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
            password_env=password_env, connections=connections, groups=list(group) if group else ServerEntry(name, host).groups,
            post=post, ca_file=str(ca_file.absolute()) if ca_file else None, insecure=insecure, timeout=timeout,
        )
        # Every field is validated now; a password file is read now (above), an environment variable at each run.
        entry.spec(with_password=password_env is None)
        cfg.servers[name] = entry
        cfg.save(home)
    out.emit("server.added", name=name, **entry.to_toml())
    out.say(f"added server {name} ({entry.host}:{entry.port}{', TLS' if tls else ''}); try `usenetsync server test {name}`")


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
        out.data("no servers configured: add one with `usenetsync server add NAME --host HOST`")
        return
    t = Table()
    for col in ("name", "address", "tls", "user", "password from", "conns", "groups", "post"):
        t.add_column(col)
    for e in cfg.servers.values():
        src = f"file {e.password_file}" if e.password_file else f"${e.password_env}" if e.password_env else "-"
        t.add_row(e.name, f"{e.host}:{e.port}", "yes" if e.tls else "no", e.user or "-", src, str(e.connections),
                  ", ".join(e.groups), "yes" if e.post else "no")
    out.data(t)


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
    spec = Config.load(Home.resolve()).get(name).spec()
    try:
        r = probe(spec)
    except AuthError as e:  # the default hint sends the user to this very command
        e.hint = (f"check the user name and the password file, then `usenetsync server add {name} --host HOST"
                  " --user USER --password-file FILE --replace`")
        raise
    except NetworkError as e:  # the default hint speaks of --resume, which means nothing here
        e.hint = f"check the host, the port and --tls (implicit TLS is usually port 563) of server {name}, and that it is up"
        raise
    out.emit("server.test", **r.__dict__)
    if not out.json:
        out.data(f"{r.server} ({r.address}{', TLS' if r.tls else ''}): {r.greeting}")
        out.data(f"login: {'ok' if r.authenticated else 'not needed'};"
                 f" posting: {'allowed' if r.posting_allowed else 'NOT allowed'}")
        for g, status in r.groups.items():
            out.data(f"group {g}: {status}")
        out.data(f"connect {r.connect_ms:.1f} ms, round trip {r.rtt_ms:.2f} ms;"
                 f" capabilities: {', '.join(r.capabilities) or '-'}")
    bad = {g: st for g, st in r.groups.items() if st != "posting allowed" and not st.startswith("unknown")}
    if bad:
        g, st = next(iter(bad.items()))
        raise ConfigError(
            f"server {name}: group {g} is {'not carried' if st == 'MISSING' else st.lower()}"
            + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""),
            hint=f"post to a group it carries: `usenetsync server add {name} --host HOST --group GROUP --replace`",
        )


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
        cfg.get(name)
        del cfg.servers[name]
        cfg.save(home)
    out = Output(json_out)
    out.emit("server.removed", name=name)
    out.say(f"removed server {name}")
