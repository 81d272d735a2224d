"""Tests of the spool-rewriting helpers of ``tests.support.inn`` against the real INN.

Owns: evidence that ``replace_body`` and ``reencode_yenc`` change exactly the
body INN serves (headers untouched) and that a re-encoded article carries a
valid yEnc CRC over the new payload — what the tamper tests rely on to get
past the CRC check to the checks behind it.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.support.inn import InnError, InnServer, fresh_message_id
from usenetsync_cli.core.article import build_article, decode_yenc_part, format_date


def _posted(inn: InnServer, payload: bytes) -> tuple[str, bytes]:
    mid = fresh_message_id("helper")
    header, body = build_article(message_id=mid, subject="s", poster="p <p@example.invalid>", newsgroups=[inn.group],
                                 date=format_date(time.time()), payload=payload, yenc_name="n.bin")
    assert inn.post(header + body)[0] == 240
    return mid, header


def _head(inn: InnServer, mid: str) -> bytes:
    with inn.connect() as conn:
        assert conn.command(f"HEAD {mid}")[0] == 221
        head = conn.read_block()
        conn.quit()
    return head


def test_reencode_yenc_gives_a_new_payload_with_a_valid_crc(inn: InnServer) -> None:
    payload = os.urandom(5000) + b"=\r\n.\x00" * 50  # bytes yEnc must escape, and a dot after CRLF
    mid, _ = _posted(inn, payload)
    head = _head(inn, mid)
    flipped = inn.reencode_yenc(mid, lambda p: p[:-1] + bytes([p[-1] ^ 0xFF]))
    assert flipped[:-1] == payload[:-1] and flipped[-1] != payload[-1]
    part = decode_yenc_part(inn.body(mid) or b"")
    assert part.crc_ok and part.payload == flipped and part.name == "n.bin"
    assert _head(inn, mid) == head  # only the body changed
    longer = inn.reencode_yenc(mid, lambda p: p + b"tail")  # the size may change too
    assert decode_yenc_part(inn.body(mid) or b"").payload == longer == flipped + b"tail"


def test_replace_body_and_its_guards(inn: InnServer) -> None:
    mid, _ = _posted(inn, b"x" * 100)
    body = b"plain text now\r\n.leading dot survives\r\n"
    inn.replace_body(mid, body)
    assert inn.body(mid) == body
    with pytest.raises(ValueError):
        inn.replace_body(mid, b"no final CRLF")
    with pytest.raises(InnError):
        inn.reencode_yenc(mid, lambda p: p)  # not yEnc any more
    with pytest.raises(InnError):
        inn.reencode_yenc(fresh_message_id("never-posted"), lambda p: p)
