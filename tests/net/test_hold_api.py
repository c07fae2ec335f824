"""The agent API tells a held request (``--hold``) as ``devtunnel requests --json`` does: ``held_ms``
and ``holding``, from one function (``capture.model.held_json``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtunnel.api.app import serve_api
from tests.helpers import async_wait_for
from tests.net.tunnel_fixtures import Harness, LocalState, relay_and_agent
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)
from tests.test_cli_captures import DEVTUNNEL

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with relay_and_agent(tmp_path) as h:
        yield h


def _cli_rows(db: Path) -> dict[str, dict[str, Any]]:
    proc = subprocess.run([DEVTUNNEL, "requests", "--json", "--db", str(db)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)
    return {row["id"]: row for row in json.loads(proc.stdout)}


def _held(fields: dict[str, Any]) -> tuple[Any, Any]:
    return fields["held_ms"], fields["holding"]


async def test_the_api_says_a_request_is_held_and_how_long_as_the_cli_does(
    harness: Harness, local: tuple[int, LocalState], tmp_path: Path
) -> None:
    await harness.start(str(local[0]), name="crashed", hold=20.0)
    gate = harness.service._tunnels["crashed"].forwarder.gate
    assert gate is not None
    gate.set_app_state(False, "crashed (1)")
    server, port = await serve_api(harness.service, port=0)
    db = tmp_path / "captures.db"
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False) as api, \
                httpx.AsyncClient(base_url=harness.base_url, headers={"Host": harness.host("crashed")}, timeout=30,
                                  trust_env=False) as client:
            task = asyncio.create_task(client.get("/echo?held"))
            await async_wait_for(lambda: gate.waiting == 1, what="the request held")

            async def listed(count: int, holding: bool) -> list[dict[str, Any]] | None:
                await asyncio.to_thread(harness.recorder.flush)
                found = (await api.get("/api/requests/http")).json()["requests"]
                if len(found) != count or found[-1]["holding"] is not holding:
                    return None
                return found if holding or all(f["response"] is not None for f in found) else None

            # Its live record comes after a moment (LIVE_AFTER): it is then held, for a time so far.
            [held_now] = await async_wait_for(lambda: listed(1, True), what="the held request listed as holding")
            assert held_now["response"] is None and held_now["held_ms"] > 0
            one = (await api.get(f"/api/requests/http/{held_now['id']}")).json()
            assert one["holding"] is True and one["held_ms"] >= held_now["held_ms"]
            cli = await asyncio.to_thread(_cli_rows, db)
            assert cli[held_now["id"]]["holding"] is True and cli[held_now["id"]]["held_ms"] > 0

            gate.set_app_state(True, "ready")
            assert (await task).status_code == 200
            assert (await client.get("/echo?at-once")).status_code == 200  # never waited
            at_once, sent = await async_wait_for(lambda: listed(2, False), what="both requests answered")
            assert sent["id"] == held_now["id"] and sent["response"]["status_code"] == 200
            assert sent["held_ms"] >= held_now["held_ms"]
            one = (await api.get(f"/api/requests/http/{sent['id']}")).json()
            cli = await asyncio.to_thread(_cli_rows, db)
            # One contract: the API's detail, its list and the CLI's JSON say the same.
            assert _held(one) == _held(sent) == _held(cli[sent["id"]])
            assert _held(at_once) == _held(cli[at_once["id"]]) == (None, False)
    finally:
        await server.stop()
