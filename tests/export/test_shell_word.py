"""``shell_word``: the one quoting of a shell argument in exported commands, checked by bash itself."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtunnel.export.base import shell_word
from devtunnel.values.terminal import escape


def bash_reads(words: list[str], locale: str = "C") -> list[bytes]:
    """The arguments bash makes of ``words`` in ``locale``, each as bytes (printed NUL-separated)."""
    script = "printf '%s\\0' " + " ".join(words)
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True, timeout=10,
                         env={"LC_ALL": locale, "PATH": "/usr/bin:/bin"}).stdout
    return out.split(b"\0")[:-1]


SAMPLES = ["", "plain", "it's", "a\tb", "tab\tquote' backslash\\ dollar$x", "\r\n", "\x1b]0;title\x07",
           "\x7f\u009b", "bidi\u202eevil", "\u3164", "caf\xe9 \u2028 \U0001f600", "\\x41 \\t", "$(id) `id`",
           "bad\udcffbyte", "x\t\x0b\x0cy"]


@pytest.mark.parametrize("text", SAMPLES, ids=repr)
def test_bash_reads_back_the_exact_bytes_and_the_word_shows_as_it_is(text: str) -> None:
    word = shell_word(text)
    assert escape(word) == word.replace("\\", "\\\\"), word  # nothing a terminal acts on or hides
    for locale in ("C", "C.UTF-8"):  # \xNN escapes make the same bytes whatever the locale
        assert bash_reads([word], locale) == [text.encode("utf-8", "surrogateescape")], locale


def test_plain_text_keeps_posix_quotes_and_newlines_can_stay() -> None:
    assert shell_word("it's plain") == "'it'\"'\"'s plain'"
    assert shell_word("one\ntwo") == "$'one\\ntwo'"
    assert shell_word("one\ntwo", keep="\n") == "'one\ntwo'"
    assert shell_word("one\n\ttwo", keep="\n") == "$'one\n\\ttwo'"
    assert bash_reads([shell_word("one\n\ttwo 'x'", keep="\n")]) == [b"one\n\ttwo 'x'"]


def test_nul_cannot_be_an_argument() -> None:
    with pytest.raises(ValueError, match="NUL"):
        shell_word("a\x00b")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))), min_size=1, max_size=4))
def test_any_text_round_trips_through_bash(texts: list[str]) -> None:
    assert bash_reads([shell_word(t) for t in texts]) == [t.encode("utf-8") for t in texts]
