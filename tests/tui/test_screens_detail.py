"""The detail screen: headers and bodies by content type, timing, WebSockets, hostile data."""

from __future__ import annotations

import dataclasses
import time
from urllib.parse import urlencode

import pytest
from rich.text import Text
from textual.widgets import DataTable, Static, TabbedContent

from devtunnel.capture.model import BUDGET_CUT_WHY, Exchange, WsMessage
from devtunnel.tui.screens import DetailScreen
from devtunnel.tui.screens.detail import HeadersView, WsMessageLines
from devtunnel.values.durations import human_duration
from devtunnel.tui.screens.lines import LinesView
from tests.helpers import async_wait_for
from tests.tui.screen_fixtures import (
    HOSTILE,
    STRIPE_SIGNATURE,
    ScreenApp,
    binary_exchange,
    exchange,
    freeze_utc,
    json_exchange,
    screen_text,
    stripe_exchange,
    ws_exchange,
)


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    freeze_utc(monkeypatch)
    yield
    monkeypatch.undo()
    time.tzset()


def _rows(table: DataTable[Text]) -> list[list[str]]:
    return [[cell.plain for cell in table.get_row_at(i)] for i in range(table.row_count)]


def _message_rows(view: LinesView) -> list[list[str]]:
    lines = view.lines
    assert isinstance(lines, WsMessageLines)
    return [[cell.plain for cell in lines.cells(i)] for i in range(len(lines))]


async def test_json_bodies_are_indented_and_headers_listed_in_order() -> None:
    app = ScreenApp(DetailScreen(json_exchange()))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        assert app.screen.query_one("#request-headers", HeadersView).fields == [
            ("Host", "shop.localhost"),
            ("Content-Type", "application/json"),
            ("Content-Length", "37"),
        ]
        body = app.screen.query_one("#request-body", LinesView)
        assert [body.lines.line(i).plain for i in range(len(body.lines))] == [
            "{",
            '  "sku": "A-1",',
            '  "qty": 2,',
            '  "coupon": "XMAS"',
            "}",
        ]
        await pilot.press("2")
        await pilot.pause()
        shown = screen_text(app)
        assert '    "price": 9.5' in shown
        assert "Body · json · 77 B" in shown


async def test_json_keys_and_values_are_coloured_differently() -> None:
    app = ScreenApp(DetailScreen(json_exchange()))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        line = app.screen.query_one("#request-body", LinesView).lines.line(1)
        styles = {line.plain[span.start : span.end]: str(span.style) for span in line.spans}
        assert styles['"sku"'] != styles['"A-1"']


async def test_p_shows_the_body_as_received_and_back() -> None:
    app = ScreenApp(DetailScreen(json_exchange()))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.press("p")
        await pilot.pause()
        body = app.screen.query_one("#request-body", LinesView)
        assert body.lines.line(0).plain == '{"sku":"A-1","qty":2,"coupon":"XMAS"}'
        assert "raw" in str(app.screen.query_one("#request-body-label", Static).render())
        await pilot.press("p")
        await pilot.pause()
        assert app.screen.query_one("#request-body", LinesView).lines.line(0).plain == "{"


async def test_form_body_is_a_table_of_decoded_fields() -> None:
    ex = exchange(
        req_headers=[("Content-Type", "application/x-www-form-urlencoded")],
        req_body=b"user=ana+maria&city=S%C3%A3o+Paulo&empty=&tag=a&tag=b",
    )
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        assert _rows(app.screen.query_one("#request-form", DataTable)) == [
            ["user", "ana maria"],
            ["city", "São Paulo"],
            ["empty", ""],
            ["tag", "a"],
            ["tag", "b"],
        ]


async def test_a_form_field_holding_json_is_shown_reformatted_under_the_table() -> None:
    payload = '{"type":"block_actions","actions":[{"value":"approve"}]}'
    ex = exchange(
        req_headers=[("Content-Type", "application/x-www-form-urlencoded")],
        req_body=urlencode({"payload": payload, "note": "{not json", "list": "[1,2]", "\x1b[2Jname": "{}"}).encode(),
    )
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(100, 50)) as pilot:
        await pilot.pause()
        assert _rows(app.screen.query_one("#request-form", DataTable))[0] == ["payload", payload]
        labels = [str(app.screen.query_one(f"#request-field-{i}-label", Static).render()) for i in range(3)]
        assert labels == ["Field payload · json", "Field list · json", "Field \\x1b[2Jname · json"]  # escaped
        assert not app.screen.query("#request-field-3")  # "{not json" is text
        lines = app.screen.query_one("#request-field-0", LinesView).lines
        assert [lines.line(i).plain for i in range(4)] == ["{", '  "type": "block_actions",', '  "actions": [', "    {"]
        await pilot.press("p")  # as received: the body itself, no table and no field sections
        await pilot.pause()
        assert not app.screen.query("#request-field-0") and app.screen.query_one("#request-body", LinesView)


async def test_xml_body_is_indented_by_element() -> None:
    ex = exchange(
        resp_headers=[("Content-Type", "application/soap+xml")],
        resp_body=b'<?xml version="1.0"?><order id="7"><item sku="A-1">2</item><note/></order>',
    )
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        body = app.screen.query_one("#response-body", LinesView)
        assert [body.lines.line(i).plain for i in range(len(body.lines))] == [
            '<?xml version="1.0"?>',
            '<order id="7">',
            '  <item sku="A-1">2</item>',
            "  <note/>",
            "</order>",
        ]


async def test_binary_body_is_a_hex_dump_with_offsets_and_ascii() -> None:
    app = ScreenApp(DetailScreen(binary_exchange()))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.press("2")
        await pilot.pause()
        body = app.screen.query_one("#response-body", LinesView)
        assert len(body.lines) == 4
        assert body.lines.line(0).plain == "00000000 89 50 4e 47 0d 0a 1a 0a  00 00 00 0d 49 48 44 52 │.PNG........IHDR│"
        assert body.lines.line(3).plain == "00000030 0f 10 11 12 13 14 15 16  17 18 19 1a 1b 1c 1d    │............... │"
        assert "Body · binary · 63 B · hex dump" in screen_text(app)


async def test_a_hex_dump_fits_an_80_column_terminal_beside_its_scrollbar() -> None:
    # Rows were 78 cells: beside the scrollbar of a body longer than the screen, the ASCII's
    # last character and its closing bar were cut off, behind a sideways scrollbar.
    ex = exchange(resp_headers=[("Content-Type", "application/octet-stream")], resp_body=bytes(range(256)) * 3)
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("2")
        await pilot.pause()
        body = app.screen.query_one("#response-body", LinesView)
        assert body.max_scroll_y > 0 and body.max_scroll_x == 0
        assert body.lines.width <= body.scrollable_content_region.width
        assert "│................│" in screen_text(app)


async def test_text_that_is_not_utf8_is_shown_as_hex() -> None:
    ex = exchange(resp_headers=[("Content-Type", "text/plain")], resp_body="café".encode("latin-1"))
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        body = app.screen.query_one("#response-body", LinesView)
        assert body.lines.line(0).plain.startswith("00000000 63 61 66 e9")


async def test_h_shows_any_body_as_a_hex_dump() -> None:
    app = ScreenApp(DetailScreen(json_exchange()))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.press("h")
        await pilot.pause()
        body = app.screen.query_one("#request-body", LinesView)
        assert body.lines.line(0).plain.startswith('00000000 7b 22 73 6b 75 22')


async def test_truncated_body_says_so_with_the_real_size() -> None:
    ex = exchange(resp_headers=[("Content-Type", "text/plain")], resp_body=b"a" * 1024, resp_size=3 * 1024 * 1024)
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("2")
        await pilot.pause()
        label = str(app.screen.query_one("#response-body-label", Static).render())
        assert "truncated: recorded the first 1 KiB of 3 MiB" in label


async def test_truncated_json_is_not_reformatted_and_still_shown() -> None:
    ex = exchange(resp_body=b'{"items": [1, 2, 3', resp_size=50_000)
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        body = app.screen.query_one("#response-body", LinesView)
        assert body.lines.line(0).plain == '{"items": [1, 2, 3'


async def test_timing_tab_shows_start_ttfb_duration_and_error() -> None:
    ex = exchange(status=None, error="local_refused", error_message="connection refused by 127.0.0.1:8080", ttfb=None)
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("2")
        await pilot.pause()
        assert "No response: local_refused - connection refused by 127.0.0.1:8080" in screen_text(app)
        await pilot.press("3")
        await pilot.pause()
        shown = screen_text(app)
        assert "Started        2025-11-26 12:30:00.000 +0000" in shown
        assert "First byte     -" in shown
        assert "Duration       45.7 ms" in shown
        assert "Error          local_refused - connection refused by 127.0.0.1:8080" in shown


async def test_websocket_messages_are_listed_with_direction_time_type_size_and_preview() -> None:
    app = ScreenApp(DetailScreen(ws_exchange()))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press("4")
        await pilot.pause()
        assert app.screen.query_one(TabbedContent).active == "messages"
        rows = _message_rows(app.screen.query_one("#ws-messages", LinesView))
        assert rows[0] == ["client →", "+10.0 ms", "text", "18 B", '{"op":"subscribe"}']
        assert rows[2] == ["← service", "+30.0 ms", "binary", "4 B", "00 01 02 ff"]
        assert rows[4][3] == "4.9 KiB"
        assert rows[4][4].endswith("(recorded 100 of 5000 bytes)")


async def test_websocket_messages_the_body_budget_cut_say_why_after_their_sizes() -> None:
    ex = ws_exchange()
    ex.ws_messages[4].budget_cut = True  # the agent kept no more for the requests in flight
    ex.ws_messages.append(WsMessage("client", 2, ex.ws_messages[4].time + 0.01, b"", size=300, budget_cut=True))
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press("4")
        await pilot.pause()
        view = app.screen.query_one("#ws-messages", LinesView)
        rows = _message_rows(view)
        assert rows[4][4].endswith(f"(recorded 100 of 5000 bytes: {BUDGET_CUT_WHY})")
        assert rows[5][4] == f"  (recorded 0 of 300 bytes: {BUDGET_CUT_WHY})"
        assert [row[4] for row in rows[:4]] == [row[4] for row in _message_rows_of(ws_exchange())[:4]]
        assert view.lines.width >= len(view.lines.line(4).plain)  # all of it within the scrolled width


def _message_rows_of(ex: Exchange) -> list[list[str]]:
    lines = WsMessageLines(ex)
    return [[cell.plain for cell in lines.cells(i)] for i in range(len(lines))]


async def test_hostile_headers_paths_and_bodies_show_literally() -> None:
    ex = exchange(
        method="GET",
        target=b"/[bold]x[/bold]?q=\x1b[2J",
        req_headers=[("Host", "h.localhost"), ("X-Evil[/]", HOSTILE)],
        resp_headers=[("Content-Type", "text/plain")],
        resp_body=("line one\n" + HOSTILE + "\n").encode(),
    )
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.pause()
        shown = screen_text(app)
        escaped = "[bold red]boom[/] [/x] \\x1b[31mred\\x1b[0m \\x1b]52;c;SGVsbG8=\\x07 \\u202eevil"
        assert "GET http://h.localhost/[bold]x[/bold]?q=\\x1b[2J" in shown
        assert "X-Evil[/]" in shown and escaped in shown
        await pilot.press("2")
        await pilot.pause()
        assert escaped in screen_text(app)
        assert "\x1b" not in screen_text(app)


@pytest.mark.parametrize(("reason", "shown"), [("Größe".encode(), "418 Größe"), (b"Gr\xf6\xdfe", "418 Gr\\xf6\\xdfe")])
async def test_a_reason_phrase_reads_as_utf8_where_it_is_and_escaped_where_not(reason: bytes, shown: str) -> None:
    ex = exchange(status=418)
    assert ex.response is not None
    ex.response.reason = reason.decode("latin-1")  # as the agent records the bytes it received
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.pause()
        await pilot.press("2")  # the response tab: its status line
        await pilot.pause()
        text = screen_text(app)
        assert text.count(shown) == 2, text  # the title and the status line
        assert "Ã" not in text


@pytest.mark.parametrize(("raw", "shown"), [("Größe".encode(), "Größe"), (b"Gr\xf6\xdfe", "Gr\\xf6\\xdfe")])
async def test_a_header_value_reads_as_the_reason_phrase_does(raw: bytes, shown: str) -> None:
    """The reason's bytes read as UTF-8 with ``\\xNN`` for the rest, a header value's fell back to
    latin-1 as a whole (``Größe`` for the bytes the status line showed as ``Gr\\xf6\\xdfe``)."""
    ex = exchange(status=418, resp_headers=[("X-Reason", raw)])  # type: ignore[list-item]
    assert ex.response is not None
    ex.response.reason = raw.decode("latin-1")  # as the agent records the bytes it received
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.pause()
        await pilot.press("2")  # the response tab: status line and headers
        await pilot.pause()
        text = screen_text(app)
        assert f"418 {shown}" in text and f"X-Reason  {shown}" in " ".join(text.split("│")), text


async def test_hostile_websocket_preview_is_escaped() -> None:
    app = ScreenApp(DetailScreen(ws_exchange()))
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.pause()
        await pilot.press("4")
        await pilot.pause()
        rows = _message_rows(app.screen.query_one("#ws-messages", LinesView))
        assert rows[3][4].startswith("[bold red]boom[/] [/x] \\x1b[31mred")


async def test_ten_mib_body_opens_and_scrolls_to_its_end() -> None:
    body = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    ex = exchange(resp_headers=[("Content-Type", "application/octet-stream")], resp_body=body)
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("2")
        await async_wait_for(lambda: bool(app.screen.query("#response-body")), what="the response body")
        view = app.screen.query_one("#response-body", LinesView)
        await async_wait_for(lambda: view.max_scroll_y > 600_000, what="the whole body laid out")
        view.focus()
        await pilot.press("end")
        await async_wait_for(lambda: view.scroll_y == view.max_scroll_y, what="the view at the end")
        await async_wait_for(lambda: "009ffff0 f0 f1 f2 f3" in screen_text(app), what="the last line drawn")


async def test_ten_mib_json_text_opens_as_received() -> None:
    body = b'{"rows": [' + b",".join(b'{"n": %d}' % i for i in range(900_000)) + b"]}"
    ex = exchange(resp_body=body)
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("2")
        await pilot.pause()
        label = str(app.screen.query_one("#response-body-label", Static).render())
        assert "shown as received: larger than 1 MiB" in label
        view = app.screen.query_one("#response-body", LinesView)
        view.focus()
        await pilot.press("end")
        await pilot.pause()
        assert screen_text(app).count("\n") > 0
        assert view.lines.line(len(view.lines) - 1).plain.endswith('{"n": 899999}]}')


async def test_escape_closes_the_screen() -> None:
    app = ScreenApp(DetailScreen(json_exchange()))
    async with app.run_test() as pilot:
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.dismissed


async def test_every_header_and_the_whole_stripe_signature_are_on_an_80x24_screen() -> None:
    app = ScreenApp(DetailScreen(stripe_exchange()))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        shown = screen_text(app)
        lines = shown.splitlines()
        for name, _ in stripe_exchange().request.headers.items():
            assert any(line.startswith(f" {name} ") for line in lines), name
        # The signature wraps under itself: joined back, the folded rows give it whole.
        start = next(i for i, line in enumerate(lines) if line.startswith(" Stripe-Signature "))
        column = lines[start].index("t=")
        folded = "".join(line[column:].rstrip() for line in lines[start : start + 4])
        assert STRIPE_SIGNATURE in folded
        assert all(len(line.rstrip()) <= 80 for line in lines)


async def test_headers_that_do_not_fit_scroll_and_all_can_be_reached() -> None:
    many = [(f"X-Header-{n:02d}", f"value {n}") for n in range(40)]
    app = ScreenApp(DetailScreen(exchange(req_headers=many)))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        view = app.screen.query_one("#request-headers", HeadersView)
        assert view.max_scroll_y > 0 and "X-Header-39" not in screen_text(app)
        await pilot.press("tab")  # from the tabs to the headers
        assert app.focused is view
        await pilot.press("end")
        # scroll_end waits for a refresh (call_after_refresh): wait for the last header drawn
        await async_wait_for(lambda: "X-Header-39  value 39" in screen_text(app), what="the last header on screen")
        assert app.screen.query_one("#request-body-label").region.height == 1  # the body keeps its place


async def test_raw_body_is_folded_at_the_width_and_binary_stays_a_hex_dump() -> None:
    long_line = '{"data":"' + "abcdefghij" * 30 + '\x1b"}'
    ex = exchange(req_headers=[("Content-Type", "application/json")], req_body=long_line.encode() + b"\x1b",
                  resp_headers=[("Content-Type", "application/octet-stream")], resp_body=b"\x1b[2J\x00\xff")
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("p")
        await pilot.pause()
        view = app.screen.query_one("#request-body", LinesView)
        rows = [view.lines.line(i).plain for i in range(len(view.lines))]
        assert len(rows) > 3 and all(len(row) <= view.scrollable_content_region.width for row in rows)
        assert "".join(rows) == long_line.replace("\x1b", "\\x1b") + "\\x1b"
        assert view.max_scroll_x == 0
        await pilot.press("2")
        await pilot.pause()
        hex_rows = app.screen.query_one("#response-body", LinesView).lines
        assert hex_rows.line(0).plain.startswith("00000000 1b 5b 32 4a 00 ff")
        assert "\x1b" not in screen_text(app) and "\x00" not in screen_text(app)


async def test_raw_body_folds_again_when_the_terminal_is_resized() -> None:
    ex = exchange(resp_headers=[("Content-Type", "text/plain")], resp_body=b"word " * 100)
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2", "p")
        await pilot.pause()
        view = app.screen.query_one("#response-body", LinesView)
        narrow = len(view.lines)
        await pilot.resize_terminal(120, 24)
        await async_wait_for(lambda: len(view.lines) < narrow, what="the body folded at the new width")
        assert "".join(view.lines.line(i).plain for i in range(len(view.lines))) == "word " * 100


def test_snapshot_json_detail(snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:
    assert snap_compare(ScreenApp(DetailScreen(json_exchange())), press=["2"], terminal_size=(100, 30))


def test_snapshot_binary_detail(snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:
    assert snap_compare(ScreenApp(DetailScreen(binary_exchange())), press=["2"], terminal_size=(100, 24))


async def test_at_80x24_the_title_keeps_the_status_and_the_duration() -> None:
    """A long URL gives way (reason phrase first, then its middle), not what the request came to."""
    app = ScreenApp(DetailScreen(json_exchange()))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        title = screen_text(app).splitlines()[0]
        assert title.rstrip().endswith("201  45.7 ms"), title
        assert "POST http://shop.localhost/api/o" in title and "…" in title and title.rstrip().endswith("ms")
    app = ScreenApp(DetailScreen(json_exchange()))
    async with app.run_test(size=(100, 24)) as pilot:  # room enough: all of it
        await pilot.pause()
        title = screen_text(app).splitlines()[0]
        assert "POST http://shop.localhost/api/orders?expand=items  201 Created  45.7 ms" in title


async def test_a_request_line_longer_than_the_screen_shows_its_target_folded() -> None:
    """An OAuth callback's long query is one word: wrapped at spaces, the line showed only ``GET``."""
    target = b"/callback?code=" + b"x" * 120 + b"&state=" + b"y" * 20
    app = ScreenApp(DetailScreen(exchange(method="GET", target=target, status=200)))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        lines = screen_text(app).splitlines()
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("GET"))
        shown = "".join(lines[start : start + 4]).replace(" ", "")
        assert shown == f"GET{target.decode()}HTTP/1.1", lines[start : start + 4]
        assert any(line.lstrip().startswith("Headers (") for line in lines), lines


async def test_a_body_too_large_to_pretty_print_is_folded_so_rows_read_on() -> None:
    """Shown as received in the pretty view, a minified JSON is one long line cut every 1,000
    characters: unfolded, each row showed its first 78 and the next row skipped the rest."""
    body = b'{"items": [' + b", ".join(b'{"id": %d, "name": "%s"}' % (i, b"x" * 50) for i in range(20_000)) + b"]}"
    app = ScreenApp(DetailScreen(exchange(req_headers=[("Content-Type", "application/json")], req_body=body)))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "shown as received" in str(app.screen.query_one("#request-body-label", Static).render())
        view = app.screen.query_one("#request-body", LinesView)
        await async_wait_for(lambda: view.lines.width < 80, what="the body folded at the width")
        rows = [view.lines.line(i).plain for i in range(3)]
        assert "".join(rows) == body[: sum(map(len, rows))].decode()
        assert view.max_scroll_x == 0


async def test_a_websocket_of_twenty_thousand_messages_opens_as_fast_as_one_of_ten() -> None:
    # A DataTable measured every cell before showing a row: seconds for a session left open an
    # hour. The rows are made as they come in sight: bounded against the same screen with 10.
    async def open_seconds(count: int) -> float:
        ex = ws_exchange()
        first = ex.ws_messages[0]
        ex.ws_messages = [dataclasses.replace(first, time=first.time + i / 200) for i in range(count)]
        started = time.perf_counter()
        app = ScreenApp(DetailScreen(ex))
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            await pilot.press("4")
            await pilot.pause()
            seconds = time.perf_counter() - started
            rows = _message_rows(app.screen.query_one("#ws-messages", LinesView))
            assert len(rows) == count
            assert rows[-1][1] == f"+{human_duration(first.time + (count - 1) / 200 - ex.started_at)}"
            return seconds

    small = min([await open_seconds(10) for _ in range(2)])
    large = min([await open_seconds(20_000) for _ in range(2)])
    assert large < small * 1.5 + 0.25, (small, large)
