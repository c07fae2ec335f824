"""The detail screen on an 80x24 terminal: a webhook delivery's body in sight, scroll keys from the start."""

from __future__ import annotations

import dataclasses
import json

from textual.widgets import TabbedContent, Tabs

from devtunnel.capture.model import Exchange
from devtunnel.capture.verdict import Signature, Verdict
from devtunnel.tui.screens import DetailScreen
from devtunnel.tui.screens.detail import HeadersView, MessagePane
from devtunnel.tui.screens.lines import LinesView
from tests.helpers import async_wait_for
from tests.tui.screen_fixtures import STRIPE_SIGNATURE, ScreenApp, exchange, laid_out, screen_text, stripe_exchange

VERDICT = Verdict("stripe", "payment_intent.succeeded", "evt_1QxY", Signature.VALID)


def stripe_delivery() -> Exchange:
    """The Stripe delivery of the fixtures, judged: a webhook section over its ten headers."""
    return dataclasses.replace(stripe_exchange(), webhook=VERDICT)


def large_json() -> Exchange:
    """A JSON response of 200 objects: 800 rows, pretty-printed."""
    rows = [{"n": n, "name": f"row {n}"} for n in range(200)]
    return exchange(resp_body=json.dumps({"rows": rows}, separators=(",", ":")).encode())


def _body_rows_on_screen(app: ScreenApp, side: str) -> int:
    return app.screen.query_one(f"#{side}-body", LinesView).region.height


async def _opened(app: ScreenApp, side: str = "request") -> LinesView:
    await async_wait_for(lambda: laid_out(app, f"#{side}-body"), what=f"the {side} body laid out")
    view = app.screen.query_one(f"#{side}-body", LinesView)
    await async_wait_for(lambda: view.region.height >= MessagePane.BODY_ROWS, what="the body given its rows")
    return view


async def test_at_80x24_a_webhook_delivery_shows_its_verdict_headers_and_the_first_lines_of_its_body() -> None:
    app = ScreenApp(DetailScreen(stripe_delivery()))
    async with app.run_test(size=(80, 24)) as pilot:
        await _opened(app)
        await pilot.pause()
        lines = screen_text(app).splitlines()
        label = next(i for i, line in enumerate(lines) if line.startswith(" Body · json"))
        # Under the label: the JSON's first lines, above the footer.
        assert lines[label + 1].strip() == "{"
        assert lines[label + 2].strip().startswith('"id": "evt_1QxY",')  # then the scrollbar's thumb
        assert label + MessagePane.BODY_ROWS < len(lines) - 1
        shown = "\n".join(lines)
        for part in ("Provider     Stripe", "Event        payment_intent.succeeded", "Signature    ✓ valid",
                     "Headers (10)", " Host ", " User-Agent "):
            assert part in shown, part
        assert app.screen.query_one("#request-headers", HeadersView).max_scroll_y > 0  # the rest scroll


async def test_at_80x24_every_header_of_a_webhook_delivery_can_be_reached_and_the_body_stays() -> None:
    app = ScreenApp(DetailScreen(stripe_delivery()))
    async with app.run_test(size=(80, 24)) as pilot:
        await _opened(app)
        await pilot.pause()
        seen = screen_text(app)
        view = app.screen.query_one("#request-headers", HeadersView)
        await pilot.press("tab")  # from the tabs to the headers: the verdict fits, it takes no stop
        assert app.focused is view
        await pilot.press("end")
        await async_wait_for(lambda: " Accept-Encoding " in screen_text(app), what="the last header on screen")
        at_end = screen_text(app)
        seen += at_end
        for name, _ in stripe_delivery().request.headers.items():
            assert f" {name} " in seen, name
        # The signature folds under itself: joined back, the rows give it whole.
        lines = at_end.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(" Stripe-Signature "))
        column = lines[start].index("t=")
        assert STRIPE_SIGNATURE in "".join(line[column:].rstrip(" ▁▂▃▄▅▆▇█") for line in lines[start : start + 5])
        assert '"id": "evt_1QxY"' in at_end  # the body kept its place
        assert _body_rows_on_screen(app, "request") >= MessagePane.BODY_ROWS


async def test_j_and_k_scroll_the_headers_when_they_have_the_focus_and_the_body_otherwise() -> None:
    app = ScreenApp(DetailScreen(stripe_delivery()))
    async with app.run_test(size=(80, 24)) as pilot:
        body = await _opened(app)
        headers = app.screen.query_one("#request-headers", HeadersView)
        await pilot.press("tab", "j", "j")
        await async_wait_for(lambda: headers.scroll_y == 2, what="the headers two rows down")
        assert body.scroll_y == 0
        await pilot.press("k")
        await async_wait_for(lambda: headers.scroll_y == 1, what="the headers a row up")
        await pilot.press("shift+tab", "j")  # back on the tabs: the body moves
        await async_wait_for(lambda: body.scroll_y == 1, what="the body a row down")
        assert headers.scroll_y == 1


async def test_a_webhook_delivery_opened_at_100x30_then_shrunk_to_80x24_keeps_its_body_in_sight() -> None:
    app = ScreenApp(DetailScreen(stripe_delivery()))
    async with app.run_test(size=(100, 30)) as pilot:
        await _opened(app)
        await pilot.resize_terminal(80, 24)
        await async_wait_for(lambda: app.screen.size.height == 24, what="the screen at 24 rows")
        await async_wait_for(lambda: '"id": "evt_1QxY"' in screen_text(app), what="the body's first lines")
        await async_wait_for(lambda: _body_rows_on_screen(app, "request") >= MessagePane.BODY_ROWS,
                             what="the body given its rows")


async def test_at_80x24_the_scroll_keys_move_a_large_json_response_as_soon_as_its_tab_is_shown() -> None:
    app = ScreenApp(DetailScreen(large_json()))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        view = await _opened(app, "response")
        assert isinstance(app.focused, Tabs)  # the focus is still on the tabs
        assert '"name": "row 0"' in screen_text(app)

        await pilot.press("pagedown")
        await async_wait_for(lambda: view.scroll_y == view.scrollable_content_region.height, what="a page down")
        page = view.scroll_y
        assert '"name": "row 0"' not in screen_text(app)
        await pilot.press("j")
        await async_wait_for(lambda: view.scroll_y == page + 1, what="j: a row down")
        await pilot.press("down")
        await async_wait_for(lambda: view.scroll_y == page + 2, what="down: a row down")
        await pilot.press("k", "up")
        await async_wait_for(lambda: view.scroll_y == page, what="k and up: two rows up")
        await pilot.press("pageup")
        await async_wait_for(lambda: view.scroll_y == 0, what="a page up")
        await pilot.press("end")
        await async_wait_for(lambda: view.scroll_y == view.max_scroll_y > 0, what="the end")
        await async_wait_for(lambda: '"name": "row 199"' in screen_text(app), what="the last row drawn")
        await pilot.press("home")
        await async_wait_for(lambda: view.scroll_y == 0, what="the top")
        await async_wait_for(lambda: '"name": "row 0"' in screen_text(app), what="the first row drawn")
        assert isinstance(app.focused, Tabs)


async def test_the_scroll_keys_leave_the_tab_keys_and_the_screens_keys_as_they_were() -> None:
    app = ScreenApp(DetailScreen(large_json()))
    async with app.run_test(size=(80, 24)) as pilot:
        await async_wait_for(lambda: laid_out(app, "#request-headers"), what="the request laid out")
        tabs = app.screen.query_one(TabbedContent)
        await pilot.press("right")  # the tabs have the focus: right and left move between them
        await async_wait_for(lambda: tabs.active == "response", what="right: the response")
        view = await _opened(app, "response")
        await pilot.press("pagedown")
        await async_wait_for(lambda: view.scroll_y > 0, what="the response scrolled")
        await pilot.press("left")
        await async_wait_for(lambda: tabs.active == "request", what="left: the request")
        await pilot.press("2")
        await async_wait_for(lambda: tabs.active == "response", what="2: the response")
        await pilot.press("3")
        await async_wait_for(lambda: tabs.active == "timing", what="3: the timing")
        await pilot.press("down", "end", "1")  # nothing to scroll on the timing tab
        await async_wait_for(lambda: tabs.active == "request", what="1: the request")
        active = app.screen.active_bindings
        for key in ("r", "D", "e", "c", "x", "p", "h", "escape", "q"):
            assert active[key].node is app.screen and active[key].enabled, key
        await pilot.press("2", "h")
        await async_wait_for(lambda: "Body · json · 5.1 KiB · hex dump" in screen_text(app), what="h: the hex dump")
        await pilot.press("escape")
        await async_wait_for(lambda: app.dismissed, what="escape: the screen closed")


def test_snapshot_webhook_detail_at_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _opened(pilot.app)
        await pilot.pause()

    assert snap_compare(ScreenApp(DetailScreen(stripe_delivery())), terminal_size=(80, 24), run_before=run_before)
