"""download_nzb against the real INN: Nyuu-style multi-part yEnc posts, NZB round trip,
missing and corrupt articles, hostile names, resume and re-runs.

The poster here is written independently of the product (raw NNTP from
tests.support, yEnc framing by hand around sabctools.yenc_encode), the way
Nyuu/ngPost frame multi-part posts, so the downloader is checked against
other posters' articles rather than our own.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import sabctools

from tests.nntp.rss import RssPeak
from tests.support.faultproxy import FaultProxy
from tests.support.inn import InnServer
from tests.support.rawnntp import fresh_message_id, make_article
from usenetsync_cli.core.nzb import NzbFile, open_nzb_for_write, parse_nzb
from usenetsync_cli.errors import InterruptedByUser, NetworkError
from usenetsync_cli.nntp import AuthFailed, ConnectFailed, Connection, ServerSpec
from usenetsync_cli.nntp.response import BytesLike
from usenetsync_cli.pipeline import fetch
from usenetsync_cli.pipeline.nzb_download import NzbProgress, download_nzb

PART = 50_000
POSTER = "Tester <tester@test.invalid>"


@dataclass
class Posted:
    name: str
    data: bytes
    subject_fmt: str  # "{i}" and "{n}" are filled per part
    segments: list[tuple[int, int, str]]  # (number, article bytes, message-id)
    articles: list[bytes]  # unposted article bytes, for tests that post late


def build(
    inn: InnServer, name: str, data: bytes, *, subject: str | None = None, file_crc: int | None = None
) -> Posted:
    """Frame ``data`` as multi-part yEnc articles (not posted yet)."""
    n = -(-len(data) // PART)
    file_crc = zlib.crc32(data) if file_crc is None else file_crc
    quoted = name.replace("{", "{{").replace("}", "}}")
    fmt = subject if subject is not None else '[1/2] - "' + quoted + '" yEnc ({i}/{n})'
    segments: list[tuple[int, int, str]] = []
    articles: list[bytes] = []
    for i in range(1, n + 1):
        begin, end = (i - 1) * PART + 1, min(i * PART, len(data))
        chunk = data[begin - 1 : end]
        encoded, pcrc = sabctools.yenc_encode(chunk)
        body = (
            f"=ybegin part={i} total={n} line=128 size={len(data)} name={name}\r\n"
            f"=ypart begin={begin} end={end}\r\n"
        ).encode() + encoded + f"\r\n=yend size={len(chunk)} part={i} pcrc32={pcrc:08x} crc32={file_crc:08x}\r\n".encode()
        msgid = fresh_message_id("nzbdl")
        article = make_article(msgid, body, group=inn.group, subject=fmt.format(i=i, n=n), sender=POSTER)
        segments.append((i, len(article), msgid))
        articles.append(article)
    return Posted(name, data, fmt, segments, articles)


def post(inn: InnServer, posted: Posted, only: set[int] | None = None) -> Posted:
    with inn.connect() as conn:
        for (number, _, msgid), article in zip(posted.segments, posted.articles):
            if only is None or number in only:
                code, text = conn.post(article)
                assert code == 240, (msgid, code, text)
        conn.quit()
    return posted


def write_nzb(path: Path, inn: InnServer, *posted: Posted) -> list[NzbFile]:
    with open_nzb_for_write(path, title="test") as w:
        for p in posted:
            n = len(p.segments)
            w.add_file(p.subject_fmt.format(i=1, n=n), POSTER, 1_700_000_000, [inn.group], p.segments)
    return parse_nzb(path)


def spec(inn: InnServer, **kw: object) -> ServerSpec:
    return ServerSpec(name="inn", host=inn.host, port=inn.port, timeout=10.0, **kw)  # type: ignore[arg-type]


def visible(dest: Path) -> set[str]:
    return {p.name for p in dest.iterdir()}


def test_two_files_round_trip(inn: InnServer, tmp_path: Path) -> None:
    a = post(inn, build(inn, "alpha.bin", os.urandom(4 * PART + 1234)))  # 5 parts
    b = post(inn, build(inn, "beta & <gamma>.dat", os.urandom(3 * PART)))  # 3 parts, XML-special name
    files = write_nzb(tmp_path / "t.nzb.gz", inn, a, b)
    dest = tmp_path / "dest"
    events: list[NzbProgress] = []

    s = download_nzb(files, dest, [spec(inn)], connections=3, progress=events.append)

    assert s.files_ok == ["alpha.bin", "beta & <gamma>.dat"] and s.files_damaged == []
    assert (dest / "alpha.bin").read_bytes() == a.data
    assert (dest / "beta & <gamma>.dat").read_bytes() == b.data
    assert visible(dest) == {"alpha.bin", "beta & <gamma>.dat"}  # no .part or sidecar left
    assert s.articles == 8 and s.bytes == len(a.data) + len(b.data) and s.mb_per_s > 0
    assert events and events[-1].files_done == 2

    # A second run finds both files complete (size + crc32 checked against one
    # article each) and neither refetches them nor writes duplicates.
    again = download_nzb(files, dest, [spec(inn)], connections=2)
    assert sorted(again.files_present) == ["alpha.bin", "beta & <gamma>.dat"]
    assert again.articles == 2 and again.bytes == 0 and visible(dest) == {"alpha.bin", "beta & <gamma>.dat"}


def test_cancelled_article_reports_damaged_file(inn: InnServer, tmp_path: Path) -> None:
    a = post(inn, build(inn, "gone.bin", os.urandom(3 * PART + 7)))
    b = post(inn, build(inn, "fine.bin", os.urandom(2 * PART + 1)))
    inn.cancel(a.segments[1][2])  # part 2
    files = write_nzb(tmp_path / "t.nzb", inn, a, b)
    dest = tmp_path / "dest"

    s = download_nzb(files, dest, [spec(inn)], connections=2)

    assert s.files_ok == ["fine.bin"]
    assert s.files_damaged == [("gone.bin", [2])]
    assert [(f.file, f.number) for f in s.failures] == [("gone.bin", 2)]
    assert "430" in s.failures[0].reason
    assert (dest / "fine.bin").read_bytes() == b.data
    # The damaged file is never visible under its final name.
    assert not (dest / "gone.bin").exists()
    part = (dest / "gone.bin.part").read_bytes()
    assert len(part) == len(a.data)
    assert part[:PART] == a.data[:PART] and part[2 * PART :] == a.data[2 * PART :]
    assert part[PART : 2 * PART] == bytes(PART)  # the hole stays a hole
    sidecar = json.loads((dest / "gone.bin.part.json").read_text())
    assert sorted(e[0] for e in sidecar["done"]) == [1, 3, 4]


def record_bodies(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record (server name, message-id) of every BODY the product's client sends (on the wire)."""
    seen: list[tuple[str, str]] = []
    original = Connection._send

    def send(self: Connection, data: BytesLike) -> None:
        for line in bytes(data).split(b"\r\n"):
            if line.startswith(b"BODY "):
                seen.append((f"{self.spec.name}#{id(self)}", line[5:].decode()))
        original(self, data)

    monkeypatch.setattr(Connection, "_send", send)
    return seen


@pytest.mark.parametrize("servers", [1, 2])
def test_missing_article_is_retried_once_elsewhere(
    inn: InnServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, servers: int
) -> None:
    a = post(inn, build(inn, "retry.bin", os.urandom(4 * PART)))
    lost = a.segments[2][2]
    inn.cancel(lost)
    files = write_nzb(tmp_path / "t.nzb", inn, a)
    seen = record_bodies(monkeypatch)
    # One server with three connections, or two servers (the same INN under two names).
    specs = [spec(inn, connections=3)] if servers == 1 else [
        ServerSpec(name=n, host=inn.host, port=inn.port, timeout=10.0, connections=1) for n in ("one", "two")
    ]

    s = download_nzb(files, tmp_path / "dest", specs)

    assert s.files_damaged == [("retry.bin", [3])]
    asked = [who for who, mid in seen if mid == lost]
    assert len(asked) == 2 and asked[0] != asked[1]  # once, then once more on another connection
    if servers == 2:
        assert {who.split("#")[0] for who in asked} == {"one", "two"}
    assert sorted(mid for _, mid in seen if mid != lost) == sorted(m for _, _, m in a.segments if m != lost)


def test_corrupt_article_is_a_crc_failure(inn: InnServer, tmp_path: Path) -> None:
    a = post(inn, build(inn, "bent.bin", os.urandom(3 * PART)))
    b = post(inn, build(inn, "straight.bin", os.urandom(PART + 10)))
    victim = a.segments[2][2]  # part 3
    body = inn.body(victim)
    assert body is not None
    data_start = body.index(b"\r\n", body.index(b"=ypart")) + 2
    # A lowercase letter flips to another plain character: same length, new CRC.
    offset = next(i for i in range(data_start + 200, len(body)) if 0x61 <= body[i] <= 0x7A)
    inn.corrupt(victim, offset)
    files = write_nzb(tmp_path / "t.nzb", inn, a, b)

    s = download_nzb(files, tmp_path / "dest", [spec(inn)], connections=2)

    assert s.files_damaged == [("bent.bin", [3])]
    assert "CRC" in s.failures[0].reason
    assert s.files_ok == ["straight.bin"]
    assert (tmp_path / "dest" / "straight.bin").read_bytes() == b.data


def test_whole_file_crc_mismatch_keeps_the_file_partial(inn: InnServer, tmp_path: Path) -> None:
    data = os.urandom(2 * PART + 17)
    # Every part is intact (pcrc32 right) but the poster's whole-file crc32 disagrees.
    a = post(inn, build(inn, "liar.bin", data, file_crc=zlib.crc32(data) ^ 1))
    files = write_nzb(tmp_path / "t.nzb", inn, a)

    s = download_nzb(files, tmp_path / "dest", [spec(inn)], connections=2)

    assert s.files_damaged == [("liar.bin", [])]
    assert "whole-file CRC" in s.failures[0].reason
    # Not visible as finished; no sidecar, so the next run starts this file over.
    assert visible(tmp_path / "dest") == {"liar.bin.part"}


def test_hostile_names_stay_inside_dest(inn: InnServer, tmp_path: Path) -> None:
    quoted = post(inn, build(inn, "../../etc/evil", os.urandom(2 * PART + 5)))
    # No quoted name in the Subject: the name comes from the yEnc header.
    unquoted = post(inn, build(inn, "/etc/passwd2", os.urandom(PART + 3), subject="anon post yEnc ({i}/{n})"))
    dotdot = post(inn, build(inn, "..", os.urandom(100), subject="x yEnc ({i}/{n})"))
    files = write_nzb(tmp_path / "t.nzb", inn, quoted, unquoted, dotdot)
    dest = tmp_path / "a" / "b" / "dest"

    s = download_nzb(files, dest, [spec(inn)], connections=2)

    assert s.files_damaged == []
    assert visible(dest) == {"evil", "passwd2", "nzb-file-0003"}
    assert (dest / "evil").read_bytes() == quoted.data
    assert (dest / "passwd2").read_bytes() == unquoted.data
    assert (dest / "nzb-file-0003").read_bytes() == dotdot.data
    assert visible(tmp_path) == {"a", "t.nzb"} and visible(tmp_path / "a") == {"b"}


@pytest.mark.parametrize(
    ("size", "ypart"),
    [
        (10**18, True),  # an exabyte file around 100 real bytes
        (2**31, True),  # part 1 (100 bytes) of a "2 GiB" file
        (2**31, False),  # a single-part "2 GiB" article holding 100 bytes
    ],
)
def test_hostile_yenc_sizes_cost_the_file_not_the_run(inn: InnServer, tmp_path: Path, size: int, ypart: bool) -> None:
    good = build(inn, "good.bin", os.urandom(PART))
    payload = os.urandom(100)
    encoded, crc = sabctools.yenc_encode(payload)
    head = b"=ybegin part=1 total=1 line=128 size=%d name=huge.bin\r\n" % size
    if ypart:
        head += b"=ypart begin=1 end=100\r\n"
    body = head + encoded + b"\r\n=yend size=100 part=1 pcrc32=%08x\r\n" % crc
    huge_id = fresh_message_id("huge")
    article = make_article(huge_id, body, group=inn.group, subject='"huge.bin" yEnc (1/1)')
    huge = Posted("huge.bin", payload, '"huge.bin" yEnc ({i}/{n})', [(1, len(article), huge_id)], [article])
    post(inn, good)
    post(inn, huge)
    files = write_nzb(tmp_path / "t.nzb", inn, huge, good)

    with RssPeak() as rss:
        s = download_nzb(files, tmp_path / "dest", [spec(inn)], connections=2)

    assert s.files_ok == ["good.bin"]
    assert [name for name, _ in s.files_damaged] == ["huge.bin"]
    assert visible(tmp_path / "dest") == {"good.bin"}  # no sparse monster, not even an empty .part
    (failure,) = s.failures
    assert f"{size:,}" in failure.reason or str(size) in failure.reason
    assert "\n" not in failure.reason
    assert rss.growth < 50 * 1024 * 1024  # nothing sized by the claim was allocated


def test_resume_skips_parts_already_written(inn: InnServer, tmp_path: Path) -> None:
    # Run 1 sees parts 3 and 4 missing (not posted yet): a real partial run
    # that leaves name.part + sidecar with parts 1 and 2 done.
    a = post(inn, build(inn, "resume.bin", os.urandom(3 * PART + 99)), only={1, 2})
    files = write_nzb(tmp_path / "t.nzb", inn, a)
    dest = tmp_path / "dest"
    first = download_nzb(files, dest, [spec(inn)], connections=2)
    assert first.files_damaged == [("resume.bin", [3, 4])]
    assert visible(dest) == {"resume.bin.part", "resume.bin.part.json"}

    # The missing parts arrive; the ones already written vanish from the
    # server, so run 2 can only succeed if it does not fetch them again.
    post(inn, a, only={3, 4})
    for number, _, msgid in a.segments[:2]:
        inn.cancel(msgid)
    second = download_nzb(files, dest, [spec(inn)], connections=2)

    assert second.files_ok == ["resume.bin"] and second.files_damaged == []
    assert second.parts_resumed == 2 and second.articles == 2
    assert (dest / "resume.bin").read_bytes() == a.data
    assert visible(dest) == {"resume.bin"}


def test_broken_or_foreign_sidecar_is_not_trusted(inn: InnServer, tmp_path: Path) -> None:
    a = post(inn, build(inn, "fresh.bin", os.urandom(2 * PART)))
    b = post(inn, build(inn, "other.bin", os.urandom(PART)))
    files = write_nzb(tmp_path / "t.nzb", inn, a, b)
    dest = tmp_path / "dest"
    dest.mkdir()
    # Scrap: a .part whose sidecar cannot be read is started over.
    (dest / "fresh.bin.part").write_bytes(b"\xff" * len(a.data))
    (dest / "fresh.bin.part.json").write_text("{not json")
    # Another download's partial file (a valid sidecar for other segments) is left alone.
    foreign = {"format": 1, "segments": "0" * 64, "size": 3, "crc32": None, "done": [[1, 1, 3, 0]]}
    (dest / "other.bin.part").write_bytes(b"abc")
    (dest / "other.bin.part.json").write_text(json.dumps(foreign))

    s = download_nzb(files, dest, [spec(inn)], connections=1)

    assert s.files_ok == ["fresh.bin", "other (1).bin"] and s.parts_resumed == 0
    assert (dest / "fresh.bin").read_bytes() == a.data
    assert (dest / "other (1).bin").read_bytes() == b.data
    assert (dest / "other.bin.part").read_bytes() == b"abc"
    assert visible(dest) == {"fresh.bin", "other (1).bin", "other.bin.part", "other.bin.part.json"}


def test_existing_different_file_is_never_overwritten(inn: InnServer, tmp_path: Path) -> None:
    a = post(inn, build(inn, "same.bin", os.urandom(PART + 1)))
    files = write_nzb(tmp_path / "t.nzb", inn, a)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "same.bin").write_bytes(b"mine")

    s = download_nzb(files, dest, [spec(inn)], connections=2)

    assert s.files_ok == ["same (1).bin"] and s.files_present == []
    assert (dest / "same.bin").read_bytes() == b"mine"
    assert (dest / "same (1).bin").read_bytes() == a.data


def test_auth_failure_raises_typed_error(inn: InnServer, tmp_path: Path) -> None:
    a = post(inn, build(inn, "locked.bin", os.urandom(100)))
    files = write_nzb(tmp_path / "t.nzb", inn, a)
    bad = ServerSpec(name="inn-auth", host=inn.host, port=inn.auth_port, user=inn.user, password="wrong", timeout=10.0)
    with pytest.raises(AuthFailed):
        download_nzb(files, tmp_path / "dest", [bad], connections=2)
    assert not (tmp_path / "dest" / "locked.bin").exists()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "BACKOFF_BASE", 0.05)
    monkeypatch.setattr(fetch, "BACKOFF_CAP", 0.2)


@pytest.mark.usefixtures("fast_backoff")
@pytest.mark.parametrize("fault", ["drop", "400"])
def test_lost_connection_is_reconnected_and_nothing_is_lost(inn: InnServer, tmp_path: Path, fault: str) -> None:
    a = post(inn, build(inn, "bumpy.bin", os.urandom(5 * PART + 3)))
    files = write_nzb(tmp_path / "t.nzb", inn, a)
    with FaultProxy(inn.host, inn.port) as proxy:
        if fault == "drop":
            proxy.drop_after_client_bytes(150)  # an RST while pipelined BODYs are in flight
        else:
            proxy.inject_reply(b"BODY", b"400 server going down\r\n")  # and it hangs up
        via = ServerSpec(name="proxy", host="127.0.0.1", port=proxy.port, timeout=5.0)
        s = download_nzb(files, tmp_path / "dest", [via], connections=2)
        assert sum(proxy.faults_fired.values()) == 1
    assert s.files_ok == ["bumpy.bin"] and s.files_damaged == []
    assert (tmp_path / "dest" / "bumpy.bin").read_bytes() == a.data


@pytest.mark.usefixtures("fast_backoff")
def test_unreachable_server_raises_typed_error(inn: InnServer, tmp_path: Path) -> None:
    a = post(inn, build(inn, "later.bin", os.urandom(100)))
    files = write_nzb(tmp_path / "t.nzb", inn, a)
    with FaultProxy(inn.host, inn.port) as proxy:
        proxy.down()
        via = ServerSpec(name="proxy", host="127.0.0.1", port=proxy.port, timeout=5.0)
        with pytest.raises(ConnectFailed) as info:
            download_nzb(files, tmp_path / "dest", [via], connections=2)
    assert isinstance(info.value, NetworkError) and "proxy" in str(info.value)
    assert list((tmp_path / "dest").iterdir()) == []


def test_interrupt_saves_progress_and_the_next_run_resumes(inn: InnServer, tmp_path: Path) -> None:
    a = post(inn, build(inn, "halted.bin", os.urandom(20 * PART)))
    files = write_nzb(tmp_path / "t.nzb", inn, a)
    dest = tmp_path / "dest"

    def ctrl_c(p: NzbProgress) -> None:
        if p.articles_done >= 1:
            raise KeyboardInterrupt

    ids = [m for _, _, m in a.segments]
    # The client's first bytes: one STAT (a plain command settles login/MODE
    # READER), then a window of 8 pipelined BODYs. It sends more only after
    # replies came in, so the server data that follows more client bytes is
    # held while the replies already in have been handled: Ctrl-C lands then.
    first = len(f"STAT {ids[0]}\r\n") + sum(len(f"BODY {m}\r\n") for m in ids[:8])
    with FaultProxy(inn.host, inn.port) as proxy:
        proxy.stall(5.0, after_client_bytes=first + 1)
        via = ServerSpec(name="proxy", host="127.0.0.1", port=proxy.port, timeout=10.0)
        with pytest.raises(InterruptedByUser):
            download_nzb(files, dest, [via], connections=1, progress=ctrl_c)
        assert proxy.faults_fired.get("stall") == 1
    saved = json.loads((dest / "halted.bin.part.json").read_text())["done"]
    # What was written before Ctrl-C is saved; the stalled rest is not.
    assert 1 <= len(saved) < 20 and not (dest / "halted.bin").exists()

    s = download_nzb(files, dest, [spec(inn)], connections=2)
    assert s.files_ok == ["halted.bin"] and s.parts_resumed == len(saved) and s.articles == 20 - len(saved)
    assert (dest / "halted.bin").read_bytes() == a.data and visible(dest) == {"halted.bin"}


def test_unnamed_single_article_files_are_named_in_nzb_order_across_probe_rounds(
    inn: InnServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An NZB like `nzb export` writes: one article per file, no quoted name in the Subject, so every
    # file is named by its probe, and the probes are all the fetching there is. Rounds of 3 files make
    # the naming of one round overlap the fetch of the next: names must still resolve in NZB order.
    from usenetsync_cli.pipeline import nzb_download

    monkeypatch.setattr(nzb_download, "_PROBE_BATCH", 3)
    names = ["a.bin", "dup.bin", "b.bin", "c.bin", "dup.bin", "d.bin", "e.bin", "dup.bin", "f.bin", "g.bin"]
    posted = [post(inn, build(inn, n, os.urandom(PART - 7 * i), subject=f"segment {i + 1}"))
              for i, n in enumerate(names)]
    files = write_nzb(tmp_path / "t.nzb", inn, *posted)
    dest = tmp_path / "dest"

    s = download_nzb(files, dest, [spec(inn)], connections=2)

    want = ["a.bin", "dup.bin", "b.bin", "c.bin", "dup (1).bin", "d.bin", "e.bin", "dup (2).bin", "f.bin", "g.bin"]
    assert s.files_ok == want and s.files_damaged == []
    assert s.parts_resumed == 0 and s.articles == len(names)  # fetched now, not resumed
    for name, p in zip(want, posted):
        assert (dest / name).read_bytes() == p.data
    assert visible(dest) == set(want)


def test_a_full_disk_while_naming_a_probe_round_stops_the_download(
    inn: InnServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Probe rounds are named (and their articles written) in a thread of their own: a write that fails
    # there must stop the whole download with its error, not be lost with the thread or hang the run.
    import errno

    from usenetsync_cli.errors import DiskFullError
    from usenetsync_cli.pipeline import nzb_download

    monkeypatch.setattr(nzb_download, "_PROBE_BATCH", 2)
    posted = [post(inn, build(inn, f"f{i}.bin", os.urandom(PART // 2), subject=f"segment {i}")) for i in range(6)]
    files = write_nzb(tmp_path / "t.nzb", inn, *posted)
    dest = tmp_path / "dest"
    real_open = os.open
    created: list[str] = []

    def full_on_third(path: object, flags: int, *a: object) -> int:
        if flags & os.O_CREAT and str(path).endswith(".part"):
            created.append(str(path))
            if len(created) == 3:  # the first file of the second round
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(nzb_download.os, "open", full_on_third)
    with pytest.raises(DiskFullError):
        download_nzb(files, dest, [spec(inn)], connections=2)
    assert len(created) == 3  # nothing was created after the failure
