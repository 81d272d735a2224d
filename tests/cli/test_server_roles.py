"""Server roles as the field uses them: ``--role check`` (Nyuu's --check-host) and ``--role fill``.

Owns: evidence, against the real INN through counting fault proxies (the
"other provider" is a second proxy in front of the same spool), that the
upload's post-check and `verify` STAT on the check server and never on the
posting server, that an article the check server lacks is re-posted as the
post-check does for the posting server, that a check or fill server is never
posted to, that a share download asks a fill server nothing while the
primary has everything and exactly the missing articles when it lacks some,
and that `server list` and `server test` show the role.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import run
from tests.cli.test_share_download import Users, id_file, publish, snapshot, users  # noqa: F401 - fixture
from tests.support.faultproxy import FaultProxy
from tests.support.inn import InnServer
from usenetsync_cli.core.nzb import parse_nzb


@pytest.fixture
def two(inn: InnServer) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    with FaultProxy(inn.host, inn.port) as a, FaultProxy(inn.host, inn.port) as b:
        yield a, b


def _add(capsys: pytest.CaptureFixture[str], name: str, p: FaultProxy, *extra: str) -> None:
    r = run(capsys, "server", "add", name, "--host", p.host, "--port", str(p.port), "--connections", "2", *extra)
    assert r.code == 0, r.err


def _src(tmp_path: Path, nbytes: int = 100_000) -> Path:
    src = tmp_path / "data"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(nbytes))
    return src


def test_post_check_and_verify_stat_on_the_check_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], two: tuple[FaultProxy, FaultProxy]
) -> None:
    poster, checker = two
    _add(capsys, "main", poster, "--group", "alt.binaries.test")
    _add(capsys, "other", checker, "--role", "check")
    stats_at_add = poster.commands_seen(b"STAT")  # `server add` checked the group (and timed a STAT)
    src = _src(tmp_path)
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "upload", str(src), "--segment-size", "16384", "--redundancy", "0", "--json")
    assert r.code == 0, r.err
    (s,) = [x for x in r.json_lines() if x["type"] == "upload.summary"]
    assert s["complete"] and s["verified"] == s["segments"] >= 6
    assert checker.commands_seen(b"STAT") >= s["segments"]  # every article confirmed there
    assert poster.commands_seen(b"STAT") == stats_at_add  # and none on the server that took it
    assert checker.commands_seen(b"POST") == 0 and len(poster.articles) >= s["segments"]
    before = checker.commands_seen(b"STAT")
    r = run(capsys, "verify", "--json")
    assert r.code == 0, r.err
    assert checker.commands_seen(b"STAT") >= before + s["segments"]
    assert poster.commands_seen(b"STAT") == stats_at_add
    # A check server is never posted to, even when named.
    r = run(capsys, "upload", str(src), "--server", "other")
    assert r.code == 4 and "never posted to" in r.err


def test_an_article_the_check_server_lacks_is_posted_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], two: tuple[FaultProxy, FaultProxy]
) -> None:
    poster, checker = two
    _add(capsys, "main", poster, "--group", "alt.binaries.test")
    _add(capsys, "other", checker, "--role", "check")
    checker.inject_reply(b"STAT", b"430 No such article", times=None)  # the other provider never gets them
    src = _src(tmp_path, 40_000)
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "upload", str(src), "--segment-size", "16384", "--redundancy", "0", "--json")
    assert r.code == 14, r.err  # not confirmed: incomplete, resumable
    (s,) = [x for x in r.json_lines() if x["type"] == "upload.summary"]
    assert s["verified"] == 0 and s["reposted"] == 2 * s["segments"] and s["failed"] == s["segments"] == 3
    # Each segment went out under 3 Message-IDs (attempts), all to the posting server.
    assert len({a.message_id for a in poster.articles}) == 3 * s["segments"]


def test_server_list_and_test_show_the_role(capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    assert run(capsys, "server", "add", "f", "--host", inn.host, "--role", "fill").code == 0
    assert run(capsys, "server", "add", "r", "--host", inn.host, "--no-post").code == 0
    r = run(capsys, "server", "add", "x", "--host", inn.host, "--role", "post", "--no-post", "--group", inn.group)
    assert r.code == 2 and "disagree" in r.err
    rows = {line.split()[0]: line.split()[1] for line in run(capsys, "server", "list").out.splitlines()[1:]}
    assert rows == {"f": "fill", "r": "read"}
    assert {x["name"]: x["role"] for x in run(capsys, "server", "list", "--json").json_lines()} == rows
    r = run(capsys, "server", "test", "f")
    assert r.code == 0 and "role fill" in r.out
    (res,) = [x for x in run(capsys, "server", "test", "f", "--json").json_lines() if x["type"] == "server.test"]
    assert res["role"] == "fill"


def test_old_config_without_role_keeps_its_meaning(capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    home = Path(os.environ["USENETSYNC_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[servers.a]\nhost = "{inn.host}"\ngroups = ["{inn.group}"]\n'
        f'[servers.b]\nhost = "{inn.host}"\npost = false\n'
    )
    rows = {x["name"]: (x["role"], x["post"]) for x in run(capsys, "server", "list", "--json").json_lines()}
    assert rows == {"a": ("post", True), "b": ("read", False)}


def test_a_fill_server_gets_only_what_the_primary_lacks(
    users: Users, tmp_path: Path, two: tuple[FaultProxy, FaultProxy]  # noqa: F811 - fixture
) -> None:
    primary, fill = two
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(200_000))
    (src / "small.txt").write_bytes(b"small")
    sid = publish(users, src, "--public", upload_args=("--redundancy", "0"))
    nzb = tmp_path / "s.nzb"
    assert users.as_("alice", "nzb", "export", "s", "-o", str(nzb)).code == 0
    data_ids = [seg.message_id for f in parse_nzb(nzb) for seg in f.segments]
    assert len(data_ids) >= 10
    assert users.as_("bob", "server", "remove", "local").code == 0
    assert users.as_("bob", "server", "add", "primary", "--host", primary.host, "--port", str(primary.port),
                     "--no-post").code == 0
    assert users.as_("bob", "server", "add", "backfill", "--host", fill.host, "--port", str(fill.port),
                     "--role", "fill").code == 0
    # The primary has everything: the fill server is not even connected to.
    r = users.as_("bob", "download", "--id-file", id_file(tmp_path, sid), str(tmp_path / "d1"))
    assert r.code == 0, r.err
    assert snapshot(tmp_path / "d1") == snapshot(src)
    assert fill.connections_total == 0 and fill.commands_seen(b"BODY") == 0
    # The primary lost two articles: exactly those are asked of the fill server.
    lost = data_ids[2:4]
    for mid in lost:
        primary.inject_reply(b"BODY " + mid.encode(), b"430 No such article", times=None)
    r = users.as_("bob", "download", "--id-file", id_file(tmp_path, sid), str(tmp_path / "d2"))
    assert r.code == 0, r.err
    assert snapshot(tmp_path / "d2") == snapshot(src)
    assert fill.commands_seen(b"BODY") == len(lost)
    assert primary.faults_fired.get("inject_reply") == len(lost)
