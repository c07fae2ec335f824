"""Shared test setup: snapshot location and small helpers for waiting on conditions."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import pytest_textual_snapshot
from syrupy.location import PyTestLocation

ROOT = Path(__file__).resolve().parent.parent


class _SnapshotsAtTop(pytest_textual_snapshot.SVGImageExtension):
    """Keep SVG baselines in the top-level ``snapshots/<test module>/`` folder."""

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        return str(ROOT / "snapshots" / Path(test_location.filepath).stem)


pytest_textual_snapshot.SVGImageExtension = _SnapshotsAtTop


@pytest.fixture
def snap_compare(snap_compare):  # type: ignore[no-untyped-def]
    """The plugin's ``snap_compare``, with every cursor steady before the shot.

    A blinking cursor is drawn or not depending on when the shot lands, which on a loaded
    machine is any moment: after ``run_before`` every ``Input`` and ``TextArea`` stops blinking.
    """
    from textual.widgets import Input, TextArea

    def compare(app, press=(), terminal_size=(80, 24), run_before=None):  # type: ignore[no-untyped-def]
        async def steady(pilot) -> None:  # type: ignore[no-untyped-def]
            if run_before is not None:
                result = run_before(pilot)
                if inspect.isawaitable(result):
                    await result
            for screen in pilot.app.screen_stack:
                for widget in [*screen.query(Input), *screen.query(TextArea)]:
                    widget.cursor_blink = False
            await pilot.pause()

        return snap_compare(app, press=press, terminal_size=terminal_size, run_before=steady)

    return compare
