"""Excluding what was shared before drops it from the next share version: against the real INN.

Version 1 of a share carries everything; then `index --exclude` leaves a
directory and a pattern out, a bare `index` (as cron runs it) repeats that,
and `share update` publishes version 2. A fresh download of it equals the
folder without the excluded paths, and the folder on disk is untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli.test_share_download import Users, publish, snapshot, users  # noqa: F401 - fixture


def test_excluded_paths_leave_the_next_share_version(users: Users, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for d in ("docs", "secret/deeper", "logs"):
        (src / d).mkdir(parents=True)
    (src / "docs" / "a.txt").write_bytes(os.urandom(300))
    (src / "docs" / "run.log").write_bytes(b"log line\n")
    (src / "secret" / "key").write_bytes(os.urandom(40))
    (src / "secret" / "deeper" / "more").write_bytes(os.urandom(70_000))
    (src / "logs" / "keep.log").write_bytes(b"kept by a negation\n")
    (src / "top.bin").write_bytes(os.urandom(20_000))
    sid = publish(users, src, "--public")
    before = snapshot(src)

    r = users.as_("bob", "download", sid, str(tmp_path / "v1"))
    assert r.code == 0, r.err
    assert snapshot(tmp_path / "v1") == before

    r = users.as_("alice", "index", str(src), "--exclude", "secret/", "--exclude", "*.log", "--exclude", "!keep.log")
    assert r.code == 0 and "0 new, 0 changed, 3 deleted" in r.out, r.out
    r = users.as_("alice", "index", str(src))  # cron: no options, the stored rules apply
    assert r.code == 0 and "0 new, 0 changed, 0 deleted" in r.out, r.out
    r = users.as_("alice", "upload", str(src))  # nothing to post: deletions are only left out of what is published
    assert r.code == 0, r.err
    r = users.as_("alice", "share", "update", "s", "--json")
    assert r.code == 0, r.err
    assert [x for x in r.json_lines() if x.get("version") == 2], r.out

    dest = tmp_path / "v2"
    r = users.as_("bob", "download", sid, str(dest))
    assert r.code == 0, r.err
    gone = {b"secret", b"secret/key", b"secret/deeper", b"secret/deeper/more", b"docs/run.log"}
    assert gone <= set(before)
    assert snapshot(dest) == {k: v for k, v in before.items() if k not in gone}
    assert snapshot(src) == before  # the user's files are never touched
