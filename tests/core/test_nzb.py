"""NZB 1.1 writer and parser: round trips, gzip, streaming memory, hostile input."""

from __future__ import annotations

import gzip
import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usenetsync_cli.core.nzb import (
    NzbError,
    NzbFile,
    NzbSegment,
    NzbWriter,
    iter_nzb,
    open_nzb_for_write,
    parse_nzb,
    subject_filename,
)
from usenetsync_cli.errors import ConfigError, InputPathError


def write(files: list[tuple[str, str, int, list[str], list[tuple[int, int, str]]]], **kw: object) -> bytes:
    buf = io.BytesIO()
    w = NzbWriter(buf, **kw)  # type: ignore[arg-type]
    for subject, poster, date, groups, segments in files:
        w.add_file(subject, poster, date, groups, segments)
    w.close()
    return buf.getvalue()


# --- writing and reading back -------------------------------------------------------------------


def test_round_trip_and_shape() -> None:
    data = write(
        [
            ('[1/2] - "a.bin" yEnc (1/3)', "Me <me@x.invalid>", 1_700_000_000, ["alt.binaries.test"],
             [(3, 300, "<c@x>"), (1, 100, "a@x"), (2, 200, "b@x")]),
            ('"b.bin" yEnc (1/1)', "", 0, ["alt.binaries.test", "alt.binaries.misc"], [(1, 5, "d@y")]),
        ],
        title="My title",
    )  # fmt: skip
    text = data.decode()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nzb PUBLIC "-//newzBin//DTD NZB 1.1//EN"')
    assert '<nzb xmlns="http://www.newzbin.com/DTD/2003/nzb">' in text
    assert '<meta type="title">My title</meta>' in text
    assert '<segment bytes="100" number="1">a@x</segment>' in text  # no angle brackets on the wire
    files = parse_nzb(data)
    assert [f.filename for f in files] == ["a.bin", "b.bin"]
    a, b = files
    assert a == NzbFile(
        subject='[1/2] - "a.bin" yEnc (1/3)',
        poster="Me <me@x.invalid>",
        date=1_700_000_000,
        groups=("alt.binaries.test",),
        segments=[NzbSegment(1, 100, "<a@x>"), NzbSegment(2, 200, "<b@x>"), NzbSegment(3, 300, "<c@x>")],
    )
    assert b.groups == ("alt.binaries.test", "alt.binaries.misc") and a.bytes == 600


# XML 1.0 characters (no surrogates, no C0 controls other than TAB/LF/CR, no U+FFFE/FFFF).
xml_chars = st.characters(codec="utf-8", exclude_categories=("Cs",)).filter(
    lambda c: c in "\t\n\r" or (c >= " " and c not in "\ufffe\uffff")
)
special = st.sampled_from(list("&<>\"'&;]]>"))
text_st = st.lists(st.one_of(xml_chars, special), max_size=40).map("".join)
# Group names and Message-IDs: no whitespace (the parser strips it); XML specials welcome.
token_chars = st.one_of(st.characters(min_codepoint=0x21, max_codepoint=0x7E), st.sampled_from(list("&\"'")))
group_st = st.lists(token_chars, min_size=1, max_size=30).map("".join)
msgid_st = (
    st.lists(token_chars.filter(lambda c: c not in "<>"), min_size=1, max_size=60).map("".join)
)


@settings(max_examples=150, deadline=None)
@given(
    subject=text_st,
    poster=text_st,
    date=st.integers(0, 2**40),
    groups=st.lists(group_st, min_size=1, max_size=3),
    segs=st.dictionaries(st.integers(1, 10_000), st.tuples(st.integers(0, 2**40), msgid_st), min_size=1, max_size=8),
    title=st.one_of(st.none(), text_st),
    brackets=st.booleans(),
)
def test_round_trip_property(
    subject: str,
    poster: str,
    date: int,
    groups: list[str],
    segs: dict[int, tuple[int, str]],
    title: str | None,
    brackets: bool,
) -> None:
    segments = [(n, size, f"<{mid}>" if brackets else mid) for n, (size, mid) in segs.items()]
    data = write([(subject, poster, date, groups, segments)], title=title)
    [f] = parse_nzb(data)
    assert f.subject == subject and f.poster == poster and f.date == date
    assert f.groups == tuple(groups)
    assert f.segments == [NzbSegment(n, segs[n][0], f"<{segs[n][1]}>") for n in sorted(segs)]
    # gzip is transparent.
    assert parse_nzb(gzip.compress(data)) == [f]


def test_writer_refuses_what_xml_or_nntp_cannot_carry() -> None:
    w = NzbWriter(io.BytesIO())
    with pytest.raises(ValueError, match="U\\+0001"):
        w.add_file("bad\x01", "p", 0, ["g"], [(1, 1, "a@b")])
    for msgid in ("a b@c", "", "<>", "a<b@c", "x" * 300):
        with pytest.raises(ValueError, match="Message-ID"):
            NzbWriter(io.BytesIO()).add_file("s", "p", 0, ["g"], [(1, 1, msgid)])
    with pytest.raises(ValueError, match="group"):
        NzbWriter(io.BytesIO()).add_file("s", "p", 0, [], [(1, 1, "a@b")])
    with pytest.raises(ValueError, match="no segments"):
        NzbWriter(io.BytesIO()).add_file("s", "p", 0, ["g"], [])
    with pytest.raises(ValueError, match="number"):
        NzbWriter(io.BytesIO()).add_file("s", "p", 0, ["g"], [(0, 1, "a@b")])


def test_duplicate_numbers_keep_the_first_and_segments_are_sorted() -> None:
    data = write([("s", "p", 1, ["g"], [(2, 20, "b@x"), (1, 10, "a@x"), (2, 99, "dup@x"), (10, 5, "z@x")])])
    [f] = parse_nzb(data)
    assert [(s.number, s.message_id) for s in f.segments] == [(1, "<a@x>"), (2, "<b@x>"), (10, "<z@x>")]


# --- files: gzip and the commit point -----------------------------------------------------------


@pytest.mark.parametrize("name", ["out.nzb", "out.nzb.gz", "OUT.NZB.GZ"])
def test_open_nzb_for_write_commits_atomically(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with open_nzb_for_write(path, title="t") as w:
        w.add_file('"x.bin" yEnc (1/1)', "p", 5, ["alt.binaries.test"], [(1, 10, "a@b")])
        assert not path.exists()  # nothing visible before the commit point
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.lower().endswith(".gz")
    assert [f.filename for f in parse_nzb(path)] == ["x.bin"]
    assert [f.filename for f in parse_nzb(str(path))] == ["x.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_failed_export_leaves_the_old_nzb_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "keep.nzb"
    path.write_bytes(b"old")
    with pytest.raises(ValueError):
        with open_nzb_for_write(path) as w:
            w.add_file("s", "p", 0, ["g"], [(1, 1, "ok@x"), (2, 1, "bad id@x")])
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.nzb"]


def test_gzip_output_is_reproducible(tmp_path: Path) -> None:
    for n in (1, 2):
        (tmp_path / str(n)).mkdir()
        with open_nzb_for_write(tmp_path / str(n) / "x.nzb.gz") as w:
            w.add_file("s", "p", 0, ["g"], [(1, 1, "a@b")])
    assert (tmp_path / "1" / "x.nzb.gz").read_bytes() == (tmp_path / "2" / "x.nzb.gz").read_bytes()


def _segments(n: int) -> Iterator[tuple[int, int, str]]:
    for i in range(1, n + 1):
        yield i, 792_000, f"{i:026d}@news.example.invalid"


def test_200k_segments_stream_with_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.nzb.gz"
    tracemalloc.start()
    try:
        with open_nzb_for_write(path, title="big") as w:
            w.add_file('"big.bin" yEnc (1/200000)', "p", 0, ["alt.binaries.test"], _segments(150_000))
            w.add_file('"more.bin" yEnc (1/50000)', "p", 0, ["alt.binaries.test"], _segments(50_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # ~17 MB of XML went through; the writer held one ~64 KiB chunk plus gzip state.
    assert peak < 2_000_000, peak
    files = list(iter_nzb(path))
    assert [len(f.segments) for f in files] == [150_000, 50_000]
    assert files[0].segments[-1] == NzbSegment(150_000, 792_000, f"<{150_000:026d}@news.example.invalid>")


# --- reading what others write ------------------------------------------------------------------


SABNZBD_STYLE = b"""<?xml version="1.0" encoding="iso-8859-1" ?>
<!DOCTYPE nzb PUBLIC "-//newzBin//DTD NZB 1.1//EN" "http://www.newzbin.com/DTD/nzb/nzb-1.1.dtd">
<!-- generated by some indexer -->
<nzb xmlns="http://www.newzbin.com/DTD/2003/nzb">
 <head><meta type="category">TV</meta></head>
 <file poster="Joe &lt;joe@example.com&gt;" date="1071674882" subject="Here&apos;s your file!  abc-mr2a.r01 (1/2)">
  <groups>
   <group> alt.binaries.newzbin </group>
   <group>alt.binaries.mojo</group>
  </groups>
  <segments>
   <segment bytes="102394" number="1">
     123456789abcdef@news.newzbin.com
   </segment>
   <segment bytes="4501" number="2">&lt;987654321fedbca@news.newzbin.com&gt;</segment>
  </segments>
 </file>
</nzb>
"""


def test_reads_a_typical_indexer_nzb() -> None:
    [f] = parse_nzb(SABNZBD_STYLE)
    assert f.poster == "Joe <joe@example.com>" and f.date == 1071674882
    assert f.groups == ("alt.binaries.newzbin", "alt.binaries.mojo")
    assert [s.message_id for s in f.segments] == ["<123456789abcdef@news.newzbin.com>", "<987654321fedbca@news.newzbin.com>"]
    assert f.filename is None  # no quoted name: the downloader asks the yEnc header


def test_namespace_prefixes_and_no_namespace_both_parse() -> None:
    prefixed = (
        b'<n:nzb xmlns:n="http://www.newzbin.com/DTD/2003/nzb"><n:file subject="s" poster="p" date="1">'
        b'<n:groups><n:group>g</n:group></n:groups><n:segments><n:segment bytes="1" number="1">a@b</n:segment>'
        b"</n:segments></n:file></n:nzb>"
    )
    plain = prefixed.replace(b"n:", b"").replace(b' xmlns:n="http://www.newzbin.com/DTD/2003/nzb"', b"")
    assert parse_nzb(prefixed) == parse_nzb(plain)
    assert parse_nzb(plain)[0].segments == [NzbSegment(1, 1, "<a@b>")]


@pytest.mark.parametrize(
    ("subject", "name"),
    [
        ('[1/3] - "file.bin" yEnc (1/5)', "file.bin"),
        ('"file.bin" yEnc (1/5)', "file.bin"),
        ('[PRiVATE]-[#a.b.x]-[ "My File.mkv" ] yEnc (01/99)', "My File.mkv"),
        ('"" then "real.rar" (1/2)', "real.rar"),
        ("no quotes here yEnc (1/5)", None),
        ('"../../etc/evil" yEnc (1/5)', "../../etc/evil"),  # untrusted: nzbget sanitises
    ],
)
def test_subject_filename(subject: str, name: str | None) -> None:
    assert subject_filename(subject) == name


# --- hostile and broken input -------------------------------------------------------------------


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE nzb [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol9 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<nzb><file subject="&lol9;" poster="p" date="1"><groups><group>g</group></groups>
<segments><segment bytes="1" number="1">a@b</segment></segments></file></nzb>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE nzb [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<nzb><file subject="&xxe;" poster="p" date="1"><groups><group>g</group></groups>
<segments><segment bytes="1" number="1">a@b</segment></segments></file></nzb>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE nzb [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]>
<nzb/>"""

UNPARSED_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE nzb [<!NOTATION n SYSTEM "x"><!ENTITY e SYSTEM "y" NDATA n>]><nzb/>"""

UNDEFINED_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE nzb PUBLIC "-//newzBin//DTD NZB 1.1//EN" "http://www.newzbin.com/DTD/nzb/nzb-1.1.dtd">
<nzb><file subject="s" poster="p" date="1"><groups><group>&ghost;</group></groups>
<segments><segment bytes="1" number="1">a@b</segment></segments></file></nzb>"""


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (BILLION_LAUGHS, "entity"),
        (XXE, "entity"),
        (PARAMETER_ENTITY, "entity"),
        (UNPARSED_ENTITY, "entity"),
        (UNDEFINED_ENTITY, "undefined entity"),
        (gzip.compress(BILLION_LAUGHS), "entity"),
    ],
)
def test_entity_tricks_are_refused_before_expansion(data: bytes, match: str) -> None:
    with pytest.raises(NzbError, match=match) as info:
        parse_nzb(data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not valid XML"),
        (b"this is not xml at all", "not valid XML"),
        (b"\x00\x01\x02\xff", "not valid XML"),
        (b"<nzb><file subject='s'>", "not valid XML"),  # truncated
        (b"<html><body/></html>", "root element"),
        (b"<nzb/>", "no files"),
        (b'<nzb><file subject="s"><groups/><segments/></file></nzb>', "no segments"),
        (b'<nzb><file><segments><segment bytes="1">a@b</segment></segments></file></nzb>', "number"),
        (b'<nzb><file><segments><segment number="x">a@b</segment></segments></file></nzb>', "number"),
        (b'<nzb><file><segments><segment number="1" bytes="many">a@b</segment></segments></file></nzb>', "bytes"),
        (b'<nzb><file><segments><segment number="1">a b@c</segment></segments></file></nzb>', "Message-ID"),
        (b'<nzb><file><segments><segment number="1"></segment></segments></file></nzb>', "Message-ID"),
        (b'<nzb><file><segments><segment number="1">' + b"x" * 5000 + b"</segment></segments></file></nzb>", "longer"),
        (b"\x1f\x8b\x08\x00garbage", "gzip"),
        (gzip.compress(b"<nzb><file>")[:-6], "gzip"),
    ],
)
def test_malformed_nzb_raises_one_line_nzb_error(data: bytes, match: str) -> None:
    with pytest.raises(NzbError, match=match) as info:
        parse_nzb(data)
    assert isinstance(info.value, ConfigError)
    assert "\n" not in str(info.value)


def test_unknown_entity_in_an_attribute_is_dropped_not_expanded() -> None:
    # expat gives no callback for this case (see the module docstring); what
    # matters is that nothing is expanded or fetched.
    data = UNDEFINED_ENTITY.replace(b'subject="s"', b'subject="a&ghost;b"').replace(b"&ghost;</group>", b"g</group>")
    [f] = parse_nzb(data)
    assert f.subject == "ab"


def test_missing_path_is_an_input_path_error(tmp_path: Path) -> None:
    with pytest.raises(InputPathError, match="cannot read the NZB"):
        parse_nzb(tmp_path / "nope.nzb")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda t: ("<nzb>" + t).encode()))
def test_garbage_never_escapes_as_another_exception(data: bytes) -> None:
    try:
        parse_nzb(data)
    except NzbError:
        pass
