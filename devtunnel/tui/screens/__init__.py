"""The inspector's screens, each self-contained (its own CSS and keys), pushed by the app.

Screens are imported on first use (``from devtunnel.tui.screens import DiffScreen`` works), so
importing one screen module does not load the others or what they depend on.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtunnel.tui.screens.detail import DetailScreen
    from devtunnel.tui.screens.diff import DiffScreen
    from devtunnel.tui.screens.edit import EditReplayScreen
    from devtunnel.tui.screens.export import ExportScreen

__all__ = ["DetailScreen", "DiffScreen", "EditReplayScreen", "ExportScreen"]

_MODULES = {"DetailScreen": "detail", "DiffScreen": "diff", "EditReplayScreen": "edit", "ExportScreen": "export"}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
