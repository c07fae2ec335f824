"""The export screen: formats, options, clipboard or file with side files, errors kept on screen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, RadioButton, RadioSet, Static

from devtunnel.errors import ExportError
from devtunnel.tui.screens import ExportScreen
from devtunnel.export import Export
from devtunnel.tui.screens.export import copy_export, write_export
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import fill, inspector, make_exchange, traffic
from tests.tui.screen_fixtures import PNG_HEAD, ScreenApp, exchange, json_exchange, laid_out


@pytest.fixture(autouse=True)
def _headless(monkeypatch: pytest.MonkeyPatch) -> None:
    # No desktop clipboard here: only the terminal (OSC 52) copy may happen.
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def upload() -> object:
    return exchange(
        id="01KB0DETA1L0000000000000UP",
        method="PUT",
        target=b"/avatar",
        req_headers=[("Host", "shop.localhost"), ("Content-Type", "image/png"), ("Authorization", "Bearer s3cret")],
        req_body=PNG_HEAD,
        status=204,
    )


def _message(app: ScreenApp) -> str:
    return str(app.screen.query_one("#export-message", Static).render())


async def _choose_file(pilot, app: ScreenApp, path: Path) -> None:
    await pilot.click("#to-file")
    await pilot.pause()
    app.screen.query_one("#path", Input).value = str(path)


async def test_curl_of_the_current_exchange_goes_to_the_clipboard_with_a_notification() -> None:
    ex = json_exchange()
    app = ScreenApp(ExportScreen([ex, upload()], current=ex))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.click("#scope-current")  # the dialog starts on every exchange given
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.dismissed
        assert app.clipboard.startswith("curl --http1.1 'http://shop.localhost/api/orders?expand=items'")
        assert "PUT" not in app.clipboard
        size = len(app.clipboard.encode())
        assert app.result == f"Sent {size} bytes to the terminal's clipboard (OSC 52)"
        assert [n.message for n in app._notifications] == [app.result]


async def test_har_of_all_listed_exchanges_to_a_file(tmp_path: Path) -> None:
    ex = json_exchange()
    app = ScreenApp(ExportScreen([ex, upload()], current=ex))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.click("#format-har")
        await pilot.click("#scope-all")
        await _choose_file(pilot, app, tmp_path / "traffic.har")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.dismissed, _message(app)
        har = json.loads((tmp_path / "traffic.har").read_text())
        assert [e["request"]["method"] for e in har["log"]["entries"]] == ["POST", "PUT"]
        assert app.result == f"Exported har to {tmp_path / 'traffic.har'}"


async def test_switching_format_changes_the_file_suffix(tmp_path: Path) -> None:
    app = ScreenApp(ExportScreen([json_exchange()]))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.click("#to-file")
        await pilot.click("#format-har")
        await pilot.pause()
        assert app.screen.query_one("#path", Input).value == "devtunnel-export.har"


async def test_binary_body_is_written_as_a_side_file_next_to_the_curl_script(tmp_path: Path) -> None:
    app = ScreenApp(ExportScreen([upload()]))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await _choose_file(pilot, app, tmp_path / "upload.sh")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.dismissed, _message(app)
        script = (tmp_path / "upload.sh").read_text()
        side = [p for p in tmp_path.iterdir() if p.name != "upload.sh"]
        assert len(side) == 1 and side[0].read_bytes() == PNG_HEAD
        assert f"@{side[0]}" in script or f"@'{side[0]}'" in script
        assert app.result.endswith("with 1 side file(s) next to it")


async def test_redact_hides_the_authorization_header() -> None:
    app = ScreenApp(ExportScreen([upload()]))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.click("#format-har")
        await pilot.click("#redact")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.dismissed, _message(app)
        assert "s3cret" not in app.clipboard


async def test_clipboard_refuses_an_export_that_needs_side_files_and_stays_open() -> None:
    app = ScreenApp(ExportScreen([upload()]))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not app.dismissed
        assert "side file(s) (" in _message(app) and "bytes that are not text" in _message(app)
        assert "export it to a file instead" in _message(app)
        assert app.clipboard == ""


async def test_existing_file_is_replaced_only_after_a_second_ctrl_s(tmp_path: Path) -> None:
    target = tmp_path / "keep.sh"
    target.write_text("precious")
    app = ScreenApp(ExportScreen([json_exchange()]))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await _choose_file(pilot, app, target)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert target.read_text() == "precious"
        assert "exists: press ctrl+s again to replace it" in _message(app)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert target.read_text().startswith("curl ")


async def test_missing_folder_is_reported_and_nothing_written(tmp_path: Path) -> None:
    app = ScreenApp(ExportScreen([json_exchange()]))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await _choose_file(pilot, app, tmp_path / "nope" / "x.sh")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not app.dismissed
        assert f"Not exported: no such folder: {tmp_path / 'nope'}" in _message(app)
        assert list(tmp_path.iterdir()) == []


async def test_path_that_is_a_folder_is_reported(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    (locked / "x.sh").mkdir()  # a folder where the file should go cannot be written as a file
    app = ScreenApp(ExportScreen([json_exchange()]))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await _choose_file(pilot, app, locked / "x.sh")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "is a folder: add a file name" in _message(app)


async def test_escape_closes_without_exporting() -> None:
    app = ScreenApp(ExportScreen([json_exchange()]))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.dismissed and app.result is None and app.clipboard == ""


async def test_q_types_into_the_path_but_closes_elsewhere(tmp_path: Path) -> None:
    app = ScreenApp(ExportScreen([json_exchange()]))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await _choose_file(pilot, app, tmp_path / "out")
        field = app.screen.query_one("#path", Input)
        field.focus()
        field.cursor_position = len(field.value)
        await pilot.press("q")
        assert not app.dismissed and field.value == str(tmp_path / "outq")
        app.screen.query_one("#format").focus()
        await pilot.press("q")
        await pilot.pause()
        assert app.dismissed and app.result is None


async def test_copy_export_copies_curl_and_refuses_side_files() -> None:
    app = ScreenApp(ExportScreen([json_exchange()]))
    async with app.run_test() as pilot:
        await pilot.pause()
        sentence = copy_export(app, "curl", [json_exchange()])
        assert sentence.startswith("Sent ") and app.clipboard.startswith("curl ")
        with pytest.raises(ExportError, match="export it to a file instead"):
            copy_export(app, "curl", [upload()])


def test_write_export_names_the_side_file_it_cannot_write(tmp_path: Path) -> None:
    result = Export("curl --data-binary @bodies/a.bin\n", {"bodies/a.bin": b"\x00"})
    with pytest.raises(ExportError, match=f"cannot write {tmp_path / 'bodies' / 'a.bin'}"):
        write_export(result, tmp_path / "a.sh")
    assert (tmp_path / "a.sh").read_text().startswith("curl")


# -- from the inspector: marks, public or local, the copy action ----------------------------------


async def _inspector_ready(app):  # type: ignore[no-untyped-def]
    from devtunnel.tui.widgets import RequestTable

    table = app.query_one(RequestTable)
    await async_wait_for(lambda: table.ids and table.cached_row(table.ids[-1]), what="rows")
    return table


async def test_x_with_one_marked_request_exports_the_marked_one_not_the_cursor_row(tmp_path: Path) -> None:
    exchanges = traffic(4)
    paths = {ex.id: ex.request.url_text for ex in exchanges}  # /, /webhooks/stripe, /api/orders?page=2, /old-home
    app = inspector(fill(tmp_path / "captures.db", exchanges), tmp_path)
    out = tmp_path / "marked.sh"
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _inspector_ready(app)
        await pilot.press("up", "m")
        (marked,) = table.marked
        await pilot.press("up")
        cursor = table.current_id
        assert cursor is not None and cursor != marked
        await pilot.press("x")
        await async_wait_for(lambda: isinstance(app.screen, ExportScreen) and laid_out(app, "#to-file"),
                             what="the export screen, laid out")
        assert paths[marked] in str(app.screen.query_one(".title", Static).render())
        await pilot.click("#to-file")
        await pilot.pause()
        app.screen.query_one("#path", Input).value = str(out)
        await pilot.pause()
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: out.exists(), what="the exported file")
    script = out.read_text()
    assert f"http://shop.localhost{paths[marked]}" in script
    assert f"http://shop.localhost{paths[cursor]}'" not in script and script.count("curl ") == 1


async def _export_har_from_the_inspector(pilot, app, out: Path, *, scope: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """``x``, HAR, to the file ``out`` (after choosing ``scope``, a radio button's selector, if given)."""
    await pilot.press("x")
    await async_wait_for(lambda: isinstance(app.screen, ExportScreen) and laid_out(app, "#to-file"),
                         what="the export screen, laid out")
    if scope is not None:
        await pilot.click(scope)
    await pilot.click("#format-har")
    await pilot.click("#to-file")
    await async_wait_for(lambda: laid_out(app, "#path"), what="the path field")
    app.screen.query_one("#path", Input).value = str(out)
    await pilot.press("ctrl+s")
    await async_wait_for(lambda: not isinstance(app.screen, ExportScreen), what="the dialog to close")


def _har_targets(out: Path) -> list[str]:
    """The path and query of every request in the HAR file ``out``, in order."""
    from urllib.parse import urlsplit

    targets = []
    for entry in json.loads(out.read_text())["log"]["entries"]:
        url = urlsplit(entry["request"]["url"])
        targets.append(url.path + (f"?{url.query}" if url.query else ""))
    return targets


@pytest.mark.parametrize("scope", [None, "#scope-current"], ids=["as-opened", "the-current-one-chosen"])
async def test_x_with_rows_marked_and_the_cursor_on_another_starts_on_the_marked_ones(
        tmp_path: Path, scope: str | None) -> None:
    """The dialog started on "the selected one" (the cursor's row, not marked) and exported it
    alone; it starts on the marked ones and offers the current one instead."""
    exchanges = traffic(4)
    paths = [ex.request.url_text for ex in exchanges]  # /, /webhooks/stripe, /api/orders?page=2, /old-home
    app = inspector(fill(tmp_path / "captures.db", exchanges), tmp_path)
    out = tmp_path / "export.har"
    async with app.run_test(size=(80, 24)) as pilot:
        table = await _inspector_ready(app)
        await pilot.press("m", "up", "m", "up")  # the last two marked, the cursor on the second
        assert table.marked == {exchanges[2].id, exchanges[3].id}
        assert table.current_id == exchanges[1].id
        await pilot.press("x")
        await async_wait_for(lambda: isinstance(app.screen, ExportScreen) and laid_out(app, "#scope-current"),
                             what="the export screen, laid out")
        screen = app.screen
        assert str(screen.query_one(".title", Static).render()) == "Export 2 marked exchanges"
        marked, current = screen.query_one("#scope-all", RadioButton), screen.query_one("#scope-current", RadioButton)
        assert (str(marked.label), marked.value) == ("the 2 marked", True)
        assert (str(current.label), current.value) == ("the current one", False)
        await pilot.press("escape")
        await async_wait_for(lambda: not isinstance(app.screen, ExportScreen), what="the dialog to close")
        await _export_har_from_the_inspector(pilot, app, out, scope=scope)
    assert _har_targets(out) == (paths[2:] if scope is None else [paths[1]])


async def test_x_with_nothing_marked_exports_the_current_row_without_a_choice(tmp_path: Path) -> None:
    exchanges = traffic(4)
    app = inspector(fill(tmp_path / "captures.db", exchanges), tmp_path)
    out = tmp_path / "export.har"
    async with app.run_test(size=(80, 24)) as pilot:
        table = await _inspector_ready(app)
        await pilot.press("up")
        await async_wait_for(lambda: table.current_id == exchanges[2].id, what="the cursor on the third row")
        await pilot.press("x")
        await async_wait_for(lambda: isinstance(app.screen, ExportScreen) and laid_out(app, "#to-file"),
                             what="the export screen, laid out")
        assert not app.screen.query("#scope")
        assert str(app.screen.query_one(".title", Static).render()) == "Export 1 exchange: GET /api/orders?page=2"
        await pilot.press("escape")
        await async_wait_for(lambda: not isinstance(app.screen, ExportScreen), what="the dialog to close")
        await _export_har_from_the_inspector(pilot, app, out)
    assert _har_targets(out) == ["/api/orders?page=2"]


async def test_local_service_choice_goes_to_the_export_and_to_the_copy_action(tmp_path: Path) -> None:
    db = fill(tmp_path / "captures.db", [make_exchange(0, target="/hooks?x=1", target_url="http://127.0.0.1:3000")])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _inspector_ready(app)
        await pilot.press("c")
        await async_wait_for(lambda: app.clipboard, what="the copied curl")
        assert "http://shop.localhost/hooks?x=1" in app.clipboard
        assert "x chooses public URL or local service" in list(app._notifications)[-1].message
        await pilot.press("x")
        await async_wait_for(lambda: isinstance(app.screen, ExportScreen), what="the export screen")
        await pilot.click("#send-local")
        await pilot.pause()
        assert "http://127.0.0.1:3000" in str(app.screen.query_one("#send-to-hint", Static).render())
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: not isinstance(app.screen, ExportScreen), what="the dialog to close")
        assert "'http://127.0.0.1:3000/hooks?x=1'" in app.clipboard or "http://127.0.0.1:3000/hooks?x=1" in app.clipboard
        app.copy_to_clipboard("")
        await pilot.press("c")  # the copy action follows the dialog's last choice
        await async_wait_for(lambda: app.clipboard, what="the copied curl")
        assert "http://127.0.0.1:3000/hooks?x=1" in app.clipboard
        assert "sends to the local service" in list(app._notifications)[-1].message
        await pilot.press("x")  # and the dialog opens with it
        await async_wait_for(lambda: isinstance(app.screen, ExportScreen), what="the export screen")
        assert app.screen.query_one("#send-local", RadioButton).value


async def test_a_pytest_module_names_the_secret_variable_devtunnel_toml_gives(tmp_path: Path) -> None:
    """The CLI's and the API's pytest export read ``[webhooks.stripe] secret_env``; the dialog's
    named ``STRIPE_WEBHOOK_SECRET``, whose tests then signed with another service's secret."""
    from devtunnel.config import load, webhook_context
    from tests.tui.screen_fixtures import stripe_exchange

    (tmp_path / "devtunnel.toml").write_text('[webhooks.stripe]\nsecret_env = "PAYMENTS_STRIPE_SECRET"\n')
    settings = load({"XDG_CONFIG_HOME": str(tmp_path / "none")}, cwd=tmp_path)
    app = ScreenApp(ExportScreen([stripe_exchange()]))
    app.webhooks = webhook_context(settings, {})  # type: ignore[attr-defined]
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.click("#format-pytest")
        await _choose_file(pilot, app, tmp_path / "test_hooks.py")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.dismissed, _message(app)
    text = (tmp_path / "test_hooks.py").read_text()
    assert "secret_env='PAYMENTS_STRIPE_SECRET'" in text and "STRIPE_WEBHOOK_SECRET" not in text
    assert f"Run it with the service up:\n\n    DEVTUNNEL_BASE_URL=http://127.0.0.1:8000 pytest {tmp_path / 'test_hooks.py'}\n" in text


async def test_raw_format_disables_the_url_choice() -> None:
    app = ScreenApp(ExportScreen([json_exchange()]))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.click("#format-raw")
        await pilot.pause()
        assert app.screen.query_one("#send-to", RadioSet).disabled
        assert "names no URL" in str(app.screen.query_one("#send-to-hint", Static).render())


async def test_every_control_is_on_screen_at_80x24(tmp_path: Path) -> None:
    ex = json_exchange()
    app = ScreenApp(ExportScreen([ex, upload()], current=ex))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.click("#to-file")
        await pilot.pause()
        screen = app.screen.region
        for selector in ("#format", "#scope", "#send-to", "#redact", "#destination", "#path", "#do-export", "#cancel"):
            region = app.screen.query_one(selector).region
            assert region.area and screen.contains_region(region), selector


# -- snapshots at 80x24 ---------------------------------------------------------------------------


def test_snapshot_export_dialog_at_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(ScreenApp(ExportScreen([json_exchange()])), terminal_size=(80, 24))


def test_snapshot_export_dialog_local_service_to_a_file_at_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    ex = json_exchange()

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.pause()
        await pilot.click("#send-local")
        await pilot.click("#to-file")
        await pilot.pause()

    assert snap_compare(ScreenApp(ExportScreen([ex, upload()], current=ex)), terminal_size=(80, 24), run_before=run_before)
