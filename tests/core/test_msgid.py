"""Properties of derived Message-IDs and folder domains (usenetsync_cli.core.msgid)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usenetsync_cli.core.crypto import FolderKeys
from usenetsync_cli.core.msgid import (
    MSGID_RE,
    folder_domains,
    index_message_id,
    is_valid_message_id,
    message_id,
    pick_domain,
    segment_message_id,
)

KEYS = FolderKeys.derive(b"\x07" * 32)
DOMAINS = folder_domains(KEYS.domain_key)

keys32 = st.binary(min_size=32, max_size=32)
shards = st.integers(0, 15)
seg_ids = st.integers(0, 30_000_000)
attempts = st.integers(0, 20)

# Stricter than RFC 5536: exactly what we promise to produce.
OUR_ID = re.compile(r"<[a-z2-7]{26}@[a-z0-9]+(?:[.-][a-z0-9]+)*\.[a-z]{2,4}>")
HOSTNAME = re.compile(r"(?:[a-z]+\.)?[a-z]{6,10}\.(?:[a-z]{2,4}|co\.uk)")


def test_reference_construction() -> None:
    # Pins the derivation: HMAC-SHA256 over a prefixed fixed-width struct,
    # first 16 bytes, RFC 4648 base32, lowercase, no padding.
    msg = b"usenetsync/v1/msgid/seg\x00" + struct.pack(">IQI", 5, 123456, 2)
    digest = hmac.new(KEYS.msgid_key, msg, hashlib.sha256).digest()
    left = base64.b32encode(digest[:16]).decode().rstrip("=").lower()
    assert message_id(KEYS.msgid_key, 5, 123456, 2, "example.net") == f"<{left}@example.net>"


@given(shards, seg_ids, attempts)
def test_ids_are_stable_and_well_formed(shard: int, seg: int, attempt: int) -> None:
    a = segment_message_id(KEYS.msgid_key, DOMAINS, shard, seg, attempt)
    b = segment_message_id(KEYS.msgid_key, DOMAINS, shard, seg, attempt)
    assert a == b
    assert OUR_ID.fullmatch(a), a
    assert is_valid_message_id(a)
    assert MSGID_RE.fullmatch(a)
    assert len(a) <= 250


@given(shards, seg_ids, attempts, shards, seg_ids, attempts)
def test_ids_differ_per_place_and_attempt(s1: int, g1: int, a1: int, s2: int, g2: int, a2: int) -> None:
    i1 = segment_message_id(KEYS.msgid_key, DOMAINS, s1, g1, a1)
    i2 = segment_message_id(KEYS.msgid_key, DOMAINS, s2, g2, a2)
    assert (i1 == i2) == ((s1, g1, a1) == (s2, g2, a2))


def test_an_attempt_keeps_its_domain_but_changes_its_id() -> None:
    ids = [segment_message_id(KEYS.msgid_key, DOMAINS, 1, 99, a) for a in range(5)]
    assert len(set(ids)) == 5
    assert len({i.split("@")[1] for i in ids}) == 1


def test_consecutive_segments_show_no_counter() -> None:
    lefts = [message_id(KEYS.msgid_key, 0, seg, 0, "a.com")[1:27] for seg in range(2000)]
    assert len(set(lefts)) == 2000
    # No shared prefixes or suffixes between neighbours (1 in 32^4 by chance).
    for a, b in itertools.pairwise(lefts):
        assert a[:4] != b[:4] and a[-4:] != b[-4:]
    # The decimal seg number never shows up verbatim for multi-digit numbers
    # (base32 has no 0, 1, 8 or 9 digits, so pick numbers made of those).
    assert all(str(seg) not in message_id(KEYS.msgid_key, 0, seg, 0, "a.com") for seg in (10, 100, 1989, 98019))


@given(keys32, keys32)
def test_different_keys_give_unrelated_ids(k1: bytes, k2: bytes) -> None:
    assert (message_id(k1, 0, 1, 0, "a.com") == message_id(k2, 0, 1, 0, "a.com")) == (k1 == k2)


@given(st.binary(max_size=20), st.integers(0, 2**40), st.integers(0, 1000))
def test_index_ids_never_collide_with_segment_ids(label: bytes, version: int, part: int) -> None:
    idx = index_message_id(KEYS.msgid_key, label, version, part, "a.com")
    assert is_valid_message_id(idx)
    assert OUR_ID.fullmatch(idx)
    assert idx != message_id(KEYS.msgid_key, 0, version, part, "a.com")
    assert idx == index_message_id(KEYS.msgid_key, label, version, part, "a.com")


def test_index_id_inputs_are_injective() -> None:
    k = KEYS.msgid_key
    seen = {
        index_message_id(k, b"root", 1, 0, "a.com"),
        index_message_id(k, b"root", 1, 1, "a.com"),
        index_message_id(k, b"root", 2, 0, "a.com"),
        index_message_id(k, b"part", 1, 0, "a.com"),
        index_message_id(k, b"roo", 1, 0, "a.com"),
        index_message_id(k, b"root\x00", 1, 0, "a.com"),
        index_message_id(k, b"", 1, 0, "a.com"),
    }
    assert len(seen) == 7


@given(keys32)
def test_folder_domains_are_plausible_and_deterministic(key: bytes) -> None:
    domains = folder_domains(key)
    assert domains == folder_domains(key)
    assert 4 <= len(domains) <= 8
    assert len(set(domains)) == len(domains)
    for domain in domains:
        assert HOSTNAME.fullmatch(domain), domain
        assert is_valid_message_id(f"<abc@{domain}>")
        for famous in ("google", "yahoo", "gmail", "example", "usenet", "giganews"):
            assert famous not in domain


def test_folders_get_different_domain_sets() -> None:
    sets = {folder_domains(bytes([i]) * 32) for i in range(50)}
    assert len(sets) == 50
    sizes = {len(folder_domains(bytes([i]) * 32)) for i in range(200)}
    assert sizes == {4, 5, 6, 7, 8}


def test_pick_domain_is_deterministic_and_spreads() -> None:
    picks = [pick_domain(DOMAINS, KEYS.msgid_key, 0, seg) for seg in range(4000)]
    assert picks == [pick_domain(DOMAINS, KEYS.msgid_key, 0, seg) for seg in range(4000)]
    assert set(picks) == set(DOMAINS)
    expected = 4000 / len(DOMAINS)
    for domain in DOMAINS:
        assert 0.7 * expected < picks.count(domain) < 1.3 * expected


def test_pick_domain_needs_domains() -> None:
    with pytest.raises(ValueError):
        pick_domain((), KEYS.msgid_key, 0, 0)


@pytest.mark.parametrize("domain", ["", "a", "has space.com", "UPPER.com", "x..y.com", "-a.com", "a.com>", "@a.com"])
def test_bad_domains_are_refused(domain: str) -> None:
    with pytest.raises(ValueError):
        message_id(KEYS.msgid_key, 0, 0, 0, domain)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("<abc@def.com>", True),
        ("<a.b.c@[127.0.0.1]>", True),
        ("<a$b!c@host>", True),
        ("abc@def.com", False),
        ("<abc@def.com", False),
        ("<a b@def.com>", False),
        ("<abc>", False),
        ("<a..b@def.com>", False),
        ("<.ab@def.com>", False),
        ("<a>b@def.com>", False),
        ("<" + "a" * 241 + "@def.com>", False),
    ],
)
def test_rfc5536_checker(value: str, valid: bool) -> None:
    assert is_valid_message_id(value) is valid
