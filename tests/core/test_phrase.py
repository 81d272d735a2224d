"""Recovery phrases (usenetsync_cli.core.phrase): BIP-39 words, checksum, errors by position, redaction."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mnemonic import Mnemonic

from usenetsync_cli.core import phrase as mod
from usenetsync_cli.core.phrase import (
    PHRASE_WORDS,
    entropy_to_phrase,
    find_phrases,
    phrase_to_entropy,
    redact_phrases,
    wordlist,
)
from usenetsync_cli.errors import RecoveryPhraseError, redact

# The 24-word vectors of the BIP-39 reference test set (trezor/python-mnemonic vectors.json).
BIP39_VECTORS = {
    b"\x00" * 32: "abandon " * 23 + "art",
    b"\x7f" * 32: "legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth useful"
    " legal winner thank year wave sausage worth title",
    b"\x80" * 32: "letter advice cage absurd amount doctor acoustic avoid letter advice cage absurd amount doctor"
    " acoustic avoid letter advice cage absurd amount doctor acoustic bless",
    b"\xff" * 32: "zoo " * 23 + "vote",
}
ENTROPY = bytes(range(32))
PHRASE = (
    "abandon amount liar amount expire adjust cage candy arch gather drum bullet"
    " absurd math era live bid rhythm alien crouch range attend journey unaware"
)


def test_wordlist_is_the_bip39_english_list() -> None:
    words = wordlist()
    assert len(words) == 2048 and words[0] == "abandon" and words[-1] == "zoo"
    digest = hashlib.sha256(("\n".join(words) + "\n").encode()).hexdigest()
    assert digest == "2f5eed53a4727b4bf8880d8f3f199efc90e58503646d9ff8eff3a2ed3b24dbda"


def test_a_changed_wordlist_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A different list would turn every phrase into another identity, silently.
    real = list(Mnemonic("english").wordlist)

    class Swapped:
        def __init__(self, language: str) -> None:
            self.wordlist = [real[1], real[0], *real[2:]]

    mod.wordlist.cache_clear()
    monkeypatch.setattr(mod, "Mnemonic", Swapped)
    try:
        with pytest.raises(RuntimeError, match="not the BIP-39 list"):
            wordlist()
    finally:
        monkeypatch.undo()
        mod.wordlist.cache_clear()
    assert len(wordlist()) == 2048


@pytest.mark.parametrize("entropy", list(BIP39_VECTORS))
def test_bip39_reference_vectors(entropy: bytes) -> None:
    assert entropy_to_phrase(entropy) == BIP39_VECTORS[entropy]
    assert phrase_to_entropy(BIP39_VECTORS[entropy]) == entropy


def test_fixed_vector() -> None:
    assert entropy_to_phrase(ENTROPY) == PHRASE
    assert phrase_to_entropy(PHRASE) == ENTROPY


@given(st.binary(min_size=32, max_size=32))
def test_round_trip_and_agreement_with_the_reference_library(entropy: bytes) -> None:
    text = entropy_to_phrase(entropy)
    assert len(text.split()) == PHRASE_WORDS
    assert text == Mnemonic("english").to_mnemonic(entropy)
    assert phrase_to_entropy(text) == entropy


def test_spacing_case_and_position_labels_are_tolerated() -> None:
    words = PHRASE.split()
    numbered = "\n".join(f"{i}. {w.upper() if i % 2 else w}" for i, w in enumerate(words, 1))
    for typed in (
        f"  {PHRASE}  \n",
        PHRASE.replace(" ", "\n\t  "),
        PHRASE.upper(),
        ", ".join(words),
        numbered,
        " ".join(f"{i}) {w}" for i, w in enumerate(words, 1)),
    ):
        assert phrase_to_entropy(typed) == ENTROPY, typed


def test_a_word_not_in_the_list_is_named_by_position() -> None:
    words = PHRASE.split()
    words[6] = "xyzzy"
    with pytest.raises(RecoveryPhraseError) as exc:
        phrase_to_entropy(" ".join(words))
    assert str(exc.value) == "word 7 'xyzzy' is not in the wordlist"
    assert exc.value.exit_code == 26
    # Numbers written next to the words do not shift the position.
    with pytest.raises(RecoveryPhraseError, match="^word 7 'xyzzy' "):
        phrase_to_entropy(" ".join(f"{i}. {w}" for i, w in enumerate(words, 1)))


def test_a_long_bad_word_is_cut_and_no_listed_word_is_shown() -> None:
    words = PHRASE.split()
    words[0] = "abandonamountliar"
    with pytest.raises(RecoveryPhraseError) as exc:
        phrase_to_entropy(" ".join(words))
    assert str(exc.value) == "word 1 'abandonamoun…' is not in the wordlist"
    for w in words[1:]:
        assert f"'{w}'" not in str(exc.value)


def test_a_swapped_pair_or_wrong_word_fails_the_checksum() -> None:
    words = PHRASE.split()
    swapped = [words[1], words[0], *words[2:]]
    wrong = [*words[:5], "zoo", *words[6:]]
    for bad in (swapped, wrong):
        with pytest.raises(RecoveryPhraseError) as exc:
            phrase_to_entropy(" ".join(bad))
        assert str(exc.value) == "the checksum does not match: a word is wrong or two are swapped"
        for w in words:
            assert w not in str(exc.value)


def test_every_single_word_change_is_caught_or_is_another_phrase() -> None:
    # With an 8-bit checksum, about 1 in 256 single-word changes still checks out;
    # what must never happen is the same entropy from a different phrase.
    words = PHRASE.split()
    caught = 0
    for pos in range(PHRASE_WORDS):
        for other in ("zoo", "abandon", "legal"):
            if other == words[pos]:
                continue
            try:
                assert phrase_to_entropy(" ".join([*words[:pos], other, *words[pos + 1:]])) != ENTROPY
            except RecoveryPhraseError:
                caught += 1
    assert caught >= 60


def test_word_count() -> None:
    words = PHRASE.split()
    with pytest.raises(RecoveryPhraseError, match="^the recovery phrase has 23 words; it must have 24$"):
        phrase_to_entropy(" ".join(words[:-1]))
    with pytest.raises(RecoveryPhraseError, match="has 12 words"):
        phrase_to_entropy(Mnemonic("english").to_mnemonic(bytes(16)))  # a valid 12-word BIP-39 phrase
    with pytest.raises(RecoveryPhraseError, match="^the recovery phrase is empty$"):
        phrase_to_entropy(" \n ")


def test_entropy_size() -> None:
    with pytest.raises(ValueError):
        entropy_to_phrase(bytes(31))


def test_redaction_finds_phrases_in_free_text() -> None:
    text = f"cannot read phrase file {PHRASE}: No such file or directory"
    out = redact_phrases(text)
    assert all(w not in out.split() for w in ("amount", "liar", "expire", "unaware"))
    assert out.endswith(": No such file or directory")
    numbered = " ".join(f"{i}. {w}" for i, w in enumerate(PHRASE.split(), 1))
    assert find_phrases(numbered) and "liar" not in redact_phrases(numbered)
    # The shared redact() covers it, so no error line can print one.
    assert "liar" not in redact(text) and "[recovery phrase hidden]" in redact(text)


def test_redaction_leaves_ordinary_text() -> None:
    for text in (
        "the checksum does not match: a word is wrong or two are swapped",
        "check each word against the phrase you wrote down (spelling, order, 24 words)",
        "441 posting failed: article too big",
        " ".join(PHRASE.split()[:11]),  # below a phrase's length
    ):
        assert redact_phrases(text) == text
        assert find_phrases(text) == []
