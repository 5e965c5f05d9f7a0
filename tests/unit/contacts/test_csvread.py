"""The streaming CSV reader: every defect a real file has."""
import io

import pytest

from services.contacts import csvread


def read(data: bytes, **kw):
    dialect = csvread.sniff(data[:csvread.SNIFF_BYTES], **kw)
    items = list(csvread.records(io.BytesIO(data), dialect))
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


def test_a_broken_utf8_byte_later_in_the_file_costs_a_cell_not_the_file():
    data = b"email,name\n" + b"a@x.com,A\n" * 8000 + b"b@x.com,\xff\xfe bad\nc@x.com,C\n"
    dialect, items = read(data)
    assert dialect.encoding == "utf-8"          # decided on the first 64 KiB
    assert items[-2].cells[1].startswith("\ufffd") and items[-1].cells == ["c@x.com", "C"]


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
