"""A captured target of a megabyte in the PATH column: escaped and measured only as far as any
terminal could show it (the column's width is measured over every row loaded, on the UI's loop)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtunnel.capture.store import Store
from devtunnel.tui.widgets.table_rows import PATH_SHOWN, path_text
from tests.kit.exchanges import make_exchange, make_response

TARGETS = {
    "ascii": b"/" + b"a" * (1 << 20),
    "escapes": b"/" + b"\x1b[2J\x1b]0;x\x07" * (1 << 16),
    "not-utf8": b"/" + b"\xff" * (1 << 20),
    "cjk": b"/" + ("\u6f22" * (1 << 18)).encode(),
}


@pytest.mark.parametrize("name", list(TARGETS))
def test_a_megabyte_target_is_escaped_only_as_far_as_a_screen_shows_and_nothing_raw_reaches_it(
        tmp_path: Path, name: str) -> None:
    store = Store(tmp_path / "c.db")
    store.put_many([make_exchange("GET", TARGETS[name], [("Host", "h")], b"", make_response(200), tunnel="t")])
    [row] = store.rows(None, limit=1)
    shown = path_text(row)
    # Before, the whole target was escaped for each paint and for the column's width (1-4 M
    # characters; 720 ms for a megabyte of bytes that are not UTF-8).
    assert PATH_SHOWN <= len(shown) <= 4 * PATH_SHOWN + 2, len(shown)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in shown)
    full = row.display_target
    assert row.display_target_head(PATH_SHOWN) == full[:PATH_SHOWN]
    store.close()
