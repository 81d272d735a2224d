"""verify --read-data through the fetch engine, against a server that answers
223 to every STAT and 222 with junk to every BODY (the fake server: INN never
lies like that). STAT alone would call every article present.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli.test_share_download import Users, publish, users  # noqa: F401 - fixture
from tests.nntp.fakeserver import serve_subprocess


def test_read_data_is_not_fooled_by_a_server_that_says_yes(users: Users, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(60_000))
    publish(users, src, "--public")
    with serve_subprocess("--yes") as port:
        assert users.as_("alice", "server", "add", "liar", "--host", "127.0.0.1", "--port", str(port), "--no-post").code == 0
        stat_only = users.as_("alice", "verify", "--server", "liar", "--json")
        read = users.as_("alice", "verify", "--server", "liar", "--read-data", "100", "--json")
    s0 = [x for x in stat_only.json_lines() if x["type"] == "verify.summary"][0]
    assert s0["present"] == s0["checked"] > 0 and s0["damaged"] == 0  # STAT alone is fooled, as it must be
    s = [x for x in read.json_lines() if x["type"] == "verify.summary"][0]
    assert read.code == 17, read.err
    assert s["present"] == 0 and s["damaged"] == s["checked"] == s["bodies_read"] > 0
