import numpy as np
import pytest

from charnn.errors import CharnnError
from charnn.inspect.features import compute, parse_feature


def feature(text, name, user=(), context=""):
    return [int(v) for v in next(f for f in compute(text, user, context) if f.name == name).values]


def test_quotes_describe_the_state_after_each_character():
    assert feature('a "bc" d', "quotes") == [0, 0, 1, 1, 1, 0, 0, 0]


def test_a_blank_line_closes_an_open_quote():
    # the second paragraph re-opens the speech, as novels do, instead of inverting the parity
    t = 'x "ab\n\n"cd" e'
    assert feature(t, "quotes") == [0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0]


def test_context_before_a_split_counts():
    t = 'a "b c" d'
    assert feature(t[4:], "quotes", context=t[:4]) == feature(t, "quotes")[4:]
    assert feature(t[4:], "quotes") != feature(t, "quotes")[4:]


def test_bracket_depths_and_stray_closers():
    t = "f(a(b)) ) {x[1]}"
    assert feature(t, "paren_depth") == [0, 1, 1, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert feature(t, "parens") == [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert feature(t, "brace_depth")[10:] == [1, 1, 1, 1, 1, 0]
    assert feature(t, "brackets")[12:] == [1, 1, 0, 0]
    assert feature(t, "nesting_depth")[10:] == [1, 1, 2, 2, 1, 0]


def test_line_position_counts_from_each_newline():
    assert feature("ab\ncde\n\nf", "line_position") == [1, 2, 0, 1, 2, 3, 0, 0, 1]


def test_indentation_of_the_current_line():
    assert feature("a\n  b\n\tc", "indent") == [0, 0, 1, 2, 2, 0, 8, 8]


def test_comments_and_strings_in_code():
    t = 'x = "a#b"; // c\ny /* z */ # p\n'
    c_com = feature(t, "c_comment")
    py = feature(t, "py_comment")
    s = feature(t, "string")
    assert [t[k] for k in range(len(t)) if s[k]] == list('"a#b')  # '#' in a string is no comment
    assert "".join(t[k] for k in range(len(t)) if c_com[k]) == "// c/* z *"
    assert "".join(t[k] for k in range(len(t)) if py[k]) == "# p"


def test_escaped_quote_stays_inside_the_string():
    t = r'"a\"b" c'
    assert feature(t, "string") == [1, 1, 1, 1, 1, 0, 0, 0]


def test_wiki_links_and_user_regex_mark_the_characters_of_each_match():
    assert feature("a [[b]] c", "wikilink") == [0, 0, 1, 1, 1, 1, 1, 0, 0]
    assert feature("ab12c3", "digits", ["digits=[0-9]+"]) == [0, 0, 1, 1, 0, 1]


@pytest.mark.parametrize("spec,msg", [
    ("nodigits", "is not NAME=REGEX"),
    ("=abc", "is not NAME=REGEX"),
    ("x=(", "is invalid"),
    ("x=a*", "matches the empty string"),
    ("quotes=a", "that name is taken"),
])
def test_bad_user_features_are_refused_with_a_reason(spec, msg):
    with pytest.raises(CharnnError, match=msg):
        compute("abc", [spec])


def test_parse_feature_keeps_the_name():
    name, rx = parse_feature("vowel=[aeiou]")
    assert name == "vowel" and rx.pattern == "[aeiou]"


def test_features_are_one_value_per_character_even_for_wide_characters():
    t = 'é "ü" 日本 😀'
    for f in compute(t):
        assert f.values.shape == (len(t),) and f.values.dtype == np.float32
