"""The inspector's own widgets: the request table, filter bar, tunnels panel and stats strip."""

from devtunnel.tui.widgets.filter_bar import FilterBar
from devtunnel.tui.widgets.request_table import RequestTable
from devtunnel.tui.widgets.stats import StatsStrip
from devtunnel.tui.widgets.tunnels import TunnelsPanel

__all__ = ["FilterBar", "RequestTable", "StatsStrip", "TunnelsPanel"]
