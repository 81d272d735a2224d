"""`usenetsync status`: the health of the state at a glance."""

from __future__ import annotations

import datetime as dt
from typing import Any

from usenetsync_cli.cli.common import JsonOpt, Output, human_bytes, open_state
from usenetsync_cli.core.excludes import Selection
from usenetsync_cli.store import catalog
from usenetsync_cli.store.report import StatusReport, collect_status


def status(json_out: JsonOpt = False) -> None:
    """Show the home, each shard's size and rows, indexed folders and the last runs.

    Reads only; it takes no lock, so it works while an upload is running.

    Examples:

      usenetsync status

      usenetsync status --json | jq 'select(.type=="status.shard")'
    """
    out = Output(json_out)
    with open_state(lock=False) as state:
        report = collect_status(state)
        selections = {f["folder_id"]: catalog.folder_selection(state.catalog, f["folder_id"], None)
                      for f in report.folders}
    render(out, report, selections)


def _when(ns: int | None) -> str:
    if not ns:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def _backup(f: dict[str, Any]) -> str:
    if not f["backup_version"]:
        return "-"
    return f"v{f['backup_version']}"


def render(out: Output, r: StatusReport, selections: dict[int, Selection] | None = None) -> None:
    """``selections``: each folder's stored index rules (what `index` leaves out), by folder id."""
    selections = selections or {}
    out.emit("status.home", config_dir=r.config_dir, state_dir=r.state_dir, catalog_bytes=r.catalog_bytes)
    for sh in r.shards:
        out.emit("status.shard", **sh)
    for f in r.folders:
        out.emit("status.folder", **f, selection=selections.get(f["folder_id"], Selection()).to_dict())
    for job in r.jobs:
        out.emit("status.job", **job)
    for share in r.shares:
        out.emit("status.share", **share)
    for run in r.runs:
        out.emit("status.run", **run)
    if out.json:
        return
    out.data(f"home: {r.config_dir}  (state: {r.state_dir})")
    total = sum(s["bytes"] for s in r.shards) + r.catalog_bytes
    out.data(f"state size: {human_bytes(total)} (catalog {human_bytes(r.catalog_bytes)})")
    out.table("shards", ("shard", "size", "file rows", "present files", "segments", "verified", "queued", "failed"), (
        (f"{sh['shard']:02d}", human_bytes(sh["bytes"]), f"{sh['file_rows']:,}", f"{sh['present_files']:,}",
         f"{sum(sh['segments'].values()) - sh['segments']['superseded']:,}", f"{sh['segments']['verified']:,}",
         f"{sh['segments']['planned'] + sh['segments']['posted']:,}", f"{sh['segments']['failed']:,}")
        for sh in r.shards), right=True)
    if r.folders:
        out.table("folders", ("id", "path", "files", "size", "dirs", "last indexed"), (
            (str(f["folder_id"]), f["path"], f"{f['files']:,}", human_bytes(f["bytes"]), f"{f['dirs']:,}",
             _when(f["last_indexed_ns"])) for f in r.folders))
        if any(f["backup_version"] for f in r.folders):
            out.table("backups", ("folder", "version", "published", "covers the state as last indexed"), (
                (str(f["folder_id"]), _backup(f), _when(f["backup_published_ns"]),
                 "yes" if f["backup_covered"] else "no: upload to back up the changes") for f in r.folders))
        if any(not sel.empty for sel in selections.values()):
            out.table("left out by index", ("folder", "rules"), (
                (str(f["folder_id"]), selections.get(f["folder_id"], Selection()).describe()) for f in r.folders))
    else:
        out.data("no folders indexed yet: run `usenetsync index PATH`")
    if r.jobs:
        out.table("uploads", ("folder", "state", "segments", "verified", "failed", "MB/s", "updated"), (
            (job["path"], job["state"], f"{(job['summary'] or {}).get('segments', 0):,}",
             f"{(job['summary'] or {}).get('verified', 0):,}", f"{(job['summary'] or {}).get('failed', 0):,}",
             f"{(job['summary'] or {}).get('mb_per_s', 0):.1f}", _when(job["updated_ns"])) for job in r.jobs))
    if r.shares:
        out.table("shares", ("share", "kind", "version", "articles", "present", "at risk", "last verified"), (
            (sh["name"], sh["kind"], str(sh["version"]), f"{sh['articles']:,}", f"{sh['pct_present']:.2f}%",
             f"{sh['at_risk']:,}", _when(sh["last_verified_ns"])) for sh in r.shares))
    if r.runs:
        out.table("last runs", ("run", "command", "started", "took", "status", "result"), (
            (str(run["run_id"]), run["command"], _when(run["started_ns"]), _took(run), run["status"], _result(run))
            for run in r.runs))


def _took(run: dict[str, Any]) -> str:
    return "-" if not run["finished_ns"] else f"{(run['finished_ns'] - run['started_ns']) / 1e9:.1f} s"


def _result(run: dict[str, Any]) -> str:
    s = run.get("summary") or {}
    if run["command"] == "index" and s:
        return f"{s.get('new', 0)} new, {s.get('changed', 0)} changed, {s.get('deleted', 0)} deleted"
    if run["command"] == "upload" and s:
        return f"{s.get('posted_now', 0)} posted, {s.get('verified', 0)}/{s.get('segments', 0)} verified"
    return ""
