"""Actions on requests without an agent: replay (sent from the inspector), diff, edit, export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.capture.store import Store
from devtunnel.tui.widgets import RequestTable
from tests.helpers import async_wait_for
from tests.kit.servers import Received, Reply, http_server
from tests.tui.app_fixtures import fill, fixed_id, inspector, make_exchange, screen_lines, traffic, utc


class _Echo:
    """Answers every request with its method and path, counting them."""

    seen: list[str] = []

    @classmethod
    def answer(cls, request: Received) -> Reply:
        cls.seen.append(f"{request.method} {request.path} {request.body.decode()}")
        payload = f'{{"method": "{request.method}", "path": "{request.path}", "n": {len(cls.seen)}}}'.encode()
        return Reply(200, [("content-type", "application/json")], payload)


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


@pytest.fixture
def service() -> Iterator[str]:
    _Echo.seen = []
    with http_server(_Echo.answer) as server:
        yield server.url


async def _ready(app) -> RequestTable:  # type: ignore[no-untyped-def]
    table = app.query_one(RequestTable)
    await async_wait_for(lambda: table.ids and table.cached_row(table.ids[-1]), what="rows")
    return table


async def test_replay_without_agent_sends_stores_and_links_the_new_request(tmp_path: Path, service: str) -> None:
    original = make_exchange(0, method="POST", target="/webhooks/stripe", target_url=service, body=b'{"a": 1}')
    db = fill(tmp_path / "captures.db", [original])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _ready(app)
        await pilot.press("r")
        await async_wait_for(lambda: len(table.ids) == 2, what="the replay on the table")
        await async_wait_for(lambda: table.cached_row(table.ids[-1]), what="its row")
        await pilot.pause()
        assert _Echo.seen == ['POST /webhooks/stripe {"a": 1}']
        assert table.current_id == table.ids[-1]  # following: the replay is selected
        assert "↻ /webhooks/stripe" in screen_lines(table)[2]
        assert "Replayed" in [n.title for n in app._notifications]
    replayed = Store(db, readonly=True).get(table.ids[-1])
    assert replayed.replay_of == original.id and replayed.status == 200


async def test_replay_of_an_unreachable_target_reports_the_failure(tmp_path: Path) -> None:
    from tests.helpers import free_port

    db = fill(tmp_path / "captures.db", [make_exchange(0, target_url=f"http://127.0.0.1:{free_port()}")])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _ready(app)
        await pilot.press("r")
        await async_wait_for(lambda: len(table.ids) == 2 or app._notifications, what="an outcome")
        await async_wait_for(lambda: len(table.ids) == 2, what="the failed replay recorded")
        await async_wait_for(lambda: table.cached_row(table.ids[-1]), what="its row")
        await pilot.pause()
        assert "ERR" in screen_lines(table)[2]


async def test_d_with_one_mark_diffs_it_against_the_cursor(tmp_path: Path) -> None:
    pytest.importorskip("devtunnel.capture.diff")
    db = fill(tmp_path / "captures.db", traffic(6))
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(app)
        await pilot.press("up", "up", "m", "down", "d")
        await async_wait_for(lambda: type(app.screen).__name__ == "DiffScreen", what="the diff screen")
        assert app.screen.a.id == fixed_id(3) and app.screen.b.id == fixed_id(4)  # type: ignore[attr-defined]


async def test_shift_d_diffs_a_replay_with_its_original(tmp_path: Path) -> None:
    pytest.importorskip("devtunnel.capture.diff")
    db = fill(tmp_path / "captures.db", [make_exchange(0), make_exchange(1, replay_of=fixed_id(0), status=500)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(app)
        await pilot.press("D")
        await async_wait_for(lambda: type(app.screen).__name__ == "DiffScreen", what="the diff screen")
        assert app.screen.a.id == fixed_id(0) and app.screen.b.id == fixed_id(1)  # type: ignore[attr-defined]


async def test_shift_d_after_r_on_an_older_row_diffs_that_replay(tmp_path: Path, service: str) -> None:
    """r's notice says "D diff with the original": D does, though the cursor stays on the original."""
    pytest.importorskip("devtunnel.capture.diff")
    db = fill(tmp_path / "captures.db", [make_exchange(0, target="/zero", target_url=service),
                                         make_exchange(1, target="/one", target_url=service)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _ready(app)
        await pilot.press("up")  # paused on /zero: the replay does not move the cursor
        await pilot.press("r")
        await async_wait_for(lambda: len(table.ids) == 3, what="the replay on the table")
        await async_wait_for(lambda: any(n.title == "Replayed" for n in app._notifications), what="the notice")
        assert "D diff with the original" in [n.message for n in app._notifications if n.title == "Replayed"][-1]
        assert table.current_id == fixed_id(0)
        await pilot.press("D")
        await async_wait_for(lambda: type(app.screen).__name__ == "DiffScreen", what="the diff screen")
        assert app.screen.a.id == fixed_id(0) and app.screen.b.id == table.ids[-1]  # type: ignore[attr-defined]


async def test_shift_d_after_r_in_the_detail_screen_diffs_that_replay(tmp_path: Path, service: str) -> None:
    pytest.importorskip("devtunnel.capture.diff")
    db = fill(tmp_path / "captures.db", [make_exchange(0, target="/zero", target_url=service)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await _ready(app)
        await pilot.press("enter")
        await async_wait_for(lambda: type(app.screen).__name__ == "DetailScreen", what="the detail")
        await pilot.press("r")
        await async_wait_for(lambda: len(table.ids) == 2, what="the replay on the table")
        await async_wait_for(lambda: any(n.title == "Replayed" for n in app._notifications), what="the notice")
        await pilot.press("D")
        await async_wait_for(lambda: type(app.screen).__name__ == "DiffScreen", what="the diff screen")
        assert app.screen.a.id == fixed_id(0) and app.screen.b.id == table.ids[-1]  # type: ignore[attr-defined]
        await pilot.press("escape")
        await async_wait_for(lambda: type(app.screen).__name__ == "DetailScreen", what="back on the detail")


async def test_shift_d_on_a_request_that_is_no_replay_explains(tmp_path: Path) -> None:
    db = fill(tmp_path / "captures.db", traffic(3))
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(app)
        await pilot.press("D")
        await async_wait_for(lambda: app._notifications, what="the hint")
        assert "not a replay" in list(app._notifications)[-1].message


async def test_e_opens_the_editor_and_x_the_export_of_the_marked_requests(tmp_path: Path) -> None:
    db = fill(tmp_path / "captures.db", traffic(4))
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(app)
        await pilot.press("e")
        await async_wait_for(lambda: type(app.screen).__name__ == "EditReplayScreen", what="the editor")
        await pilot.press("escape")
        await async_wait_for(lambda: type(app.screen).__name__ == "Screen", what="back on the table")
        await pilot.press("m", "up", "m", "x")
        await async_wait_for(lambda: type(app.screen).__name__ == "ExportScreen", what="the export screen")
        assert [e.id for e in app.screen.exchanges] == [fixed_id(2), fixed_id(3)]  # type: ignore[attr-defined]


async def test_edited_replay_sends_the_changes(tmp_path: Path, service: str) -> None:
    from devtunnel.replay import Edit

    db = fill(tmp_path / "captures.db", [make_exchange(0, method="POST", target="/a", target_url=service)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _ready(app)
        await pilot.press("e")
        await async_wait_for(lambda: type(app.screen).__name__ == "EditReplayScreen", what="the editor")
        new = await app.screen._send(Edit(method="PUT", target=b"/b?x=1", body=b"changed"))  # type: ignore[attr-defined]
        assert new.replay_of == fixed_id(0) and new.request.method == "PUT"
        await async_wait_for(lambda: len(table.ids) == 2, what="the edited replay on the table")
    assert _Echo.seen == ["PUT /b?x=1 changed"]


async def test_keys_in_the_detail_screen_act_on_the_exchange_it_shows(tmp_path: Path, service: str) -> None:
    shown = make_exchange(1, method="POST", target="/webhooks/stripe", target_url=service, body=b'{"n": 1}')
    db = fill(tmp_path / "captures.db", [make_exchange(0, target="/zero", target_url=service), shown,
                                         make_exchange(2, target="/two", target_url=service)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await _ready(app)
        await pilot.press("m", "up", "enter")  # /two marked; the detail of /webhooks/stripe open
        await async_wait_for(lambda: type(app.screen).__name__ == "DetailScreen", what="the detail")
        assert app.screen.exchange.id == shown.id  # type: ignore[attr-defined]

        await pilot.press("r")
        await async_wait_for(lambda: len(table.ids) == 4, what="the replay on the table")
        assert _Echo.seen == ['POST /webhooks/stripe {"n": 1}']
        assert type(app.screen).__name__ == "DetailScreen"
        replayed = Store(db, readonly=True).get(table.ids[-1])
        assert replayed.replay_of == shown.id

        await pilot.press("c")
        await async_wait_for(lambda: any("curl command" in n.title for n in app._notifications), what="the copy")
        assert app.clipboard.startswith("curl") and "/webhooks/stripe" in app.clipboard

        await pilot.press("x")
        await async_wait_for(lambda: type(app.screen).__name__ == "ExportScreen", what="the export screen")
        assert [e.id for e in app.screen.exchanges] == [shown.id]  # type: ignore[attr-defined]  # not the marked one
        await pilot.press("escape")
        await async_wait_for(lambda: type(app.screen).__name__ == "DetailScreen", what="back on the detail")

        await pilot.press("e")
        await async_wait_for(lambda: type(app.screen).__name__ == "EditReplayScreen", what="the editor")
        assert app.screen.exchange.id == shown.id  # type: ignore[attr-defined]


async def test_diff_mode_and_ignored_fields_are_kept_for_the_next_diff(tmp_path: Path) -> None:
    from textual.widgets import Input

    db = fill(tmp_path / "captures.db", traffic(6))
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(app)
        await pilot.press("up", "m", "down", "d")
        await async_wait_for(lambda: type(app.screen).__name__ == "DiffScreen", what="the first diff")
        await async_wait_for(lambda: app.screen.result is not None, what="its result")  # type: ignore[attr-defined]
        await pilot.press("u", "i", *"Date, id", "enter")
        await async_wait_for(lambda: app.screen.ignore == ("Date", "id"), what="the fields ignored")  # type: ignore[attr-defined]
        await pilot.press("escape")
        await async_wait_for(lambda: type(app.screen).__name__ == "Screen", what="back on the table")

        await pilot.press("up", "m", "up", "m", "down", "d")  # another pair: 3 against 4
        await async_wait_for(lambda: type(app.screen).__name__ == "DiffScreen", what="the second diff")
        screen = app.screen
        await async_wait_for(lambda: screen.result is not None, what="its result")  # type: ignore[attr-defined]
        assert (screen.a.id, screen.b.id) == (fixed_id(3), fixed_id(4))  # type: ignore[attr-defined]
        assert screen.mode == "unified" and screen.ignore == ("Date", "id")  # type: ignore[attr-defined]
        assert screen.query_one("#ignore", Input).value == "Date, id"
        assert "ignoring Date, id · unified" in str(screen.query_one("#diff-status").render())


@pytest.mark.parametrize("name", ["X-[/]", "X-[@click=app.quit]q[/]", "X-[link='http://evil.example']L[/link]",
                                  b"X-\x1b]52;c;SGVsbG8=\x07\xe2\x80\xae"])
async def test_a_notification_quoting_a_captured_header_name_shows_it_literally(tmp_path: Path, name: str | bytes) -> None:
    """A hostile relay can record any header name but ``:``, CR, LF, NUL; copying such a request as
    curl fails with a message quoting the name. The notification must show it as text: Textual
    notifications are markup by default, where ``[/]`` raised MarkupError when the toast was drawn
    and ``[@click=...]`` made the text run an action."""
    from textual.content import Content

    from tests.kit import exchanges as kit

    raw = name.encode() if isinstance(name, str) else name
    ex = kit.make_exchange("GET", "/x", [(b"host", b"shop.localhost"), (raw, b"v")], b"", kit.make_response(200),
                           id=fixed_id(1), tunnel="shop", started_at=0.0, target_url="http://127.0.0.1:9", duration=0.01)
    app = inspector(fill(tmp_path / "captures.db", [ex]), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(app)
        await pilot.press("c")
        await async_wait_for(lambda: app._notifications, what="the notification")
        notification = list(app._notifications)[-1]
        assert notification.title == "Cannot copy as curl"
        # What the toast draws (textual.widgets._toast.Toast.render, less the title).
        shown = Content.from_markup(notification.message) if notification.markup else Content(notification.message)
        assert "not an HTTP token" in shown.plain
        assert not any("@click" in str(span.style) or "link" in str(span.style) for span in shown.spans), shown.spans
        assert "\x1b" not in shown.plain and "\u202e" not in shown.plain
        if isinstance(name, str):
            assert name in shown.plain  # literally, brackets included


@pytest.mark.parametrize("body", [b"\x89PNG\r\n\x1a\n\x00\x00", b"a" * (64 * 1024 + 1)], ids=["binary", "large"])
async def test_c_refuses_a_command_that_would_read_a_side_file_never_written(tmp_path: Path, body: bytes,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``c`` copied ``curl ... --data-binary @./ID.body`` and wrote no such file, so the pasted
    command failed (or sent nothing). It now follows the export dialog's clipboard rule: nothing
    copied, and the notification says why and to export to a file, which writes the body too."""
    monkeypatch.delenv("DISPLAY", raising=False)  # only the terminal's clipboard (OSC 52) here
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    upload = make_exchange(0, method="PUT", target="/avatar", body=body)
    app = inspector(fill(tmp_path / "captures.db", [upload]), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(app)
        await pilot.press("c")
        await async_wait_for(lambda: app._notifications, what="the notification")
        (notification,) = app._notifications
        assert app.clipboard == ""
        assert notification.title == "Cannot copy as curl" and notification.severity == "error"
        assert notification.message.startswith("Nothing copied: "), notification.message
        assert f"./{upload.id}.body" in notification.message
        assert "export it to a file instead (x, To: file)" in notification.message


async def test_c_says_why_a_small_text_body_needs_a_side_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A form post with CR line ends is small text (the detail says ``text``), yet its bytes
    cannot be pasted: the notice said "side file(s) for binary or large bodies", true of neither."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    form = make_exchange(0, method="POST", target="/form", body=b"--x\r\nname=a\r\n--x--\r\n")
    app = inspector(fill(tmp_path / "captures.db", [form]), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(app)
        await pilot.press("c")
        await async_wait_for(lambda: app._notifications, what="the notification")
        (notification,) = app._notifications
        assert "binary or large" not in notification.message
        assert "control characters such as a CR" in notification.message, notification.message


async def test_c_copies_a_command_whose_body_fits_inline_and_says_where_it_went(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    app = inspector(fill(tmp_path / "captures.db", [make_exchange(0, method="POST", body=b'{"a": 1}')]), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(app)
        await pilot.press("c")
        await async_wait_for(lambda: app._notifications, what="the notification")
        (notification,) = app._notifications
        assert app.clipboard.startswith("curl ") and "--data-binary '{\"a\": 1}'" in app.clipboard
        assert "@" not in app.clipboard
        assert notification.message.startswith(
            f"Sent {len(app.clipboard.encode())} bytes to the terminal's clipboard (OSC 52)"), notification.message


async def test_the_detail_of_a_request_in_flight_shows_its_response_once_it_ends(tmp_path: Path) -> None:
    from textual.widgets import TabbedContent

    db = fill(tmp_path / "captures.db", [make_exchange(0, target="/slow", status=None, duration=None)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app)
        await pilot.press("enter")
        await async_wait_for(lambda: type(app.screen).__name__ == "DetailScreen", what="the detail")
        await pilot.press("2")
        assert app.screen.exchange.response is None  # type: ignore[attr-defined]
        assert not app.screen.query("#response-headers")

        store = Store(db)  # the agent records the end of the exchange
        try:
            store.put(make_exchange(0, target="/slow", status=201))
        finally:
            store.close()
        await async_wait_for(lambda: app.screen.query("#response-headers"), what="the response shown")
        assert app.screen.exchange.status == 201  # type: ignore[attr-defined]
        assert app.screen.query_one(TabbedContent).active == "response"  # the tab stays
