"""The tunnels panel's ``N req`` against a real agent: each request through the tunnel counted once,
overlapping ones too, as the agent API's ``metrics.http.count`` counts them; replays, which do not
come through the tunnel, are rows of the table but not requests of the tunnel."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from devtunnel.tui.widgets import RequestTable, TunnelsPanel
from tests.helpers import async_wait_for
from tests.kit.servers import Received, Reply, http_server
from tests.test_cli_captures import DEVTUNNEL
from tests.tui.app_fixtures import agent_serving, inspector_with_agent

pytestmark = pytest.mark.timeout(90)


class SlowService:
    """A local service whose ``/slow`` answers only once ``release`` is set."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()

    def __call__(self, request: Received) -> Reply:
        if request.path == "/slow":
            self.arrived.set()
            self.release.wait(30)
        return Reply(200, body=b"ok\n")


@pytest.fixture
def slow() -> Iterator[tuple[SlowService, int]]:
    answer = SlowService()
    with http_server(answer) as server:
        try:
            yield answer, server.port
        finally:
            answer.release.set()


def _panel_count(panel: TunnelsPanel, name: str) -> int | None:
    """The ``N req`` of tunnel ``name``'s line as the panel draws it."""
    for line in str(panel.render()).splitlines():
        if f"{name}.localhost" in line:
            match = re.search(r"  (\d+) req", line)
            return int(match.group(1)) if match else None
    return None


async def _api_count(api_url: str, name: str) -> int:
    """``metrics.http.count`` of tunnel ``name`` in ``GET /api/tunnels``."""
    async with httpx.AsyncClient() as client:
        tunnels = (await client.get(f"{api_url}/api/tunnels")).json()["tunnels"]
    return int(next(t for t in tunnels if t["name"] == name)["metrics"]["http"]["count"])


async def test_overlapping_requests_and_replays_are_counted_as_the_agent_api_counts_them(
        tmp_path: Path, slow: tuple[SlowService, int]) -> None:
    """A quick request that began while a slow one ran ended first, and the slow one, announced
    after it, was not counted: the panel said 1 req where the API said 2. Replays (``r``, and
    ``devtunnel replay`` from the CLI) are not requests the tunnel carried."""
    service, port = slow
    db = tmp_path / "captures.db"
    app = inspector_with_agent(db, tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        panel, table = app.query_one(TunnelsPanel), app.query_one(RequestTable)
        await agent_serving(app)
        await app.backend.start_tunnel(str(port), "shop", "", "")
        await async_wait_for(lambda: panel.tunnels.get("shop") and panel.tunnels["shop"].state == "online",
                             timeout=20, what="the tunnel online")
        public = urlsplit(panel.tunnels["shop"].public_url)
        api_url = app.backend.api_url
        assert api_url is not None

        def rows(path: str) -> list[object]:
            return [row for i in table.ids if (row := table.cached_row(i)) is not None and row.target == path]

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{public.port}", headers={"host": public.netloc},
                                     timeout=30) as client:
            slow_request = asyncio.create_task(client.get("/slow"))
            await asyncio.to_thread(service.arrived.wait, 10)
            assert (await client.get("/c")).status_code == 200
            await async_wait_for(lambda: rows("/c"), what="the quick request on the table")
            # The slow one is announced now (the agent's live snapshot), after the quick one.
            await async_wait_for(lambda: rows("/slow"), what="the slow request on the table, in flight")
            service.release.set()
            assert (await slow_request).status_code == 200
            assert (await client.get("/after")).status_code == 200
        await async_wait_for(lambda: rows("/after"), what="the last request on the table")
        assert await _api_count(api_url, "shop") == 3
        await async_wait_for(lambda: _panel_count(panel, "shop") == 3, what="the panel's count of 3")

        # r: a replay through the agent; then one from the CLI, which records it itself.
        table.focus()
        await pilot.press("end", "r")
        await async_wait_for(lambda: len(table.ids) == 4, what="the replay on the table")
        original = next(i for i in table.ids if (row := table.cached_row(i)) is not None and row.target == "/c")
        cli = await asyncio.create_subprocess_exec(DEVTUNNEL, "replay", original, "--db", str(db),
                                                   stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                                                   env={**os.environ, "COLUMNS": "100"})
        _, err = await cli.communicate()
        assert cli.returncode == 0, err
        await async_wait_for(lambda: len(table.ids) == 5, what="the CLI's replay on the table")
        await async_wait_for(lambda: all(table.cached_row(i) is not None for i in table.ids), what="the rows read")
        assert sum(1 for i in table.ids if table.cached_row(i).replay_of) == 2  # type: ignore[union-attr]
        assert await _api_count(api_url, "shop") == 3
        assert _panel_count(panel, "shop") == 3
        await pilot.press("q")
