"""After ``kill -9`` mid-upload, the resume sends no article the server already holds, and the rest exactly once.

README "Resume and exactly-once": before posting, the upload durably records
how far it may have got; after ``kill -9`` the next run STATs those segments
first, so articles that were in flight are not sent twice and no segment
ever exists under two Message-IDs.

How the kill is made to land at a known point, with no timing involved: the
CLI posts through the fault proxy, which lets ``ANSWERED`` article replies
through and then holds every further one.  Each posting connection then has
exactly one article the server has *stored* but whose 240 the upload never
saw — the articles a crash leaves in doubt.  The test waits (on the proxy's
counters and on ``status``) until those are on the server and the answered
ones are committed, then kills.  The proxy logs every article's Message-ID
and reply, so the resume is judged by what went over the wire, not by what
the upload says about itself.  INN's duplicate answer (``441 435``) plus a
STAT would hide a re-send from a test that only checks the end state; the
wire log does not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import run
from tests.support.faultproxy import ARTICLE, FaultProxy
from tests.support.inn import InnServer

ANSWERED = 20  # articles whose 240 reaches the first run


def _segments(capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    """Segment counts by state over all shards, as ``status --json`` reports them."""
    r = run(capsys, "status", "--json")
    assert r.code == 0, r.err
    totals: dict[str, int] = {}
    for shard in (x for x in r.json_lines() if x["type"] == "status.shard"):
        for name, n in shard["segments"].items():
            totals[name] = totals.get(name, 0) + n
    return totals


def _live(seg: dict[str, int]) -> int:
    return sum(seg.values()) - seg.get("superseded", 0)


def _wait(what: str, predicate: Callable[[], bool], proc: subprocess.Popen[bytes] | None = None, timeout: float = 120) -> None:
    """Poll an event (a counter, a row count, a STAT); the timeout is only a safety net."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None:
            assert proc.poll() is None, f"the upload ended while waiting for {what}: {proc.communicate()[1]!r}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


def test_kill_9_mid_upload_then_resume_sends_every_article_exactly_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer
) -> None:
    src = tmp_path / "data"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}.bin").write_bytes(os.urandom(200_000))  # ~75 articles of 16 KiB
    with FaultProxy(inn.host, inn.port) as proxy:
        r = run(capsys, "server", "add", "local", "--host", proxy.host, "--port", str(proxy.port), "--group", inn.group,
                "--connections", "2", "--timeout", "300")
        assert r.code == 0, r.err
        assert run(capsys, "index", str(src)).code == 0
        proxy.hold_replies(ARTICLE, after=ANSWERED)
        proc = subprocess.Popen(
            [sys.executable, "-m", "usenetsync_cli", "upload", str(src), "--segment-size", "16384", "--redundancy", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            _wait("article stored with its reply held", lambda: proxy.faults_fired.get("hold_replies", 0) >= 1, proc)
            _wait("commit of the answered articles", lambda: _segments(capsys)["posted"] + _segments(capsys)["verified"]
                  >= ANSWERED, proc)
            assert proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        first = proxy.articles
        seg = _segments(capsys)
        done, total = seg["posted"] + seg["verified"], _live(seg)
        assert done == ANSWERED and 0 < done < total  # the kill landed mid-way
        in_doubt = [a.message_id for a in first if a.reply is None]
        assert in_doubt and all(a.reached_server for a in first)
        for mid in in_doubt:  # stored by the server, though the killed run never heard so
            _wait(f"{mid} on the server", lambda mid=mid: inn.stat(mid) == 223)
        held_by_server = {a.message_id for a in first}
        assert len(held_by_server) == len(first) == ANSWERED + len(in_doubt)

        proxy.clear_faults()
        since, posts = len(first), proxy.commands_seen(b"POST")
        r = run(capsys, "upload", "--resume", "--redundancy", "0", "--json")
        assert r.code == 0, r.err
        second = proxy.articles[since:]
        assert [a.message_id for a in second if a.message_id in held_by_server] == []  # nothing sent twice
        assert [a.reply for a in second if a.code != 240] == []  # so no 441 435 either
        assert set(proxy.posted_message_ids(since).values()) == {1}  # each of the rest exactly once
        assert proxy.commands_seen(b"POST") - posts == len(second)
        seg = _segments(capsys)
        assert _live(seg) == seg["verified"] == total
        assert len(held_by_server) + len(second) == total  # one Message-ID per segment, never two

    r = run(capsys, "server", "add", "local", "--host", inn.host, "--port", str(inn.port), "--group", inn.group,
            "--replace")
    assert r.code == 0, r.err
    r = run(capsys, "verify", "--read-data", "100", "--json")  # every body: CRC, GCM tag and hash
    (summary,) = [x for x in r.json_lines() if x["type"] == "verify.summary"]
    assert r.code == 0, r.err
    assert summary["checked"] == summary["present"] == summary["bodies_read"] == total
