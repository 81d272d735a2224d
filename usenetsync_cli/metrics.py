"""Metrics for unattended runs: a Prometheus text-format file for node_exporter's textfile collector.

Owns: the recorder of the current run (what the command reports: its folder(s), the bytes and articles an
upload posted, what a verify found), the metrics record kept in the home (``STATE/metrics.json``), the
renderer (record -> text exposition format; pure) and the atomic writer of the ``--metrics-file``.

How a run gets there: the ``--metrics-file`` option's callback (cli/common.py) calls ``begin`` while the
command line is read; the command reports figures with ``set_folder``/``add_folder``/``uploaded``/
``verified``; ``app.main`` calls ``finish`` once, after the exit code is final (signals are remembered,
not raised, by then), success or failure alike. A command without the option never imports this module.

Commit point (``finish``): under ``STATE/metrics.lock`` — a lock of its own, held for milliseconds, not
the home lock, which another run may hold (a run that failed on it with exit 75 is recorded too) — the
record is read, this run merged into it and written back (temp + fsync + rename), then the whole
metrics file is rendered from the record and written: a temp file in the target's folder (its name does
not end in ``.prom``, so the collector never reads it), fsync, mode 0644, ``rename`` over the target,
fsync of the folder. A reader sees the old file or the new one, never a part. Series of earlier runs
(the last upload's figures while this run is a verify) persist because the file is rendered from the
record, not from this run alone.

Invariants:
- Labels are ``command`` (the command path, e.g. ``share update``; no arguments) and ``folder`` (a local
  path). A share ID, password or passphrase is never a label: nothing here is given one.
- A metrics file that cannot be written does not change the run's exit code: one line
  ``usenetsync: warning: metrics file not written: ...`` on stderr, and the command's own code stands.
- No runtime dependency: the text format is small enough to write here (``prometheus-client`` is only
  used by the tests, to parse what this writes).
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ENV = "USENETSYNC_METRICS_FILE"
RECORD_NAME = "metrics.json"
LOCK_NAME = "metrics.lock"
RECORD_VERSION = 1


@dataclass
class Run:
    """What the current command reported; merged into the record by ``finish``."""

    command: str
    option: str | None = None
    folders: list[str] = field(default_factory=list)
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    verifies: dict[str, dict[str, int]] = field(default_factory=dict)


RUN: Run | None = None


def begin(command: str, option: str | None) -> None:
    """The run of ``command`` is recorded at its end; ``option`` is its ``--metrics-file`` (None: not given)."""
    global RUN
    RUN = Run(command=command, option=option)


def reset() -> None:
    global RUN
    RUN = None


def label(folder: str | os.PathLike[str]) -> str:
    """A folder as a label value: anything that looks like a share ID or a password (a DEST typed where
    the ID goes) is masked, as in every message."""
    from usenetsync_cli.errors import redact

    return redact(os.fspath(folder))


def set_folder(folder: str | os.PathLike[str]) -> None:
    """The folder this run is about (replaces an earlier guess, e.g. the path as typed)."""
    if RUN is not None:
        RUN.folders = [label(folder)]


def add_folder(folder: str | os.PathLike[str]) -> None:
    """One more folder this run is about (``verify`` of every folder)."""
    if RUN is not None and label(folder) not in RUN.folders:
        RUN.folders.append(label(folder))


def uploaded(folder: str, *, bytes_posted: int, articles: int, complete: bool) -> None:
    """What an upload of ``folder`` posted (its summary's ``bytes_posted`` and ``posted_now``)."""
    if RUN is not None:
        RUN.uploads[label(folder)] = {"bytes": int(bytes_posted), "articles": int(articles), "complete": bool(complete)}


def verified(folder: str, *, missing: int, repairable: int, lost: int) -> None:
    """What a verify of ``folder`` found: articles missing or damaged, how many of them can be repaired,
    how many cannot (after ``--repair``)."""
    if RUN is not None:
        RUN.verifies[label(folder)] = {"missing": int(missing), "repairable": int(repairable), "lost": int(lost)}


# ---------------------------------------------------------------------------------------------- the record


def empty_record() -> dict[str, Any]:
    return {"version": RECORD_VERSION, "runs": [], "uploads": {}, "verifies": {}, "complete": {}}


def merge(record: dict[str, Any], run: Run, *, exit_code: int, started: float, ended: float) -> dict[str, Any]:
    """``record`` with ``run`` folded in (a new dict; pure)."""
    out = json.loads(json.dumps(record))
    runs: list[dict[str, Any]] = out["runs"]
    for folder in run.folders or [""]:
        row = next((r for r in runs if r["command"] == run.command and r["folder"] == folder), None)
        if row is None:
            row = {"command": run.command, "folder": folder, "last_success": None}
            runs.append(row)
        row.update(start=started, end=ended, exit=exit_code)
        if exit_code == 0:
            row["last_success"] = ended
    for folder, up in run.uploads.items():
        out["uploads"][folder] = {"bytes": up["bytes"], "articles": up["articles"], "end": ended}
        if up["complete"]:
            out["complete"][folder] = ended
    for folder, v in run.verifies.items():
        out["verifies"][folder] = {**v, "end": ended}
    return out


def read_record(path: Path) -> dict[str, Any]:
    """The record, or an empty one when there is none or it cannot be read (the metrics start afresh)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return empty_record()
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
        return empty_record()
    base = empty_record()
    base.update({k: data[k] for k in base if k in data and isinstance(data[k], type(base[k]))})
    return base


# ---------------------------------------------------------------------------------------------- rendering


def escape_label(value: str) -> str:
    r"""A label value in the text format: ``\`` ``"`` and newline escaped; valid UTF-8 (an undecodable
    byte of a path becomes U+FFFD)."""
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items()) + "}"


def _number(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


# (name, help) of every series, in the order they are written; README's list is this one.
SERIES: tuple[tuple[str, str], ...] = (
    ("usenetsync_last_run_start_timestamp_seconds", "When the last run of this command on this folder started."),
    ("usenetsync_last_run_end_timestamp_seconds", "When the last run of this command on this folder ended."),
    ("usenetsync_last_run_exit_code", "Exit status of the last run of this command on this folder (0 = success)."),
    ("usenetsync_last_success_timestamp_seconds",
     "When the last successful (exit 0) run of this command on this folder ended."),
    ("usenetsync_upload_posted_bytes",
     "Payload bytes posted by the last upload of this folder that got as far as posting."),
    ("usenetsync_upload_posted_articles",
     "Articles posted by the last upload of this folder that got as far as posting."),
    ("usenetsync_verify_articles_missing", "Articles the last verify of this folder found missing or damaged."),
    ("usenetsync_verify_articles_repairable",
     "Of those, articles that can be repaired (from the source or PAR2; verify --repair does it)."),
    ("usenetsync_verify_articles_lost", "Articles the last verify of this folder could not repair (data lost)."),
    ("usenetsync_backup_last_complete_timestamp_seconds",
     "When the newest complete upload (and backup) of this folder ended."),
    ("usenetsync_backup_age_seconds",
     "Seconds from the newest complete upload of this folder to when this file was written."),
    ("usenetsync_state_size_bytes", "Bytes of the home's state folder (databases, journals, keys)."),
    ("usenetsync_metrics_written_timestamp_seconds", "When this file was written."),
)


def render(record: Mapping[str, Any], *, now: float, state_size: int | None) -> str:
    """The text exposition format of ``record`` as of ``now`` (pure: same input, same text)."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name, _ in SERIES}
    for r in sorted(record.get("runs", []), key=lambda r: (r["command"], r["folder"])):
        labels = {"command": r["command"], "folder": r["folder"]}
        samples["usenetsync_last_run_start_timestamp_seconds"].append((labels, r["start"]))
        samples["usenetsync_last_run_end_timestamp_seconds"].append((labels, r["end"]))
        samples["usenetsync_last_run_exit_code"].append((labels, r["exit"]))
        if r.get("last_success") is not None:
            samples["usenetsync_last_success_timestamp_seconds"].append((labels, r["last_success"]))
    for folder, up in sorted(record.get("uploads", {}).items()):
        samples["usenetsync_upload_posted_bytes"].append(({"folder": folder}, up["bytes"]))
        samples["usenetsync_upload_posted_articles"].append(({"folder": folder}, up["articles"]))
    for folder, v in sorted(record.get("verifies", {}).items()):
        for what in ("missing", "repairable", "lost"):
            samples[f"usenetsync_verify_articles_{what}"].append(({"folder": folder}, v[what]))
    for folder, ended in sorted(record.get("complete", {}).items()):
        samples["usenetsync_backup_last_complete_timestamp_seconds"].append(({"folder": folder}, ended))
        samples["usenetsync_backup_age_seconds"].append(({"folder": folder}, max(0.0, round(now - ended, 3))))
    if state_size is not None:
        samples["usenetsync_state_size_bytes"].append(({}, state_size))
    samples["usenetsync_metrics_written_timestamp_seconds"].append(({}, now))
    lines: list[str] = []
    for name, help_ in SERIES:
        if not samples[name]:
            continue
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples[name])
    return "\n".join(lines) + "\n"


def state_size(state_dir: Path) -> int:
    """Bytes of the regular files below ``state_dir`` (links not followed; files vanishing meanwhile skipped)."""
    total = 0
    for root, _dirs, files in os.walk(state_dir):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


# ---------------------------------------------------------------------------------------------- writing


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old or the new file, never a part.

    The temp file sits in the same folder (a rename never crosses file systems) under a name the textfile
    collector skips (it reads ``*.prom`` only); it is fsynced before the rename, the folder after it.
    """
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask does not decide who may read it: the collector runs as another user
            data = text.encode("utf-8")
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some file systems refuse to fsync a folder; the rename itself is atomic
    finally:
        os.close(dir_fd)


def resolve_target(option: str | None, environ: Mapping[str, str], config_value: str | None) -> Path | None:
    """Where the metrics go: ``--metrics-file``, else ``USENETSYNC_METRICS_FILE``, else ``metrics_file``."""
    for value in (option, environ.get(ENV) or None, config_value):
        if value:
            return Path(value).expanduser()
    return None


def commit(target: Path, state_dir: Path, run: Run, *, exit_code: int, started: float, ended: float) -> None:
    """Merge ``run`` into the record in ``state_dir`` and write ``target`` from the whole record."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = state_size(state_dir)
        try:
            record = merge(read_record(state_dir / RECORD_NAME), run, exit_code=exit_code, started=started,
                           ended=ended)
            text = render(record, now=time.time(), state_size=size)
        except (KeyError, TypeError, ValueError, AttributeError):  # a record edited by hand: start afresh
            record = merge(empty_record(), run, exit_code=exit_code, started=started, ended=ended)
            text = render(record, now=time.time(), state_size=size)
        write_atomic(state_dir / RECORD_NAME, json.dumps(record, indent=1, sort_keys=True) + "\n", mode=0o600)
        write_atomic(target, text)
    finally:
        os.close(fd)  # closing releases the flock


def finish(exit_code: int, started: float, *, stderr: TextIO | None = None,
           environ: Mapping[str, str] | None = None) -> None:
    """Record the run ``begin`` started (nothing if none did) and write the metrics file, if one is asked for.

    Never raises for a file it cannot write: one warning line on ``stderr`` and the exit code stands.
    """
    global RUN
    run, RUN = RUN, None
    if run is None:
        return
    ended = time.time()
    err = stderr or sys.stderr
    from usenetsync_cli.errors import UsenetSyncError, redact
    from usenetsync_cli.store.home import Home

    env = os.environ if environ is None else environ
    target: Path | None = None
    try:
        home = Home.resolve()
        config_value = None
        if not run.option and not env.get(ENV):
            # Read only when neither the option nor the variable names the file.
            from usenetsync_cli.config import Config

            try:
                config_value = Config.load(home).metrics_file
            except UsenetSyncError:
                return  # a config.toml that cannot be read: the command itself says so (exit 4)
        target = resolve_target(run.option, env, config_value)
        if target is None:
            return
        commit(target, home.state_dir, run, exit_code=exit_code, started=started, ended=ended)
    except OSError as e:
        where = target if target is not None else e.filename
        err.write(f"usenetsync: warning: metrics file not written: {where}: {e.strerror or e}"
                  " (hint: check that its folder exists and is writable; the run's exit status is unchanged)\n")
    except UsenetSyncError as e:
        err.write(f"usenetsync: warning: metrics file not written: {redact(e.message)}\n")


def series_names(text: str) -> Iterable[str]:
    """The series a rendered file holds (for checks of README's alert rules)."""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            yield line.split()[2]
