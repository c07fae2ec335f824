"""Shared test setup: snapshot location and small helpers for waiting on conditions."""

from __future__ import annotations

from pathlib import Path

import pytest_textual_snapshot
from syrupy.location import PyTestLocation

ROOT = Path(__file__).resolve().parent.parent


class _SnapshotsAtTop(pytest_textual_snapshot.SVGImageExtension):
    """Keep SVG baselines in the top-level ``snapshots/<test module>/`` folder."""

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        return str(ROOT / "snapshots" / Path(test_location.filepath).stem)


pytest_textual_snapshot.SVGImageExtension = _SnapshotsAtTop
