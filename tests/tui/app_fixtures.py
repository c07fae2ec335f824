"""Frozen stores and helpers for testing the inspector app (fixed ids, times and a fixed zone)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from devtunnel.capture.model import Exchange
from devtunnel.capture.store import Store
from devtunnel.tui.app import InspectorApp
from devtunnel.tui.backend import Backend
from devtunnel.tui.supervisor import agent_command
from tests.helpers import async_wait_for
from devtunnel.tui.widgets.request_table import RequestTable
from tests.kit import exchanges as kit

T0 = 1_764_160_200.0
"""2025-11-26 12:30:00 UTC."""

HOSTILE_PATH = "/a?x=[/y]&[bold]b[/bold]\x1b[31mred\x1b]52;c;SGVsbG8=\x07\x9b2J\u202eevil"
"""Rich markup, an SGR sequence, an OSC 52 clipboard write, a C1 CSI and a bidi override."""


def fixed_id(n: int) -> str:
    """A 26-character id that sorts by ``n`` (stable across runs, unlike ``new_id``)."""
    return f"01KB0{n:021d}"


def make_exchange(n: int, *, method: str = "GET", target: str | bytes = "/", status: int | None = 200,
                  tunnel: str = "shop", duration: float | None = 0.042, size: int = 512,
                  target_url: str = "http://127.0.0.1:9", error: str | None = None,
                  replay_of: str | None = None, body: bytes = b"") -> Exchange:
    """Exchange number ``n``, started ``n`` seconds after ``T0``."""
    response = None
    if status is not None:
        response = kit.make_response(status, [("content-type", "application/json")], b"{}", body_size=size)
    return kit.make_exchange(
        method, target, [("host", f"{tunnel}.localhost")], body, response,
        id=fixed_id(n), tunnel=tunnel, started_at=T0 + n, target_url=target_url, duration=duration, ttfb=duration,
        error=error, error_message="connection refused" if error else "", replay_of=replay_of,
    )


def traffic(count: int = 12) -> list[Exchange]:
    """A varied little session: methods, paths, every status class and an error."""
    shapes = [
        ("GET", "/", 200), ("POST", "/webhooks/stripe", 201), ("GET", "/api/orders?page=2", 200),
        ("GET", "/old-home", 301), ("GET", "/missing", 404), ("POST", "/api/orders", 422),
        ("GET", "/api/slow", 504), ("PUT", "/api/orders/17", 500), ("DELETE", "/api/orders/17", 204),
        ("GET", "/static/app.js", 304), ("POST", "/webhooks/github", 200), ("GET", "/health", None),
    ]
    out = []
    for n in range(count):
        method, target, status = shapes[n % len(shapes)]
        error = "local_refused" if status is None else None
        out.append(make_exchange(n, method=method, target=target, status=status, error=error,
                                 duration=0.003 * (n + 1) * (n + 1), size=137 * n,
                                 tunnel="shop" if n % 3 else "hooks"))
    return out


def fill(path: Path, exchanges: Iterable[Exchange]) -> Path:
    """Write ``exchanges`` into a new store at ``path``."""
    store = Store(path)
    try:
        store.put_many(exchanges)
    finally:
        store.close()
    return path


def inspector(db: Path, tmp_path: Path, **kwargs: object) -> InspectorApp:
    """The inspector on ``db`` with its history file under ``tmp_path``."""
    return InspectorApp(Backend(db), history_path=tmp_path / "filter_history", **kwargs)  # type: ignore[arg-type]


def inspector_with_agent(db: Path, tmp_path: Path, **kwargs: object) -> InspectorApp:
    """The inspector on ``db`` running its own agent (API on a free port, log in ``tmp_path``)."""
    return inspector(db, tmp_path, agent_argv=agent_command("agent", "--api-port", "0", "--db", str(db)),
                     agent_log=tmp_path / "agent.log", **kwargs)


async def agent_serving(app: InspectorApp, what: str = "the agent") -> None:
    """Wait until the inspector's agent runs and the app has heard so: the supervisor's status
    changes first, and the backend gets the API's URL only when the app handles the message
    about it (a test that calls ``app.backend`` in between finds no API to talk to)."""
    supervisor = app.supervisor
    assert supervisor is not None
    await async_wait_for(lambda: supervisor.status.state == "running"
                         and app.backend.api_url == supervisor.status.api_url, timeout=30, what=what)


def line_text(table: RequestTable, y: int) -> str:
    """The plain text of screen line ``y`` of the table (0 is the header)."""
    return "".join(segment.text for segment in table.render_line(y))


def screen_lines(table: RequestTable) -> list[str]:
    """Every visible line of the table as plain text."""
    return [line_text(table, y) for y in range(table.scrollable_content_region.height)]


def cursor_in_view(table: RequestTable) -> bool:
    """Whether the table has scrolled its cursor's row into view.

    The table scrolls to its cursor after a refresh (``call_after_refresh``), a while after its
    rows are read: a snapshot taken in between, or a screen pushed over it meanwhile (which
    holds the table as it was), shows the table at its top with the cursor's row out of sight.
    A wait on this that times out means the table never scrolled there: the following table
    left its newest row out of sight.
    """
    top = round(table.scroll_y)
    return table.cursor >= 0 and top <= table.cursor < top + table._page


def utc() -> Iterator[None]:
    """Show times in UTC while a test runs (for a fixture)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()
