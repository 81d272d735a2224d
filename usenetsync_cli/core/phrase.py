"""Recovery phrases: 24 words of the BIP-39 English wordlist carrying 256 bits of entropy.

Owns: entropy <-> phrase, reading a phrase someone typed (with errors that
name the position of the problem), and finding phrases in free text so they
can be redacted.

Format (BIP-39, English, 24 words; a phrase must give the same entropy forever)::

    bits  = entropy (256 bits) || first byte of SHA-256(entropy) (8-bit checksum)
    words = 24 groups of 11 bits, most significant first, each an index into
            the 2048-word English list (the ``mnemonic`` package's english.txt,
            SHA-256 2f5eed53a4727b4bf8880d8f3f199efc90e58503646d9ff8eff3a2ed3b24dbda,
            checked when it is loaded)

Only the entropy is used (``core.identity`` derives keys from it with HKDF):
this is not BIP-39's PBKDF2 seed, so a wallet given the same words makes
unrelated keys, and vice versa.

Reading a typed phrase: NFKD, lower case, any whitespace (and commas) between
words; tokens that are only a number ("7", "7.", "7)") are the position labels
people write next to the words and are skipped.

Invariants:
- No phrase is put in an exception message: errors name a position, and for
  a word that is not in the list they show that one mistyped word (cut to 12
  characters) so the user can find it; never a word that is in the list.
- ``redact_phrases`` hides any run of 12 or more wordlist words, so a phrase
  that reaches free text (an error about a file name, say) is not printed.
- No I/O except reading the wordlist file of the ``mnemonic`` package once.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata

from mnemonic import Mnemonic

from usenetsync_cli.errors import RecoveryPhraseError

__all__ = [
    "ENTROPY_SIZE",
    "PHRASE_WORDS",
    "entropy_to_phrase",
    "find_phrases",
    "phrase_to_entropy",
    "redact_phrases",
    "wordlist",
]

ENTROPY_SIZE = 32
PHRASE_WORDS = 24
_BITS_PER_WORD = 11
_CHECKSUM_BITS = ENTROPY_SIZE * 8 // 32  # 8
_WORDLIST_SHA256 = "2f5eed53a4727b4bf8880d8f3f199efc90e58503646d9ff8eff3a2ed3b24dbda"
_SHOWN_WORD_MAX = 12
# Fewer wordlist words in a row than this are ordinary English; 12 is the
# shortest BIP-39 phrase, and more than half of ours.
_REDACT_MIN_RUN = 12
_LABEL = re.compile(r"^\d+[.):]?$")
_WORD = re.compile(r"[A-Za-z]+")
_GAP = re.compile(r"[\s\d.,;:()\-\"']*")
PHRASE_REDACTED = "[recovery phrase hidden]"


@functools.cache
def wordlist() -> tuple[str, ...]:
    """The 2048 BIP-39 English words, in order; RuntimeError if the package's list is not that list."""
    words = tuple(Mnemonic("english").wordlist)
    digest = hashlib.sha256(("\n".join(words) + "\n").encode("ascii")).hexdigest()
    if len(words) != 2048 or digest != _WORDLIST_SHA256:
        # A different list would silently turn every phrase into another identity.
        raise RuntimeError("the mnemonic package's English wordlist is not the BIP-39 list; reinstall it")
    return words


@functools.cache
def _index() -> dict[str, int]:
    return {w: i for i, w in enumerate(wordlist())}


def entropy_to_phrase(entropy: bytes) -> str:
    """The 24 words (single spaces) that carry ``entropy`` (32 bytes)."""
    entropy = bytes(entropy)
    if len(entropy) != ENTROPY_SIZE:
        raise ValueError(f"entropy must be {ENTROPY_SIZE} bytes")
    checksum = hashlib.sha256(entropy).digest()[0]
    bits = (int.from_bytes(entropy, "big") << _CHECKSUM_BITS) | checksum
    words = wordlist()
    mask = (1 << _BITS_PER_WORD) - 1
    out = [words[(bits >> (_BITS_PER_WORD * (PHRASE_WORDS - 1 - i))) & mask] for i in range(PHRASE_WORDS)]
    return " ".join(out)


def _tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKD", text).lower().replace(",", " ")
    return [t for t in text.split() if not _LABEL.match(t)]


def _shown(word: str) -> str:
    printable = "".join(ch if ch.isprintable() else "?" for ch in word)
    if len(printable) > _SHOWN_WORD_MAX:
        printable = printable[:_SHOWN_WORD_MAX] + "…"
    return printable


def phrase_to_entropy(text: str) -> bytes:
    """The 32 bytes a typed phrase carries; RecoveryPhraseError naming what is wrong and where."""
    tokens = _tokens(text)
    if not tokens:
        raise RecoveryPhraseError("the recovery phrase is empty")
    index = _index()
    # Word problems first: a misspelled word is the likeliest mistake, and
    # its position helps even when a word is also missing.
    for pos, tok in enumerate(tokens, 1):
        if tok not in index:
            raise RecoveryPhraseError(f"word {pos} {_shown(tok)!r} is not in the wordlist")
    if len(tokens) != PHRASE_WORDS:
        raise RecoveryPhraseError(f"the recovery phrase has {len(tokens)} words; it must have {PHRASE_WORDS}")
    bits = 0
    for tok in tokens:
        bits = (bits << _BITS_PER_WORD) | index[tok]
    checksum = bits & ((1 << _CHECKSUM_BITS) - 1)
    entropy = (bits >> _CHECKSUM_BITS).to_bytes(ENTROPY_SIZE, "big")
    if hashlib.sha256(entropy).digest()[0] != checksum:
        raise RecoveryPhraseError("the checksum does not match: a word is wrong or two are swapped")
    return entropy


def find_phrases(text: str) -> list[tuple[int, int]]:
    """(start, end) of every run of at least 12 wordlist words in ``text`` (any case, light punctuation between)."""
    index = _index()
    spans: list[tuple[int, int]] = []
    run_start = run_end = -1
    run_len = 0
    prev_end = 0
    for m in _WORD.finditer(text):
        in_list = m.group().lower() in index
        joined = run_len > 0 and _GAP.fullmatch(text, prev_end, m.start()) is not None
        if in_list and joined:
            run_end, run_len = m.end(), run_len + 1
        else:
            if run_len >= _REDACT_MIN_RUN:
                spans.append((run_start, run_end))
            run_start, run_end, run_len = (m.start(), m.end(), 1) if in_list else (-1, -1, 0)
        prev_end = m.end()
    if run_len >= _REDACT_MIN_RUN:
        spans.append((run_start, run_end))
    return spans


def redact_phrases(text: str) -> str:
    """``text`` with every run of 12 or more wordlist words replaced by a marker."""
    spans = find_phrases(text)
    for start, end in reversed(spans):
        text = text[:start] + PHRASE_REDACTED + text[end:]
    return text
