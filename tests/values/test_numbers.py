"""values.numbers: one rule for a whole number written as text."""

from __future__ import annotations

import pytest

from devtunnel.tui.screens.drill import check
from devtunnel.values.numbers import is_decimal


@pytest.mark.parametrize("text", ["0", "7", "0042", "65535", "1" * 40])
def test_ascii_digits_are_decimal(text: str) -> None:
    assert is_decimal(text) and int(text) >= 0


@pytest.mark.parametrize("text", ["", " 1", "1 ", "+1", "-1", "1_000", "1.0", "0x10", "\u00b2", "1\u00b2",
                                  "\u0668\u0660", "\uff11"])
def test_anything_else_is_not(text: str) -> None:
    # "\u00b2" (superscript two) and "\u0668\u0660" (Arabic-Indic 80) pass str.isdigit(); int()
    # refuses the first and reads the second, and neither is a number a user typed in ASCII.
    assert not is_decimal(text)


def test_the_drill_form_says_what_is_wrong_with_a_superscript_count() -> None:
    assert check("\u00b2", "503") == "count must be a whole number from 1 to 10000"
    assert check("3", "5\u00b2") == "status must be an HTTP status from 200 to 599"
