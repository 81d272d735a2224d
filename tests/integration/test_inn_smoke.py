"""Smoke tests of the real INN on loopback, and of the ``inn`` fixture's helpers.

Owns: the baseline every integration test builds on -- each endpoint answers
as DESIGN §8 and shared/peers/REPORT.md describe, and the damage helpers
(cancel, corrupt) really change what the server serves.  Uses raw NNTP only,
so a failure here points at the environment, not the product.

Invariants checked: 119 posts without auth; 1190 and 563 demand AUTHINFO
(480) and accept the test user (281); 563 presents a certificate that
verifies against /etc/news/cert.pem for 127.0.0.1.
"""

from __future__ import annotations

import ssl

import pytest

from tests.support.inn import InnError, InnServer, fresh_message_id
from tests.support.rawnntp import RawNNTP, make_article


def test_post_and_stat_on_plain_port(inn: InnServer) -> None:
    mid = fresh_message_id("smoke")
    with inn.connect() as conn:
        assert conn.greeting is not None
        assert conn.greeting[0] == 200 and "posting ok" in conn.greeting[1]
        code, text = conn.post(make_article(mid, b"smoke body\r\n", group=inn.group))
        assert (code, text) == (240, f"Article received {mid}")
        assert conn.command(f"STAT {mid}") == (223, f"0 {mid} status")
    assert inn.stat(mid) == 223  # visible on a fresh connection at once
    assert inn.stat(fresh_message_id("never-posted")) == 430


def test_auth_port_requires_login(inn: InnServer) -> None:
    with RawNNTP(inn.host, inn.auth_port) as conn:
        assert conn.greeting is not None and conn.greeting[0] == 200
        assert conn.command("POST")[0] == 480
        assert conn.login(inn.user, "wrong-" + inn.password)[0] == 481
        assert conn.login(inn.user, inn.password)[0] == 281
        assert conn.command("POST")[0] == 340
        conn.send_raw(b".\r\n")  # abandon the POST: an empty article is rejected
        assert conn.read_status()[0] == 441


def test_tls_port_verifies_against_self_signed_cert(inn: InnServer) -> None:
    ctx = inn.tls_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with RawNNTP(inn.host, inn.tls_port, tls_context=ctx, server_hostname="127.0.0.1") as conn:
        assert isinstance(conn.sock, ssl.SSLSocket)
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert conn.greeting is not None and conn.greeting[0] == 200
        assert conn.command("POST")[0] == 480
        assert conn.login(inn.user, inn.password)[0] == 281
        assert conn.stat(fresh_message_id("tls")) == 430


def test_tls_port_rejects_unknown_ca(inn: InnServer) -> None:
    # The default trust store does not know INN's self-signed cert: proves verification is real.
    ctx = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        RawNNTP(inn.host, inn.tls_port, tls_context=ctx, server_hostname="127.0.0.1").close()


def test_groups_exist(inn: InnServer) -> None:
    assert inn.group == "alt.binaries.test"
    with inn.connect() as conn:
        for group in inn.groups:
            assert conn.command(f"GROUP {group}")[0] == 211


def test_cancel_makes_article_430_and_id_stays_burnt(inn_server: InnServer) -> None:
    inn = inn_server
    mid = fresh_message_id("cancel")
    art = make_article(mid, b"to be cancelled\r\n", group=inn.group)
    assert inn.post(art)[0] == 240
    assert inn.stat(mid) == 223
    inn.cancel(mid)
    assert inn.stat(mid) == 430
    assert inn.body(mid) is None
    assert inn.post(art) == (441, "435 Duplicate")


def test_helpers_verify_their_effect(inn: InnServer) -> None:
    # ctlinnd prints "Ok" even when it did nothing, so cancel() must check STAT itself.
    class Stubborn(InnServer):
        def stat(self, message_id: str) -> int:
            return 223

    stubborn = Stubborn(**{f: getattr(inn, f) for f in inn.__dataclass_fields__})
    with pytest.raises(InnError, match="expected 430"):
        stubborn.cancel(fresh_message_id("stubborn"))
    with pytest.raises(InnError, match="430"):
        inn.article_file(fresh_message_id("unknown"))


def test_article_file_and_corrupt(inn: InnServer) -> None:
    mid = fresh_message_id("corrupt")
    body = b"first line\r\n.leading dot\r\nthird\r\n"
    assert inn.post(make_article(mid, body, group=inn.group))[0] == 240
    path = inn.article_file(mid)
    assert path.is_relative_to(inn.spool / "alt" / "binaries" / "test")
    raw = path.read_bytes()
    assert mid.encode() in raw and raw.endswith(b"\r\n.\r\n") and b"\r\n..leading dot\r\n" in raw
    assert inn.body(mid) == body

    inn.corrupt(mid, 2)  # 'r' -> 's'
    assert inn.body(mid) == b"fisst line\r\n.leading dot\r\nthird\r\n"
    dot = body.index(b".leading")
    inn.corrupt(mid, dot)  # the stuffed dot itself: re-stuffing must keep the wire valid
    got = inn.body(mid)
    assert got is not None and got[dot] not in b".\r\n" and got[dot + 1 :] == body[dot + 1 :]
    assert inn.stat(mid) == 223
    with pytest.raises(ValueError):
        inn.corrupt(mid, body.index(b"\r\n"))
    with pytest.raises(ValueError):
        inn.corrupt(mid, len(body))
