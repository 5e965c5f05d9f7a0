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
    assert (dialect.encoding, dialect.delimiter) == ("windows-1252", ";")
    assert items[1].cells == ["zoé@x.com", "Zoé"]


@pytest.mark.parametrize("text, expected", [
    ("email;name;city\na@x.com;Ann, Lee;Pune\nb@x.com;Bob;Goa\n", ";"),  # commas in a cell
    ('email,name\na@x.com,"Lee; Ann"\nb@x.com,"Bo; b"\n', ","),       # quoted semicolons
    ("email|name|x\na@x.com|Ann|1\n", "|"),
    ("a@x.com\nb@x.com\n", ","),                                        # one column
    ("email,name;x\na@x.com,Ann;1\nb@x.com,Bob;2\n", ","),             # a tie: the comma
])
def test_the_delimiter_is_the_one_that_splits_the_rows_alike(text, expected):
    assert csvread.detect_delimiter(text) == expected


def test_a_head_that_made_the_sniffer_backtrack_for_seconds_still_reads():
    """csv.Sniffer took 9-14 s over 64 KB of this (quadratic regexes),
    holding the worker's GIL; the head is read as one comma-split row."""
    data = b"email," + b', "' * (csvread.SNIFF_BYTES // 3)
    dialect = csvread.detect(io.BytesIO(data))
    assert dialect.delimiter == ","


def test_a_file_said_to_be_utf8_that_is_not_fails_instead_of_losing_its_accents():
    data = "email;name\nj@x.com;Jörg Müller\n".encode("cp1252")
    with pytest.raises(UnicodeError, match="not UTF-8"):
        csvread.detect(io.BytesIO(data), encoding="utf-8")
    dialect, items = read("email;name\nj@x.com;Jörg\n".encode(), encoding="utf-8")
    assert items[1].cells == ["j@x.com", "Jörg"]


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
    assert dialect.encoding == "windows-1252"
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


def test_a_windows_1252_file_keeps_its_quotes_dashes_and_euro_signs():
    """Excel on Windows writes windows-1252; read as ISO Latin-1, ’ “ ” – €
    became invisible control characters in the stored names."""
    data = "email,name\nsean@x.com,Seán O’Brien – “€5”\n".encode("cp1252") + b"z@x.com,\x81\n"
    dialect, items = read(data)
    assert dialect.encoding == "windows-1252"
    assert items[1].cells == ["sean@x.com", "Seán O’Brien – “€5”"]
    assert items[2].cells == ["z@x.com", "\x81"]  # undefined in windows-1252: kept, not lost
    stream = io.BytesIO(data)  # an import begun before: its dialect says latin-1
    old = csvread.Dialect("latin-1", 0, ",", True)
    assert list(csvread.records(stream, old))[1].cells[1] == "Seán O’Brien – “€5”"


def test_an_oversized_field_is_one_unreadable_row():
    data = b"email,name\n" + b'a@x.com,"' + b"x" * (csvread.MAX_FIELD + 10) + b'"\nb@x.com,B\n'
    _, items = read(data)
    bad = [i for i in items if isinstance(i, tuple)]
    assert len(bad) == 1 and "unreadable" in bad[0][2]
    assert items[-1].cells == ["b@x.com", "B"]


@pytest.mark.parametrize("newline", ["\n", "\r"])
def test_a_line_over_the_limit_is_one_row_rejected_and_the_numbers_after_it_hold(newline):
    """Its rest was read as a row of its own: a phantom rejected row, and
    every later row's number one off."""
    rows = ["email,name", "a@x.com,Ann", "b@x.com," + "x" * (csvread.MAX_LINE + 100_000),
            "c@x.com,Cy", "d@x.com,Di"]
    data = newline.join(rows).encode() + newline.encode()
    _, items = read(data)
    assert [(i.number, i.cells) if isinstance(i, csvread.Record) else i[0] for i in items] == [
        (1, ["email", "name"]), (2, ["a@x.com", "Ann"]), 3, (4, ["c@x.com", "Cy"]),
        (5, ["d@x.com", "Di"])]
    assert items[2][2] == f"a line longer than {csvread.MAX_LINE} bytes"
    resumed = list(csvread.records(io.BytesIO(data), csvread.detect(io.BytesIO(data)),
                                   items[2][1], 3))
    assert [r.number for r in resumed] == [4, 5]


def test_an_over_long_line_inside_a_quoted_cell_is_part_of_its_one_rejected_row():
    long = "x" * (csvread.MAX_LINE + 100_000)
    for quoted in (long, long + '""' + long[:10]):   # "" inside a quoted cell is one quote
        data = f'email,name\na@x.com,"A\n{quoted}\nstill"\nc@x.com,C\n'.encode()
        _, items = read(data)
        assert [(i.number, i.cells) if isinstance(i, csvread.Record) else i[0] for i in items] \
            == [(1, ["email", "name"]), 2, (3, ["c@x.com", "C"])]


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


def test_an_unclosed_quote_costs_its_own_line_and_no_other_row():
    """The quote never closes: every line after it became part of one cell,
    neither imported nor rejected (4,937 of 10,000 rows in a review)."""
    rows = "".join(f"r{i}@x.com,R{i},ok\n" for i in range(100))
    data = ('email,name,note\na@x.com,Ann,"5 inch\n' + rows).encode()
    _, items = read(data)
    bad = [i for i in items if isinstance(i, tuple)]
    assert [(i.number, i.reason.split(":")[0]) for i in bad] == [(2, "unclosed quote")]
    assert bad[0].text == 'a@x.com,Ann,"5 inch'   # what to mend, as the rejected rows show it
    assert bad[0][1] == data.index(b"r0@")  # resumed at the line after it
    assert [r.cells[0] for r in items if isinstance(r, csvread.Record)][1:] == \
        [f"r{i}@x.com" for i in range(100)]


def test_an_unclosed_quote_near_the_end_of_the_file_costs_its_line_only():
    data = b'email,name,note\na@x.com,Ann,"5 inch\nb@x.com,Bob,x\nc@x.com,Cat,y\n'
    _, items = read(data)
    assert [i.cells[0] if isinstance(i, csvread.Record) else "rejected" for i in items] == \
        ["email", "rejected", "b@x.com", "c@x.com"]
    assert items[-1].end_offset == len(data)


def test_quoted_cells_of_a_few_lines_are_still_one_cell_and_a_resume_finds_its_place():
    note = "\n".join(f"line {n}" for n in range(csvread.MAX_RECORD_LINES - 1))
    data = f'email,note\na@x.com,"{note}"\nb@x.com,"x"\n'.encode()
    _, items = read(data)
    assert [r.cells for r in items[1:]] == [["a@x.com", note], ["b@x.com", "x"]]
    stream = io.BytesIO(data)
    dialect = csvread.detect(stream)
    again = list(csvread.records(stream, dialect, items[1].end_offset, items[1].number))
    assert [(r.number, r.cells) for r in again] == [(3, ["b@x.com", "x"])]


def test_a_first_row_is_a_header_only_when_it_names_a_column_we_know():
    """Any first row without an address was taken for a header: a
    headerless file whose first address was bad lost that row silently."""
    assert read(b"ann@localhost,Ann\nbob@x.com,Bob\n")[0].has_header is False
    assert read(b"E-Mail;Name\nbob@x.com;Bob\n")[0].has_header is True
    assert read(b"Correo,Nombre\nbob@x.com,Bob\n")[0].has_header is False
    assert read(b"Correo,Nombre\nbob@x.com,Bob\n", header_names=["correo"])[0].has_header is True


def test_a_file_with_old_mac_line_endings_is_read_row_by_row_and_resumes():
    """Excel for Mac's "CSV (Macintosh)" ends lines with a lone CR: the file
    was one line, and the import failed saying no column looked like an address."""
    data = b'email,name\ra@x.com,"Ann\rSecond line"\rb@x.com,Bob\rc@x.com,Cat\r'
    dialect, items = read(data)
    assert dialect.newline == "\r" and dialect.has_header is True
    assert [r.cells for r in items[1:]] == [["a@x.com", "Ann\rSecond line"], ["b@x.com", "Bob"],
                                            ["c@x.com", "Cat"]]
    assert items[-1].end_offset == len(data)
    stream = io.BytesIO(data)
    again = list(csvread.records(stream, dialect, items[2].end_offset, items[2].number))
    assert [r.cells for r in again] == [["c@x.com", "Cat"]]


def test_text_after_a_closing_quote_rejects_its_row_instead_of_losing_the_quote():
    """`"Ann"e` read leniently came in as `Anne`: the quotes dropped without
    a word. The row is rejected with the reason; the rows around it come in,
    and a quote inside an unquoted cell is still kept as it is."""
    data = b'email,name\na@x.com,"Ann"e\nb@x.com,Bo"b\nc@x.com,"Cat"\n'
    _, items = read(data)
    assert [i.cells if isinstance(i, csvread.Record) else (i[0], i[2]) for i in items] == [
        ["email", "name"],
        (2, "unreadable row: text after a closing quote; quote the whole cell and double each "
            "quote inside it"),
        ["b@x.com", 'Bo"b'], ["c@x.com", "Cat"]]


def test_one_stray_byte_leaves_a_utf8_file_utf8():
    """Any byte that was not UTF-8 read the whole file as windows-1252:
    every accent came in as mojibake ("RenÃ©e"), and an upsert wrote it
    over good contacts. The row with the byte is rejected instead."""
    data = ("email,name,city\nrenee@x.com,Renée Müller,Zürich\n".encode()
            + b"bad@x.com,Bad\xffByte,X\n" + "zoe@x.com,Zoë,Köln\n".encode())
    dialect, items = read(data)
    assert dialect.encoding == "utf-8"
    assert items[1].cells == ["renee@x.com", "Renée Müller", "Zürich"]
    assert "\ufffd" in items[2].cells[1]          # imports.py rejects it: NOT_UTF8
    assert items[3].cells == ["zoe@x.com", "Zoë", "Köln"]
    # A windows-1252 file stays one, its few byte pairs that happen to be UTF-8 or not.
    legacy = "email,name\na@x.com,Renée\nb@x.com,Zoë\nc@x.com,Ã©\n".encode("cp1252")
    assert read(legacy)[0].encoding == "windows-1252"


def test_a_lone_cr_ends_a_row_in_a_file_of_line_feeds():
    """A stray CR between two rows made them one record the csv module
    refused: both lost, and shown with no cells."""
    data = b'email,name\na@x.com,A\nf@x.com,F\rg@x.com,G\nh@x.com,"H\rsecond"\r\ni@x.com,I\r\n'
    dialect, items = read(data)
    assert dialect.newline == "\n"
    assert [i.cells for i in items[1:]] == [["a@x.com", "A"], ["f@x.com", "F"], ["g@x.com", "G"],
                                            ["h@x.com", "H\rsecond"], ["i@x.com", "I"]]
    assert items[-1].end_offset == len(data)
    stream = io.BytesIO(data)
    again = list(csvread.records(stream, dialect, items[2].end_offset, items[2].number))
    assert [r.cells[0] for r in again] == ["g@x.com", "h@x.com", "i@x.com"]


def test_a_file_of_lone_crs_with_a_final_line_feed_is_read_row_by_row():
    """The import failed: "no column of the first row looks like an address"."""
    dialect, items = read(b"email,name\rc@x.com,A\rd@x.com,B\n")
    assert dialect.newline == "\r" and dialect.has_header is True
    assert [i.cells for i in items[1:]] == [["c@x.com", "A"], ["d@x.com", "B"]]


def test_a_column_name_the_header_has_twice_is_refused_not_half_read():
    """"city" twice: the first (empty) was the field's, and "Delhi" went
    without a word."""
    fields = {"city": {"type": "text"}}
    with pytest.raises(csvread.MappingError, match="city.*rename"):
        csvread.build_mapping(["email", "city", "city"], [], None, fields)
    with pytest.raises(csvread.MappingError, match="email"):
        csvread.build_mapping(["email", "name", "Email "], [], None, {})
    # different spellings are the header's choice: the first, as before
    assert csvread.build_mapping(["Email", "E-mail Address", "Name", "Full Name"], [], None,
                                 {}) == csvread.Mapping(0, 2, {}, 4)
    # blank columns name no field, whether or not the field has a label
    assert csvread.build_mapping(["email", "name", "plan", "", ""], [], None,
                                 {"plan": {"type": "text"}}).fields == {"plan": 2}
    with pytest.raises(csvread.MappingError, match="fields.city"):
        csvread.build_mapping(["email", "town", "town"], [], {"fields": {"city": "town"}}, fields)
    mapped = csvread.build_mapping(["email", "city", "city"], [], {"fields": {"city": 2}}, fields)
    assert mapped.fields == {"city": 2}
    assert csvread.build_mapping(["email", "notes", "notes"], [], None, fields).email == 0


def test_excels_separator_line_is_read_as_excel_reads_it():
    dialect, items = read(b"sep=;\r\nemail;name\r\nann@x.com;Ann\r\n")
    assert (dialect.delimiter, dialect.has_header, dialect.bom) == (";", True, 7)
    assert [i.cells for i in items] == [["email", "name"], ["ann@x.com", "Ann"]]


def test_a_cr_inside_a_quoted_cell_stays_in_the_cell():
    """Every lone CR counted, an address cell of three lines made the file
    read as CR-separated; split at each, a note of 40 lines ran past the
    record's line limit."""
    rows = "".join(f'u{i}@x.com,User {i},"{i} Main St\rSpringfield\rIL"\n' for i in range(5))
    dialect, items = read(("email,name,address\n" + rows).encode())
    assert dialect.newline == "\n" and len(items) == 6
    assert items[1].cells == ["u0@x.com", "User 0", "0 Main St\rSpringfield\rIL"]
    note = "\r".join(f"line {n}" for n in range(40))
    _, items = read(f'email,name,note\nann@x.com,Ann,"{note}"\nbob@x.com,Bob,x\n'.encode())
    assert [i.cells for i in items[1:]] == [["ann@x.com", "Ann", note], ["bob@x.com", "Bob", "x"]]
