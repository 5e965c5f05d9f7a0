from shared.links import extract_links, rewrite_links

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


def test_a_link_with_a_merge_field_is_not_tracked():
    html = ('<a href="https://shop.example/account?id={{ fields.customer_id }}">me</a>'
            '<a href="https://{{ fields.region }}.shop.example/sale">sale</a>'
            '<a href="https://shop.example/{% if x %}a{% endif %}">c</a>'
            '<a href="https://shop.example/plain">plain</a>')
    assert extract_links(html) == ["https://shop.example/plain"]
    out = rewrite_links(html, ["https://shop.example/account?id={{ fields.customer_id }}",
                               "https://shop.example/plain"], lambda i: f"T{i}")
    assert "{{ fields.customer_id }}" in out and 'href="T1"' in out  # a list frozen before
