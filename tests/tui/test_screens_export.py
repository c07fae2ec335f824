"""The export screen: formats, options, clipboard or file with side files, errors kept on screen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from devtunnel.errors import ExportError
from devtunnel.tui.screens import ExportScreen
from devtunnel.export import Export
from devtunnel.tui.screens.export import copy_export, write_export
from tests.tui.screen_fixtures import PNG_HEAD, ScreenApp, exchange, json_exchange, screen_text


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
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.dismissed
        assert app.clipboard.startswith("curl --http1.1 'http://shop.localhost/api/orders?expand=items'")
        assert "PUT" not in app.clipboard
        size = len(app.clipboard.encode())
        assert app.result == f"Copied {size} bytes to the clipboard (terminal OSC 52)"
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
        assert "side file(s) for binary or large bodies: export it to a file instead" in _message(app)
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
        assert sentence.startswith("Copied ") and app.clipboard.startswith("curl ")
        with pytest.raises(ExportError, match="export it to a file instead"):
            copy_export(app, "curl", [upload()])


def test_write_export_names_the_side_file_it_cannot_write(tmp_path: Path) -> None:
    result = Export("curl --data-binary @bodies/a.bin\n", {"bodies/a.bin": b"\x00"})
    with pytest.raises(ExportError, match=f"cannot write {tmp_path / 'bodies' / 'a.bin'}"):
        write_export(result, tmp_path / "a.sh")
    assert (tmp_path / "a.sh").read_text().startswith("curl")
