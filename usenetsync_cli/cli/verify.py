"""`usenetsync verify [SHARE] [--repair]`: which articles are still there, and bring back the rest."""

from __future__ import annotations

import re
from typing import Annotated, Optional

import typer

from usenetsync_cli import metrics
from usenetsync_cli.cli.common import JsonOpt, LockWaitOpt, MetricsFileOpt, Output, count, open_state
from usenetsync_cli.cli.share import try_publish
from usenetsync_cli.cli.upload import run_backup
from usenetsync_cli.config import Config
from usenetsync_cli.errors import ConfigError, DataLostError, UsageError, UsenetSyncError, VerifyRepairableError
from usenetsync_cli.pipeline.repair import repair_folder
from usenetsync_cli.pipeline.shares import get_share, layout_check, list_shares, needs_republish
from usenetsync_cli.pipeline.verify import VerifyOptions, VerifySummary, verify_folder
from usenetsync_cli.nntp import ServerSpec
from usenetsync_cli.store import catalog, counters
from usenetsync_cli.store.segments import STATE_FAILED, STATE_PLANNED, STATE_POSTED, STATE_VERIFIED
from usenetsync_cli.store.state import State

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


DegradedError = VerifyRepairableError  # old name (the class lives in errors.py)


def parse_duration(text: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise UsageError(f"cannot read duration {text!r}", hint="use e.g. 90s, 10m, 2h, 7d")
    return float(m.group(1)) * _UNIT[m.group(2)]


def verify(
    share: Annotated[Optional[str], typer.Argument(help="The share to check (its name); default: every shared or uploaded folder.")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Re-post missing articles from the unchanged source, else rebuild them from PAR2; publish new share versions.")] = False,
    read_data: Annotated[float, typer.Option("--read-data", min=0, max=100, metavar="PCT", help="Also fetch PCT% of the articles with BODY and check CRC, GCM tag and hash.")] = 0.0,
    max_duration: Annotated[Optional[str], typer.Option("--max-duration", help="Stop after this long (e.g. 10m); the next run continues with what is least recently checked.")] = None,
    max_age: Annotated[Optional[str], typer.Option("--max-age", help="Skip articles checked more recently than this (e.g. 7d).")] = None,
    connections: Annotated[int, typer.Option("--connections", "-n", min=1, max=16, help="Connections for the STAT sweep.")] = 4,
    server: Annotated[Optional[str], typer.Option("--server", help="Check against this configured server (default: the first).")] = None,
    json_out: JsonOpt = False,
    lock_wait: LockWaitOpt = 0.0,
    metrics_file: MetricsFileOpt = None,
) -> None:
    """STAT every article (pipelined), optionally read a sample, and repair what is missing.

    Results are kept per article, so `--max-duration` sweeps resume where they
    stopped and `--max-age` skips recent checks. Exit status: 0 healthy, 17
    articles missing but repairable, 18 data lost.

    Examples:

      usenetsync verify

      usenetsync verify Photos --read-data 5 --max-duration 10m

      usenetsync verify --repair --json
    """
    out = Output(json_out)
    opts = VerifyOptions(
        connections=connections, read_data_pct=read_data,
        max_duration=parse_duration(max_duration) if max_duration else None,
        max_age=parse_duration(max_age) if max_age else None,
    )
    with open_state(lock=True, lock_wait=lock_wait) as state:
        cfg = Config.load(state.home)
        if not cfg.servers:
            raise ConfigError("no server is configured", hint="add one with `usenetsync server add NAME --host HOST`")
        spec = cfg.stat_server(server).spec()  # a check server when one is configured (another provider)
        if share:
            folder_ids = [get_share(state, share).folder_id]
        else:
            folder_ids = sorted({
                f.folder_id for f in catalog.list_folders(state.catalog)
                if counters.count(state, f.folder_id, STATE_POSTED, STATE_VERIFIED)
            })
        missing_total = lost_total = inconsistent = 0
        for fid in folder_ids:
            folder = catalog.get_folder_by_id(state.catalog, fid)
            assert folder is not None
            metrics.add_folder(folder.display_path)
            s = verify_folder(state, folder, spec, opts)
            _render(out, s)
            inconsistent += len(s.whole_files_failed)
            bad = s.missing + s.damaged
            # An interrupted repair leaves segments planned (attempt+1): finish them too.
            interrupted = counters.count(state, fid, STATE_PLANNED, STATE_FAILED)
            if repair and (bad or interrupted):
                specs = [e.spec() for e in cfg.posting_servers(server)]
                r = repair_folder(state, folder, specs)
                out.emit("verify.repair", **r.to_dict())
                out.say(f"{folder.display_path}: repaired {r.repaired:,} of {count(r.to_repair, 'article')}"
                        f" ({r.rebuilt_from_par2:,} rebuilt from PAR2); {r.unrepairable:,} could not be repaired")
                for problem in r.errors[:5]:
                    out.say(f"[yellow]warning:[/] {problem}")
                lost_total += r.unrepairable
                metrics.verified(folder.display_path, missing=bad, repairable=max(0, bad - r.unrepairable),
                                 lost=r.unrepairable)
            elif bad:
                missing_total += bad
            if not (repair and (bad or interrupted)):  # without --repair every missing article is repairable (17)
                metrics.verified(folder.display_path, missing=bad, repairable=bad, lost=0)
            index_lost = _check_share_indexes(out, state, fid, spec)
            if repair:
                # Message-IDs changed (now, or in a repair that was interrupted before publishing),
                # or the share index's own articles are gone: publish a new version.
                for sh in list_shares(state, fid):
                    if needs_republish(state, sh) or sh.name in index_lost:
                        try_publish(out, state, sh, None, server)
                # The newest backup version named the lost articles: the next one names their new copies.
                if any(needs_republish(state, b) for b in list_shares(state, fid, backups=True)):
                    run_backup(out, state, folder, server, quiet_without_identity=True)
            elif index_lost:
                missing_total += len(index_lost)
            if s.errors:
                raise UsenetSyncError(f"the sweep could not finish: {s.errors[0]}")
    if inconsistent:
        raise DataLostError(
            f"{inconsistent:,} file(s) failed their whole-file hash check: every article read back, but the file"
            " they make is not the one recorded",
            hint="the local state is inconsistent; upload the folder again (`index`, then `upload`) and report it",
        )
    if lost_total:
        raise DataLostError(f"{count(lost_total, 'article')} could not be repaired")
    if missing_total:
        raise DegradedError(f"{count(missing_total, 'article')} {'is' if missing_total == 1 else 'are'} missing or damaged")


def _check_share_indexes(out: Output, state: State, folder_id: int, spec: ServerSpec) -> set[str]:
    """STAT the root and parts of each published share's current index; names of shares with any missing."""
    from usenetsync_cli.core.share_root import part_message_id
    from usenetsync_cli.core.shareid import ShareId, locator_key
    from usenetsync_cli.pipeline.poster import open_connection
    from usenetsync_cli.pipeline.publish_index import known_layout
    from usenetsync_cli.pipeline.share_index import find_root

    lost: set[str] = set()
    shares = [sh for sh in list_shares(state, folder_id) if sh.version]
    if not shares:
        return lost
    conn = open_connection(spec)
    try:
        for sh in shares:
            try:
                # An ID of an older format fails here too: `share update` republishes it under a new one.
                sid = ShareId.parse(sh.share_id)
                lk = locator_key(sid)
                root = find_root(conn, lk, sid.signer, sid.kind, version=sh.version)
            except UsenetSyncError:
                lost.add(sh.name)
                continue
            ids = [part_message_id(lk, p.pack_nonce, 0) for p in root.index.table] + [
                part_message_id(lk, n, 0) for n in known_layout(state.catalog, sh.share_pk)[1]
            ]
            missing = sum(1 for _m, ok in conn.stat_many(ids) if not ok)
            if missing:
                lost.add(sh.name)
            check = layout_check(state, sh)
            out.emit("verify.share_index", name=sh.name, version=sh.version, articles=len(ids) + 1,
                     missing=missing + (sh.name in lost and not missing), layout_check=check)
            if check is not None and not out.json:
                out.data(f"  share {sh.name!r} version {check['version']}: {count(check['files'], 'file')},"
                         f" {check['records']:,} index records, every layout resolved at publication")
    finally:
        conn.close()
    for name in sorted(lost):
        out.say(f"[yellow]share index of {name!r} is incomplete on the server[/]"
                " (`verify --repair` or `share update` publishes it again)")
    return lost


def _render(out: Output, s: VerifySummary) -> None:
    out.emit("verify.summary", **s.to_dict())
    if out.json:
        return
    out.data(
        f"{s.folder}: checked {count(s.checked, 'article')} ({s.rate:,.0f}/s): {s.present:,} present, {s.missing:,} missing,"
        f" {s.damaged:,} damaged" + (f", {s.bodies_read:,} bodies read" if s.bodies_read else "")
        + (f"; {s.unchecked_left:,} left for the next run" if s.unchecked_left else "")
    )
    if s.recovery_checked:
        out.data(f"  recovery data: {s.recovery_checked:,} PAR2 articles, {s.recovery_missing:,} missing")
    if s.whole_files_checked:
        out.data(f"  whole files: {s.whole_files_checked:,} read whole, {len(s.whole_files_failed):,} failed their content hash")
    for f in s.whole_files_failed[:20]:
        out.say(f"[red]content hash mismatch:[/] {f}")
    for f in s.missing_files[:20]:
        out.say(f"[yellow]missing:[/] {f}")
