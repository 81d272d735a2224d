"""The metrics renderer, record and atomic writer (usenetsync_cli/metrics.py), without the CLI.

Every rendered text is read back with prometheus-client's own parser: what node_exporter's textfile
collector would accept is what is checked, not our idea of the format.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from usenetsync_cli import metrics


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        assert family.documentation, family.name  # every series has its HELP line
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def _run(command: str, folder: str, **figures: object) -> metrics.Run:
    metrics.begin(command, None)
    metrics.set_folder(folder)
    run = metrics.RUN
    metrics.reset()
    assert run is not None
    if "upload" in figures:
        b, a, complete = figures["upload"]  # type: ignore[misc]
        run.uploads[folder] = {"bytes": b, "articles": a, "complete": complete}
    if "verify" in figures:
        run.verifies[folder] = dict(zip(("missing", "repairable", "lost"), figures["verify"]))  # type: ignore[arg-type]
    return run


@pytest.mark.parametrize("folder", ['/data/"quoted"', "/data/back\\slash", "/data/new\nline", "/data/all \"\\\n\\n",
                                    "/data/ümlaut", "/data/{brace},=x"])
def test_label_values_survive_the_parser(folder: str) -> None:
    record = metrics.merge(metrics.empty_record(), _run("upload", folder, upload=(10, 2, True)),
                           exit_code=0, started=1.0, ended=2.0)
    got = parse(metrics.render(record, now=3.0, state_size=None))
    assert got["usenetsync_upload_posted_bytes"] == [({"folder": folder}, 10.0)]
    assert got["usenetsync_last_run_exit_code"] == [({"command": "upload", "folder": folder}, 0.0)]


def test_an_undecodable_path_byte_still_gives_valid_utf8() -> None:
    folder = os.fsdecode(b"/data/bad\xff")
    record = metrics.merge(metrics.empty_record(), _run("index", folder), exit_code=0, started=1.0, ended=2.0)
    text = metrics.render(record, now=3.0, state_size=None)
    text.encode("utf-8")  # a lone surrogate would raise here
    (labels, _), = parse(text)["usenetsync_last_run_exit_code"]
    assert labels["folder"] == "/data/bad\ufffd"


def test_a_share_id_is_never_a_label() -> None:
    share_id = "us1p" + "a" * 40
    metrics.begin("download", None)
    metrics.set_folder(f"/tmp/{share_id}")  # e.g. an ID typed where DEST goes
    run = metrics.RUN
    metrics.reset()
    assert run is not None and share_id not in run.folders[0]


def test_merge_keeps_earlier_series_and_the_last_success() -> None:
    rec = metrics.empty_record()
    rec = metrics.merge(rec, _run("upload", "/a", upload=(1000, 5, True)), exit_code=0, started=10.0, ended=20.0)
    rec = metrics.merge(rec, _run("verify", "/a", verify=(3, 3, 0)), exit_code=17, started=30.0, ended=40.0)
    rec = metrics.merge(rec, _run("upload", "/a"), exit_code=10, started=50.0, ended=60.0)
    got = parse(metrics.render(rec, now=100.0, state_size=123))
    up = {"command": "upload", "folder": "/a"}
    ver = {"command": "verify", "folder": "/a"}
    assert (up, 10.0) in got["usenetsync_last_run_exit_code"] and (ver, 17.0) in got["usenetsync_last_run_exit_code"]
    assert got["usenetsync_last_run_start_timestamp_seconds"] == [(up, 50.0), (ver, 30.0)]
    assert got["usenetsync_last_success_timestamp_seconds"] == [(up, 20.0)]  # the failure did not move it
    assert got["usenetsync_upload_posted_bytes"] == [({"folder": "/a"}, 1000.0)]  # the verify did not drop it
    assert got["usenetsync_verify_articles_missing"] == [({"folder": "/a"}, 3.0)]
    assert got["usenetsync_verify_articles_lost"] == [({"folder": "/a"}, 0.0)]
    assert got["usenetsync_backup_age_seconds"] == [({"folder": "/a"}, 80.0)]
    assert got["usenetsync_state_size_bytes"] == [({}, 123.0)]


def test_a_run_without_a_folder_is_recorded_with_an_empty_one() -> None:
    metrics.begin("upload", None)
    run = metrics.RUN
    metrics.reset()
    assert run is not None
    rec = metrics.merge(metrics.empty_record(), run, exit_code=75, started=1.0, ended=2.0)
    got = parse(metrics.render(rec, now=3.0, state_size=None))
    assert got["usenetsync_last_run_exit_code"] == [({"command": "upload", "folder": ""}, 75.0)]
    assert "usenetsync_last_success_timestamp_seconds" not in got


def test_option_beats_variable_beats_config(tmp_path: Path) -> None:
    env = {metrics.ENV: str(tmp_path / "env.prom")}
    assert metrics.resolve_target("opt.prom", env, "cfg.prom") == Path("opt.prom")
    assert metrics.resolve_target(None, env, "cfg.prom") == tmp_path / "env.prom"
    assert metrics.resolve_target(None, {}, "cfg.prom") == Path("cfg.prom")
    assert metrics.resolve_target(None, {metrics.ENV: ""}, None) is None


def test_record_round_trips_and_a_damaged_one_starts_afresh(tmp_path: Path) -> None:
    rec = metrics.merge(metrics.empty_record(), _run("index", "/a"), exit_code=0, started=1.0, ended=2.0)
    path = tmp_path / "metrics.json"
    path.write_text(__import__("json").dumps(rec))
    assert metrics.read_record(path) == rec
    path.write_text("{not json")
    assert metrics.read_record(path) == metrics.empty_record()


def test_write_replaces_the_file_by_rename_with_mode_0644(tmp_path: Path) -> None:
    target = tmp_path / "usenetsync.prom"
    target.write_text("old\n")
    os.chmod(target, 0o600)
    before = os.stat(target).st_ino
    old_umask = os.umask(0o077)
    try:
        metrics.write_atomic(target, "new\n")
    finally:
        os.umask(old_umask)
    assert target.read_text() == "new\n"
    # A new inode: the reader's open file (the old one) was never written to in place.
    assert os.stat(target).st_ino != before
    assert os.stat(target).st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["usenetsync.prom"]  # no temp file left


def test_a_crash_before_the_rename_leaves_the_old_file_whole(tmp_path: Path) -> None:
    """kill -9 of a writer between its write and its rename: the target is the old file, untouched, and the
    temp file it left is one the textfile collector never reads (not ``*.prom``)."""
    target = tmp_path / "usenetsync.prom"
    target.write_text("# old complete file\n")
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from usenetsync_cli import metrics
        def crash(src, dst):
            assert Path(src).read_text().endswith("new end\\n")  # written in full, not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace = crash
        metrics.write_atomic(Path({str(target)!r}), "x" * 100000 + "new end\\n")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # the kill landed: between the write and the rename
    assert target.read_text() == "# old complete file\n"
    left = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(left) == 1 and not left[0].endswith(".prom")


def test_alert_rule_series_names_exist() -> None:
    rec = metrics.merge(metrics.empty_record(), _run("upload", "/a", upload=(1, 1, True), verify=(0, 0, 0)),
                        exit_code=0, started=1.0, ended=2.0)
    names = set(metrics.series_names(metrics.render(rec, now=3.0, state_size=1)))
    assert names == {name for name, _ in metrics.SERIES}


def test_readme_lists_every_series() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Monitoring (Prometheus)", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"^\| `(usenetsync_[a-z_]+)` \|", section, flags=re.MULTILINE))
    assert listed == {name for name, _ in metrics.SERIES}


def test_a_record_with_wrong_rows_starts_afresh(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / metrics.RECORD_NAME).write_text('{"version": 1, "runs": [{"command": "x"}], "uploads": {"/a": 5}}')
    target = tmp_path / "m.prom"
    metrics.commit(target, state, _run("index", "/b"), exit_code=0, started=1.0, ended=2.0)
    got = parse(target.read_text())
    assert got["usenetsync_last_run_exit_code"] == [({"command": "index", "folder": "/b"}, 0.0)]
