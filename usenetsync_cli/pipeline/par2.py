"""PAR2 files and the par2 tool: the format edge of recovery data (pipeline/recovery.py).

Owns: running ``par2`` (par2cmdline-turbo's binary) in a scratch folder, and
reading the packets of the recovery files it writes: the critical packets
(Main, FileDesc, IFSC; par2's Creator packet is dropped, it names the tool)
once each, and each recovery slice (RecvSlic) by its exponent, so that
recovery.py can post one slice per article. Also ``RecoveryError``, the
failure of anything recovery data does.

Invariant: a malformed file par2 wrote, or a slice count other than the one
asked for, raises ``RecoveryError``; nothing is guessed.
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from usenetsync_cli.errors import UploadIncompleteError

# PAR2 packet framing (PAR 2.0 spec §3): magic, length (u64 LE), packet MD5,
# recovery set id, type; then the body. RecvSlic bodies start with the exponent.
_MAGIC = b"PAR2\x00PKT"
_HEADER = struct.Struct("<8sQ16s16s16s")
_T_MAIN = b"PAR 2.0\x00Main\x00\x00\x00\x00"
_T_DESC = b"PAR 2.0\x00FileDesc"
_T_IFSC = b"PAR 2.0\x00IFSC\x00\x00\x00\x00"
_T_SLICE = b"PAR 2.0\x00RecvSlic"
_CRITICAL = frozenset({_T_MAIN, _T_DESC, _T_IFSC})


class RecoveryError(UploadIncompleteError):
    """Recovery data could not be created, posted or applied."""

    hint = "run the command again; every confirmed group and re-post is kept"



def run_par2(args: list[str], cwd: Path) -> int:
    """Run par2 in ``cwd``; returns its exit code (verify/repair: 0 intact or repaired, 1 repairable, 2 not)."""
    from par2.cli import par2_executable  # the binary itself: the console script prints to stdout

    try:
        proc = subprocess.run(
            [par2_executable(), *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=3600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RecoveryError(f"cannot run par2 ({args[0]}): {e}", hint="is par2cmdline-turbo installed?") from None
    if proc.returncode not in ((0,) if args[0] == "c" else (0, 1, 2)):
        tail = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()[-400:]
        raise RecoveryError(f"par2 {args[0]} failed (exit {proc.returncode}): {tail}")
    return proc.returncode


def _packets(f: BinaryIO) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, length) of each packet of a PAR2 file."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    off = 0
    while off + _HEADER.size <= end:
        f.seek(off)
        magic, length, _md5, _set, ptype = _HEADER.unpack(f.read(_HEADER.size))
        if magic != _MAGIC or length < _HEADER.size or length % 4 or off + length > end:
            raise RecoveryError("par2 wrote a malformed recovery file")
        yield ptype, off, length
        off += length


def read_at(f: BinaryIO, off: int, length: int) -> bytes:
    f.seek(off)
    return f.read(length)


def split_par2(gdir: Path, count: int) -> tuple[bytes, dict[int, tuple[Path, int, int]]]:
    """(critical packets once each, exponent -> (file, offset, length) of its RecvSlic packet)."""
    critical: list[bytes] = []
    seen: set[bytes] = set()
    slices: dict[int, tuple[Path, int, int]] = {}
    for path in sorted(gdir.glob("rec*.par2")):
        with open(path, "rb") as f:
            for ptype, off, length in _packets(f):
                if ptype in _CRITICAL:
                    pkt = read_at(f, off, length)
                    if pkt not in seen:
                        seen.add(pkt)
                        critical.append(pkt)
                elif ptype == _T_SLICE:
                    (exp,) = struct.unpack(
                        "<I", read_at(f, off + _HEADER.size, 4)
                    )
                    slices[exp] = (path, off, length)
    if sorted(slices) != list(range(count)) or not critical:
        raise RecoveryError(f"par2 made {len(slices)} recovery blocks, expected {count}")
    # Main first, then FileDesc, then IFSC: the order par2 itself writes.
    order = {_T_MAIN: 0, _T_DESC: 1, _T_IFSC: 2}
    critical.sort(key=lambda p: order[p[48:64]])
    return b"".join(critical), slices


