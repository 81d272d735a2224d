"""`usenetsync forget NAME --keep-last N --keep-daily N --keep-weekly N --keep-monthly N`: drop backup versions.

Owns the rendering; the policy is core/retention.py (restic's semantics),
the catalog change is pipeline/backup.py ``sync_catalog`` (read, merge,
mark forgotten, post; a race with another machine is retried). Forgotten
versions leave the catalog for good (every machine's merge drops them);
their articles stay on the server, unreferenced.
"""

from __future__ import annotations

from typing import Annotated

import typer

from usenetsync_cli.cli.backups import ServerOpt, owner, when
from usenetsync_cli.cli.common import JsonOpt, LockWaitOpt, Output, open_state
from usenetsync_cli.cli.share import PassphraseOpt
from usenetsync_cli.core.backup import Catalog
from usenetsync_cli.core.retention import Decision, decide
from usenetsync_cli.errors import UsageError
from usenetsync_cli.pipeline.backup import sync_catalog



def forget(
    name: Annotated[str, typer.Argument(help="The backup's name.", show_default=False)],
    keep_last: Annotated[int, typer.Option("--keep-last", min=0, help="Keep the N newest versions.")] = 0,
    keep_daily: Annotated[int, typer.Option("--keep-daily", min=0, help="Keep the newest version of each of the last N days that have one.")] = 0,
    keep_weekly: Annotated[int, typer.Option("--keep-weekly", min=0, help="… of each of the last N ISO weeks that have one.")] = 0,
    keep_monthly: Annotated[int, typer.Option("--keep-monthly", min=0, help="… of each of the last N months that have one.")] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be forgotten; change nothing.")] = False,
    server: ServerOpt = None,
    passphrase_file: PassphraseOpt = None,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Drop backup versions from your catalog by a retention policy (restic's --keep-* rules).

    A version is kept if any rule keeps it; at least one rule is needed. The
    versions forgotten can no longer be listed or restored; their articles
    stay on the server unreferenced until it expires them.

    Examples:

      usenetsync forget Photos --keep-last 3 --dry-run

      usenetsync forget Photos --keep-daily 7 --keep-weekly 5 --keep-monthly 12
    """
    out = Output(json_out)
    if not (keep_last or keep_daily or keep_weekly or keep_monthly):
        raise UsageError("give at least one --keep-* option", hint="e.g. --keep-last 5; nothing was forgotten")
    who = owner(server, passphrase_file)
    _v, cat = who.catalog()
    entry = cat.find(name)
    policy = dict(last=keep_last, daily=keep_daily, weekly=keep_weekly, monthly=keep_monthly)
    decision = decide([(v.version, v.created) for v in entry.kept()], **policy)
    _render(out, entry.label, {v.version: v.created for v in entry.kept()}, decision)
    if dry_run or not decision.forget:
        out.say("nothing changed" + (" (--dry-run)" if dry_run and decision.forget else ""))
        return
    uid = entry.uid

    def change(merged: Catalog) -> None:
        target = merged.folders[uid]
        # Decided again on the merged catalog: another machine may have added a version meanwhile.
        again = decide([(v.version, v.created) for v in target.kept()], **policy)
        target.forgotten |= set(again.forget)
        target.versions = {k: v for k, v in target.versions.items() if k not in target.forgotten}

    with open_state(lock=True, lock_wait=lock_wait) as state:
        version, _merged, _posted = sync_catalog(state, who.identity, who.spec, change=change)
    out.emit("forget.done", label=entry.label, forgotten=decision.forget, catalog_version=version)
    out.say(f"forgot {len(decision.forget):,} version(s) of {entry.label!r} (catalog version {version})")


def _render(out: Output, label: str, created: dict[int, int], d: Decision) -> None:
    for v in d.keep:
        out.emit("forget.keep", label=label, version=v, created=created[v], reasons=d.reasons.get(v, []))
    for v in d.forget:
        out.emit("forget.remove", label=label, version=v, created=created[v])
    if out.json:
        return
    out.table(f"{label}: keep {len(d.keep)}, forget {len(d.forget)}", ("version", "date", "decision", "reasons"),
              [(str(v), when(created[v]), "keep" if v in d.keep else "forget", ", ".join(d.reasons.get(v, [])))
               for v in sorted(created, reverse=True)])
