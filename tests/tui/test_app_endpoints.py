"""An endpoint started and stopped through ngrok's v3 resource shows in the inspector's tunnels panel."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from devtunnel.tui.widgets import TunnelsPanel
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import inspector_with_agent

pytestmark = pytest.mark.timeout(90)


async def test_an_endpoint_started_through_the_api_appears_in_the_panel_and_leaves_when_deleted(
        tmp_path: Path, service: int) -> None:
    db = tmp_path / "captures.db"
    app = inspector_with_agent(db, tmp_path)
    async with app.run_test(size=(110, 30)) as pilot:
        supervisor = app.supervisor
        assert supervisor is not None
        panel = app.query_one(TunnelsPanel)
        await async_wait_for(lambda: supervisor.status.state == "running" and supervisor.status.api_url,
                             timeout=30, what="the agent")
        api = supervisor.status.api_url
        async with httpx.AsyncClient(base_url=str(api), trust_env=False) as client:
            resp = await client.post("/api/endpoints", json={"name": "hooks",
                                                             "upstream": {"url": f"http://localhost:{service}"}})
            assert resp.status_code == 201, resp.text
            await async_wait_for(lambda: panel.tunnels.get("hooks") and panel.tunnels["hooks"].state == "online",
                                 timeout=20, what="the endpoint in the panel")
            assert resp.json()["url"] in str(panel.render())
            assert (await client.delete("/api/endpoints/hooks")).status_code == 204
            await async_wait_for(lambda: "hooks" not in panel.tunnels, timeout=20, what="the endpoint gone")
        await pilot.press("q")
        await async_wait_for(lambda: not app.is_running, what="the app to quit")
