"""The streaming CSV reader: every defect a real file has."""
import io

import pytest

from services.contacts import csvread


def read(data: bytes, **kw):
    stream = io.BytesIO(data)
    dialect = csvread.detect(stream, **kw)
    items = list(csvread.records(stream, dialect))
    return dialect, items


def test_utf8_with_bom_and_quoted_newlines():
    data = "\ufeffemail,name\r\na@x.com,\"Line one\nline two\"\r\nb@x.com,Zoë\r\n".encode()
    dialect, items = read(data)
    assert (dialect.encoding, dialect.bom, dialect.delimiter, dialect.has_header) == \
        ("utf-8", 3, ",", True)
    assert [r.cells for r in items] == [["email", "name"], ["a@x.com", "Line one\nline two"],
                                        ["b@x.com", "Zoë"]]
    assert [r.number for r in items] == [1, 2, 3]
    assert items[-1].end_offset == len(data)


def test_latin1_and_semicolons():
    data = "email;name\nzoé@x.com;Zoé\n".encode("latin-1")
    dialect, items = read(data)
    assert (dialect.encoding, dialect.delimiter) == ("latin-1", ";")
    assert items[1].cells == ["zoé@x.com", "Zoé"]


def test_tabs_and_no_header():
    data = b"a@x.com\tAnn\nb@x.com\tBob\n"
    dialect, items = read(data)
    assert dialect.delimiter == "\t" and dialect.has_header is False
    assert len(items) == 2


def test_short_long_and_blank_rows_are_returned_as_they_are():
    data = b"email,name,city\na@x.com\nb@x.com,B,Pune,extra\n\nc@x.com,C,Goa\n"
    _, items = read(data)
    assert [r.cells for r in items] == [["email", "name", "city"], ["a@x.com"],
                                        ["b@x.com", "B", "Pune", "extra"], [],
                                        ["c@x.com", "C", "Goa"]]


def test_resuming_at_a_records_end_offset_reads_the_rest_exactly():
    data = "\ufeffemail,name\r\na@x.com,\"multi\nline\"\r\nb@x.com,B\r\nc@x.com,C\r\n".encode()
    dialect, items = read(data)
    resumed = list(csvread.records(io.BytesIO(data), dialect, items[1].end_offset, items[1].number))
    assert [(r.number, r.cells) for r in resumed] == [(3, ["b@x.com", "B"]), (4, ["c@x.com", "C"])]


def test_a_latin1_file_whose_accents_start_after_the_sniffed_head_is_read_as_latin1():
    filler = b"a@x.com,A\n" * 8000                      # 80,000 bytes of plain ASCII
    assert len(filler) > csvread.SNIFF_BYTES
    data = b"email,name\n" + filler + "zoé@x.com,Zoé Müller\nc@x.com,C\n".encode("latin-1")
    dialect, items = read(data)
    assert dialect.encoding == "latin-1"
    assert items[-2].cells == ["zoé@x.com", "Zoé Müller"] and items[-1].cells == ["c@x.com", "C"]
    assert not any("\ufffd" in cell for item in items for cell in item.cells)


def test_utf8_characters_cut_by_the_scan_chunks_are_still_utf8():
    before = csvread.SCAN_BYTES - 1 - len(b"email,name\n") - len(b"b@x.com,")
    lines, pad = divmod(before, 10)
    data = b"email,name\n" + b"a@x.com,A\n" * lines + b"b@x.com," + b"x" * pad + "é\n".encode()
    assert data.index("é".encode()) == csvread.SCAN_BYTES - 1   # its two bytes straddle chunks
    dialect, items = read(data)
    assert dialect.encoding == "utf-8"
    assert items[-1].cells == ["b@x.com", "x" * pad + "é"]


def test_a_given_encoding_is_not_second_guessed():
    data = "email,name\nzoé@x.com,Zoé\n".encode("latin-1")
    dialect, items = read(data, encoding="utf-8")
    assert dialect.encoding == "utf-8" and items[-1].cells[1] == "Zo\ufffd"


def test_an_oversized_field_is_one_unreadable_row():
    data = b"email,name\n" + b'a@x.com,"' + b"x" * (csvread.MAX_FIELD + 10) + b'"\nb@x.com,B\n'
    _, items = read(data)
    bad = [i for i in items if isinstance(i, tuple)]
    assert len(bad) == 1 and "unreadable" in bad[0][2]
    assert items[-1].cells == ["b@x.com", "B"]


def test_mapping_is_guessed_from_the_header_or_given():
    fields = {"city": {"type": "text", "label": "Town"}}
    m = csvread.build_mapping(["Name", "E-mail", "Town"], [], None, fields)
    assert (m.email, m.name, m.fields, m.width) == (1, 0, {"city": 2}, 3)
    m = csvread.build_mapping([], ["Pune", "a@x.com"], None, fields)
    assert (m.email, m.name) == (1, None)
    m = csvread.build_mapping(["a", "b", "c"], [], {"email": "B", "fields": {"city": 2}}, fields)
    assert (m.email, m.fields) == (1, {"city": 2})
    for bad in ({"email": "nope"}, {"email": 9}, {"fields": {"nope": 0}}, {"emial": 0},
                {"email": [1]}):
        with pytest.raises(csvread.MappingError):
            csvread.build_mapping(["a", "b", "c"], [], bad, fields)
    with pytest.raises(csvread.MappingError):
        csvread.build_mapping(["first", "second"], [], None, fields)
