"""AES-256-GCM that releases the GIL while it runs: OpenSSL's EVP interface through ctypes.

Owns: ``encrypt_into`` (the upload's posting threads seal segments with it)
and ``decrypt_into`` (the download's fetch threads open them), byte for byte
the same algorithm as cryptography's ``AESGCM`` (which is the fallback).

Why: cryptography's ``AESGCM`` keeps the GIL for a whole 768 KB segment
(120-300 µs here), and for that long every other thread of the pipeline
waits, even with a free core: measured with ``py-spy --gil``, sealing was
26 % of all GIL-held time of an upload. A ctypes foreign call through
``CDLL`` releases the GIL, so one thread seals while others read, hash,
yEnc-encode and send.

Invariants:
- ``decrypt_into`` returns True only when OpenSSL's ``EVP_DecryptFinal_ex``
  accepted the 16-byte tag over ``aad`` and the ciphertext; on False (or an
  exception) the bytes in ``out`` are unauthenticated and must not be used.
- ``encrypt_into`` writes ciphertext || tag, exactly ``AESGCM(key).encrypt(nonce,
  data, aad)`` (tests/core/test_gcm_nogil.py compares both on random inputs,
  and tampered ones for decryption).
- Only the bulk ``EVP_*Update`` over the message releases the GIL (``CDLL``);
  the set-up and tag calls keep it (``PyDLL``): a release per microsecond
  call would make the thread queue for the GIL again after each one.
- The buffers passed to the bulk call stay referenced by the caller's frame
  for the whole call: ``bytes`` are passed by address (immutable), writable
  buffers through ``from_buffer`` (which pins them: a bytearray cannot be
  resized while exported).
- One ``EVP_CIPHER_CTX`` per thread (a context is not thread-safe), freed
  with the thread's local storage.
- ``AVAILABLE`` is False when no libcrypto 3 / 1.1 with these symbols loads;
  callers then use cryptography. ``USENETSYNC_NO_NOGIL_GCM=1`` forces that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Any

__all__ = ["AVAILABLE", "decrypt_into", "encrypt_into"]

_CTRL_SET_IVLEN = 0x9
_CTRL_GET_TAG = 0x10
_CTRL_SET_TAG = 0x11
TAG = 16
_NONCE = 12
_KEY = 32

_vp = ctypes.c_void_p
_int = ctypes.c_int
_intp = ctypes.POINTER(_int)

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "EVP_aes_256_gcm": (_vp, []),
    "EVP_CIPHER_CTX_new": (_vp, []),
    "EVP_CIPHER_CTX_free": (None, [_vp]),
    "EVP_CIPHER_CTX_ctrl": (_int, [_vp, _int, _int, _vp]),
    "EVP_EncryptInit_ex": (_int, [_vp, _vp, _vp, _vp, _vp]),
    "EVP_EncryptUpdate": (_int, [_vp, _vp, _intp, _vp, _int]),
    "EVP_EncryptFinal_ex": (_int, [_vp, _vp, _intp]),
    "EVP_DecryptInit_ex": (_int, [_vp, _vp, _vp, _vp, _vp]),
    "EVP_DecryptUpdate": (_int, [_vp, _vp, _intp, _vp, _int]),
    "EVP_DecryptFinal_ex": (_int, [_vp, _vp, _intp]),
}


def _load() -> tuple[ctypes.PyDLL, ctypes.CDLL] | None:
    """(calls that keep the GIL, bulk calls that release it) over one libcrypto, or None."""
    if os.environ.get("USENETSYNC_NO_NOGIL_GCM"):
        return None
    for name in ("libcrypto.so.3", "libcrypto.so.1.1", ctypes.util.find_library("crypto")):
        if not name:
            continue
        try:
            keep, bulk = ctypes.PyDLL(name), ctypes.CDLL(name)
            for lib in (keep, bulk):
                for fn, (restype, argtypes) in _SIGNATURES.items():
                    f = getattr(lib, fn)
                    f.restype, f.argtypes = restype, argtypes
        except (OSError, AttributeError):
            continue
        if keep.EVP_aes_256_gcm():
            return keep, bulk
    return None


_LIBS = _load()
AVAILABLE = _LIBS is not None
_CIPHER = _LIBS[0].EVP_aes_256_gcm() if _LIBS is not None else None


class _Ctx:
    """One thread's EVP_CIPHER_CTX (initialised again for every message)."""

    __slots__ = ("outl", "ptr", "spare")

    def __init__(self) -> None:
        assert _LIBS is not None
        ptr = _LIBS[0].EVP_CIPHER_CTX_new()
        if not ptr:
            raise MemoryError("EVP_CIPHER_CTX_new failed")
        self.ptr = ptr
        self.outl = _int()
        self.spare = ctypes.create_string_buffer(TAG)  # output room for an empty message / the tag

    def __del__(self) -> None:
        if _LIBS is not None and self.ptr:
            _LIBS[0].EVP_CIPHER_CTX_free(self.ptr)
            self.ptr = None


_local = threading.local()


def _ctx() -> _Ctx:
    ctx: _Ctx | None = getattr(_local, "ctx", None)
    if ctx is None:
        ctx = _local.ctx = _Ctx()
    return ctx


def _source(buf: bytes | bytearray | memoryview) -> tuple[Any, Any]:
    """(pointer argument, object to keep alive) for bytes to be read."""
    if isinstance(buf, bytes):
        return buf, buf  # ctypes passes a bytes object's own buffer
    view = memoryview(buf)
    if view.readonly:
        data = view.tobytes()
        return data, data
    ref = (ctypes.c_char * len(view)).from_buffer(view)
    return ref, ref


def _dest(view: memoryview) -> Any:
    if view.readonly:
        raise ValueError("the output buffer is read-only")
    return (ctypes.c_char * len(view)).from_buffer(view)


def encrypt_into(key: bytes, nonce: bytes, data: bytes | bytearray | memoryview, aad: bytes, out: memoryview) -> None:
    """AES-256-GCM: write ciphertext || tag of ``data`` into ``out`` (``len(data) + 16`` bytes)."""
    if _LIBS is None:
        raise RuntimeError("no usable libcrypto")
    keep, bulk = _LIBS
    n = len(memoryview(data))
    if len(key) != _KEY or len(nonce) != _NONCE or len(out) != n + TAG:
        raise ValueError("AES-256-GCM: bad key, nonce or buffer sizes")
    ctx = _ctx()
    p, outl = ctx.ptr, ctx.outl
    dst = _dest(out)
    src, _alive = _source(data) if n else (None, None)
    ok = (
        keep.EVP_EncryptInit_ex(p, _CIPHER, None, None, None) == 1
        and keep.EVP_CIPHER_CTX_ctrl(p, _CTRL_SET_IVLEN, _NONCE, None) == 1
        and keep.EVP_EncryptInit_ex(p, None, None, key, nonce) == 1
        and (not aad or keep.EVP_EncryptUpdate(p, None, ctypes.byref(outl), aad, len(aad)) == 1)
        and (not n or bulk.EVP_EncryptUpdate(p, dst, ctypes.byref(outl), src, n) == 1)  # GIL released
        and (not n or outl.value == n)
        and keep.EVP_EncryptFinal_ex(p, ctx.spare, ctypes.byref(outl)) == 1
        and keep.EVP_CIPHER_CTX_ctrl(p, _CTRL_GET_TAG, TAG, ctx.spare) == 1
    )
    if not ok:
        raise RuntimeError("OpenSSL AES-256-GCM encryption failed")
    ctypes.memmove(ctypes.addressof(dst) + n, ctx.spare, TAG)


def decrypt_into(key: bytes, nonce: bytes, data: bytes | bytearray | memoryview, aad: bytes, out: memoryview) -> bool:
    """AES-256-GCM: authenticate and decrypt ``data`` (ciphertext + tag) into ``out``; True if the tag holds."""
    if _LIBS is None:
        raise RuntimeError("no usable libcrypto")
    keep, bulk = _LIBS
    view = memoryview(data)
    n = len(view) - TAG
    if len(key) != _KEY or len(nonce) != _NONCE or n < 0 or len(out) != n:
        raise ValueError("AES-256-GCM: bad key, nonce or buffer sizes")
    ctx = _ctx()
    p, outl = ctx.ptr, ctx.outl
    tag = view[n:].tobytes()
    if n:
        src, _alive = _source(view[:n])
        dst: Any = _dest(out)
    ok = (
        keep.EVP_DecryptInit_ex(p, _CIPHER, None, None, None) == 1
        and keep.EVP_CIPHER_CTX_ctrl(p, _CTRL_SET_IVLEN, _NONCE, None) == 1
        and keep.EVP_DecryptInit_ex(p, None, None, key, nonce) == 1
        and (not aad or keep.EVP_DecryptUpdate(p, None, ctypes.byref(outl), aad, len(aad)) == 1)
        and (not n or bulk.EVP_DecryptUpdate(p, dst, ctypes.byref(outl), src, n) == 1)  # GIL released
        and (not n or outl.value == n)
        and keep.EVP_CIPHER_CTX_ctrl(p, _CTRL_SET_TAG, TAG, tag) == 1
        # The tag check: 1 only if it matches; nothing is written (GCM has no final block).
        and keep.EVP_DecryptFinal_ex(p, ctx.spare, ctypes.byref(outl)) == 1
    )
    return ok
