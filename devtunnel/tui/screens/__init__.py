"""The inspector's screens, each self-contained (its own CSS and keys), pushed by the app."""

from devtunnel.tui.screens.detail import DetailScreen
from devtunnel.tui.screens.export import ExportScreen

__all__ = ["DetailScreen", "ExportScreen"]
