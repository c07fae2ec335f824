"""Edit and replay in the inspector through a real agent: the form's headers are what the service gets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from textual.widgets import Input, Static, TextArea

from devtunnel.tui.screens.edit import EditReplayScreen, HeaderRow
from devtunnel.tui.widgets import RequestTable
from tests.helpers import async_wait_for
from tests.kit.servers import Received, Reply, http_server
from tests.tui.app_fixtures import agent_serving, inspector_with_agent, screen_lines

pytestmark = pytest.mark.timeout(90)


@dataclass
class Seen:
    requests: list[Received]


@pytest.fixture
def recording_service() -> Iterator[tuple[int, Seen]]:
    """A local service that keeps every request's method, path, header fields and body."""
    with http_server(lambda request: Reply(200, [("Content-Type", "application/json")], b'{"ok":true}')) as server:
        yield server.port, Seen(server.received)


def _headers(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in fields:
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_edited_headers_reach_the_service_through_the_agent_as_the_form_shows_them(
        tmp_path: Path, recording_service: tuple[int, Seen]) -> None:
    port, seen = recording_service
    db = tmp_path / "captures.db"
    app = inspector_with_agent(db, tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        supervisor = app.supervisor
        assert supervisor is not None
        table = app.query_one(RequestTable)
        await agent_serving(app)
        tunnel = await app.backend.start_tunnel(str(port), "shop")
        url = urlsplit(tunnel.public_url)
        async with httpx.AsyncClient() as client:
            response = await client.post(f"http://127.0.0.1:{url.port}/hooks?x=1", content=b'{"qty":1}', headers={
                "host": url.netloc, "content-type": "application/json",
                "X-Keep": "kept", "X-Change": "old", "X-Delete": "bye"})
        assert response.status_code == 200
        await async_wait_for(lambda: len(table.ids) == 1 and table.cached_row(table.ids[0]), what="the row")
        original_id = table.ids[0]
        table.focus()

        await pilot.press("e")
        await async_wait_for(lambda: isinstance(app.screen, EditReplayScreen), what="the edit screen")
        screen = app.screen
        assert isinstance(screen, EditReplayScreen)
        await pilot.pause()
        rows = {row.field[0].lower(): row for row in screen.query(HeaderRow)}
        assert "content-length" not in rows  # computed when sent, not edited
        rows["x-change"].query_one(".value", Input).value = "new"
        await pilot.click(rows["x-delete"].query_one(".delete"))
        await pilot.press("ctrl+n", *"X-Added", "tab", *"yes")
        screen.query_one("#method", Input).value = "purge"
        screen.query_one("#body", TextArea).text = '{"qty": 12345}'
        await pilot.pause()
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: screen.replayed is not None or "failed" in str(screen.query_one("#message", Static).render()),
                             timeout=20, what="the replay")
        message = str(screen.query_one("#message", Static).render())
        assert message.startswith("Replayed: 200 OK · same response · edited"), message  # only Date changed

        method, path, fields, body = seen.requests[-1]
        got = _headers(fields)
        assert (method, path, body) == ("purge", "/hooks?x=1", b'{"qty": 12345}')
        assert got["x-added"] == ["yes"] and got["x-change"] == ["new"] and got["x-keep"] == ["kept"]
        assert "x-delete" not in got
        assert got["content-length"] == [str(len(b'{"qty": 12345}'))]

        # The table marks it as an edited replay; its detail says so.
        await pilot.press("escape")
        await async_wait_for(lambda: len(table.ids) == 2 and table.cached_row(table.ids[1]), what="the replay row")
        await pilot.pause()
        replay_id = table.ids[1]
        assert table.cached_row(replay_id).edited  # type: ignore[union-attr]
        assert "↻✎ /hooks?x=1" in screen_lines(table)[2]
        table.focus()
        await pilot.press("end", "enter")
        await async_wait_for(lambda: type(app.screen).__name__ == "DetailScreen", what="the detail")
        await pilot.pause()
        assert f"Edited replay of {original_id}" in _screen_text(app)

        # A plain replay (r) of the original is not marked edited, and its notice says what came back.
        await pilot.press("escape")
        await pilot.pause()
        table.focus()
        await pilot.press("home", "r")
        await async_wait_for(lambda: len(table.ids) == 3 and table.cached_row(table.ids[2]), what="the plain replay")
        await async_wait_for(lambda: any(n.title == "Replayed" for n in app._notifications), what="the notice")
        notice = next(n for n in app._notifications if n.title == "Replayed")
        assert notice.message.startswith(f"{table.ids[2]}: 200 OK · same response"), notice.message
        assert not table.cached_row(table.ids[2]).edited  # type: ignore[union-attr]
        await pilot.pause()
        assert "↻ /hooks?x=1" in screen_lines(table)[3] and "↻✎" not in screen_lines(table)[3]
        await pilot.press("q")
        await async_wait_for(lambda: not app.is_running, what="the app to quit")


def _screen_text(app) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(str(widget.render()) for widget in app.screen.query(Static))


def test_the_json_edit_is_what_the_backend_posts() -> None:
    """The inspector's edit travels as JSON: a Headers list of byte pairs is made JSON-safe."""
    from devtunnel.capture.edit import Edit
    from devtunnel.capture.model import Headers

    edit = Edit(headers=Headers([(b"Host", b"h"), (b"X-Raw", b"\xff")]))
    assert json.loads(json.dumps(edit.to_json())) == {"headers": [["Host", "h"], ["X-Raw", {"base64": "/w=="}]]}
