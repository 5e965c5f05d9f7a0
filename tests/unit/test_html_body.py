"""Where a footer goes in an HTML message."""
import pytest

from shared.html_body import insert_before_body_close, without_comments


@pytest.mark.parametrize("html, expected", [
    ("<body><p>x</p></body></html>", "<body><p>x</p>[F]</body></html>"),
    ("<BODY>x</Body >", "<BODY>x[F]</Body >"),
    # a </body> in a comment after the real one: before the real one
    ("<body>x</body></html><!-- </body> -->", "<body>x[F]</body></html><!-- </body> -->"),
    # only in comments, or in one never closed: at the end
    ("<p>x</p><!-- </body> -->", "<p>x</p><!-- </body> -->[F]"),
    ("<body>x<!-- </body>", "<body>x<!-- </body>[F]"),
    ("<p>no body</p>", "<p>no body</p>[F]"),
])
def test_the_snippet_goes_before_the_last_body_close_a_reader_sees(html, expected):
    assert insert_before_body_close(html, "[F]") == expected


def test_comments_are_not_what_a_reader_sees():
    assert without_comments("a<!-- b -->c<!-- d") == "ac"
    assert without_comments("plain") == "plain"
