"""Built articles against the REAL INN on 127.0.0.1:119 (no mocks).

Proves that INN accepts our headers (every Subject/From shape WireNames
makes, derived Message-IDs, the Date format) and that a full 768,000-byte
sealed segment survives POST -> BODY byte-exact. Uses a tiny raw socket
client on purpose: this tests the core's bytes, not the project's NNTP layer.
INN comes from the ``inn`` fixture (started if needed); these tests never skip.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.inn import InnServer
from usenetsync_cli.core.article import ARTICLE_TERMINATOR, build_article, decode_yenc_part, format_date
from usenetsync_cli.core.crypto import FolderKeys, new_folder_key, new_nonce, open_segment, place_aad, seal_segment
from usenetsync_cli.core.msgid import folder_domains, segment_message_id
from usenetsync_cli.core.names import WireNames

GROUP = "alt.binaries.test"


class RawNNTP:
    def __init__(self, host: str, port: int) -> None:
        # No skip: the ``inn`` fixture brought INN up (or failed the test), so a refused connect is a failure.
        self.sock = socket.create_connection((host, port), timeout=10)
        self.file = self.sock.makefile("rb")
        greeting = self.line()
        assert greeting[:3] in (b"200", b"201"), greeting

    def line(self) -> bytes:
        data = self.file.readline()
        assert data.endswith(b"\r\n"), data
        return data[:-2]

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def post(self, buffers: list[bytes]) -> bytes:
        reply = self.command("POST")
        assert reply.startswith(b"340"), reply
        whole = b"".join(buffers)
        # Defensive dot-stuffing, as the real NNTP layer does; a no-op here.
        stuffed = (b"." + whole if whole.startswith(b".") else whole).replace(b"\r\n.", b"\r\n..")
        assert stuffed == whole
        self.sock.sendall(stuffed + ARTICLE_TERMINATOR)
        return self.line()

    def multiline(self, text: str, expect: bytes) -> tuple[bytes, bytes]:
        status = self.command(text)
        assert status.startswith(expect), status
        chunks = []
        while True:
            line = self.file.readline()
            if line == b".\r\n":
                break
            chunks.append(line[1:] if line.startswith(b"..") else line)
        return status, b"".join(chunks)

    def close(self) -> None:
        try:
            self.command("QUIT")
        finally:
            self.sock.close()


@pytest.fixture()
def nntp(inn: InnServer) -> Iterator[RawNNTP]:
    client = RawNNTP(inn.host, inn.port)
    yield client
    client.close()


def test_inn_accepts_every_header_shape_and_returns_the_body(nntp: RawNNTP) -> None:
    keys = FolderKeys.derive(new_folder_key())  # fresh key: IDs never seen by this INN
    domains = folder_domains(keys.domain_key)
    uid = os.urandom(16)
    rng = random.Random(int.from_bytes(os.urandom(8), "big"))
    for seg_id in range(40):  # enough draws to hit every Subject and From style
        names = WireNames(rng)
        plaintext = os.urandom(rng.randint(1, 3000))
        aad = place_aad(uid, seg_id % 16, seg_id)
        sealed = seal_segment(keys.aesgcm, aad, plaintext, new_nonce())
        msgid = segment_message_id(keys.msgid_key, domains, seg_id % 16, seg_id, 0)
        subject, poster, yname = names.subject(), names.poster(), names.yenc_name()
        buffers = build_article(
            message_id=msgid,
            subject=subject,
            poster=poster,
            newsgroups=[GROUP],
            date=format_date(time.time()),
            payload=sealed,
            yenc_name=yname,
        )
        reply = nntp.post(buffers)
        assert reply.startswith(b"240"), (reply, subject, poster, msgid)

        _, head = nntp.multiline(f"HEAD {msgid}", b"221")
        assert f"Subject: {subject}\r\n".encode() in head
        assert f"From: {poster}\r\n".encode() in head
        assert f"Message-ID: {msgid}\r\n".encode() in head
        _, body = nntp.multiline(f"BODY {msgid}", b"222")
        assert body == buffers[1]  # byte-exact round trip through INN
        decoded = decode_yenc_part(body)
        assert decoded.crc_ok and decoded.name == yname
        assert open_segment(keys.aesgcm, aad, decoded.payload) == plaintext


def test_inn_round_trips_a_full_768000_byte_segment(nntp: RawNNTP) -> None:
    keys = FolderKeys.derive(new_folder_key())
    domains = folder_domains(keys.domain_key)
    aad = place_aad(os.urandom(16), 7, 123_456)
    plaintext = os.urandom(768_000)
    sealed = seal_segment(keys.aesgcm, aad, plaintext, new_nonce())
    names = WireNames.fresh()
    msgid = segment_message_id(keys.msgid_key, domains, 7, 123_456, 0)
    buffers = build_article(
        message_id=msgid,
        subject=names.subject(),
        poster=names.poster(),
        newsgroups=[GROUP, "alt.binaries.misc"],
        date=format_date(time.time()),
        payload=sealed,
        yenc_name=names.yenc_name(),
    )
    assert sum(map(len, buffers)) < 1_000_000
    reply = nntp.post(buffers)
    assert reply.startswith(b"240"), reply
    assert nntp.command(f"STAT {msgid}").startswith(b"223")
    _, body = nntp.multiline(f"BODY {msgid}", b"222")
    decoded = decode_yenc_part(body)
    assert decoded.crc_ok
    assert open_segment(keys.aesgcm, aad, decoded.payload) == plaintext
    # Posting the same derived ID again is refused as a duplicate (the
    # behaviour the resume logic relies on).
    again = nntp.post(buffers)
    assert again.startswith(b"441") and b"435" in again, again
