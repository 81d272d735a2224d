"""What a server (or anyone reading its overview) sees of two publishers' uploads and shares: no mark.

Against the real INN: two users each upload a folder and publish a share;
every article they posted (segments, index chunks and tables, roots) is
read back as a stranger would. Nothing may name the tool, group the
articles by folder or publisher, or single out an article kind: every
Message-ID has its own domain, which its From repeats; full segments do
not share one yEnc size; no payload starts with a constant; no article
holds the tool's name, a magic, or either publisher's keys or fingerprints.
"""

from __future__ import annotations

import collections
import os
import re
from pathlib import Path

import pytest

from tests.cli.test_share_download import Users, users  # noqa: F401 - fixture
from tests.cli.test_share_squatting import _Posted
from tests.pipeline.upload_support import message_ids
from tests.support.inn import InnServer
from usenetsync_cli.core.article import decode_yenc_article
from usenetsync_cli.store import catalog
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State


def _publish_folder(users: Users, who: str, src: Path) -> list[str]:
    src.mkdir()
    for i in range(40):
        (src / f"f{i}.bin").write_bytes(os.urandom(40_000))  # 3 segments of 16 KiB each
    assert users.as_(who, "index", str(src)).code == 0
    assert users.as_(who, "share", "create", str(src), "--public", "--name", "s").code == 0
    r = users.as_(who, "upload", str(src), "--segment-size", "16384", "--redundancy", "0")
    assert r.code == 0, r.err
    users.mp.setenv("USENETSYNC_HOME", str(users.homes[who]))
    with State.open(Home.resolve()) as st:
        folder = catalog.get_folder(st.catalog, os.fsencode(src.resolve()))
        assert folder is not None
        return list(message_ids(st, folder).values())


def _head_and_body(inn: InnServer, mid: str) -> tuple[bytes, bytes]:
    with inn.connect() as c:
        assert c.command(f"HEAD {mid}")[0] == 221
        head = c.read_block()
        assert c.command(f"BODY {mid}")[0] == 222
        body = c.read_block()
        c.quit()
    return head, body


def _header(head: bytes, name: bytes) -> str:
    found = re.search(rb"^" + name + rb": (.*)\r\n", head, re.M | re.I)
    assert found, (name, head)
    return found.group(1).decode()


def test_two_publishers_leave_nothing_that_links_or_names_them(
    users: Users, tmp_path: Path, inn: InnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted = _Posted(monkeypatch)
    ids: dict[str, list[str]] = {}
    for who in ("alice", "carol"):
        ids[who] = _publish_folder(users, who, tmp_path / f"src-{who}") + posted.take()
    every = ids["alice"] + ids["carol"]
    assert len(every) >= 240
    from usenetsync_cli.core.identity import PublicIdentity
    from usenetsync_cli.core.shareid import signer_of

    marks = [b"usenetsync", b"USNETSYNC", b"USENETSYNC"]
    for who in ("alice", "carol"):
        pub = PublicIdentity.from_text(users.pubkey(who))
        marks += [pub.sign_pub, pub.box_pub, pub.fingerprint(), signer_of(pub.sign_pub),
                  pub.fingerprint().hex().encode(), signer_of(pub.sign_pub).hex().encode()]

    domains: dict[str, set[str]] = {"alice": set(), "carol": set()}
    sizes: collections.Counter[int] = collections.Counter()
    first_bytes: set[bytes] = set()
    for who, mids in ids.items():
        for mid in mids:
            head, body = _head_and_body(inn, mid)
            assert b"usenetsync" not in head.lower() and b"usnetsync" not in head.lower()
            domain = mid[mid.rindex("@") + 1:-1]
            sender = _header(head, b"From")
            assert sender.endswith(f"@{domain}>"), (sender, mid)  # From host = Message-ID host
            domains[who].add(domain)
            size = re.search(rb"^=ybegin .*size=(\d+)", body, re.M)
            assert size
            sizes[int(size.group(1))] += 1
            payload, _name, crc_ok = decode_yenc_article(body)
            assert crc_ok
            first_bytes.add(payload[:2])
            # No tool name, magic, or publisher key or fingerprint, in the clear, anywhere in the article.
            assert not [m for m in marks if m in payload or m in head or m in body], mid
    # Every article its own host: no per-folder or per-publisher set of domains to group by.
    assert len(domains["alice"]) >= 0.98 * len(ids["alice"]) and len(domains["carol"]) >= 0.98 * len(ids["carol"])
    assert not domains["alice"] & domains["carol"]
    # Full 16 KiB segments are padded by a keyed 0..8191 bytes: no size stands out.
    assert sizes.most_common(1)[0][1] <= 0.05 * len(every), sizes.most_common(3)
    # Payloads start with a random nonce: no version byte or magic marks them.
    assert len(first_bytes) >= 0.9 * len(every)
