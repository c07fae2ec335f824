"""The capture commands (requests, show, export, replay, diff) and their terminal-safe output."""

from __future__ import annotations

import pytest

from devtunnel.commands.output import Column, display_width, hex_preview, human_duration, human_size, safe, table, truncate

# -- terminal-safe output ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/plain/path?q=1", "/plain/path?q=1"),
        ("/\x1b]0;pwned\x07", "/\\x1b]0;pwned\\x07"),
        ("/a\x1b[2J\x1b[H", "/a\\x1b[2J\\x1b[H"),
        ("/\u202eevil", "/\\u202eevil"),
        ("/\x9b31m", "/\\x9b31m"),
        ("line\r\nnext", "line\\r\\nnext"),
        ("back\\x1b", "back\\\\x1b"),
        ("[bold red]markup[/]", "[bold red]markup[/]"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("héllo 日本", "héllo 日本"),
    ],
)
def test_safe_escapes_every_control_and_invisible_character(text: str, shown: str) -> None:
    assert safe(text) == shown


def test_safe_can_keep_newlines_of_a_body_but_not_carriage_returns() -> None:
    assert safe("a\n\tb\rc", keep_newlines=True) == "a\n\tb\\rc"


def test_display_width_counts_wide_characters_twice() -> None:
    assert display_width("日本") == 4
    assert display_width("e\u0301") == 1


def test_truncate_cuts_to_width_with_an_ellipsis() -> None:
    assert truncate("abcdef", 4) == "abc…"
    assert truncate("abc", 4) == "abc"
    assert truncate("日本語", 5) == "日本…"
    assert display_width(truncate("日本語日本語", 6)) <= 6


def test_table_fits_the_width_by_truncating_the_flexible_column() -> None:
    cols = [Column("ID"), Column("DUR", align=">"), Column("PATH", flexible=True)]
    rows = [["01AB", "1.0 ms", "/" + "x" * 200], ["01AC", "12.0 ms", "/short"]]
    lines = table(cols, rows, width=40)
    assert all(display_width(line) <= 40 for line in lines)
    assert lines[0].split() == ["ID", "DUR", "PATH"]
    assert lines[1].endswith("…")
    assert lines[2].endswith("/short")
    # right-aligned column: the numbers end in the same column
    assert lines[1].index("1.0 ms") + 6 == lines[2].index("12.0 ms") + 7


def test_table_leaves_out_optional_columns_before_squeezing_the_path_below_its_minimum() -> None:
    cols = [Column("ID"), Column("TUNNEL", optional=1), Column("PATH", flexible=True, min_width=10)]
    rows = [["01ABCDEFGHJK", "a-long-tunnel-name", "/webhooks/stripe/events"]]
    wide = table(cols, rows, width=100)
    narrow = table(cols, rows, width=30)
    assert "TUNNEL" in wide[0]
    assert "TUNNEL" not in narrow[0]
    assert all(display_width(line) <= 30 for line in narrow)


def test_table_escapes_hostile_cells() -> None:
    lines = table([Column("PATH")], [["/\x1b[31mred"]], width=80)
    assert "\x1b" not in "".join(lines)


def test_human_units() -> None:
    assert human_size(999) == "999 B"
    assert human_size(1536) == "1.5 KB"
    assert human_duration(None) == "-"
    assert human_duration(0.0123) == "12.3 ms"
    assert human_duration(2.5) == "2.50 s"


def test_hex_preview_shows_offsets_hex_and_printable_ascii() -> None:
    lines = hex_preview(b"\x89PNG\r\n\x1a\n" + bytes(range(20)), limit=16)
    assert lines == ["00000000  89 50 4e 47 0d 0a 1a 0a 00 01 02 03 04 05 06 07  |.PNG............|"]
