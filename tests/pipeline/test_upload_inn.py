"""Upload against the real INN: round trip, headers, resume, and re-runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.pipeline.upload_support import SEG, indexed, make_tree, message_ids, read_back, spec_for
from tests.support.inn import InnServer
from usenetsync_cli.pipeline.upload import UploadOptions, upload_folder
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State


@pytest.fixture
def state(tmp_path: Path):  # type: ignore[no-untyped-def]
    with State.open(Home.resolve(tmp_path / "home")) as s:
        yield s


def _opts(inn: InnServer, **kw: object) -> UploadOptions:
    return UploadOptions(servers=[spec_for(inn.host, inn.port)], segment_size=SEG, check_delay=0, **kw)  # type: ignore[arg-type]


def test_round_trip_is_byte_identical(state: State, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    folder = indexed(state, src)
    s = upload_folder(state, folder, _opts(inn))
    assert s.complete and s.failed == 0 and s.pending == 0
    assert s.verified == s.segments == s.posted_now
    # 2 large files of 3 segments each; 32 small files packed (at most one open pack per shard)
    assert 6 < s.segments <= 6 + 16
    assert read_back(state, folder) == files
    for mid in message_ids(state, folder).values():
        assert inn.stat(mid) == 223


@pytest.mark.parametrize("encoders", [0, 2])
def test_round_trip_with_posting_threads_encoding_or_two_encoders(
    state: State, tmp_path: Path, inn: InnServer, encoders: int
) -> None:
    """encoders=0 (posting threads encode) and 2 (each with its own reused buffers) give the same result."""
    src = tmp_path / "src"
    files = make_tree(src, large=3, small=40, seed=encoders + 7)
    (src / "changing.bin").write_bytes(os.urandom(100_000))
    folder = indexed(state, src)
    (src / "changing.bin").write_bytes(os.urandom(100_000))  # changed after the index: replanned, then posted
    files[b"changing.bin"] = (src / "changing.bin").read_bytes()
    opts = _opts(inn)
    opts.encoders = encoders
    s = upload_folder(state, folder, opts)
    assert s.complete and s.failed == 0 and s.pending == 0 and s.verified == s.segments
    assert read_back(state, folder) == files


def test_headers_reveal_nothing(state: State, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "secretproject"
    make_tree(src, large=1, small=10)
    folder = indexed(state, src)
    upload_folder(state, folder, _opts(inn))
    subjects, posters, names = set(), set(), set()
    ids = list(message_ids(state, folder).values())
    with inn.connect() as raw:
        for mid in ids:
            code, _ = raw.command(f"HEAD {mid}")
            assert code == 221
            head = raw.read_block()
            text = head.decode("latin-1")
            low = text.lower()
            for leak in ("usenetsync", "secretproject", "large0", "f1.txt", "user-agent", "\nx-"):
                assert leak not in low, leak
            subjects.add(re.search(r"(?m)^Subject: (.*)$", text).group(1))  # type: ignore[union-attr]
            posters.add(re.search(r"(?m)^From: (.*)$", text).group(1))  # type: ignore[union-attr]
            body = raw.body(mid)
            assert body is not None
            names.add(re.search(rb"name=(\S+)", body).group(1))  # type: ignore[union-attr]
        raw.quit()
    assert len(subjects) == len(posters) == len(names) == len(ids)
    assert not any(n.decode() in s for n in names for s in subjects)


def test_second_run_posts_nothing(state: State, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    make_tree(src, large=1, small=5)
    folder = indexed(state, src)
    first = upload_folder(state, folder, _opts(inn))
    again = upload_folder(state, folder, _opts(inn))
    assert first.posted_now > 0 and again.posted_now == 0 and again.complete
    assert again.segments == first.segments


def test_changed_file_is_replanned_and_old_layout_superseded(state: State, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    files = make_tree(src, large=1, small=4)
    folder = indexed(state, src)
    upload_folder(state, folder, _opts(inn))
    rel = b"big/large0.bin"
    new = os.urandom(SEG * 3 + 5)
    with open(os.path.join(os.fsencode(src), rel), "wb") as f:
        f.write(new)
    files[rel] = new
    indexed(state, src)
    s = upload_folder(state, folder, _opts(inn))
    assert s.complete and s.posted_now == 4
    assert read_back(state, folder) == files


def test_file_changed_after_index_is_detected_and_replanned(state: State, tmp_path: Path, inn: InnServer) -> None:
    """A file rewritten between index and upload is never posted half-old: it is re-planned from disk."""
    src = tmp_path / "src"
    files = make_tree(src, large=1, small=3)
    folder = indexed(state, src)
    rel = b"big/large0.bin"
    new = os.urandom(SEG + 100)
    path = os.path.join(os.fsencode(src), rel)
    with open(path, "wb") as f:
        f.write(new)
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))
    files[rel] = new
    s = upload_folder(state, folder, _opts(inn))
    assert s.complete and s.changed_sources >= 1 and s.rounds >= 2
    assert read_back(state, folder) == files


def test_missing_after_post_is_reposted_under_new_attempt(state: State, tmp_path: Path, inn: InnServer) -> None:
    src = tmp_path / "src"
    files = make_tree(src, large=1, small=0)
    folder = indexed(state, src)
    s = upload_folder(state, folder, _opts(inn, check=False))
    assert s.posted_unverified == s.segments
    victim_key, victim = next(iter(message_ids(state, folder).items()))
    inn.cancel(victim)
    s = upload_folder(state, folder, _opts(inn))
    assert s.complete and s.reposted == 1
    new_id = message_ids(state, folder)[victim_key]
    assert new_id != victim and inn.stat(new_id) == 223 and inn.stat(victim) == 430
    assert read_back(state, folder) == files


def test_limit_rate_paces_the_upload(state: State, tmp_path: Path, inn: InnServer) -> None:
    """A functional check of --limit-rate: 3 MB at 1 MB/s (1 MB burst) cannot finish in under ~2 s."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(os.urandom(3_000_000))
    folder = indexed(state, src)
    s = upload_folder(state, folder, _opts(inn, limit_rate=1_000_000, check=False))
    assert s.posted_now == s.segments and s.wire_bytes_posted > 3_000_000
    assert s.elapsed_s >= (s.wire_bytes_posted - 1_000_000) / 1_000_000 * 0.95
