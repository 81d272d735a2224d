"""Properties of share IDs and their derived keys (usenetsync_cli.core.shareid)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usenetsync_cli.core.shareid import (
    SECRET_SIZES,
    ShareId,
    ShareIdError,
    locator_key,
    new_share_id,
    public_share_key,
)
from usenetsync_cli.errors import ConfigError

FP = bytes.fromhex("0123456789abcdef0011223344556677")
FIXED = {
    "public": ShareId("public", FP, bytes(range(32))),
    "password": ShareId("password", FP, bytes(range(16))),
    "private": ShareId("private", FP, bytes(range(100, 116))),
}
# Everything someone might type by mistake: base32, the excluded digits, punctuation, space.
SUBSTITUTES = "abcdefghijklmnopqrstuvwxyz0123456789-_=+/. "

CHECKSUM_MSG = "share ID checksum mismatch: a character is wrong (typo?)"


@st.composite
def share_ids(draw: st.DrawFn) -> ShareId:
    kind = draw(st.sampled_from(sorted(SECRET_SIZES)))
    fp = draw(st.binary(min_size=16, max_size=16))
    secret = draw(st.binary(min_size=SECRET_SIZES[kind], max_size=SECRET_SIZES[kind]))
    return ShareId(kind, fp, secret)  # type: ignore[arg-type]


def _hkdf_reference(ikm: bytes, info: bytes) -> bytes:
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def _substitutions(text: str) -> list[str]:
    out = []
    for i, orig in enumerate(text):
        for ch in SUBSTITUTES:
            if ch != orig:
                out.append(text[:i] + ch + text[i + 1:])
    return out


def test_documented_layout() -> None:
    sid = FIXED["password"]
    text = sid.to_text()
    assert text.startswith("us2w") and len(text) == 62 and text == text.lower()
    body = text[4:].upper()
    raw = base64.b32decode(body + "=" * (-len(body) % 8))
    check = hashlib.sha256(b"usenetsync/v2/shareid" + b"password" + FP + sid.secret).digest()[:4]
    assert raw == FP + sid.secret + check
    assert FIXED["public"].to_text().startswith("us2p") and len(FIXED["public"].to_text()) == 88
    assert FIXED["private"].to_text().startswith("us2r") and len(FIXED["private"].to_text()) == 62


@given(share_ids())
def test_round_trip(sid: ShareId) -> None:
    text = sid.to_text()
    assert ShareId.parse(text) == sid
    assert ShareId.parse(f" \t{text.upper()}\r\n") == sid


@pytest.mark.parametrize("kind", sorted(FIXED))
def test_every_single_substitution_is_rejected_exhaustively(kind: str) -> None:
    text = FIXED[kind].to_text()
    for bad in _substitutions(text):
        if bad.strip() != bad.strip().lower() or bad.strip().lower() == text:
            continue  # pragma: no cover - SUBSTITUTES has no capitals
        with pytest.raises(ShareIdError):
            ShareId.parse(bad)


@settings(max_examples=40, deadline=None)
@given(share_ids(), st.data())
def test_single_substitution_is_rejected(sid: ShareId, data: st.DataObject) -> None:
    text = sid.to_text()
    i = data.draw(st.integers(0, len(text) - 1), label="position")
    ch = data.draw(st.sampled_from(SUBSTITUTES).filter(lambda c: c != text[i]), label="replacement")
    with pytest.raises(ShareIdError):
        ShareId.parse(text[:i] + ch + text[i + 1:])


@given(share_ids(), st.data())
def test_dropped_or_doubled_character_is_rejected(sid: ShareId, data: st.DataObject) -> None:
    text = sid.to_text()
    i = data.draw(st.integers(4, len(text) - 1))
    for bad in (text[:i] + text[i + 1:], text[:i] + text[i] + text[i:]):
        with pytest.raises(ShareIdError, match="wrong length"):
            ShareId.parse(bad)


def test_error_messages_are_distinct_and_clear() -> None:
    text = FIXED["public"].to_text()
    cases = {
        "https://example.com/x": "not a usenetsync share ID (expected us2…)",
        "us3p" + text[4:]: "not a usenetsync share ID (expected us2…)",
        "us1p" + text[4:]: "made by an older version of usenetsync",
        "us2": "cut off",
        "us2x" + text[4:]: "unknown share ID kind 'x'",
        text[:-1]: "wrong length: 83 characters after us2p, expected 84 (a character is missing?)",
        text + "a": "(a character is extra?)",
        text[:10] + "0" + text[11:]: "character that is not allowed at position 11",
        text[:10] + ("a" if text[10] != "a" else "b") + text[11:]: CHECKSUM_MSG,
    }
    for bad, expected in cases.items():
        with pytest.raises(ShareIdError) as exc:
            ShareId.parse(bad)
        assert expected in str(exc.value), (bad, str(exc.value))
    with pytest.raises(ShareIdError) as exc:
        ShareId.parse("us3p" + text[4:])
    assert "newer usenetsync" in exc.value.hint
    with pytest.raises(ShareIdError) as exc:
        ShareId.parse("us1w" + text[4:49])  # an ID of the old format, in full
    assert "share show NAME --show-id" in exc.value.hint and exc.value.exit_code == 8


def test_kind_is_inside_the_checksum() -> None:
    # 'w' and 'r' IDs have the same length: only the checksum tells them apart.
    text = FIXED["password"].to_text()
    with pytest.raises(ShareIdError, match="checksum mismatch"):
        ShareId.parse("us2r" + text[4:])


def test_share_id_error_is_a_config_error_with_its_own_exit_code() -> None:
    assert issubclass(ShareIdError, ConfigError)
    assert ShareIdError.exit_code == 8 and ConfigError.exit_code == 4


def test_secrets_stay_out_of_repr_and_errors() -> None:
    sid = FIXED["public"]
    text = sid.to_text()
    for s in (repr(sid), str(sid), f"{sid}"):
        assert text[4:] not in s and sid.secret.hex() not in s and repr(sid.secret) not in s
        assert "public" in s and FP.hex() in s
    for bad in _substitutions(text)[::7]:
        try:
            ShareId.parse(bad)
        except ShareIdError as e:
            assert text[4:20] not in str(e) and text[4:20] not in e.hint


def test_derivations_match_reference_and_differ() -> None:
    pub = FIXED["public"]
    assert locator_key(pub) == _hkdf_reference(pub.secret, b"usenetsync/v2/share/locator")
    assert public_share_key(pub) == _hkdf_reference(pub.secret, b"usenetsync/v2/share/key")
    assert locator_key(pub) != public_share_key(pub)
    assert len(locator_key(FIXED["private"])) == 32
    for kind in ("password", "private"):
        with pytest.raises(ValueError):
            public_share_key(FIXED[kind])


def test_signer_pins_the_signing_key_alone_with_128_bits() -> None:
    from usenetsync_cli.core.shareid import SIGNER_SIZE, signer_of

    key = bytes(range(32))
    assert SIGNER_SIZE == 16
    assert signer_of(key) == hashlib.sha256(b"usenetsync/v2/signer" + key).digest()[:16]
    assert signer_of(key) != signer_of(bytes(32))


def test_new_share_id_and_validation() -> None:
    a, b = new_share_id("public", FP), new_share_id("public", FP)
    assert a.secret != b.secret and len(a.secret) == 32
    assert len(new_share_id("private", FP).secret) == 16
    with pytest.raises(ValueError):
        ShareId("public", FP, bytes(16))
    with pytest.raises(ValueError):
        ShareId("password", FP[:8], bytes(16))  # the 8-byte fingerprint of format 1 pins too little
    with pytest.raises(ValueError):
        ShareId("secret", FP, bytes(16))  # type: ignore[arg-type]
