"""Properties of article framing and yEnc decoding (usenetsync_cli.core.article)."""

from __future__ import annotations

import contextlib
import os
import zlib

import pytest
import sabctools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usenetsync_cli.core.article import (
    ARTICLE_TERMINATOR,
    MAX_ARTICLE_BYTES,
    MAX_SAFE_PAYLOAD_ANY,
    article_size,
    build_article,
    decode_yenc_article,
    decode_yenc_data,
    decode_yenc_part,
    estimate_article_size,
    format_date,
    max_article_size,
    yenc_encoded_size_max,
)
from usenetsync_cli.core.crypto import SEAL_OVERHEAD, FolderKeys, new_nonce, open_segment, place_aad, seal_segment
from usenetsync_cli.errors import ConfigError, ProtocolError, TamperedError

KEYS = FolderKeys.derive(b"\x01" * 32)
AAD = place_aad(b"\x02" * 16, 0, 1)
SEGMENT = 768_000

# Input bytes whose yEnc form is special: (b + 42) % 256 is NUL, LF, CR, '='
# (always escaped), '.' (escaped at a line start), space or tab (escaped at a
# line start or end).
CRITICAL = bytes([214, 224, 227, 19])
DOT = 4  # encodes to '.'
SPECIAL = CRITICAL + bytes([DOT, 246, 223, 46, 0, 255])

payloads = st.one_of(
    st.binary(min_size=1, max_size=3000),
    st.lists(st.sampled_from(SPECIAL), min_size=1, max_size=3000).map(bytes),
    st.builds(lambda n: bytes([DOT]) * n, st.integers(1, 3000)),
)


def article(data: bytes | bytearray | memoryview, **overrides: object) -> list[bytes]:
    fields: dict[str, object] = {
        "message_id": "<abcdefghijklmnopqrstuvwxyz@velorak.net>",
        "subject": "Trimesko Velaro 2019",
        "poster": "Darin Kovask <darin.kovask@plofelia.com>",
        "newsgroups": ["alt.binaries.test"],
        "date": "Mon, 23 Nov 2026 18:44:41 GMT",
        "payload": data,
        "yenc_name": "j5d80ipl8znx501agj5g5",
    }
    fields.update(overrides)
    return build_article(**fields)  # type: ignore[arg-type]


def lines_of(buffers: list[bytes]) -> list[bytes]:
    whole = b"".join(buffers)
    assert whole.endswith(b"\r\n")
    return whole[:-2].split(b"\r\n")


# --- building -----------------------------------------------------------------------------------


def test_exact_headers_and_framing() -> None:
    header, body = article(b"hello world")
    assert header == (
        b"From: Darin Kovask <darin.kovask@plofelia.com>\r\n"
        b"Newsgroups: alt.binaries.test\r\n"
        b"Subject: Trimesko Velaro 2019\r\n"
        b"Message-ID: <abcdefghijklmnopqrstuvwxyz@velorak.net>\r\n"
        b"Date: Mon, 23 Nov 2026 18:44:41 GMT\r\n"
        b"\r\n"
    )
    encoded, crc = sabctools.yenc_encode(b"hello world")
    assert body == (
        b"=ybegin part=1 total=1 line=128 size=11 name=j5d80ipl8znx501agj5g5\r\n"
        b"=ypart begin=1 end=11\r\n" + encoded + b"\r\n=yend size=11 part=1 pcrc32=%08x crc32=%08x\r\n" % (crc, crc)
    )
    assert crc == zlib.crc32(b"hello world")


def test_nothing_names_the_tool() -> None:
    whole = b"".join(article(os.urandom(5000))).lower()
    head = whole.split(b"\r\n\r\n")[0]
    assert b"usenetsync" not in whole
    assert b"user-agent" not in head and b"\r\nx-" not in head and b"organization" not in head
    assert [line.split(b":")[0] for line in head.split(b"\r\n")] == [
        b"from",
        b"newsgroups",
        b"subject",
        b"message-id",
        b"date",
    ]


def test_crossposting_and_configured_extras() -> None:
    header, _ = article(
        b"x", newsgroups=["alt.binaries.test", "alt.binaries.misc"], extra_headers=[("User-Agent", "Mozilla/5.0")]
    )
    assert b"Newsgroups: alt.binaries.test,alt.binaries.misc\r\n" in header
    assert header.endswith(b"Date: Mon, 23 Nov 2026 18:44:41 GMT\r\nUser-Agent: Mozilla/5.0\r\n\r\n")


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"newsgroups": []}, ConfigError),
        ({"newsgroups": "alt.binaries.test"}, ConfigError),
        ({"newsgroups": ["Alt Binaries"]}, ConfigError),
        ({"newsgroups": ["alt..test"]}, ConfigError),
        ({"extra_headers": [("From", "x <a@b.c>")]}, ConfigError),
        ({"extra_headers": [("Bad Name", "x")]}, ConfigError),
        ({"extra_headers": [("X-A", "1"), ("x-a", "2")]}, ConfigError),
        ({"extra_headers": [("Organization", "a\r\nb")]}, ConfigError),
        ({"subject": "two\r\nlines"}, ValueError),
        ({"subject": ""}, ValueError),
        ({"subject": "x" * 1000}, ValueError),
        ({"subject": "caf\u00e9"}, ValueError),
        ({"poster": "a\nb"}, ValueError),
        ({"message_id": "no-brackets@x.com"}, ValueError),
        ({"yenc_name": " padded "}, ValueError),
        ({"yenc_name": "a\r\nb"}, ValueError),
        ({"payload": b""}, ValueError),
    ],
)
def test_bad_values_are_refused(overrides: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        article(b"payload", **overrides)


def test_payload_buffers_other_than_bytes() -> None:
    data = os.urandom(1000)
    expected = article(data)
    assert article(bytearray(data)) == expected
    assert article(memoryview(b"xx" + data)[2:]) == expected


def test_format_date_is_rfc5322_gmt() -> None:
    assert format_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


# --- dot-stuffing: proven unnecessary -----------------------------------------------------------


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_no_line_ever_starts_with_a_dot(payload: bytes) -> None:
    buffers = article(payload)
    for line in lines_of(buffers):
        assert not line.startswith(b"."), line[:20]
    # Hence dot-stuffing would change nothing:
    whole = b"".join(buffers)
    assert b"\r\n." not in whole and not whole.startswith(b".")


def test_no_dot_line_for_every_line_phase() -> None:
    # All-'.' data puts a '.' at every column, so every line start is tested,
    # for every length modulo the line length (escapes shift the phase).
    for n in range(1, 700):
        for payload in (bytes([DOT]) * n, bytes([DOT, 19]) * n, bytes([19]) * n + bytes([DOT]) * 200):
            encoded, _ = sabctools.yenc_encode(payload)
            assert b"\r\n." not in encoded and not encoded.startswith(b".")


def test_no_dot_line_in_full_size_worst_cases() -> None:
    for payload in (bytes([DOT]) * SEGMENT, (bytes([DOT]) + CRITICAL) * (SEGMENT // 5), os.urandom(SEGMENT)):
        encoded, _ = sabctools.yenc_encode(payload)
        assert b"\r\n." not in encoded and not encoded.startswith(b".")


# --- round trips --------------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_build_then_decode_round_trip(payload: bytes) -> None:
    _, body = article(payload)
    data, name, crc_ok = decode_yenc_article(body)
    assert data == payload
    assert name == "j5d80ipl8znx501agj5g5"
    assert crc_ok
    part = decode_yenc_part(body)
    assert (part.part, part.total, part.begin, part.end, part.file_size) == (1, 1, 1, len(payload), len(payload))
    assert part.crc32 == part.expected_crc == zlib.crc32(payload)
    assert part.file_crc32 is None


@settings(max_examples=200)
@given(payloads)
def test_pure_python_decoder_agrees_with_sabctools(payload: bytes) -> None:
    encoded, _ = sabctools.yenc_encode(payload)
    assert decode_yenc_data(encoded) == payload


def test_full_segment_round_trip_through_seal_and_yenc() -> None:
    plaintext = os.urandom(SEGMENT)
    sealed = seal_segment(KEYS.aesgcm, AAD, plaintext, new_nonce())
    buffers = article(sealed)
    size = article_size(buffers)
    assert size == len(buffers[0]) + len(buffers[1]) + len(ARTICLE_TERMINATOR)
    assert size < MAX_ARTICLE_BYTES
    # Typical random data: ~3.2 % yEnc overhead (measured ~792.7 KB total).
    assert 785_000 < size < 800_000
    assert abs(estimate_article_size(len(sealed)) - size) < 0.005 * size
    payload, _, crc_ok = decode_yenc_article(buffers[1])
    assert crc_ok
    assert open_segment(KEYS.aesgcm, AAD, payload) == plaintext


# --- sizes --------------------------------------------------------------------------------------


def test_worst_case_full_segment_would_exceed_the_limit() -> None:
    # Arbitrary (not encrypted) data can double: 768,029 all-critical bytes
    # encode to 1,560,058, so such an article is refused, not posted.
    payload = CRITICAL * ((SEGMENT + SEAL_OVERHEAD) // 4) + CRITICAL[:1]
    assert len(payload) == SEGMENT + SEAL_OVERHEAD
    encoded, _ = sabctools.yenc_encode(payload)
    assert len(encoded) == yenc_encoded_size_max(len(payload)) == 1_560_058
    with pytest.raises(ConfigError, match="over the 1,000,000-byte limit"):
        article(payload)


def test_max_safe_payload_fits_even_in_the_worst_case() -> None:
    assert 480_000 < MAX_SAFE_PAYLOAD_ANY < 500_000
    worst = bytes([19]) * MAX_SAFE_PAYLOAD_ANY
    buffers = article(worst)
    assert article_size(buffers) <= MAX_ARTICLE_BYTES
    assert max_article_size(MAX_SAFE_PAYLOAD_ANY) <= MAX_ARTICLE_BYTES < max_article_size(MAX_SAFE_PAYLOAD_ANY + 1)


@given(st.lists(st.sampled_from(SPECIAL), min_size=1, max_size=5000).map(bytes))
def test_encoded_size_bound_holds(payload: bytes) -> None:
    encoded, _ = sabctools.yenc_encode(payload)
    assert len(encoded) <= yenc_encoded_size_max(len(payload))


@given(st.integers(1, 5000))
def test_encoded_size_bound_is_exact_for_all_critical_input(n: int) -> None:
    encoded, _ = sabctools.yenc_encode(bytes([19]) * n)
    assert len(encoded) == yenc_encoded_size_max(n)


def test_random_sealed_segments_stay_far_below_the_limit() -> None:
    sizes = []
    for _ in range(5):
        sealed = seal_segment(KEYS.aesgcm, AAD, os.urandom(SEGMENT), new_nonce())
        sizes.append(article_size(article(sealed)))
    assert max(sizes) < 800_000


# --- decoding other posters' bodies ---------------------------------------------------------------


def foreign_body(
    data: bytes, *, part: int, total: int, begin: int, file_size: int, name: str = "big file.bin"
) -> bytes:
    encoded, crc = sabctools.yenc_encode(data)
    return (
        b"=ybegin part=%d total=%d line=128 size=%d name=%s\r\n" % (part, total, file_size, name.encode())
        + b"=ypart begin=%d end=%d\r\n" % (begin, begin + len(data) - 1)
        + encoded
        + b"\r\n=yend size=%d part=%d pcrc32=%08X crc32=deadbeef\r\n" % (len(data), part, crc)
    )


def test_multipart_body_reports_its_place() -> None:
    data = os.urandom(5000)
    body = foreign_body(data, part=2, total=3, begin=5001, file_size=12_000)
    decoded = decode_yenc_part(body)
    assert decoded.payload == data
    assert decoded.crc_ok
    assert (decoded.part, decoded.total, decoded.begin, decoded.end, decoded.file_size) == (2, 3, 5001, 10_000, 12_000)
    assert decoded.name == "big file.bin"
    assert decoded.file_crc32 == 0xDEADBEEF
    assert decode_yenc_article(body) == (data, "big file.bin", True)


def test_yenc_11_single_part_without_ypart() -> None:
    data = os.urandom(3000)
    encoded, crc = sabctools.yenc_encode(data)
    body = b"=ybegin line=128 size=3000 name=old.bin\r\n" + encoded + b"\r\n=yend size=3000 crc32=%08x\r\n" % crc
    decoded = decode_yenc_part(body)
    assert (decoded.payload, decoded.crc_ok, decoded.part, decoded.total) == (data, True, None, None)


def naive_encode(data: bytes) -> bytes:
    """A yEnc encoder that, like some old posters, does not escape leading dots."""
    out, line = [], bytearray()
    for byte in data:
        c = (byte + 42) % 256
        if c in (0, 10, 13, 61):
            line += bytes((61, (c + 64) % 256))
        else:
            line.append(c)
        if len(line) >= 128:
            out.append(bytes(line))
            line = bytearray()
    out.append(bytes(line))
    return b"\r\n".join(out)


@pytest.mark.parametrize(
    "data",
    [
        # lines starting with '.', and one made of dots only
        bytes([DOT]) * 128 + bytes(range(100, 200)) + bytes([DOT]) * 129,
        # a data line that is exactly "." (the NNTP terminator if not stuffed)
        bytes([65]) * 128 + bytes([DOT]),
        bytes([65]) * 128 + bytes([DOT]) + bytes([66]) * 128 + bytes([DOT]) * 2,
    ],
)
def test_body_with_unstuffed_dot_lines_uses_the_exact_fallback(data: bytes) -> None:
    # After dot-unstuffing, a data line may start with '.' or be just '.';
    # sabctools' Decoder alone would treat them as stuffing/terminator.
    encoded = naive_encode(data)
    assert b"\r\n." in encoded or encoded.startswith(b".")
    body = b"=ybegin part=1 total=1 line=128 size=%d name=n\r\n=ypart begin=1 end=%d\r\n" % (len(data), len(data))
    body += encoded + b"\r\n=yend size=%d part=1 pcrc32=%08x\r\n" % (len(data), zlib.crc32(data))
    assert decode_yenc_article(body) == (data, "n", True)


def test_lf_only_body_decodes() -> None:
    data = os.urandom(4000)
    _, body = article(data)
    assert decode_yenc_article(body.replace(b"\r\n", b"\n")) == (data, "j5d80ipl8znx501agj5g5", True)


def test_body_without_final_crlf_decodes() -> None:
    data = os.urandom(4000)
    _, body = article(data)
    assert decode_yenc_article(body[:-2]) == (data, "j5d80ipl8znx501agj5g5", True)


def test_bad_crc_is_reported_not_raised() -> None:
    data = os.urandom(2000)
    _, body = article(data)
    crc = b"%08x" % zlib.crc32(data)
    damaged = body.replace(b"pcrc32=" + crc, b"pcrc32=%08x" % (zlib.crc32(data) ^ 1))
    payload, _, crc_ok = decode_yenc_article(damaged)
    assert payload == data and not crc_ok
    part = decode_yenc_part(damaged)
    assert part.crc32 == zlib.crc32(data) and part.expected_crc == zlib.crc32(data) ^ 1


def test_corrupted_data_byte_fails_the_crc() -> None:
    data = os.urandom(2000)
    _, body = article(data)
    damaged = bytearray(body)
    pos = body.index(b"\r\n", 100) - 5  # inside a data line
    while b"=" in body[pos - 1 : pos + 1]:  # an escape or an escaped byte would change the length, not the CRC
        pos -= 1
    damaged[pos] = ord("A") if damaged[pos] != ord("A") else ord("B")
    payload, _, crc_ok = decode_yenc_article(bytes(damaged))
    assert not crc_ok and payload != data


def test_no_crc_at_all_is_not_ok() -> None:
    data = os.urandom(100)
    encoded, _ = sabctools.yenc_encode(data)
    body = b"=ybegin line=128 size=100 name=x\r\n" + encoded + b"\r\n=yend size=100\r\n"
    decoded = decode_yenc_part(body)
    assert decoded.payload == data and decoded.expected_crc is None and not decoded.crc_ok


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", ProtocolError),
        (b"hello\r\nworld\r\n", ProtocolError),
        (b"=ybegin line=128 name=x\r\nabc\r\n=yend\r\n", ProtocolError),
        (b"=ybegin size=abc name=x\r\nabc\r\n=yend\r\n", ProtocolError),
        (b"=ybegin part=1 total=2 size=10 name=x\r\nabc\r\n=yend size=3\r\n", ProtocolError),
        (b"=ybegin part=1 size=10 name=x\r\n=ypart begin=5 end=20\r\nabc\r\n=yend\r\n", ProtocolError),
        (b"=ybegin part=1 size=10 name=x\r\n=ypart begin=1\r\nabc\r\n=yend\r\n", ProtocolError),
        (b"=ybegin size=3 name=x\r\nabc\r\n", TamperedError),
        (b"=ybegin size=5 name=x\r\nabc\r\n=yend size=3\r\n", TamperedError),
        (b"=ybegin size=5 name=x\r\nabc\r\n=yend\r\n", TamperedError),
    ],
)
def test_malformed_bodies_raise_typed_errors(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_yenc_part(body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=600), st.data())
def test_truncated_bodies_never_crash(payload: bytes, data: st.DataObject) -> None:
    _, body = article(payload)
    cut = data.draw(st.integers(0, len(body)))
    try:
        decoded = decode_yenc_part(body[:cut])
    except (ProtocolError, TamperedError):
        return
    assert decoded.payload == payload or not decoded.crc_ok


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_garbage_never_crashes(garbage: bytes) -> None:
    for body in (garbage, b"=ybegin " + garbage, b"=ybegin size=10 name=x\r\n" + garbage + b"\r\n=yend " + garbage):
        with contextlib.suppress(ProtocolError, TamperedError):
            decode_yenc_part(body)


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=800), st.data())
def test_flipped_body_bytes_never_crash(payload: bytes, data: st.DataObject) -> None:
    _, body = article(payload)
    damaged = bytearray(body)
    pos = data.draw(st.integers(0, len(body) - 1))
    damaged[pos] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_yenc_part(bytes(damaged))
    except (ProtocolError, TamperedError):
        return
    assert decoded.payload == payload or not decoded.crc_ok or decoded.name != "j5d80ipl8znx501agj5g5"
