"""values/terminal.py: the one set of rules that makes captured text safe for a terminal."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtunnel.values.terminal import as_text, escape, escape_bytes, is_plain, needs_escape, quoted

HIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def hidden(ch: str) -> bool:
    return unicodedata.category(ch) in HIDDEN


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/webhooks/stripe?id=42&x=[/y]", "/webhooks/stripe?id=42&x=[/y]"),
        ("/a\\b", "/a\\\\b"),
        ("/\x1b[31mred\x1b]0;pwned\x07", "/\\x1b[31mred\\x1b]0;pwned\\x07"),
        ("del\x7f c1\x9b nul\x00", "del\\x7f c1\\x9b nul\\x00"),
        ("tab\there\r\n lone\rcr", "tab\\there\\r\\n lone\\rcr"),
        ("caf\u00e9 日本 🎉", "caf\u00e9 日本 🎉"),
        ("/\u202egnp.exe\u2066x\u2069", "/\\u202egnp.exe\\u2066x\\u2069"),
        ("zero\u200bwidth\u200c\u200d\u2060\ufeff", "zero\\u200bwidth\\u200c\\u200d\\u2060\\ufeff"),
        ("soft\u00adhyphen", "soft\\xadhyphen"),
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        ("tag\U000e0041 private\ue000", "tag\\U000e0041 private\\ue000"),
        ("filler\u3164\u115f", "filler\\u3164\\u115f"),
        ("nbsp\u00a0ideo\u3000", "nbsp\u00a0ideo\u3000"),
        ("", ""),
    ],
)
def test_escape_shows_every_character_a_terminal_would_act_on_or_hide(text: str, shown: str) -> None:
    assert escape(text) == shown


def test_escape_can_keep_newlines_and_tabs_for_bodies() -> None:
    assert escape("a\n\tb\x1b\r", keep="\n\t") == "a\n\tb\\x1b\\r"
    assert escape("a\n\tb", keep="\t") == "a\\n\tb"


def test_escape_refuses_to_keep_anything_but_tab_and_newline() -> None:
    with pytest.raises(ValueError, match="only tab and newline"):
        escape("x", keep="\x1b")


def test_bodies_keep_their_backslashes() -> None:
    assert escape('{"a": "x\\"y\x1b"}', double_backslash=False) == '{"a": "x\\"y\\x1b"}'


def test_escape_bytes_shows_bytes_that_are_not_utf8_as_hex() -> None:
    assert escape_bytes(b"\xff\xfe ok \xc3\xa9 \xed\xa0\x80 \x1b") == "\\xff\\xfe ok \u00e9 \\xed\\xa0\\x80 \\x1b"


def test_as_text_is_plain_text_never_markup() -> None:
    text = as_text("[bold red]x[/] \x1b[1m", style="bold")
    assert text.plain == "[bold red]x[/] \\x1b[1m"
    assert text.spans == [] and str(text.style) == "bold"


_ESCAPE = re.compile(r"\\(\\|t|n|r|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def _unescape(shown: str) -> str:
    """The inverse of ``escape`` (bytes shown as ``\\xNN`` come back as their surrogates)."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in ("\\", "t", "n", "r"):
            return {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}[code]
        value = int(code[1:], 16)
        return chr(value)

    return _ESCAPE.sub(one, shown)


@given(st.text())
def test_escaped_text_never_holds_a_control_or_format_character(text: str) -> None:
    shown = escape(text)
    assert not any(hidden(ch) or needs_escape(ch) for ch in shown)
    assert all(ch.isprintable() or unicodedata.category(ch) == "Zs" for ch in shown)


@given(st.text(), st.sampled_from(["", "\t", "\n\t"]))
def test_kept_characters_are_the_only_controls_left(text: str, keep: str) -> None:
    assert {ch for ch in escape(text, keep=keep) if hidden(ch)} <= set(keep)


@given(st.binary())
def test_escaped_bytes_never_hold_a_control_or_format_character(data: bytes) -> None:
    assert not any(hidden(ch) or needs_escape(ch) for ch in escape_bytes(data))


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_escape_is_unambiguous(text: str) -> None:
    assert _unescape(escape(text)) == text


@given(st.text())
def test_a_plain_text_is_left_as_it_is_by_escape(text: str) -> None:
    if is_plain(text):
        assert escape(text) == text
    if escape(text) != text:
        assert not is_plain(text)


@pytest.mark.parametrize(("text", "plain"), [("/api/items?q=1", True), ("caf\u00e9 \u4e2d", True), ("a\\b", False),
                                             ("\x1b[2J", False), ("\u202e", False), ("\u3164", False), ("\xa0", False)])
def test_is_plain_on_named_texts(text: str, plain: bool) -> None:
    assert is_plain(text) == plain


@given(st.text(), st.text())
def test_is_plain_of_joined_texts_answers_for_each(a: str, b: str) -> None:
    assert is_plain(a + b) == (is_plain(a) and is_plain(b))


def _plain_by_the_regex(text: str) -> bool:
    """``is_plain`` as it reads without its ASCII shortcut."""
    return text.isprintable() and re.search("[\\\\\u115f\u1160\u3164\uffa0]", text) is None


@given(st.one_of(st.text(), st.text(st.characters(max_codepoint=127))))
def test_is_plain_takes_its_ascii_shortcut_to_the_same_answer(text: str) -> None:
    assert is_plain(text) == _plain_by_the_regex(text)


@pytest.mark.parametrize("text", ["/a\\b", "\\", "/x\x7f", "/x\x00", "/x y", "/ok", "", "/\u3164", "/caf\u00e9\\"])
def test_is_plain_on_ascii_and_not_agrees_with_the_regex(text: str) -> None:
    assert is_plain(text) == _plain_by_the_regex(text)


def test_quoted_names_a_value_for_a_message_that_is_escaped_once_later() -> None:
    assert quoted("a\x1bb") == "'a\x1bb'"  # not escaped here: the output escapes the message
    assert escape(f"no tunnel named {quoted(chr(27) + 'x')}") == "no tunnel named '\\x1bx'"
    assert quoted("it's") == '"it\'s"' and quoted("'\"") == "''\"'"
    assert quoted(3) == "3" and quoted(None) == "None"


def test_quoted_reads_captured_bytes_as_text_not_as_their_repr() -> None:
    # A header name quoted as b'X' read as Python, and its escapes were escaped again by the output.
    assert quoted(b"X Bad\x1b") == "'X Bad\x1b'"
    name = quoted(b"Caf\xc3\xa9 \xff")  # UTF-8 where it is; a byte that is not, U+FFFD (the text always encodes)
    assert escape(f"header name {name}") == "header name 'Caf\u00e9 \ufffd'"


@given(st.text(st.characters(max_codepoint=0x7F)) | st.text(), st.integers(min_value=0, max_value=40),
       st.sampled_from(["…", "...", ""]))
def test_width_and_truncation_of_ascii_take_the_short_way_to_the_same_answer(text: str, width: int, ellipsis: str) -> None:
    """ASCII is measured by its length (a table of a million rows spent most of its time looking
    up each character's width): the answers are those of the character-by-character way."""
    from devtunnel.values import terminal

    slow_width = sum(terminal._char_width(ch) for ch in text)
    assert terminal.display_width(text) == slow_width
    cut = terminal.truncate(text, width, ellipsis)
    if slow_width <= width:
        assert cut == text
    else:
        room = width - sum(terminal._char_width(ch) for ch in ellipsis)
        kept, used = [], 0
        for ch in text:
            if used + terminal._char_width(ch) > room:
                break
            kept.append(ch)
            used += terminal._char_width(ch)
        assert cut == ("".join(kept) + ellipsis if room >= 0 else ellipsis[:width])
