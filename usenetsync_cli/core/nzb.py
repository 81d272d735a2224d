"""NZB 1.1: the index file SABnzbd, NZBGet and Nyuu exchange.

Owns: writing NZB 1.1 documents (``NzbWriter``, ``open_nzb_for_write``) and
reading them (``parse_nzb``, ``iter_nzb``) into ``NzbFile``/``NzbSegment``
values, plus deriving a file name from a poster's Subject
(``subject_filename``). Names found here are *untrusted* text: turning them
into paths is the downloader's job (``pipeline.nzb_download.safe_filename``).

Wire shape written (UTF-8, one element per line)::

    <?xml version="1.0" encoding="UTF-8"?>
    <!DOCTYPE nzb PUBLIC "-//newzBin//DTD NZB 1.1//EN" "http://www.newzbin.com/DTD/nzb/nzb-1.1.dtd">
    <nzb xmlns="http://www.newzbin.com/DTD/2003/nzb">
      <head>
        <meta type="title">…</meta>
      </head>
      <file poster="…" date="UNIX" subject="…">
        <groups>
          <group>alt.binaries.test</group>
        </groups>
        <segments>
          <segment bytes="N" number="1">id@host</segment>
        </segments>
      </file>
    </nzb>

Invariants:
- Writer memory is flat: ``add_file`` consumes its segment iterable lazily
  and flushes every few thousand lines, so 1,000,000 segments cost the same
  memory as ten (tested with tracemalloc at 200k).
- Everything written parses back to the same values: text and attributes
  are XML-escaped, and characters an XML parser would normalise (TAB, CR,
  LF in attributes; CR in text) are written as character references.
  Characters XML 1.0 cannot carry at all raise ``ValueError`` (a caller bug:
  our own subjects are printable ASCII).
- Commit point of ``open_nzb_for_write``: the ``os.replace`` of the
  temporary file onto the target in ``close()``. Before it the target is
  untouched (an old NZB stays whole); an exception inside the ``with`` block
  deletes the temporary file.
- The parser never expands entities and never fetches anything: a DOCTYPE
  that declares entities (billion laughs, XXE, parameter entities) is
  refused with ``NzbError`` at the declaration, before any expansion; so is
  a reference to an unknown entity in element text. (In an attribute value
  of a document that names an external DTD, expat drops an unknown
  reference without a callback, as ElementTree does: nothing is expanded.)
  The public NZB DOCTYPE is accepted and never fetched.
- Parsed segments are sorted by number with duplicate numbers dropped (first
  one wins), and every Message-ID is returned in angle brackets and is safe
  to put on an NNTP command line.
- Every malformed input raises ``NzbError`` (a ``ConfigError``) with a
  one-line message; an unreadable path raises ``InputPathError``.
"""

from __future__ import annotations

import gzip
import io
import operator
import os
import re
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO
from xml.parsers import expat

from usenetsync_cli.errors import ConfigError, InputPathError

__all__ = [
    "NZB_DOCTYPE",
    "NZB_NAMESPACE",
    "NzbError",
    "NzbFile",
    "NzbSegment",
    "NzbWriter",
    "iter_nzb",
    "open_nzb_for_write",
    "parse_nzb",
    "subject_filename",
]

NZB_NAMESPACE = "http://www.newzbin.com/DTD/2003/nzb"
NZB_DOCTYPE = (
    '<!DOCTYPE nzb PUBLIC "-//newzBin//DTD NZB 1.1//EN" "http://www.newzbin.com/DTD/nzb/nzb-1.1.dtd">'
)


class NzbError(ConfigError):
    """The NZB is not well-formed XML, not an NZB, or unsafe to parse."""

    hint = "check that the file is a complete NZB (NZB 1.1) from a trusted indexer or poster"


@dataclass(frozen=True, slots=True)
class NzbSegment:
    """One article of a file: its 1-based number, size on the wire, and ``<message-id>``."""

    number: int
    bytes: int
    message_id: str


@dataclass(frozen=True, slots=True)
class NzbFile:
    """One ``<file>`` of an NZB; ``segments`` sorted by number, numbers unique."""

    subject: str
    poster: str
    date: int
    groups: tuple[str, ...]
    segments: list[NzbSegment]

    @property
    def filename(self) -> str | None:
        """The name the Subject quotes (untrusted text), or None; see ``subject_filename``."""
        return subject_filename(self.subject)

    @property
    def bytes(self) -> int:
        """Sum of the segments' ``bytes`` (article sizes, so a little above the file size)."""
        return sum(s.bytes for s in self.segments)


# --- names from subjects ------------------------------------------------------------------------

# The common posters' shapes: `[1/3] - "file.bin" yEnc (1/5)`, `"file.bin" yEnc (1/5) 123`,
# `Some text "file.bin" (1/5)`. Quotes pair up left to right; the first non-blank pair wins.
_QUOTED_RE = re.compile(r'"([^"]*)"')


def subject_filename(subject: str) -> str | None:
    """The quoted file name in a Subject (``"name" yEnc (1/5)``), stripped; None if none.

    The result is untrusted (may contain ``/``, ``..`` or control characters);
    only ``pipeline.nzb_download.safe_filename`` turns it into a path.
    """
    for quoted in _QUOTED_RE.findall(subject):
        if quoted.strip():
            return quoted.strip()
    return None


# --- writing ------------------------------------------------------------------------------------

# XML 1.0 Char production; anything outside cannot be written even as a reference.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
# In attributes a parser turns TAB/CR/LF into spaces unless they are references.
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)
# What the parser accepts between the angle brackets: exactly what ``Connection``
# will put on a command line. The writer keeps to RFC 5536's printable ASCII.
_MSGID_CORE_RE = re.compile(r"[^\x00-\x20\x7f<>]{1,248}")
_LINES_PER_PUT = 2048  # segment lines joined before they reach the buffer
_FLUSH_CHARS = 1 << 16  # write in ~64 KiB pieces: few syscalls, bounded buffer


def _checked(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"NZB {what} must be a str, not {type(value).__name__}")
    m = _NOT_XML_CHAR.search(value)
    if m is not None:
        raise ValueError(f"NZB {what} contains U+{ord(m.group()):04X}, which XML 1.0 cannot carry")
    return value


def _attr(value: str, what: str) -> str:
    return _checked(value, what).translate(_ATTR_ESCAPES)


def _text(value: str, what: str) -> str:
    return _checked(value, what).translate(_TEXT_ESCAPES)


def _msgid_text(message_id: str) -> str:
    """The Message-ID without angle brackets, escaped for XML text."""
    core = message_id[1:-1] if message_id[:1] == "<" and message_id[-1:] == ">" else message_id
    # str predicates rather than a regex: no match object per segment (a third
    # of the writer's time at a million segments).
    if not (
        0 < len(core) <= 248
        and core.isascii()
        and core.isprintable()
        and " " not in core
        and "<" not in core
        and ">" not in core
    ):
        raise ValueError(f"not a Message-ID of printable ASCII: {message_id[:80]!r}")
    # '<' and '>' cannot occur, so '&' is the only character XML text needs escaped.
    return core.replace("&", "&amp;") if "&" in core else core


class NzbWriter:
    """Stream an NZB 1.1 document to a binary stream, one ``<file>`` at a time.

    The XML declaration, DOCTYPE and ``<head>`` are written at construction;
    ``close()`` writes ``</nzb>`` and flushes. A writer made directly over a
    stream leaves the stream open (the caller owns it); one returned by
    ``open_nzb_for_write`` owns its file and commits it on ``close()``.
    """

    def __init__(
        self,
        stream: IO[bytes],
        *,
        title: str | None = None,
        meta: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    ) -> None:
        self._stream = stream
        self._buf: list[str] = []
        self._buffered = 0
        self._closed = False
        self.files = 0
        self.segments = 0
        pairs = list(meta.items()) if isinstance(meta, Mapping) else list(meta)
        if title is not None:
            pairs.insert(0, ("title", title))
        self._put('<?xml version="1.0" encoding="UTF-8"?>\n' + NZB_DOCTYPE + "\n")
        self._put(f'<nzb xmlns="{NZB_NAMESPACE}">\n')
        if pairs:
            self._put("  <head>\n")
            for key, value in pairs:
                self._put(f'    <meta type="{_attr(key, "meta type")}">{_text(value, "meta value")}</meta>\n')
            self._put("  </head>\n")

    def __enter__(self) -> NzbWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()

    def add_file(
        self,
        subject: str,
        poster: str,
        date: int,
        groups: Sequence[str],
        segments: Iterable[tuple[int, int, str]],
    ) -> int:
        """Write one ``<file>``; ``segments`` yields (number, bytes, message_id), consumed lazily.

        Message-IDs may come with or without angle brackets. Returns how many
        segments were written. A file must have a group and a segment (the
        DTD requires both); a bad value raises ``ValueError`` and leaves the
        document unfinished (``open_nzb_for_write`` then discards it).
        """
        if self._closed:
            raise ValueError("NzbWriter is closed")
        if isinstance(groups, str):
            raise TypeError("groups must be a sequence of group names, not one string")
        if not groups:
            raise ValueError("an NZB file entry needs at least one group")
        self._put(
            f'  <file poster="{_attr(poster, "poster")}" date="{int(date)}" subject="{_attr(subject, "subject")}">\n'
            "    <groups>\n"
        )
        for group in groups:
            self._put(f"      <group>{_text(group.strip(), 'group')}</group>\n")
        self._put("    </groups>\n    <segments>\n")
        count = 0
        lines: list[str] = []
        for number, size, message_id in segments:
            number, size = operator.index(number), operator.index(size)
            if number < 1 or size < 0:
                raise ValueError(f"segment number must be >= 1 and bytes >= 0 (got {number}, {size})")
            lines.append(f'      <segment bytes="{size}" number="{number}">{_msgid_text(message_id)}</segment>\n')
            if len(lines) >= _LINES_PER_PUT:
                count += len(lines)
                self._put("".join(lines))
                lines.clear()
        count += len(lines)
        self._put("".join(lines))
        if count == 0:
            raise ValueError(f"NZB file entry {subject[:60]!r} has no segments")
        self._put("    </segments>\n  </file>\n")
        self.files += 1
        self.segments += count
        return count

    def close(self) -> None:
        """Finish the document (``</nzb>``) and flush. Idempotent."""
        if self._closed:
            return
        self._put("</nzb>\n")
        self._flush()
        self._stream.flush()
        self._closed = True
        self._finish()

    def abort(self) -> None:
        """Stop without finishing the document (an owned file is deleted). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._buf.clear()
        self._discard()

    # Hooks for the owned-file writer.
    def _finish(self) -> None:
        pass

    def _discard(self) -> None:
        pass

    def _put(self, piece: str) -> None:
        self._buf.append(piece)
        self._buffered += len(piece)
        if self._buffered >= _FLUSH_CHARS:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._stream.write("".join(self._buf).encode("utf-8"))
            self._buf.clear()
            self._buffered = 0


class _FileNzbWriter(NzbWriter):
    """An ``NzbWriter`` that owns a temporary file and renames it onto ``path`` on close."""

    def __init__(self, path: Path, *, title: str | None, meta: Mapping[str, str] | Sequence[tuple[str, str]]) -> None:
        self.path = path
        parent = path.parent if str(path.parent) else Path(".")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        except OSError as e:
            raise InputPathError(f"cannot write the NZB in {parent}: {e.strerror or e}") from None
        self._tmp = Path(tmp)
        self._raw: BinaryIO = os.fdopen(fd, "wb")
        self._gz: gzip.GzipFile | None = None
        out: IO[bytes] = self._raw
        if path.name.lower().endswith(".gz"):
            # mtime=0: the same NZB gives the same bytes (reproducible exports).
            self._gz = gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=self._raw, mtime=0)
            out = self._gz
        try:
            super().__init__(out, title=title, meta=meta)
        except BaseException:
            self._discard()
            raise

    def _finish(self) -> None:
        try:
            if self._gz is not None:
                self._gz.close()  # writes the gzip trailer; leaves the raw file open
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
            os.replace(self._tmp, self.path)  # the commit point
        except OSError as e:
            self._discard()
            raise InputPathError(f"cannot write the NZB {self.path}: {e.strerror or e}") from None
        try:
            dfd = os.open(self.path.parent if str(self.path.parent) else ".", os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass  # the rename is done; a directory fsync is best effort

    def _discard(self) -> None:
        for closer in (self._gz, self._raw):
            if closer is not None:
                try:
                    closer.close()
                except OSError:
                    pass
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass


def open_nzb_for_write(
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    meta: Mapping[str, str] | Sequence[tuple[str, str]] = (),
) -> NzbWriter:
    """An ``NzbWriter`` that writes ``path`` atomically; gzip when the name ends in ``.gz``.

    Use as a context manager: a clean exit commits (see the module's commit
    point), an exception discards the temporary file.
    """
    return _FileNzbWriter(Path(path), title=title, meta=meta)


# --- parsing ------------------------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"
_READ_CHUNK = 1 << 16
_MAX_TEXT = 4096  # a group or Message-ID is < 1 KB; refuse unbounded text nodes


class _Builder:
    """expat callbacks that turn the element stream into ``NzbFile`` values.

    We drive expat directly rather than through ``ElementTree.iterparse``:
    ElementTree's C parser offers no hook for entity declarations, so it
    could only reject an entity *after* expanding it; here the declaration
    itself raises, before any expansion (what defusedxml does, without it).
    """

    def __init__(self) -> None:
        self.done: list[NzbFile] = []
        self.stack: list[str] = []
        self.root_seen = False
        self.file_attrs: dict[str, str] | None = None
        self.groups: list[str] = []
        self.segments: dict[int, NzbSegment] = {}
        self.segment_attrs: dict[str, str] | None = None
        self.text: list[str] | None = None
        self.text_len = 0
        self.files_seen = 0

    # --- hardening
    def entity_decl(self, name: str, is_parameter: int, *_: Any) -> None:
        raise NzbError(f"NZB declares the entity {name!r}; entity declarations are refused (entity expansion/XXE)")

    def unparsed_entity_decl(self, name: str, *_: Any) -> None:
        raise NzbError(f"NZB declares the entity {name!r}; entity declarations are refused (entity expansion/XXE)")

    def skipped_entity(self, name: str, is_parameter: int) -> None:
        raise NzbError(f"NZB refers to the undefined entity &{name};")

    def external_ref(self, *_: Any) -> int:
        raise NzbError("NZB refers to an external entity; refused")

    # --- structure
    def start(self, name: str, attrs: dict[str, str]) -> None:
        local = name.rpartition(":")[2]
        if not self.root_seen:
            self.root_seen = True
            if local != "nzb":
                raise NzbError(f"not an NZB: the root element is <{name[:40]}>, not <nzb>")
        parent = self.stack[-1] if self.stack else ""
        self.stack.append(local)
        if local == "file" and parent == "nzb":
            self.file_attrs = attrs
            self.groups = []
            self.segments = {}
            self.files_seen += 1
        elif self.file_attrs is not None and (
            (local == "group" and parent == "groups") or (local == "segment" and parent == "segments")
        ):
            self.text, self.text_len = [], 0
            self.segment_attrs = attrs if local == "segment" else None

    def data(self, chunk: str) -> None:
        if self.text is not None:
            self.text_len += len(chunk)
            if self.text_len > _MAX_TEXT:
                raise NzbError(f"NZB <{self.stack[-1]}> text is longer than {_MAX_TEXT} characters")
            self.text.append(chunk)

    def end(self, name: str) -> None:
        local = self.stack.pop()
        if self.text is not None and local in ("group", "segment"):
            value = "".join(self.text).strip()
            self.text = None
            if local == "group":
                if value:
                    self.groups.append(value)
            else:
                self._segment(value, self.segment_attrs or {})
        elif local == "file" and self.file_attrs is not None and (not self.stack or self.stack[-1] == "nzb"):
            self._file(self.file_attrs)
            self.file_attrs = None

    def _where(self) -> str:
        subject = (self.file_attrs or {}).get("subject", "")
        return f"file {self.files_seen} ({subject[:60]!r})"

    def _segment(self, value: str, attrs: dict[str, str]) -> None:
        raw_number = attrs.get("number")
        try:
            number = int(raw_number) if raw_number is not None else -1
        except ValueError:
            number = -1
        if number < 1:
            raise NzbError(f"NZB {self._where()}: a segment has no valid number ({raw_number!r})")
        try:
            size = int(attrs.get("bytes", "0") or "0")
        except ValueError:
            raise NzbError(f"NZB {self._where()}: segment {number} has a bad bytes={attrs.get('bytes')!r}") from None
        # Some generators write the brackets (escaped); accept both forms.
        core = value[1:-1] if value.startswith("<") and value.endswith(">") else value
        if _MSGID_CORE_RE.fullmatch(core) is None:
            raise NzbError(f"NZB {self._where()}: segment {number} has no valid Message-ID ({value[:60]!r})")
        # Duplicate numbers: keep the first, as SABnzbd does.
        self.segments.setdefault(number, NzbSegment(number, max(size, 0), f"<{core}>"))

    def _file(self, attrs: dict[str, str]) -> None:
        if not self.segments:
            raise NzbError(f"NZB {self._where()} lists no segments")
        raw_date = attrs.get("date", "0") or "0"
        try:
            date = int(float(raw_date))
        except (ValueError, OverflowError):
            date = 0  # the date is informational; a bad one does not spoil the file
        self.done.append(
            NzbFile(
                subject=attrs.get("subject", ""),
                poster=attrs.get("poster", ""),
                date=date,
                groups=tuple(self.groups),
                segments=[self.segments[n] for n in sorted(self.segments)],
            )
        )


def _make_parser(builder: _Builder) -> Any:
    p = expat.ParserCreate()  # no namespace processing: prefixes are stripped by hand
    p.buffer_text = True
    p.ordered_attributes = False
    p.StartElementHandler = builder.start
    p.EndElementHandler = builder.end
    p.CharacterDataHandler = builder.data
    p.EntityDeclHandler = builder.entity_decl
    p.UnparsedEntityDeclHandler = builder.unparsed_entity_decl
    p.SkippedEntityHandler = builder.skipped_entity
    p.ExternalEntityRefHandler = builder.external_ref
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    return p


def _open_source(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> tuple[IO[bytes], str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), "NZB data"
    path = Path(source)
    try:
        fh: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as e:
        raise InputPathError(f"cannot read the NZB {path}: {e.strerror or e}") from None
    return fh, str(path)


def iter_nzb(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> Iterator[NzbFile]:
    """Yield the files of an NZB (path or bytes, gzip or not) as they are parsed.

    Streams: memory holds one ``<file>`` at a time plus expat's buffer. An
    error raises ``NzbError`` after the files before it were yielded.
    """
    raw, label = _open_source(source)
    try:
        head = raw.read(2)
        raw.seek(0)
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if head == _GZIP_MAGIC else raw
        builder = _Builder()
        parser = _make_parser(builder)
        while True:
            try:
                chunk = stream.read(_READ_CHUNK)
            except (OSError, EOFError, zlib.error) as e:
                raise NzbError(f"{label} is a damaged gzip file: {e}") from None
            try:
                parser.Parse(chunk, not chunk)
            except expat.ExpatError as e:
                raise NzbError(f"{label} is not valid XML: {expat.ErrorString(e.code)} at line {e.lineno}") from None
            if builder.done:
                yield from builder.done
                builder.done.clear()
            if not chunk:
                break
        if not builder.root_seen:
            raise NzbError(f"{label} is empty")
        if builder.files_seen == 0:
            raise NzbError(f"{label} lists no files")
    finally:
        raw.close()


def parse_nzb(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> list[NzbFile]:
    """All files of an NZB (path or bytes; gzip is detected by its magic bytes).

    Raises ``NzbError`` for anything malformed or unsafe, ``InputPathError``
    when the path cannot be read.
    """
    return list(iter_nzb(source))
