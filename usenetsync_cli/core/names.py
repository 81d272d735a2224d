"""Obfuscated wire names: Subject, From and the yEnc ``name=`` of an article.

Owns: what an observer of the newsgroup sees in place of real file names.

Invariants:
- Nothing here takes a real name, path, size or key as input, so nothing on
  the wire can be derived from them; the real names live only in local state
  ("dual subject", DESIGN.md §5).
- Subject, From and yEnc name are drawn independently from the random source;
  none is a function of another.
- Every value is plain printable ASCII with no CR/LF, short enough for INN's
  header-line limit, and the From value is an RFC 5322 ``name-addr``
  (``Display Name <local@domain>``) with an unquoted atom phrase and a
  dot-atom address, which INN's "Internet syntax" check accepts.
- Pure: the only randomness is the injected ``rng``. The edges are the
  default ``random.SystemRandom()`` and ``WireNames.fresh()``, both reading
  the OS CSPRNG. Never share one seeded Mersenne Twister across a run: its
  state is recoverable from enough outputs, which would link every article
  of the run. ``fresh()`` reseeds per article, so no state spans articles.
  Tests inject ``random.Random(seed)``.
"""

from __future__ import annotations

import os
import random
import string
from typing import Protocol

__all__ = ["RandomSource", "WireNames"]


class RandomSource(Protocol):
    """The subset of ``random.Random`` this module uses."""

    def randint(self, a: int, b: int) -> int: ...

    def choice(self, seq: str | tuple[str, ...]) -> str: ...

    def random(self) -> float: ...

    def choices(self, population: str, *, k: int) -> list[str]: ...


_LOWER_DIGITS = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits
_HEX = "0123456789abcdef"
_ONSETS = (
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
    "br", "dr", "fr", "gr", "kr", "pr", "tr", "bl", "kl", "pl", "sl", "st", "sk", "sh", "ch", "th",
)  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ia", "ei", "ou", "y")
_CODAS = ("", "", "", "n", "r", "l", "s", "k", "m", "t", "nd", "rt", "x")
_TLDS = (
    "com", "com", "com", "com", "net", "net", "net", "org", "de", "de", "nl", "fr", "se",
    "ch", "at", "be", "it", "pl", "eu", "info", "co.uk", "ca", "dk", "no", "fi",
)  # fmt: skip
_SEPARATORS = (" ", " ", " ", ".", "_", "-")


class WireNames:
    """Generator of unrelated random Subject, From and yEnc names."""

    def __init__(self, rng: RandomSource | None = None) -> None:
        # EDGE: the default reads os.urandom on every draw (see module docstring).
        self._rng: RandomSource = rng if rng is not None else random.SystemRandom()

    @classmethod
    def fresh(cls) -> WireNames:
        """EDGE: a generator for ONE article, seeded with 256 bits from os.urandom.

        ~4x cheaper than the SystemRandom default (~60 us vs ~200-300 us for
        subject + poster + yEnc name) and as unlinkable, provided it is used
        for one article only: no generator state then spans two articles, so
        there is nothing to recover and correlate.
        """
        return cls(random.Random(int.from_bytes(os.urandom(32), "big")))

    # -- building blocks ---------------------------------------------------------------------
    def _chars(self, alphabet: str, lo: int, hi: int) -> str:
        rng = self._rng
        return "".join(rng.choices(alphabet, k=rng.randint(lo, hi)))

    def _word(self, lo: int, hi: int) -> str:
        rng = self._rng
        target = rng.randint(lo, hi)
        out = ""
        while len(out) < target:
            out += rng.choice(_ONSETS) + rng.choice(_VOWELS)
            if rng.random() < 0.35:
                out += rng.choice(_CODAS)
        return out[:target]

    def _domain(self) -> str:
        return f"{self._word(5, 10)}.{self._rng.choice(_TLDS)}"

    # -- public ------------------------------------------------------------------------------
    def subject(self) -> str:
        """A random Subject in one of the shapes common on binary groups."""
        rng = self._rng
        style = rng.randint(0, 2)
        if style == 0:  # obfuscated-release style: mixed-case alphanumerics
            return self._chars(_ALNUM, 24, 40)
        if style == 1:  # hash-like: md5/sha1 length hex
            return self._hex()
        words = [self._word(3, 9).capitalize() for _ in range(rng.randint(2, 4))]
        sep = rng.choice(_SEPARATORS)
        text = sep.join(words)
        if rng.random() < 0.4:
            text += sep + str(rng.randint(1990, 2025) if rng.random() < 0.5 else rng.randint(1, 99))
        return text

    def _hex(self) -> str:
        rng = self._rng
        return "".join(rng.choices(_HEX, k=32 if rng.random() < 0.5 else 40))

    def poster(self, domain: str | None = None) -> str:
        """A random ``Display Name <local@domain>`` From value; ``domain``: the article's Message-ID domain.

        A From host that never matches the Message-ID host is itself a mark
        (ordinary posting software takes both from one host name).
        """
        rng = self._rng
        first = self._word(3, 8)
        last = self._word(4, 10)
        style = rng.randint(0, 4)
        if style == 0:
            local = f"{first}.{last}"
        elif style == 1:
            local = f"{first}{last}"
        elif style == 2:
            local = f"{first[0]}.{last}"
        elif style == 3:
            local = f"{first}{rng.randint(1, 9999)}"
        else:
            local = f"{first}_{last}"
        return f"{first.capitalize()} {last.capitalize()} <{local}@{domain or self._domain()}>"

    def yenc_name(self) -> str:
        """A random yEnc ``name=``: 16-32 characters of [a-z0-9], no extension."""
        return self._chars(_LOWER_DIGITS, 16, 32)
