"""The filter bar's caret points at the error within what the input shows, in cells.

It was drawn as a run of spaces as long as the error's offset in characters: under a long filter
the run wrapped over several lines of the bar (and under wide characters it pointed too early).
"""

from __future__ import annotations

from pathlib import Path

from devtunnel.tui.widgets import FilterBar
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import fill, inspector, traffic

MESSAGE = "status expects a number or a class like 4xx"


async def _error_lines(tmp_path: Path, keys: list[str], value: str | None = None) -> tuple[list[str], int]:
    """The lines under the input, and how far the input is scrolled."""
    app = inspector(fill(tmp_path / "captures.db", traffic(3)), tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("slash", *keys)
        bar = app.query_one(FilterBar)
        if value is not None:
            bar.input.value = value  # as pasted
        await async_wait_for(lambda: bar.error is not None, what="the error")
        await pilot.pause()
        return str(app.query_one("#filter-error").render()).splitlines(), round(bar.input.scroll_x)


async def test_an_error_far_past_what_the_input_shows_says_its_column_without_a_run_of_spaces(tmp_path: Path) -> None:
    text = "method:POST " * 20 + "status:>=abc"
    lines, _ = await _error_lines(tmp_path, [], text)
    assert lines == [f"{MESSAGE} (column {len(text) - 4})"]  # at ">=abc"


async def test_typed_to_the_end_the_caret_is_under_the_error_in_the_scrolled_input(tmp_path: Path) -> None:
    text = "method:POST " * 10 + "status:>=abc"
    lines, scrolled = await _error_lines(tmp_path, list(text))
    assert scrolled > 0
    [line] = lines
    assert line.endswith(f"{MESSAGE} (column {len(text) - 4}) ^") and len(line) < 80, line  # fits before it
    assert line.index("^") == len(text) - 5 - scrolled


async def test_the_caret_counts_cells_under_wide_characters(tmp_path: Path) -> None:
    lines, _ = await _error_lines(tmp_path, [], "path:日本 status:>=abc")
    assert lines == [" " * 17 + f"^ {MESSAGE} (column 16)"]  # 15 characters, 17 cells
