from shared.links import (MAX_PERSONAL_LINKS, extract_links, is_personal, literal_origin,
                          personal_links, personal_url, rewrite_links)

HTML = """<p><a href="https://example.com/a?x=1&amp;y=2">A</a>
<a class="btn" href='https://example.com/b'>B</a>
<a href="https://example.com/a?x=1&amp;y=2">A again</a>
<a href="mailto:hi@example.com">mail</a> <a href="#top">top</a>
<a data-no-track href="https://example.com/private">private</a>
<A HREF="HTTP://EXAMPLE.COM/C">C</A></p>"""


def test_extracts_distinct_trackable_links_in_order():
    assert extract_links(HTML) == ["https://example.com/a?x=1&y=2", "https://example.com/b",
                                   "HTTP://EXAMPLE.COM/C"]


def test_rewrites_each_link_to_its_index_and_leaves_the_rest():
    links = extract_links(HTML)
    out = rewrite_links(HTML, links, lambda i: f"https://t.example/c/{i}?k=a&b")
    assert out.count("https://t.example/c/0?k=a&amp;b") == 2
    assert "href='https://t.example/c/1?k=a&amp;b'" in out
    assert 'HREF="https://t.example/c/2?k=a&amp;b"' in out
    assert 'href="mailto:hi@example.com"' in out and 'href="#top"' in out
    assert 'href="https://example.com/private"' in out
    assert extract_links(out) == [f"https://t.example/c/{i}?k=a&b" for i in range(3)]


def test_unknown_link_is_not_guessed():
    assert rewrite_links('<a href="https://x.test/">x</a>', [], lambda i: "T") == \
        '<a href="https://x.test/">x</a>'


PERSONAL = ('<a href="https://shop.example/account?id={{ fields.customer_id }}&amp;x=1">me</a>'
            '<a href="https://shop.example/{{ fields.region }}/sale">sale</a>'
            '<a href="https://shop.example/{% if x %}a{% endif %}">c</a>'
            '<a href="https://shop.example/plain">plain</a>'
            '<a href="{{ fields.url }}">whole</a>')


def test_a_link_with_a_merge_field_is_a_personal_link_of_its_own_index():
    assert extract_links(PERSONAL) == [
        "https://shop.example/account?id={{ fields.customer_id }}&x=1",
        "https://shop.example/{{ fields.region }}/sale",
        "https://shop.example/{% if x %}a{% endif %}", "https://shop.example/plain"]
    assert [is_personal(url) for url in extract_links(PERSONAL)] == [True, True, True, False]


def test_personal_links_keep_their_template_text_behind_a_mark_and_are_tracked_once_rendered():
    links = extract_links(PERSONAL)
    marked = rewrite_links(PERSONAL, links, lambda i: f"T{i}", personal_mark=lambda i: f"M-{i}:")
    assert 'href="M-0:https://shop.example/account?id={{ fields.customer_id }}&amp;x=1"' in marked
    assert 'href="T3"' in marked and 'href="{{ fields.url }}"' in marked
    rendered = marked.replace("{{ fields.customer_id }}", "a b\r\n").replace(
        "{{ fields.region }}", "eu").replace("{% if x %}a{% endif %}", "")
    seen = []
    out = personal_links(rendered, "M-", lambda i, url: seen.append((i, url)) or f"C{i}?a&b")
    assert seen == [(0, "https://shop.example/account?id=a%20b&x=1"),
                    (1, "https://shop.example/eu/sale"), (2, "https://shop.example/")]
    assert out.count('href="C') == 3 and 'href="C0?a&amp;b"' in out and "M-" not in out


def test_a_personal_link_no_token_can_carry_keeps_its_rendered_url():
    rendered = ('<a href="M-0:https://shop.example/' + "x" * 3000 + '">a</a>'
                "<a href='M-1:javascript:alert(1)'>b</a>")
    out = personal_links(rendered, "M-", lambda i, url: "tracked")
    assert out == ('<a href="https://shop.example/' + "x" * 3000 + '">a</a>'
                   "<a href='javascript:alert(1)'>b</a>")
    assert personal_url("https://shop.example/Zürich?q=1 2") == \
        "https://shop.example/Z%C3%BCrich?q=1%202"


def test_without_a_mark_personal_links_take_the_static_url_for_their_index():
    """What campaigns checks at save: the template as the sender compiles it."""
    links = extract_links(PERSONAL)
    assert rewrite_links(PERSONAL, links, lambda i: f"T{i}").count('href="T') == 4


def test_a_personal_link_left_out_of_a_list_frozen_before_stays_as_written():
    out = rewrite_links(PERSONAL, ["https://shop.example/plain"], lambda i: f"T{i}",
                        personal_mark=lambda i: f"M-{i}:")
    assert "M-" not in out and 'href="T0"' in out

def test_a_personal_url_is_the_one_a_browser_would_request():
    """The WHATWG parser drops tabs and line breaks and reads "\\" as "/":
    percent-encoded instead, "shop.example\\@evil.example" named evil.example
    as the host, where the message's own link went to shop.example."""
    assert personal_url("https://shop.example\\@evil.example/login") == \
        "https://shop.example/@evil.example/login"
    assert personal_url(" \thttps://shop.example/a?x=1\n&y=2\r\n ") == "https://shop.example/a?x=1&y=2"
    assert personal_url("https://s.example/a\\b?q=C:\\dir#x\\y") == \
        "https://s.example/a/b?q=C:%5Cdir#x%5Cy"


def test_character_references_are_read_as_a_browser_reads_an_attribute():
    html = ('<a href="https://shop.example/p?id=1&notify=1&region=eu&amp;x=&#38;&#x26;">a</a>'
            '<a href="https://shop.example/{{ x }}?a=1&section=2&times;">b</a>')
    assert extract_links(html) == ["https://shop.example/p?id=1&notify=1&region=eu&x=&&",
                                   "https://shop.example/{{ x }}?a=1&section=2\u00d7"]


def test_data_no_track_anywhere_in_the_tag_and_only_href_is_the_link():
    html = ('<a href="https://shop.example/{{ x }}" data-no-track>a</a>'
            '<a class="b" href="https://shop.example/s" data-no-track="">b</a>'
            '<a data-href="https://shop.example/d" title="t">d</a>'
            '<a data-href="https://shop.example/d" href="https://shop.example/e">e</a>')
    assert extract_links(html) == ["https://shop.example/e"]
    out = rewrite_links(html, ["https://shop.example/e"], lambda i: "T")
    assert out == html.replace('href="https://shop.example/e"', 'href="T"')


def test_at_most_so_many_personal_links_a_message_are_tracked():
    rendered = "".join(f'<a href="M-0:https://shop.example/{i}">{i}</a>' for i in range(500))
    out = personal_links(rendered, "M-", lambda i, url: "T")
    assert out.count('href="T"') == MAX_PERSONAL_LINKS
    assert 'href="https://shop.example/499"' in out and "M-" not in out


def test_a_link_whose_host_comes_from_merge_data_is_not_click_tracked():
    """With a region of "evil.example/?", the click link (signed, on the
    client's tracking domain, valid for good) went to evil.example."""
    html = ('<a href="https://{{ fields.region }}.shop.example/deals">a</a>'
            '<a href="https://shop.example{{ fields.path }}">b</a>'
            '<a href="https://user@{{ fields.host }}/x">c</a>'
            '<a href="https://shop.example/{{ fields.region }}?q={{ x }}#{{ y }}">d</a>')
    assert extract_links(html) == ["https://shop.example/{{ fields.region }}?q={{ x }}#{{ y }}"]
    assert not literal_origin("https://{{ fields.region }}.shop.example/deals")
    # a browser skips the extra slashes and backslashes: x is the host there
    for url in ("https:///{{ x }}/a", "https://\\{{ x }}/a", "https:\\\\{{ x }}",
                "https:/{{ x }}", "https:{{ x }}", "https:// \t{{ x }}"):
        assert not literal_origin(url), url
    assert literal_origin("https://shop.example\\{{ x }}")   # a browser's path: "\\" is "/"
    assert literal_origin("https://shop.example/{{ x }}") and literal_origin("https://shop.example")
    out = rewrite_links(html, extract_links(html), lambda i: f"T{i}")
    assert 'href="https://{{ fields.region }}.shop.example/deals"' in out and 'href="T0"' in out
