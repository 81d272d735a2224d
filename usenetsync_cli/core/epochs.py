"""Key epochs of a folder: which key seals a segment, names its article, and binds it to its place.

Owns the per-segment crypto context (``FolderContext``) everything that seals,
names, checks or opens a segment goes through, so the epoch rules live in one
place:

- A folder has epochs 0, 1, 2, …; each has a 32-byte random key (epoch 0's is
  the folder key of states made before epochs, so their segments keep their
  keys, AAD and Message-IDs). Every subkey of an epoch derives from its key
  (``core.crypto.FolderKeys.derive``): the AES-GCM key, the Message-ID key and
  the Message-ID domains. A segment is sealed and named in the epoch recorded
  with it.
- A new epoch starts on ``share revoke`` and ``upload --new-epoch``: content
  posted afterwards is sealed and named under keys no earlier share holder
  has; a share index carries only the keys of the epochs its segments use.
- Wire format by epoch: epoch 0 keeps the sealed layout ``version(1)=1 ‖
  nonce ‖ ct ‖ tag`` and the place AAD of v1; epochs >= 1 drop the version
  byte (a constant first byte on every article would mark the tool), bind
  the epoch into the AAD (``core.crypto.place_aad``), and pad the plaintext
  with ``pad_len`` zero bytes: 0..``PAD_SPREAD``-1, keyed by the epoch's
  Message-ID key and the segment's place, so full segments do not all carry
  one yEnc ``size=`` and a re-seal from the source reproduces the exact bytes
  PAR2 covers. ``open`` checks the padding is zeros and strips it.
- Message-IDs: epoch 0 keeps format v1 (a per-folder set of 4–8 domains);
  epochs >= 1 use format v2 (``core.msgid.keyed_message_id``: every article
  its own generated domain, which its From header repeats).
- What a share holder gets of an epoch (``EpochKeys.reader_doc``): its
  AES-GCM key and Message-ID key (and, for epoch 0, its domains), never the
  epoch key itself.

Pure: no I/O; keys are inputs.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from usenetsync_cli.core.crypto import (
    SEAL_OVERHEAD,
    FolderKeys,
    open_segment,
    open_segment_into,
    place_aad,
    seal_segment,
    seal_segment_into,
)
from usenetsync_cli.core.msgid import folder_domains, keyed_message_id, segment_message_id
from usenetsync_cli.errors import TamperedError

__all__ = ["PAD_SPREAD", "EpochKeys", "FolderContext", "sealed_overhead", "versioned_seal"]

_PLACE = struct.Struct(">IQ")  # shard, seg_id
_SEG = struct.Struct(">IQI")  # shard, seg_id, attempt
_V2_SEG_PREFIX = b"usenetsync/v2/msgid/seg\x00"


PAD_SPREAD = 8192
_PAD_PREFIX = b"usenetsync/v2/pad\x00"


def versioned_seal(epoch: int) -> bool:
    """Whether segments of ``epoch`` carry the leading version byte (epoch 0 only)."""
    return epoch == 0


def sealed_overhead(epoch: int) -> int:
    return SEAL_OVERHEAD if versioned_seal(epoch) else SEAL_OVERHEAD - 1


@dataclass(frozen=True)
class EpochKeys:
    epoch: int
    keys: FolderKeys = field(repr=False)
    domains: tuple[str, ...]

    @classmethod
    def derive(cls, epoch: int, key: bytes) -> EpochKeys:
        keys = FolderKeys.derive(key)
        return cls(epoch, keys, folder_domains(keys.domain_key))

    def reader_doc(self) -> dict[str, Any]:
        """What a share index gives a reader of this epoch: enough to find, open and check its articles."""
        doc: dict[str, Any] = {"enc": self.keys.enc_key.hex(), "msgid": self.keys.msgid_key.hex()}
        if versioned_seal(self.epoch):  # later epochs name every article with its own generated domain
            doc["domains"] = list(self.domains)
        return doc

    @classmethod
    def from_reader_doc(cls, epoch: int, doc: Any) -> EpochKeys:
        """The keys of one epoch as a share index gives them (TamperedError if malformed)."""
        try:
            enc, msgid = bytes.fromhex(doc["enc"]), bytes.fromhex(doc["msgid"])
            domains: tuple[str, ...] = ()
            if versioned_seal(epoch):
                domains = tuple(str(d) for d in doc["domains"])
                if not 1 <= len(domains) <= 64:
                    raise ValueError("domains")
            if len(enc) != 32 or len(msgid) != 32:
                raise ValueError("key size")
            # A reader never derives names or domains: those two subkeys stay unused zeros.
            keys = FolderKeys(enc_key=enc, msgid_key=msgid, names_key=bytes(32), domain_key=bytes(32))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise TamperedError(f"the share index's keys of epoch {epoch} are malformed") from None
        return cls(epoch, keys, domains)

    def pad_len(self, shard: int, seg_id: int) -> int:
        if versioned_seal(self.epoch):
            return 0
        digest = hmac.digest(self.keys.msgid_key, _PAD_PREFIX + _PLACE.pack(shard, seg_id), hashlib.sha256)
        return int.from_bytes(digest[:4], "big") % PAD_SPREAD


@dataclass(frozen=True)
class FolderContext:
    """A folder's uid and the keys of the epochs this party knows; ``current`` seals new content."""

    uid: bytes
    epochs: Mapping[int, EpochKeys] = field(repr=False)
    current: int
    groups: tuple[str, ...]

    @classmethod
    def from_keys(cls, uid: bytes, keys: Mapping[int, bytes], current: int, groups: tuple[str, ...]) -> FolderContext:
        return cls(uid, {e: EpochKeys.derive(e, k) for e, k in keys.items()}, current, tuple(groups))

    @classmethod
    def for_reader(cls, uid: bytes, epochs: Mapping[int, EpochKeys]) -> FolderContext:
        """A share holder's context: only the epochs its index gave (it never seals new content)."""
        return cls(uid, dict(epochs), max(epochs, default=0), ())

    def at(self, epoch: int) -> EpochKeys:
        found = self.epochs.get(epoch)
        if found is None:
            raise TamperedError(f"a segment of epoch {epoch} is named, but its key is not known here")
        return found

    # The current epoch's keys: what new content is sealed with.
    @property
    def keys(self) -> FolderKeys:
        return self.at(self.current).keys

    @property
    def domains(self) -> tuple[str, ...]:
        return self.at(self.current).domains

    def message_id(self, shard: int, seg_id: int, attempt: int, epoch: int) -> str:
        e = self.at(epoch)
        if versioned_seal(epoch):  # epoch 0 keeps the names it always had
            return segment_message_id(e.keys.msgid_key, e.domains, shard, seg_id, attempt)
        return keyed_message_id(e.keys.msgid_key, _V2_SEG_PREFIX + _SEG.pack(shard, seg_id, attempt))

    def aad(self, shard: int, seg_id: int, epoch: int) -> bytes:
        return place_aad(self.uid, shard, seg_id, epoch)

    def aesgcm(self, epoch: int) -> AESGCM:
        return self.at(epoch).keys.aesgcm

    def sealed_len(self, shard: int, seg_id: int, epoch: int, length: int) -> int:
        """The sealed size of a segment of ``length`` plaintext bytes (what its yEnc body decodes to)."""
        return length + sealed_overhead(epoch) + self.at(epoch).pad_len(shard, seg_id)

    def seal(self, shard: int, seg_id: int, epoch: int, payload: bytes | memoryview, nonce: bytes) -> bytes:
        """The sealed bytes of one segment in its place and epoch (padded for epochs >= 1)."""
        pad = self.at(epoch).pad_len(shard, seg_id)
        if pad:
            payload = b"".join((payload, bytes(pad)))
        return seal_segment(self.aesgcm(epoch), self.aad(shard, seg_id, epoch), payload, nonce,
                            versioned=versioned_seal(epoch))

    def seal_into(self, shard: int, seg_id: int, epoch: int, plain: bytearray, length: int, nonce: bytes,
                  out: bytearray) -> int:
        """``seal`` with reused buffers: ``plain`` holds the payload in its first ``length`` bytes and room
        for the padding after it (zeroed here); the sealed bytes go to ``out``; returns their length."""
        pad = self.at(epoch).pad_len(shard, seg_id)
        view = memoryview(plain)[: length + pad]
        if pad:
            view[length:] = bytes(pad)
        keys = self.at(epoch).keys
        return seal_segment_into(keys.enc_key, keys.aesgcm, self.aad(shard, seg_id, epoch), view, nonce, out,
                                 versioned=versioned_seal(epoch))

    def open(self, shard: int, seg_id: int, epoch: int, sealed: bytes | memoryview) -> bytes:
        """The authenticated plaintext of one sealed segment, padding stripped (``TamperedError`` otherwise)."""
        plain = open_segment(self.aesgcm(epoch), self.aad(shard, seg_id, epoch), sealed, versioned=versioned_seal(epoch))
        view = self._unpad(shard, seg_id, epoch, memoryview(plain))
        return plain if len(view) == len(plain) else bytes(view)

    def open_into(self, shard: int, seg_id: int, epoch: int, sealed: bytes | bytearray | memoryview,
                  out: bytearray) -> memoryview:
        """``open`` into ``out``, a buffer the caller reuses (at least ``len(sealed)`` bytes): the plaintext as a
        view of it, with the same checks (the download's fetch threads: no segment-sized allocation per article)."""
        keys = self.at(epoch).keys
        plain = open_segment_into(keys.enc_key, keys.aesgcm, self.aad(shard, seg_id, epoch), sealed, out,
                                  versioned=versioned_seal(epoch))
        return self._unpad(shard, seg_id, epoch, plain)

    def _unpad(self, shard: int, seg_id: int, epoch: int, plain: memoryview) -> memoryview:
        """``plain`` without the padding its place gives, which must be all zero."""
        pad = self.at(epoch).pad_len(shard, seg_id)
        if pad:
            if len(plain) < pad or bytes(plain[-pad:]).count(0) != pad:
                raise TamperedError("a segment's padding is not what its place gives")
            plain = plain[:-pad]
        return plain
